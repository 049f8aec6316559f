//! `evaluation/report.md`: what a pipeline run made, in one page — data and split, stage 1 and
//! stage 2 on TEST, the fine-tuning curve, and the time and peak memory of every stage.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{StageName, duration, gib, record};
use crate::context::Ctx;
use crate::etl::split::SplitSummary;
use crate::eval::EvalReport;
use crate::eval::plot::{Series, XAxis, line_svg};
use crate::io::{thousands, utc};
use crate::layout::Split;
use crate::metrics::Metrics;

/// Bumped when a change to this stage's logic changes what it writes: the pipeline's records
/// made with another version are stale, so the stage runs again.
pub const CODE_VERSION: u32 = 1;

fn read_json(p: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()))
}

fn pct(a: u64, b: u64) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.1} %", 100.0 * a as f64 / b as f64)
    }
}

/// One Markdown table row.
fn row(cells: &[String]) -> String {
    format!("| {} |\n", cells.join(" | "))
}

fn f4(x: f64) -> String {
    format!("{x:.4}")
}

fn recall_at(m: &Metrics, k: usize) -> String {
    m.recall_at(k).map_or("-".into(), f4)
}

const KS: [usize; 5] = [1, 5, 10, 50, 100];

/// Writes the report (and its training-curve SVG); returns a one-line summary.
pub fn write(
    ctx: &Ctx,
    stages: &[StageName],
    finetuned: Option<&Path>,
    settings: Option<&Path>,
) -> Result<String> {
    let l = &ctx.layout;
    let mut md = String::new();
    let _ = writeln!(md, "# recsys run report — {}\n", l.category);
    let _ = writeln!(
        md,
        "Data root `{}`; settings {}; seed {}; written {} by recsys {}.\n",
        l.root.display(),
        settings.map_or("at their defaults (no settings file)".into(), |p| format!(
            "`{}`",
            p.display()
        )),
        ctx.seed,
        chrono::Local::now().format("%Y-%m-%d %H:%M"),
        env!("CARGO_PKG_VERSION")
    );

    // Data and split.
    let split: SplitSummary = serde_json::from_value(read_json(&l.split_info())?)?;
    let _ = writeln!(md, "## Data\n");
    let _ = writeln!(
        md,
        "`{}`: {} lines, {} skipped as malformed, {} duplicates dropped. Time split: train up to \
         {}, valid up to {}, test after.\n",
        split.source.display(),
        thousands(split.lines),
        thousands(split.skipped_lines),
        thousands(split.duplicates),
        utc(split.train_end),
        utc(split.valid_end)
    );
    md.push_str(&row(&[
        "split".into(),
        "reviews".into(),
        "share".into(),
        "reviews of items with TRAIN reviews".into(),
        "items with TRAIN reviews".into(),
    ]));
    md.push_str("| --- | ---: | ---: | ---: | ---: |\n");
    let total = (split.train_rows + split.valid_rows + split.test_rows) as u64;
    for s in Split::ALL {
        let (reviews_seen, items_seen) = match s {
            Split::Train => ("-".to_string(), "-".to_string()),
            Split::Valid => (frac(split.valid_reviews_seen), frac(split.valid_items_seen)),
            Split::Test => (frac(split.test_reviews_seen), frac(split.test_items_seen)),
        };
        md.push_str(&row(&[
            s.to_string(),
            thousands(split.rows(s)),
            pct(split.rows(s) as u64, total),
            reviews_seen,
            items_seen,
        ]));
    }
    if let Ok(items) = crate::io::read_parquet(&l.items()) {
        let _ = writeln!(
            md,
            "\n{} items in `{}`.",
            thousands(items.height()),
            l.items().display()
        );
    }

    // Stage 1 and 2.
    let metrics: EvalReport = serde_json::from_value(read_json(&l.metrics(Split::Test))?)
        .with_context(|| format!("{}: not eval's metrics", l.metrics(Split::Test).display()))?;
    let _ = writeln!(md, "\n## Stage 1 — retrieval (test)\n");
    let _ = writeln!(
        md,
        "Recall@K: the share of reviews whose item is in the top K. **over all** counts every review \
         of the split (a review whose item is not in the index, or whose query is empty, is a miss); \
         **findable** only those whose item is in the index; \"est.\" when the run sampled its \
         queries (`retrieve.max_queries`): the sample's misses scaled to the split. MRR over the \
         top 100.\n"
    );
    let mut header: Vec<String> = vec!["run".into(), "over".into(), "queries".into()];
    header.extend(KS.iter().map(|k| format!("R@{k}")));
    header.push("MRR".into());
    md.push_str(&row(&header));
    md.push_str(&format!(
        "| --- | --- |{}\n",
        " ---: |".repeat(KS.len() + 2)
    ));
    for r in &metrics.runs {
        for (i, (over, m)) in r.rows().into_iter().enumerate() {
            let mut cells = vec![
                if i == 0 { r.label() } else { String::new() },
                over.to_string(),
                thousands(m.queries),
            ];
            cells.extend(KS.iter().map(|&k| recall_at(m, k)));
            cells.push(f4(m.mrr));
            md.push_str(&row(&cells));
        }
    }
    let _ = writeln!(md, "\n![Recall@K](recall_test.svg)\n");
    if let Some(rr) = &metrics.rerank {
        let _ = writeln!(md, "## Stage 2 — re-ranking (test)\n");
        let _ = writeln!(
            md,
            "The same candidates (`{}`) in stage-1 order and re-ranked; over findable queries.\n",
            rr.file.display()
        );
        md.push_str("| order | queries | NDCG@5 | R@1 | R@5 | R@10 | MRR |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
        for (name, m) in [("stage 1", &rr.stage1), ("re-ranked", &rr.reranked)] {
            md.push_str(&row(&[
                name.into(),
                thousands(m.queries),
                f4(m.ndcg_at_5),
                recall_at(m, 1),
                recall_at(m, 5),
                recall_at(m, 10),
                f4(m.mrr),
            ]));
        }
        let ranker = record::read(l, &StageName::TrainRanker.as_str())?;
        if let Some(r) = ranker {
            let _ = writeln!(md, "\nRanker: {}", r.summary.lines().next().unwrap_or(""));
        }
        md.push('\n');
    }

    // Fine-tuning curve.
    let curve = l.training_curve();
    let points = finetuned
        .map(training_points)
        .transpose()?
        .unwrap_or_default();
    if points.len() >= 2 {
        let _ = writeln!(md, "## Fine-tuning\n");
        let _ = writeln!(
            md,
            "Valid Recall@10 (sample of `train_retriever.eval_queries` queries) over optimizer steps; step 0 is the base model. Model: `{}`.\n",
            finetuned
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        let ticks: Vec<f64> = points.iter().map(|p| p.0).collect();
        let svg = line_svg(
            "Fine-tuning — valid Recall@10",
            &XAxis {
                label: "optimizer step",
                log: false,
                ticks,
            },
            "Recall@10",
            &[Series {
                label: "valid R@10".into(),
                points: points.clone(),
            }],
        );
        crate::io::write_atomic(&curve, |tmp| {
            std::fs::write(tmp, svg).with_context(|| format!("writing {}", tmp.display()))
        })?;
        md.push_str("| step | valid R@10 |\n| ---: | ---: |\n");
        for (s, r) in &points {
            md.push_str(&row(&[format!("{s}"), format!("{r:.4}")]));
        }
        let _ = writeln!(md, "\n![training curve](training_curve.svg)\n");
    } else {
        let _ = std::fs::remove_file(&curve);
    }

    // Time and memory.
    let _ = writeln!(md, "## Stages: time and memory\n");
    let _ = writeln!(
        md,
        "Wall time and peak resident memory of each stage's last run (this machine: {} cores).\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    md.push_str("| stage | finished | wall time | peak RSS |\n| --- | --- | ---: | ---: |\n");
    let mut total = 0.0;
    let mut slowest: Option<(String, f64)> = None;
    for &n in stages.iter().filter(|&&n| n != StageName::Report) {
        match record::read(l, &n.as_str())? {
            Some(r) => {
                total += r.seconds;
                if slowest.as_ref().is_none_or(|s| r.seconds > s.1) {
                    slowest = Some((n.as_str(), r.seconds));
                }
                md.push_str(&row(&[
                    n.as_str(),
                    super::short_time(&r.finished),
                    duration(r.seconds),
                    r.peak_rss_bytes.map_or("-".into(), gib),
                ]));
            }
            None => md.push_str(&row(&[
                n.as_str(),
                "not run".into(),
                "-".into(),
                "-".into(),
            ])),
        }
    }
    md.push_str(&row(&[
        "**total**".into(),
        String::new(),
        duration(total),
        String::new(),
    ]));
    if let Some((name, s)) = slowest {
        let _ = writeln!(
            md,
            "\nThe slowest stage is {name} ({} of {}).",
            pct(s as u64, total as u64),
            duration(total)
        );
    }
    let path = l.report();
    crate::io::write_atomic(&path, |tmp| {
        std::fs::write(tmp, &md).with_context(|| format!("writing {}", tmp.display()))
    })?;
    Ok(format!("report → {}", path.display()))
}

fn frac((a, b): (usize, usize)) -> String {
    format!(
        "{} of {} ({})",
        thousands(a),
        thousands(b),
        pct(a as u64, b as u64)
    )
}

/// (step, valid Recall@10) of a fine-tuning run's metrics.jsonl.
fn training_points(dir: &Path) -> Result<Vec<(f64, f64)>> {
    Ok(crate::train::checkpoint::read_metrics(dir)?
        .iter()
        .map(|m| (m.step as f64, m.valid_recall_at_10))
        .collect())
}
