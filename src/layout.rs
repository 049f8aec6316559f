//! Where every file of a data root lives: the one place for file names.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::InputError;

/// The LanceDB table of the item index (`--index NAME` makes `items_{NAME}`).
pub const TABLE: &str = "items";

/// The pipeline stage that writes `path` of a data root (for "re-make it with `recsys pipeline
/// --force S`" when a file is missing or damaged); `None` for a file no stage writes.
pub fn made_by(path: &Path) -> Option<&'static str> {
    let name = path.file_name()?.to_str()?;
    // A file inside a table, or the table directory itself.
    let table = path.ancestors().find_map(|p| {
        let n = p.file_name()?.to_str()?;
        n.ends_with(".lance").then_some(n)
    });
    if let Some(t) = table {
        let finetuned = t == format!("{TABLE}_finetuned.lance");
        return Some(if finetuned { "reindex" } else { "index" });
    }
    let stem = name.strip_suffix(".parquet")?;
    Some(match stem {
        s if s.starts_with("reviews_") => "split",
        s if s.starts_with("keywords_") => "keywords",
        "summaries" => "summaries",
        "items" => "build-items",
        "training_pairs" => "pairs",
        s if s.starts_with("candidates_") && s.ends_with("_finetuned") => "retrieve-finetuned",
        s if s.starts_with("candidates_") => "retrieve",
        s if s.starts_with("reranked_") => "rerank",
        _ => return None,
    })
}

/// The three time-based splits.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Paths of one data root (`--data-dir`) for one category (`--category`).
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub category: String,
    /// `--index NAME`: the item table `items_{NAME}` instead of `items` (e.g. the fine-tuned
    /// model's vectors beside the base model's).
    pub index: Option<String>,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>, category: &str) -> Self {
        Layout {
            root: root.into(),
            category: category.to_string(),
            index: None,
        }
    }

    /// The LanceDB table of the item index: `items`, or `items_{name}` for a named index.
    pub fn index_table(&self) -> String {
        match &self.index {
            Some(n) => format!("{}_{n}", TABLE),
            None => TABLE.to_string(),
        }
    }

    pub fn raw_dir(&self) -> PathBuf {
        self.root.join("raw")
    }
    pub fn processed_dir(&self) -> PathBuf {
        self.root.join("processed")
    }
    pub fn lancedb_dir(&self) -> PathBuf {
        self.root.join("lancedb")
    }
    pub fn evaluation_dir(&self) -> PathBuf {
        self.root.join("evaluation")
    }

    /// `raw/{Cat}.jsonl` or `raw/{Cat}.jsonl.gz`, whichever exists (both is an error).
    pub fn raw_reviews(&self) -> Result<PathBuf, InputError> {
        find_jsonl(&self.raw_dir(), &self.category)
    }
    /// `raw/meta_{Cat}.jsonl` or `raw/meta_{Cat}.jsonl.gz`, whichever exists (both is an error).
    pub fn raw_meta(&self) -> Result<PathBuf, InputError> {
        find_jsonl(&self.raw_dir(), &format!("meta_{}", self.category))
    }
    /// Ground truth of `data synth`: which attributes each review mentions.
    pub fn synth_truth(&self) -> PathBuf {
        synth_truth_path(&self.raw_dir(), &self.category)
    }

    pub fn reviews(&self, split: Split) -> PathBuf {
        self.processed_dir()
            .join(format!("reviews_{split}.parquet"))
    }
    pub fn keywords(&self, split: Split) -> PathBuf {
        self.processed_dir()
            .join(format!("keywords_{split}.parquet"))
    }
    pub fn summaries(&self) -> PathBuf {
        self.processed_dir().join("summaries.parquet")
    }
    pub fn items(&self) -> PathBuf {
        self.processed_dir().join("items.parquet")
    }
    pub fn training_pairs(&self) -> PathBuf {
        self.processed_dir().join("training_pairs.parquet")
    }
    /// Training rows with hard negatives mined by `train mine-negatives`.
    pub fn training_pairs_mined(&self) -> PathBuf {
        self.processed_dir().join("training_pairs_mined.parquet")
    }
    /// The resumable cache of one LLM task (`keywords`, `description_summaries`).
    pub fn llm_cache(&self, task: &str) -> PathBuf {
        self.root
            .join("cache")
            .join("llm")
            .join(format!("{task}.jsonl"))
    }
    /// Top-K candidates of `retrieve`: `candidates_{split}.parquet`, or
    /// `candidates_{split}_{name}.parquet` for a named run (bm25, popularity, a model…).
    pub fn candidates(&self, split: Split, name: Option<&str>) -> PathBuf {
        let file = match name {
            Some(n) => format!("candidates_{split}_{n}.parquet"),
            None => format!("candidates_{split}.parquet"),
        };
        self.evaluation_dir().join(file)
    }
    /// Candidates of a split re-ranked by `rerank`.
    pub fn reranked(&self, split: Split) -> PathBuf {
        self.evaluation_dir()
            .join(format!("reranked_{split}.parquet"))
    }
    /// What `eval` computed for a split.
    pub fn metrics(&self, split: Split) -> PathBuf {
        self.evaluation_dir().join(format!("metrics_{split}.json"))
    }
    /// The Recall@K curves of `eval`.
    pub fn recall_plot(&self, split: Split) -> PathBuf {
        self.evaluation_dir().join(format!("recall_{split}.svg"))
    }
    /// Records of `recsys pipeline`: one `{stage}.json` per finished stage.
    pub fn pipeline_dir(&self) -> PathBuf {
        self.root.join("pipeline")
    }
    /// The run report of `recsys pipeline`.
    pub fn report(&self) -> PathBuf {
        self.evaluation_dir().join("report.md")
    }
    /// Fine-tuning's valid Recall@10 over steps, drawn for the report.
    pub fn training_curve(&self) -> PathBuf {
        self.evaluation_dir().join("training_curve.svg")
    }
    /// Cutoffs and counts of the last `etl split`, for later stages.
    pub fn split_info(&self) -> PathBuf {
        self.processed_dir().join("split.json")
    }
}

/// Where trained models go by default (relative to the working directory, outside the data root).
pub const MODELS_DIR: &str = "models";

/// A new model directory: `models/{stem}-{YYYYMMDD-HHMMSS}`.
pub fn new_model_dir(stem: &str) -> PathBuf {
    let ts = chrono::Local::now().format("%Y%m%d-%H%M%S");
    Path::new(MODELS_DIR).join(format!("{stem}-{ts}"))
}

/// The newest directory under `models/` whose name contains `pattern` and that `keep` accepts
/// (the names end in a timestamp, so the largest name is the newest).
pub fn newest_model_dir(pattern: &str, keep: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(MODELS_DIR)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(pattern))
                .map(|e| e.path())
                .filter(|p| keep(p))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop()
}

/// Names of the three files `data synth` writes into `dir`.
pub fn synth_paths(dir: &Path, category: &str, gzip: bool) -> (PathBuf, PathBuf) {
    let ext = if gzip { "jsonl.gz" } else { "jsonl" };
    (
        dir.join(format!("{category}.{ext}")),
        dir.join(format!("meta_{category}.{ext}")),
    )
}

pub fn synth_truth_path(dir: &Path, category: &str) -> PathBuf {
    dir.join(format!("{category}.truth.jsonl"))
}

fn find_jsonl(dir: &Path, stem: &str) -> Result<PathBuf, InputError> {
    let candidates = [
        dir.join(format!("{stem}.jsonl")),
        dir.join(format!("{stem}.jsonl.gz")),
    ];
    if candidates.iter().all(|p| p.is_file()) {
        return Err(InputError::File {
            file: candidates[0].clone(),
            message: format!(
                "both this and {} exist, and recsys reads one file per category: remove or \
                 rename the one not meant",
                candidates[1].display()
            ),
        });
    }
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| InputError::File {
        file: candidates[0].clone(),
        message: format!(
            "not found (nor {}); download the Amazon Reviews 2023 files there, or run `recsys data synth`",
            candidates[1].display()
        ),
    })
}
