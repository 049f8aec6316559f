//! What a training run records of itself: evaluation points and the trainer state (in the
//! output directory and in each checkpoint).

use serde::{Deserialize, Serialize};

/// One evaluation: Recall@10 and MRR (over the top 100) of the valid sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub step: usize,
    pub recall_at_10: f64,
    pub mrr: f64,
}

/// What `trainer_state.json` holds (in the output dir and in each checkpoint).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: usize,
    pub total_steps: usize,
    pub base: Option<EvalPoint>,
    pub best: Option<EvalPoint>,
    pub finished: bool,
    /// f16 training's loss scale (absent in f32 / bf16 runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scale: Option<super::scaler::LossScale>,
}

impl TrainerState {
    /// Steps skipped by loss scaling (inf/NaN gradients in f16): they count as steps, without
    /// an optimizer update.
    pub fn skipped_steps(&self) -> usize {
        self.loss_scale.map_or(0, |s| s.skipped)
    }
}
