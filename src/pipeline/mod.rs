//! `recsys pipeline`: every stage in order, each run only when it is missing or stale, from one
//! settings file (`recsys.toml`, see [`crate::config`]); `recsys status`: where each stage stands.
//!
//! A stage is up to date when its record (`{data}/pipeline/{stage}.json`, written only after it
//! finished) holds the same settings, its inputs still have the signatures (size and modification
//! time of every file) they had when it started, and its outputs the ones they had when it
//! finished. Anything else runs it again, and a rewritten output makes every stage reading it
//! stale in turn. Stages write their outputs atomically, so a killed run leaves either the old
//! output or none, never half of one, and no record: the next run starts at that stage
//! (fine-tuning continues from its last checkpoint).

mod finetune;
mod plan;
mod record;
pub mod report;
pub mod stages;

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::config::Settings;
use crate::context::Ctx;
use crate::etl::split::SplitSummary;
use crate::io::thousands;
use crate::layout::Split;

pub use plan::{FINETUNED, Stage, build_items_upstream, plan};
pub use record::{Freshness, Record};
pub use stages::{PipelineConfig, StageName};

/// One stage's outcome in a run.
#[derive(Debug, Clone)]
pub struct StageOutcome {
    pub name: StageName,
    /// `None`: up to date (skipped); `Some(reason)`: ran (or would run, on a dry run).
    pub ran: Option<String>,
    pub seconds: f64,
}

#[derive(Debug)]
pub struct PipelineSummary {
    pub stages: Vec<StageOutcome>,
    pub dry_run: bool,
    pub seconds: f64,
    pub report: Option<PathBuf>,
}

impl PipelineSummary {
    /// The stages that ran (or would run).
    pub fn ran(&self) -> Vec<StageName> {
        self.stages
            .iter()
            .filter(|s| s.ran.is_some())
            .map(|s| s.name)
            .collect()
    }
}

impl fmt::Display for PipelineSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ran = self.ran();
        let verb = if self.dry_run { "would run" } else { "ran" };
        if ran.is_empty() {
            write!(f, "pipeline: every stage is up to date; nothing {verb}")?;
        } else {
            let names: Vec<String> = ran.iter().map(|n| n.as_str()).collect();
            write!(
                f,
                "pipeline: {verb} {} of {} stages ({})",
                ran.len(),
                self.stages.len(),
                names.join(", ")
            )?;
            if !self.dry_run {
                write!(f, " in {:.1} s", self.seconds)?;
            }
        }
        if let (false, Some(r)) = (self.dry_run, &self.report) {
            write!(f, "\nreport → {}", r.display())?;
        }
        Ok(())
    }
}

fn in_range(pc: &PipelineConfig, name: StageName) -> bool {
    pc.from.is_none_or(|f| name >= f) && pc.to.is_none_or(|t| name <= t)
}

/// `recsys pipeline`. `pc` is taken as given: the command line merges the file's `[pipeline]`
/// section into it (a library caller does the same with `settings.config("pipeline", …)`).
pub fn run(ctx: &Ctx, pc: &PipelineConfig, settings: &Settings) -> Result<PipelineSummary> {
    let t0 = Instant::now();
    let stages = plan(ctx, pc, settings)?;
    let n = stages.len();
    let force: HashSet<StageName> = pc.force.iter().copied().collect();
    let mut rewritten: HashSet<PathBuf> = HashSet::new();
    let mut outcomes = Vec::new();
    for (i, st) in stages.iter().enumerate() {
        let tag = format!("[pipeline {}/{n}] {}", i + 1, st.name);
        if !in_range(pc, st.name) {
            continue;
        }
        let rec = record::read(&ctx.layout, &st.name.as_str())?;
        let state = if force.contains(&st.name) {
            Freshness::Stale("--force".into())
        } else {
            st.check(rec.as_ref(), &rewritten)
        };
        let Freshness::Stale(why) = state else {
            let when = rec.as_ref().map_or(String::new(), |r| {
                format!(", made {}", short_time(&r.finished))
            });
            eprintln!("{tag}: up to date{when}");
            outcomes.push(StageOutcome {
                name: st.name,
                ran: None,
                seconds: 0.0,
            });
            if st.name == StageName::Split {
                check_split(ctx)?;
            }
            continue;
        };
        if pc.dry_run {
            eprintln!("{tag}: would run — {why}");
            rewritten.extend(st.outputs.iter().cloned());
            outcomes.push(StageOutcome {
                name: st.name,
                ran: Some(why),
                seconds: 0.0,
            });
            continue;
        }
        eprintln!("{tag}: running — {why}");
        let seconds = run_stage(ctx, st)?;
        eprintln!("{tag}: done in {}", duration(seconds));
        outcomes.push(StageOutcome {
            name: st.name,
            ran: Some(why),
            seconds,
        });
        if st.name == StageName::Split {
            check_split(ctx)?;
        }
    }
    let report = ctx.layout.report();
    Ok(PipelineSummary {
        stages: outcomes,
        dry_run: pc.dry_run,
        seconds: t0.elapsed().as_secs_f64(),
        report: report.is_file().then_some(report),
    })
}

/// Runs one stage and writes its record; returns its wall time.
fn run_stage(ctx: &Ctx, st: &Stage) -> Result<f64> {
    if let Some(lock) = &ctx.lock {
        lock.set_stage(&format!("pipeline: {}", st.name))?;
    }
    let mut sctx = ctx.clone();
    sctx.layout.index = st.index.clone();
    crate::alloc::release_freed_memory();
    crate::alloc::reset_peak_rss();
    let inputs = record::signatures(&st.inputs);
    let t = Instant::now();
    // The earlier record stays until this run's replaces it: it signs the outputs it was made
    // with, so a run that fails half-way (a full disk, a kill) leaves the stage stale without
    // losing the record of the outputs still in place.
    let rec_path = record::path(&ctx.layout, &st.name.as_str());
    let summary = (st.run)(&sctx).with_context(|| format!("stage {}", st.name))?;
    let seconds = t.elapsed().as_secs_f64();
    if !ctx.quiet {
        // The summary is also in the record: a failed print does not fail the stage.
        let _ = crate::io::print_line(&summary.to_string());
    }
    let rec = Record {
        stage: st.name.as_str(),
        settings: st.settings.clone(),
        inputs,
        outputs: record::signatures(&st.outputs),
        finished: chrono::Local::now().to_rfc3339(),
        seconds,
        peak_rss_bytes: crate::alloc::peak_rss(),
        summary,
        recsys_version: env!("CARGO_PKG_VERSION").to_string(),
        code_version: st.code_version,
    };
    std::fs::create_dir_all(ctx.layout.pipeline_dir())?;
    crate::io::write_json(&rec_path, &rec)?;
    Ok(seconds)
}

/// Stops the run when the split left a split empty: every later stage needs all three.
fn check_split(ctx: &Ctx) -> Result<()> {
    let p = ctx.layout.split_info();
    let Ok(text) = std::fs::read_to_string(&p) else {
        return Ok(());
    };
    let info: SplitSummary =
        serde_json::from_str(&text).with_context(|| format!("reading {}", p.display()))?;
    let empty: Vec<&str> = Split::ALL
        .iter()
        .filter(|&&s| info.rows(s) == 0)
        .map(|s| s.as_str())
        .collect();
    if !empty.is_empty() {
        bail!(
            "the time split left {} empty ({} train, {} valid, {} test reviews; cut-offs {} and {}): \
             the later stages need all three. Set [split] train_end/valid_end (ms since 1970) to \
             dates inside the data, or quantiles = [0.8, 0.9]",
            empty.join(" and "),
            thousands(info.train_rows),
            thousands(info.valid_rows),
            thousands(info.test_rows),
            crate::io::utc(info.train_end),
            crate::io::utc(info.valid_end),
        );
    }
    Ok(())
}

fn short_time(rfc3339: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| rfc3339.to_string())
}

/// `83.2 s`, `12 min 5 s`.
pub fn duration(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.1} s")
    } else {
        format!("{} min {} s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// `recsys status`: one line per stage.
pub fn status(ctx: &Ctx, pc: &PipelineConfig, settings: &Settings) -> Result<String> {
    let stages = plan(ctx, pc, settings)?;
    let mut rows = vec![[
        "stage".to_string(),
        "state".into(),
        "made".into(),
        "took".into(),
        "peak RSS".into(),
        "output".into(),
    ]];
    let mut whys = Vec::new();
    let mut rewritten = HashSet::new();
    for st in &stages {
        let rec = record::read(&ctx.layout, &st.name.as_str())?;
        let state = st.check(rec.as_ref(), &rewritten);
        let label = match &state {
            Freshness::UpToDate => "up to date".to_string(),
            Freshness::Stale(why) => {
                rewritten.extend(st.outputs.iter().cloned());
                whys.push(format!("{}: {why}", st.name));
                if rec.is_some() { "stale" } else { "not run" }.to_string()
            }
        };
        let r = rec.as_ref();
        rows.push([
            st.name.as_str(),
            label,
            r.map_or("-".into(), |r| short_time(&r.finished)),
            r.map_or("-".into(), |r| duration(r.seconds)),
            r.and_then(|r| r.peak_rss_bytes).map_or("-".into(), gib),
            st.outputs
                .last()
                .map_or(String::new(), |p| p.display().to_string()),
        ]);
    }
    let widths: Vec<usize> = (0..6)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = format!(
        "status of {} (settings: {})\n",
        ctx.layout.root.display(),
        settings
            .path
            .as_ref()
            .map_or("defaults, no file".to_string(), |p| p.display().to_string())
    );
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for w in whys {
        out.push_str(&format!("\n{w}"));
    }
    Ok(out.trim_end().to_string())
}

/// Bytes as GB with two decimals.
pub fn gib(b: u64) -> String {
    format!("{:.2} GB", b as f64 / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_are_in_run_order() {
        let names: Vec<String> = <StageName as clap::ValueEnum>::value_variants()
            .iter()
            .map(|s| s.as_str())
            .collect();
        assert_eq!(names.first().map(String::as_str), Some("split"));
        assert_eq!(names.last().map(String::as_str), Some("report"));
        assert!(StageName::Index < StageName::Reindex && StageName::Reindex < StageName::Eval);
    }
}
