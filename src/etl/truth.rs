//! How much of the synthetic ground truth (what each review mentions, `raw/{Cat}.truth.jsonl`) a
//! keywords file recovers: the measure of a keyword extractor, offline or LLM.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};

use crate::cols;
use crate::context::Ctx;
use crate::data::synth::Truth;
use crate::etl::extract::content_words;
use crate::io::read_parquet;
use crate::layout::Split;

/// Ground-truth mentions found among the keywords: `(found, total)` per kind (an attribute name
/// or who / when / why) and over all.
#[derive(Debug, Clone, Default)]
pub struct TruthFound {
    pub by_kind: BTreeMap<String, (usize, usize)>,
    pub found: usize,
    pub total: usize,
}

impl TruthFound {
    pub fn share(&self) -> f64 {
        self.found as f64 / self.total.max(1) as f64
    }
}

/// How many of the ground-truth mentions of the reviews in `splits` appear among their keywords
/// (`processed/keywords_{split}.parquet`): a mention counts when its content words stand as a
/// whole-word run inside one keyword.
pub fn truth_found(ctx: &Ctx, splits: &[Split]) -> Result<TruthFound> {
    let path = ctx.layout.synth_truth();
    let truth: HashMap<u64, Truth> = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (synthetic data only)", path.display()))?
        .lines()
        .map(|l| serde_json::from_str::<Truth>(l).map(|t| (t.review_id, t)))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: not ground truth", path.display()))?;
    let mut out = TruthFound::default();
    for &split in splits {
        let df = read_parquet(&ctx.layout.keywords(split))?;
        let ids = df.column(cols::REVIEW_ID)?.u64()?.clone();
        let lists = df.column(cols::KEYWORDS)?.list()?.clone();
        for (id, kws) in ids.iter().zip(lists.series_iter()) {
            let Some(t) = id.and_then(|id| truth.get(&id)) else {
                continue;
            };
            let kws: Vec<String> = match kws {
                Some(s) => s.str()?.no_null_iter().map(|k| format!(" {k} ")).collect(),
                None => Vec::new(),
            };
            for (kind, value) in t.attributes.iter().chain(&t.context) {
                let want = format!(" {} ", content_words(value));
                let hit = kws.iter().any(|k| k.contains(&want));
                let e = out.by_kind.entry(kind.clone()).or_default();
                e.0 += hit as usize;
                e.1 += 1;
                out.found += hit as usize;
                out.total += 1;
            }
        }
    }
    Ok(out)
}
