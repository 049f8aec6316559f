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

mod record;
pub mod report;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::config::Settings;
use crate::context::Ctx;
use crate::etl::split::SplitSummary;
use crate::io::thousands;
use crate::layout::Split;
use crate::retrieve::RetrieverKind;
use crate::{etl, eval, index, rank, retrieve, train};

pub use record::{Freshness, Record};

/// The stages, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
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
    #[arg(long)]
    pub reindex_max_length: Option<usize>,
}
crate::cli::clap_default!(PipelineConfig);

/// The name of the fine-tuned index, candidates runs and model directory suffix.
pub const FINETUNED: &str = "finetuned";

type RunFn = Box<dyn Fn(&Ctx) -> Result<String>>;

/// One stage of a planned run.
pub struct Stage {
    pub name: StageName,
    /// Its effective settings, as compared with the record.
    pub settings: String,
    /// `--index` of the stage's context (the fine-tuned index for the stages after it).
    pub index: Option<String>,
    pub inputs: Vec<PathBuf>,
    pub outputs: Vec<PathBuf>,
    run: RunFn,
}

impl Stage {
    fn new(
        name: StageName,
        index: Option<&str>,
        settings: String,
        inputs: Vec<PathBuf>,
        outputs: Vec<PathBuf>,
        run: RunFn,
    ) -> Stage {
        Stage {
            name,
            settings,
            index: index.map(str::to_string),
            inputs,
            outputs,
            run,
        }
    }
}

/// The settings text of a stage: the globals and its configs.
/// Secrets (`api_key`, from the file or `OPENAI_API_KEY`) are left out: the record is on disk.
fn settings_text(ctx: &Ctx, index: Option<&str>, cfgs: &dyn fmt::Debug) -> String {
    let mut lines: Vec<String> = Vec::new();
    let mut skipping = false;
    for l in format!("{cfgs:#?}").lines() {
        if skipping {
            // the pretty-printed value spans lines up to its closing `),`
            skipping = l.trim() != "),";
        } else if let Some((indent, rest)) = l.split_once("api_key: Some(") {
            lines.push(format!("{indent}api_key: Some(<not recorded>),"));
            skipping = rest.is_empty();
        } else {
            lines.push(l.to_string());
        }
    }
    let cfgs = lines;
    format!(
        "category: {}\nseed: {}\nindex table: {}\n{}",
        ctx.layout.category,
        ctx.seed,
        index.unwrap_or(crate::index::TABLE),
        cfgs.join("\n")
    )
}

/// The stages of a run with these settings (nothing is read or run yet).
pub fn plan(ctx: &Ctx, pc: &PipelineConfig, s: &Settings) -> Result<Vec<Stage>> {
    let l = &ctx.layout;
    let mut stages: Vec<Stage> = Vec::new();
    let text = |index: Option<&str>, cfg: &dyn fmt::Debug| settings_text(ctx, index, cfg);
    let reviews =
        |splits: &[Split]| -> Vec<PathBuf> { splits.iter().map(|&s| l.reviews(s)).collect() };
    let keywords =
        |splits: &[Split]| -> Vec<PathBuf> { splits.iter().map(|&s| l.keywords(s)).collect() };
    let all = Split::ALL;
    let held_out = [Split::Valid, Split::Test];
    let table = |name: Option<&str>| {
        let mut t = l.clone();
        t.index = name.map(str::to_string);
        crate::index::table_dir(&l.lancedb_dir(), &t.index_table())
    };
    let candidates = |split, name: Option<&str>| -> Vec<PathBuf> {
        let c = l.candidates(split, name);
        vec![retrieve::CandidatesRecord::path(&c), c]
    };

    for key in ["split", "retriever", "name"] {
        if s.args("retrieve")
            .iter()
            .any(|a| a.to_str() == Some(&format!("--{key}")))
        {
            bail!(
                "[retrieve] {key}: the pipeline chooses the splits, retrievers and names of its \
                 runs itself (see [pipeline] baselines); remove `{key}` from the settings file"
            );
        }
    }
    // A missing raw file is the split's error to report (status still shows every stage).
    let raw_reviews = l
        .raw_reviews()
        .unwrap_or_else(|_| l.raw_dir().join(format!("{}.jsonl", l.category)));
    let cfg: etl::split::SplitConfig = s.config("split", &[])?;
    let mut outs = reviews(&all);
    outs.push(l.split_info());
    stages.push(Stage::new(
        StageName::Split,
        None,
        text(None, &cfg),
        vec![raw_reviews],
        outs,
        Box::new(move |ctx| Ok(etl::split::run(ctx, &cfg)?.to_string())),
    ));

    let cfg: etl::keywords::KeywordsConfig = s.config("keywords", &["--split", "all"])?;
    stages.push(Stage::new(
        StageName::Keywords,
        None,
        text(None, &cfg),
        reviews(&all),
        keywords(&all),
        Box::new(move |ctx| Ok(etl::keywords::run(ctx, &cfg)?.to_string())),
    ));

    let meta = l
        .raw_meta()
        .unwrap_or_else(|_| l.raw_dir().join(format!("meta_{}.jsonl", l.category)));
    let cfg: etl::summaries::SummariesConfig = s.config("summaries", &[])?;
    stages.push(Stage::new(
        StageName::Summaries,
        None,
        text(None, &cfg),
        vec![meta.clone()],
        vec![l.summaries()],
        Box::new(move |ctx| Ok(etl::summaries::run(ctx, &cfg)?.to_string())),
    ));

    let cfg: etl::build_items::BuildItemsConfig = s.config("build_items", &[])?;
    let inputs = vec![
        l.reviews(Split::Train),
        l.keywords(Split::Train),
        l.summaries(),
        meta,
    ];
    stages.push(Stage::new(
        StageName::BuildItems,
        None,
        text(None, &cfg),
        inputs,
        vec![l.items()],
        Box::new(move |ctx| Ok(etl::build_items::run(ctx, &cfg)?.to_string())),
    ));

    let cfg: etl::pairs::PairsConfig = s.config("pairs", &[])?;
    let inputs = vec![l.reviews(Split::Train), l.keywords(Split::Train), l.items()];
    stages.push(Stage::new(
        StageName::Pairs,
        None,
        text(None, &cfg),
        inputs,
        vec![l.training_pairs()],
        Box::new(move |ctx| Ok(etl::pairs::run(ctx, &cfg)?.to_string())),
    ));

    let cfg: index::IndexBuildConfig = s.config("index", &[])?;
    let inputs = vec![l.items(), cfg.encoder.model.clone()];
    stages.push(Stage::new(
        StageName::Index,
        None,
        text(None, &cfg),
        inputs,
        vec![table(None)],
        Box::new(move |ctx| Ok(index::build(ctx, &cfg)?.to_string())),
    ));

    // Stage 1 with the base model: valid (the re-ranker learns from it) and test, and baselines.
    let mut runs: Vec<retrieve::RetrieveConfig> = Vec::new();
    for split in held_out {
        runs.push(s.config(
            "retrieve",
            &["--split", split.as_str(), "--retriever", "dense"],
        )?);
    }
    for b in &pc.baselines {
        let (b, name) = (b.as_str(), b.as_str());
        runs.push(s.config(
            "retrieve",
            &["--split", "test", "--retriever", b, "--name", name],
        )?);
    }
    let mut inputs = vec![table(None), l.items(), l.reviews(Split::Train)];
    inputs.extend(reviews(&held_out));
    inputs.extend(keywords(&held_out));
    let outs = runs
        .iter()
        .flat_map(|r| candidates(r.split, r.run_name().as_deref()))
        .collect();
    stages.push(Stage::new(
        StageName::Retrieve,
        None,
        text(None, &runs),
        inputs,
        outs,
        Box::new(move |ctx| stage_retrieve(ctx, &runs)),
    ));

    let mut ranked_name: Option<&str> = None;
    if !pc.no_finetune {
        let output = s
            .config::<train::retriever::RetrieverConfig>("train_retriever", &[])?
            .output
            .unwrap_or_else(|| {
                let base: train::retriever::RetrieverConfig =
                    s.config("train_retriever", &[]).expect("parsed above");
                l.root.join("models").join(format!(
                    "{}-{FINETUNED}",
                    crate::encoder::model_name(&base.base_model)
                ))
            });
        let out_s = output.to_string_lossy().to_string();
        let cfg: train::retriever::RetrieverConfig =
            s.config("train_retriever", &["--output", &out_s])?;
        let inputs = vec![
            l.training_pairs(),
            l.items(),
            l.reviews(Split::Valid),
            l.keywords(Split::Valid),
            cfg.base_model.clone(),
        ];
        stages.push(Stage::new(
            StageName::TrainRetriever,
            None,
            text(None, &cfg),
            inputs,
            vec![output.clone()],
            Box::new(move |ctx| stage_train(ctx, &cfg)),
        ));

        let mut forced = vec!["--model".to_string(), out_s.clone()];
        if let Some(n) = pc.reindex_max_length {
            forced.extend(["--max-length".to_string(), n.to_string()]);
        }
        let forced: Vec<&str> = forced.iter().map(String::as_str).collect();
        let cfg: index::IndexBuildConfig = s.config("index", &forced)?;
        let inputs = vec![l.items(), output.clone()];
        stages.push(Stage::new(
            StageName::Reindex,
            Some(FINETUNED),
            text(Some(FINETUNED), &cfg),
            inputs,
            vec![table(Some(FINETUNED))],
            Box::new(move |ctx| Ok(index::build(ctx, &cfg)?.to_string())),
        ));

        let mut runs: Vec<retrieve::RetrieveConfig> = Vec::new();
        for split in held_out {
            runs.push(s.config(
                "retrieve",
                &[
                    "--split",
                    split.as_str(),
                    "--retriever",
                    "dense",
                    "--name",
                    FINETUNED,
                    "--model",
                    &out_s,
                ],
            )?);
        }
        let mut inputs = vec![table(Some(FINETUNED)), output.clone(), l.items()];
        inputs.extend(reviews(&held_out));
        inputs.extend(keywords(&held_out));
        let outs = held_out
            .iter()
            .flat_map(|&sp| candidates(sp, Some(FINETUNED)))
            .collect();
        stages.push(Stage::new(
            StageName::RetrieveFinetuned,
            Some(FINETUNED),
            text(Some(FINETUNED), &runs),
            inputs,
            outs,
            Box::new(move |ctx| stage_retrieve(ctx, &runs)),
        ));
        ranked_name = Some(FINETUNED);
    }
    let index_name = ranked_name;

    let mut reranked = Vec::new();
    if !pc.no_ranker {
        let file: rank::RankerConfig = s.config("train_ranker", &[])?;
        let output = file
            .output
            .clone()
            .unwrap_or_else(|| l.root.join("models").join("ranker"));
        let out_s = output.to_string_lossy().to_string();
        let mut forced = vec!["--output".to_string(), out_s.clone()];
        if let (None, Some(n)) = (&file.candidates, ranked_name) {
            forced.extend(["--candidates".to_string(), n.to_string()]);
        }
        let forced: Vec<&str> = forced.iter().map(String::as_str).collect();
        let cfg: rank::RankerConfig = s.config("train_ranker", &forced)?;
        let name = cfg.candidates.clone();
        let mut inputs = vec![table(index_name), l.items()];
        inputs.extend(candidates(Split::Valid, name.as_deref()));
        inputs.extend(candidates(Split::Valid, None));
        inputs.extend(reviews(&all));
        inputs.extend(keywords(&held_out));
        inputs.dedup();
        stages.push(Stage::new(
            StageName::TrainRanker,
            index_name,
            text(index_name, &cfg),
            inputs,
            vec![output.clone()],
            Box::new(move |ctx| Ok(rank::train(ctx, &cfg)?.to_string())),
        ));

        let cfg: rank::RerankConfig =
            s.config("rerank", &["--split", "test", "--model", &out_s])?;
        let mut inputs = vec![output, table(index_name), l.items()];
        inputs.extend(candidates(Split::Test, name.as_deref()));
        inputs.extend(candidates(Split::Test, None));
        inputs.extend(reviews(&all));
        inputs.extend(keywords(&held_out));
        inputs.dedup();
        reranked.push(l.reranked(Split::Test));
        stages.push(Stage::new(
            StageName::Rerank,
            index_name,
            text(index_name, &cfg),
            inputs,
            reranked.clone(),
            Box::new(move |ctx| Ok(rank::rerank(ctx, &cfg)?.to_string())),
        ));
    }

    let cfg: eval::EvalConfig = s.config("eval", &["--split", "test"])?;
    let mut inputs: Vec<PathBuf> = stages
        .iter()
        .flat_map(|st| st.outputs.iter())
        .filter(|p| p.parent() == Some(l.evaluation_dir().as_path()))
        .filter(|p| {
            p.file_name().is_some_and(|f| {
                f.to_string_lossy().starts_with("candidates_test")
                    || f.to_string_lossy().starts_with("reranked_test")
            })
        })
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .cloned()
        .collect();
    inputs.extend(reranked);
    inputs.sort();
    inputs.dedup();
    let outs = vec![l.metrics(Split::Test), l.recall_plot(Split::Test)];
    stages.push(Stage::new(
        StageName::Eval,
        None,
        text(None, &cfg),
        inputs,
        outs,
        Box::new(move |ctx| Ok(eval::run(ctx, &cfg)?.to_string())),
    ));

    // The report reads the other stages' records (timings) and outputs.
    let names: Vec<StageName> = stages.iter().map(|st| st.name).collect();
    let finetuned = stages
        .iter()
        .find(|st| st.name == StageName::TrainRetriever)
        .map(|st| st.outputs[0].clone());
    let mut inputs: Vec<PathBuf> = names.iter().map(|n| record::path(l, &n.as_str())).collect();
    inputs.extend([l.metrics(Split::Test), l.split_info()]);
    // (training_curve.svg is written beside it only when fine-tuning logged evaluations)
    let outs = vec![l.report()];
    let settings_file = s.path.clone();
    stages.push(Stage::new(
        StageName::Report,
        None,
        text(None, &(&names, &settings_file)),
        inputs,
        outs,
        Box::new(move |ctx| {
            report::write(ctx, &names, finetuned.as_deref(), settings_file.as_deref())
        }),
    ));
    Ok(stages)
}

fn stage_retrieve(ctx: &Ctx, runs: &[retrieve::RetrieveConfig]) -> Result<String> {
    let mut out = Vec::new();
    for r in runs {
        out.push(retrieve::run(ctx, r)?.to_string());
    }
    Ok(out.join("\n"))
}

/// Fine-tuning into the stage's output directory: continues an interrupted run of the same
/// settings from its last checkpoint, else starts afresh (removing what an earlier run left).
fn stage_train(ctx: &Ctx, cfg: &train::retriever::RetrieverConfig) -> Result<String> {
    let mut cfg = cfg.clone();
    let out = cfg.output.clone().context("the pipeline sets the output")?;
    if out.join("training_args.json").exists() {
        let same = same_training(&out, &cfg, ctx.seed).unwrap_or(false);
        let checkpoint = train::checkpoint::checkpoints(&out).is_ok_and(|c| !c.is_empty());
        if same && checkpoint {
            eprintln!(
                "[pipeline] continuing the interrupted fine-tuning in {} from its last checkpoint",
                out.display()
            );
            cfg.resume = true;
        } else {
            eprintln!(
                "[pipeline] removing {} ({}) to fine-tune afresh",
                out.display(),
                if same {
                    "a finished or unrecorded run with no checkpoint to continue from"
                } else {
                    "a run with other settings"
                }
            );
            std::fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
        }
    }
    Ok(train::retriever::run(ctx, &cfg)?.to_string())
}

/// Whether the run in `out` was started with these settings and seed.
fn same_training(out: &Path, cfg: &train::retriever::RetrieverConfig, seed: u64) -> Result<bool> {
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("training_args.json"))?)?;
    let mut now = serde_json::to_value(cfg)?;
    now["resume"] = serde_json::Value::Bool(false);
    Ok(raw["args"] == now && raw["seed"] == serde_json::json!(seed))
}

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
            record::check(
                rec.as_ref(),
                &st.settings,
                &st.inputs,
                &st.outputs,
                &rewritten,
            )
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
    let mut sctx = ctx.clone();
    sctx.layout.index = st.index.clone();
    crate::alloc::release_freed_memory();
    crate::alloc::reset_peak_rss();
    let inputs = record::signatures(&st.inputs);
    let t = Instant::now();
    // An older record must not survive a run that fails half-way.
    let rec_path = record::path(&ctx.layout, &st.name.as_str());
    let _ = std::fs::remove_file(&rec_path);
    let summary = (st.run)(&sctx).with_context(|| format!("stage {}", st.name))?;
    let seconds = t.elapsed().as_secs_f64();
    if !ctx.quiet {
        println!("{summary}");
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
        let state = record::check(
            rec.as_ref(),
            &st.settings,
            &st.inputs,
            &st.outputs,
            &rewritten,
        );
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
    fn records_keep_no_api_key() {
        let ctx = Ctx::new("d", "All_Beauty", 1, true);
        let mut cfg = crate::etl::keywords::KeywordsConfig::default();
        cfg.llm.api_key = Some("sk-secret".into());
        let text = settings_text(&ctx, None, &cfg);
        assert!(
            !text.contains("sk-secret") && text.contains("api_key: Some(<not recorded>)"),
            "{text}"
        );
        assert!(text.contains("max_keywords: 20"), "{text}");
    }

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
