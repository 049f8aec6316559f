//! Retriever fine-tuning (issue 5, in progress): so far the contrastive loss.
//! `recsys train retriever` itself is not implemented yet and says so.

pub mod loss;
pub mod schedule;
