//! XGBoost for the re-ranker: feature matrices with their query groups, boosting `rank:ndcg`
//! with early stopping, and the gain importance of a model.

use anyhow::{Context, Result};
use polars::prelude::*;
use xgb::{Booster, DMatrix};

use super::features::{self, FEATURES};
use crate::cols::LABEL;

/// The boosting settings of `train ranker`.
pub(super) struct Boosting {
    pub num_rounds: usize,
    pub early_stopping_rounds: usize,
    pub max_depth: u32,
    pub eta: f64,
}

pub(super) fn xgb_err(e: xgb::XGBError) -> anyhow::Error {
    anyhow::anyhow!("XGBoost: {e}")
}

/// XGBoost logs to stderr by default (deprecation notices of the C API the `xgb` crate calls);
/// keep it to errors.
fn quiet_xgboost() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let cfg = std::ffi::CString::new(r#"{"verbosity": 0}"#).expect("no NUL");
        // SAFETY: a NUL-terminated JSON string that outlives the call.
        unsafe {
            xgboost_lib_sys::XGBSetGlobalConfig(cfg.as_ptr());
        }
    });
}

/// The frame's feature matrix (feature `without` left missing) with its query groups.
pub(super) fn dmatrix(
    df: &DataFrame,
    with_labels: bool,
    without: Option<usize>,
) -> Result<DMatrix> {
    quiet_xgboost();
    let mut x = features::matrix(df)?;
    if let Some(j) = without {
        x.iter_mut()
            .skip(j)
            .step_by(FEATURES.len())
            .for_each(|v| *v = f32::NAN);
    }
    let mut m = DMatrix::from_dense(&x, df.height()).map_err(xgb_err)?;
    m.set_group(&features::groups(df)?).map_err(xgb_err)?;
    if with_labels {
        let y: Vec<f32> = df
            .column(LABEL)?
            .f32()?
            .iter()
            .map(|v| v.unwrap_or(0.0))
            .collect();
        m.set_labels(&y).map_err(xgb_err)?;
    }
    Ok(m)
}

/// A boosted model cut at its best round on the hold-out.
pub(super) struct Fit {
    pub model: Booster,
    pub best: f64,
    pub best_round: usize,
    pub rounds: usize,
}

/// Boosts `rank:ndcg` on `learn` with early stopping on `holdout`'s NDCG@5.
pub(super) fn fit(
    learn: &DataFrame,
    holdout: &DataFrame,
    cfg: &Boosting,
    seed: u64,
    without: Option<usize>,
    pb: &indicatif::ProgressBar,
) -> Result<Fit> {
    let dlearn = dmatrix(learn, true, without)?;
    let dholdout = dmatrix(holdout, true, without)?;
    let mut booster = Booster::new_with_cached_dmats(&Default::default(), &[&dlearn, &dholdout])
        .map_err(xgb_err)?;
    for (k, v) in [
        ("objective", "rank:ndcg".to_string()),
        ("eval_metric", "ndcg@5".to_string()),
        ("max_depth", cfg.max_depth.to_string()),
        ("eta", cfg.eta.to_string()),
        ("seed", seed.to_string()),
        ("tree_method", "hist".to_string()),
        ("lambdarank_pair_method", "topk".to_string()),
        ("verbosity", "0".to_string()),
    ] {
        booster.set_param(k, &v).map_err(xgb_err)?;
    }
    let (mut best, mut best_round, mut rounds) = (f64::NEG_INFINITY, 0usize, 0usize);
    for round in 0..cfg.num_rounds {
        booster.update(&dlearn, round as i32).map_err(xgb_err)?;
        rounds = round + 1;
        let m = booster.evaluate(&dholdout).map_err(xgb_err)?;
        let ndcg = m
            .iter()
            .find(|(k, _)| k.contains("ndcg@5"))
            .map(|(_, v)| *v as f64)
            .context("XGBoost reported no ndcg@5")?;
        if ndcg > best {
            (best, best_round) = (ndcg, rounds);
        }
        pb.set_message(format!("held-out ndcg@5 {ndcg:.4}"));
        pb.inc(1);
        if rounds - best_round >= cfg.early_stopping_rounds {
            break;
        }
    }
    let model = booster.slice(0, best_round as i32).map_err(xgb_err)?;
    Ok(Fit {
        model,
        best,
        best_round,
        rounds,
    })
}

/// Average and total split gain per feature, from the model dump (XGBoost's "gain" and
/// "total_gain" importance), by average gain.
pub(super) fn gain_importance(model: &Booster) -> Result<Vec<(String, f64, f64, usize)>> {
    let mut total = vec![0f64; FEATURES.len()];
    let mut count = vec![0usize; FEATURES.len()];
    for tree in model.dump_model_vec(true).map_err(xgb_err)? {
        for line in tree.lines() {
            // "  3:[f4<0.5] yes=7,no=8,missing=7,gain=12.5,cover=30"
            let Some(feat) = line.split_once("[f").and_then(|(_, r)| {
                r.split(['<', ']'])
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
            }) else {
                continue;
            };
            let gain = line
                .split(',')
                .find_map(|kv| kv.trim().strip_prefix("gain="))
                .and_then(|g| g.parse::<f64>().ok())
                .unwrap_or(0.0);
            if feat < FEATURES.len() {
                total[feat] += gain;
                count[feat] += 1;
            }
        }
    }
    let mut out: Vec<(String, f64, f64, usize)> = FEATURES
        .iter()
        .enumerate()
        .map(|(j, f)| {
            let avg = if count[j] > 0 {
                total[j] / count[j] as f64
            } else {
                0.0
            };
            (f.name.to_string(), avg, total[j], count[j])
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(out)
}
