//! The stages of `recsys pipeline`, in run order, and the `[pipeline]` settings that choose which
//! of them run. Kept apart from the runner so that the settings file's list of sections can name
//! `PipelineConfig` without importing the runner (which reads the settings file).

use std::fmt;

use crate::retrieve::RetrieverKind;

/// The stages, in the order they run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, serde::Serialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum StageName {
    /// Time split of the raw reviews
    Split,
    /// Keywords of every split's reviews
    Keywords,
    /// Summaries of long item descriptions
    Summaries,
    /// The item table with its embedding_text
    BuildItems,
    /// Fine-tuning pairs from TRAIN reviews
    Pairs,
    /// The item index with the base model
    Index,
    /// Stage 1 with the base model (valid, test) and the baselines (test)
    Retrieve,
    /// Fine-tuning of the encoder
    TrainRetriever,
    /// The item index with the fine-tuned model (table items_finetuned)
    Reindex,
    /// Stage 1 with the fine-tuned model (valid, test)
    RetrieveFinetuned,
    /// The XGBoost re-ranker
    TrainRanker,
    /// Re-ranking of the test candidates
    Rerank,
    /// Metrics of every test candidates file
    Eval,
    /// evaluation/report.md
    Report,
}

impl StageName {
    pub fn as_str(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

impl fmt::Display for StageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// `recsys pipeline`
#[derive(clap::Args, Debug, Clone)]
pub struct PipelineConfig {
    /// Start at this stage: earlier ones are taken as they are, even when stale
    #[arg(long, value_enum)]
    pub from: Option<StageName>,
    /// Stop after this stage
    #[arg(long, value_enum)]
    pub to: Option<StageName>,
    /// Run these stages even when up to date (comma-separated); stages reading their outputs
    /// follow
    #[arg(long, value_enum, value_delimiter = ',')]
    pub force: Vec<StageName>,
    /// Print what would run and why; run nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Stage-1 baselines retrieved on TEST beside the dense model (comma-separated)
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "bm25,popularity"
    )]
    pub baselines: Vec<RetrieverKind>,
    /// No fine-tuning (train-retriever, reindex, retrieve-finetuned): the re-ranker takes the base
    /// model's candidates
    #[arg(long)]
    pub no_finetune: bool,
    /// No re-ranker (train-ranker, rerank)
    #[arg(long)]
    pub no_ranker: bool,
    /// Truncate item texts of the re-index to this many tokens [default: as [index] max_length]
    #[arg(long, value_parser = crate::cli::tokens)]
    pub reindex_max_length: Option<usize>,
}
crate::cli::clap_default!(PipelineConfig);
