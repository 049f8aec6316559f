//! Retriever fine-tuning: the contrastive loss, AdamW, the schedule and sampler, the training
//! loop with evaluation and checkpoints (`train retriever`), hard-negative mining
//! (`train mine-negatives`).

pub mod checkpoint;
pub mod loss;
pub mod negatives;
pub mod optim;
pub mod retriever;
pub mod schedule;
