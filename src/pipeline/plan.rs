//! The stages of a run: what each reads, writes and runs, with its settings as the record
//! compares them.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::{PipelineConfig, StageName, record, report};
use crate::config::Settings;
use crate::context::Ctx;
use crate::layout::Split;
use crate::{etl, eval, index, rank, retrieve, train};

/// The name of the fine-tuned index, candidates runs and model directory suffix.
pub const FINETUNED: &str = "finetuned";

type RunFn = Box<dyn Fn(&Ctx) -> Result<String>>;

/// One stage of a planned run.
pub struct Stage {
    pub name: StageName,
    /// The `CODE_VERSION` of the module it runs: a record made with another is stale.
    pub code_version: u32,
    /// Its effective settings, as compared with the record.
    pub settings: String,
    /// `--index` of the stage's context (the fine-tuned index for the stages after it).
    pub index: Option<String>,
    pub inputs: Vec<PathBuf>,
    pub outputs: Vec<PathBuf>,
    pub(super) run: RunFn,
}

impl Stage {
    /// A stage that runs `run(ctx, &cfg)`; `cfg` is its settings.
    #[allow(clippy::too_many_arguments)]
    fn of<C: fmt::Debug + 'static, S: fmt::Display>(
        ctx: &Ctx,
        name: StageName,
        code_version: u32,
        index: Option<&str>,
        cfg: C,
        inputs: Vec<PathBuf>,
        outputs: Vec<PathBuf>,
        run: impl Fn(&Ctx, &C) -> Result<S> + 'static,
    ) -> Stage {
        Stage {
            name,
            code_version,
            settings: settings_text(ctx, index, &cfg),
            index: index.map(str::to_string),
            inputs,
            outputs,
            run: Box::new(move |c| Ok(run(c, &cfg)?.to_string())),
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
    stages.push(Stage::of(
        ctx,
        StageName::Split,
        etl::split::CODE_VERSION,
        None,
        cfg,
        vec![raw_reviews],
        outs,
        etl::split::run,
    ));

    let cfg: etl::keywords::KeywordsConfig = s.config("keywords", &["--split", "all"])?;
    stages.push(Stage::of(
        ctx,
        StageName::Keywords,
        etl::keywords::CODE_VERSION,
        None,
        cfg,
        reviews(&all),
        keywords(&all),
        etl::keywords::run,
    ));

    let meta = l
        .raw_meta()
        .unwrap_or_else(|_| l.raw_dir().join(format!("meta_{}.jsonl", l.category)));
    let cfg: etl::summaries::SummariesConfig = s.config("summaries", &[])?;
    stages.push(Stage::of(
        ctx,
        StageName::Summaries,
        etl::summaries::CODE_VERSION,
        None,
        cfg,
        vec![meta.clone()],
        vec![l.summaries()],
        etl::summaries::run,
    ));

    let cfg: etl::build_items::BuildItemsConfig = s.config("build_items", &[])?;
    let inputs = vec![
        l.reviews(Split::Train),
        l.keywords(Split::Train),
        l.summaries(),
        meta,
    ];
    stages.push(Stage::of(
        ctx,
        StageName::BuildItems,
        etl::build_items::CODE_VERSION,
        None,
        cfg,
        inputs,
        vec![l.items()],
        etl::build_items::run,
    ));

    let cfg: etl::pairs::PairsConfig = s.config("pairs", &[])?;
    let inputs = vec![l.reviews(Split::Train), l.keywords(Split::Train), l.items()];
    stages.push(Stage::of(
        ctx,
        StageName::Pairs,
        etl::pairs::CODE_VERSION,
        None,
        cfg,
        inputs,
        vec![l.training_pairs()],
        etl::pairs::run,
    ));

    let cfg: index::IndexBuildConfig = s.config("index", &[])?;
    let inputs = vec![l.items(), cfg.encoder.model.clone()];
    stages.push(Stage::of(
        ctx,
        StageName::Index,
        index::CODE_VERSION,
        None,
        cfg,
        inputs,
        vec![table(None)],
        index::build,
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
    stages.push(Stage::of(
        ctx,
        StageName::Retrieve,
        retrieve::CODE_VERSION,
        None,
        runs,
        inputs,
        outs,
        |c, runs: &Vec<_>| stage_retrieve(c, runs),
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
        stages.push(Stage::of(
            ctx,
            StageName::TrainRetriever,
            train::retriever::CODE_VERSION,
            None,
            cfg,
            inputs,
            vec![output.clone()],
            stage_train,
        ));

        let mut forced = vec!["--model".to_string(), out_s.clone()];
        if let Some(n) = pc.reindex_max_length {
            forced.extend(["--max-length".to_string(), n.to_string()]);
        }
        let forced: Vec<&str> = forced.iter().map(String::as_str).collect();
        let cfg: index::IndexBuildConfig = s.config("index", &forced)?;
        let inputs = vec![l.items(), output.clone()];
        stages.push(Stage::of(
            ctx,
            StageName::Reindex,
            index::CODE_VERSION,
            Some(FINETUNED),
            cfg,
            inputs,
            vec![table(Some(FINETUNED))],
            index::build,
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
        stages.push(Stage::of(
            ctx,
            StageName::RetrieveFinetuned,
            retrieve::CODE_VERSION,
            Some(FINETUNED),
            runs,
            inputs,
            outs,
            |c, runs: &Vec<_>| stage_retrieve(c, runs),
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
        stages.push(Stage::of(
            ctx,
            StageName::TrainRanker,
            rank::TRAIN_CODE_VERSION,
            index_name,
            cfg,
            inputs,
            vec![output.clone()],
            rank::train,
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
        stages.push(Stage::of(
            ctx,
            StageName::Rerank,
            rank::RERANK_CODE_VERSION,
            index_name,
            cfg,
            inputs,
            reranked.clone(),
            rank::rerank,
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
    stages.push(Stage::of(
        ctx,
        StageName::Eval,
        eval::CODE_VERSION,
        None,
        cfg,
        inputs,
        outs,
        eval::run,
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
    stages.push(Stage::of(
        ctx,
        StageName::Report,
        report::CODE_VERSION,
        None,
        (names, finetuned, settings_file),
        inputs,
        outs,
        |c, (names, finetuned, file)| {
            report::write(c, names, finetuned.as_deref(), file.as_deref())
        },
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
    let args = out.join("training_args.json");
    if args.exists() {
        // An unreadable record of the run there says nothing about it: stop, delete nothing.
        let same = same_training(&out, &cfg, ctx.seed).with_context(|| {
            format!(
                "{}: unreadable, so whether {} holds this fine-tuning run is unknown; nothing was \
                 deleted: repair the file, or remove {} to fine-tune afresh",
                args.display(),
                out.display(),
                out.display()
            )
        })?;
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
    let (Some(args), Some(was_seed)) = (raw.get("args"), raw.get("seed")) else {
        bail!("no `args` and `seed` in it");
    };
    let mut now = serde_json::to_value(cfg)?;
    now["resume"] = serde_json::Value::Bool(false);
    Ok(*args == now && *was_seed == serde_json::json!(seed))
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
}
