//! Retriever fine-tuning: the contrastive loss, AdamW, the schedule and sampler, the training
//! loop (`train retriever`) with its flags, mixed precision's loss scaling, evaluation, state and checkpoints, hard-negative
//! mining (`train mine-negatives`).

pub mod checkpoint;
pub mod config;
pub mod evaluate;
pub mod loss;
pub mod negatives;
pub mod optim;
pub mod retriever;
pub mod scaler;
pub mod schedule;
pub mod state;
