//! The stages of a run: what each reads, writes and runs, with its settings as the record
//! compares them.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use anyhow::{Result, bail};

use super::finetune::stage_train;
use super::{Freshness, PipelineConfig, StageName, record, report};
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
    /// Its config, as its serde form (secrets skipped by type).
    config: serde_json::Value,
    /// Its effective settings (the globals and its config), as compared with the record.
    pub settings: String,
    /// `--index` of the stage's context (the fine-tuned index for the stages after it).
    pub index: Option<String>,
    pub inputs: Vec<PathBuf>,
    pub outputs: Vec<PathBuf>,
    pub(super) run: RunFn,
}

impl Stage {
    /// Whether this stage is up to date against its record; `rewritten`: the outputs earlier
    /// stages of this run write.
    pub fn check(&self, rec: Option<&record::Record>, rewritten: &HashSet<PathBuf>) -> Freshness {
        record::check(
            rec,
            self.code_version,
            &self.settings,
            &self.inputs,
            &self.outputs,
            rewritten,
        )
    }

    /// A stage that runs `run(ctx, &cfg)`; `cfg` is its settings. It reads and writes nothing
    /// until [`reads`](Self::reads) and [`writes`](Self::writes) say what.
    fn of<C: serde::Serialize + 'static, S: fmt::Display>(
        name: StageName,
        code_version: u32,
        cfg: C,
        run: impl Fn(&Ctx, &C) -> Result<S> + 'static,
    ) -> Result<Stage> {
        Ok(Stage {
            name,
            code_version,
            config: serde_json::to_value(&cfg)?,
            settings: String::new(),
            index: None,
            inputs: Vec::new(),
            outputs: Vec::new(),
            run: Box::new(move |c| Ok(run(c, &cfg)?.to_string())),
        })
    }

    /// The stage runs on this index (its `--index`).
    fn on(mut self, index: Option<&str>) -> Stage {
        self.index = index.map(str::to_string);
        self
    }

    /// The files (and directories) the stage reads: a change to one makes it stale.
    fn reads(mut self, inputs: Vec<PathBuf>) -> Stage {
        self.inputs = inputs;
        self
    }

    /// What the stage writes: a change to one makes it stale, and the stages reading it.
    fn writes(mut self, outputs: Vec<PathBuf>) -> Stage {
        self.outputs = outputs;
        self
    }
}

/// The settings of a stage as the record compares them: the globals and its configs, as
/// pretty-printed JSON (one setting per line, so a change shows as the first line that differs).
/// Secrets are left out by their type (`#[serde(skip_serializing)]` on `api_key`): the record is
/// on disk.
fn settings_text(ctx: &Ctx, index: Option<&str>, cfg: &impl serde::Serialize) -> Result<String> {
    let v = serde_json::json!({
        "category": ctx.layout.category,
        "seed": ctx.seed,
        "index_table": index.unwrap_or(crate::layout::TABLE),
        "config": cfg,
    });
    Ok(serde_json::to_string_pretty(&v)?)
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
    stages.push(
        Stage::of(
            StageName::Split,
            etl::split::CODE_VERSION,
            cfg,
            etl::split::run,
        )?
        .reads(vec![raw_reviews])
        .writes(outs),
    );

    let cfg: etl::keywords::KeywordsConfig = s.config("keywords", &["--split", "all"])?;
    stages.push(
        Stage::of(
            StageName::Keywords,
            etl::keywords::CODE_VERSION,
            cfg,
            etl::keywords::run,
        )?
        .reads(reviews(&all))
        .writes(keywords(&all)),
    );

    let meta = l
        .raw_meta()
        .unwrap_or_else(|_| l.raw_dir().join(format!("meta_{}.jsonl", l.category)));
    let cfg: etl::summaries::SummariesConfig = s.config("summaries", &[])?;
    stages.push(
        Stage::of(
            StageName::Summaries,
            etl::summaries::CODE_VERSION,
            cfg,
            etl::summaries::run,
        )?
        .reads(vec![meta.clone()])
        .writes(vec![l.summaries()]),
    );

    let cfg: etl::build_items::BuildItemsConfig = s.config("build_items", &[])?;
    let up = build_items_upstream(s)?;
    let inputs = vec![
        l.reviews(Split::Train),
        l.keywords(Split::Train),
        l.summaries(),
        meta,
    ];
    stages.push(
        Stage::of(
            StageName::BuildItems,
            etl::build_items::CODE_VERSION,
            cfg,
            move |c, cfg| etl::build_items::run_with(c, cfg, &up),
        )?
        .reads(inputs)
        .writes(vec![l.items()]),
    );

    let cfg: etl::pairs::PairsConfig = s.config("pairs", &[])?;
    let inputs = vec![l.reviews(Split::Train), l.keywords(Split::Train), l.items()];
    stages.push(
        Stage::of(
            StageName::Pairs,
            etl::pairs::CODE_VERSION,
            cfg,
            etl::pairs::run,
        )?
        .reads(inputs)
        .writes(vec![l.training_pairs()]),
    );

    let cfg: index::IndexBuildConfig = s.config("index", &[])?;
    let inputs = vec![l.items(), cfg.encoder.model.clone()];
    stages.push(
        Stage::of(StageName::Index, index::CODE_VERSION, cfg, index::build)?
            .reads(inputs)
            .writes(vec![table(None)]),
    );

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
    stages.push(
        Stage::of(
            StageName::Retrieve,
            retrieve::CODE_VERSION,
            runs,
            |c, runs: &Vec<_>| stage_retrieve(c, runs),
        )?
        .reads(inputs)
        .writes(outs),
    );

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
        stages.push(
            Stage::of(
                StageName::TrainRetriever,
                train::retriever::CODE_VERSION,
                cfg,
                stage_train,
            )?
            .reads(inputs)
            .writes(vec![output.clone()]),
        );

        let mut forced = vec!["--model".to_string(), out_s.clone()];
        if let Some(n) = pc.reindex_max_length {
            forced.extend(["--max-length".to_string(), n.to_string()]);
        }
        let forced: Vec<&str> = forced.iter().map(String::as_str).collect();
        let cfg: index::IndexBuildConfig = s.config("index", &forced)?;
        let inputs = vec![l.items(), output.clone()];
        stages.push(
            Stage::of(StageName::Reindex, index::CODE_VERSION, cfg, index::build)?
                .on(Some(FINETUNED))
                .reads(inputs)
                .writes(vec![table(Some(FINETUNED))]),
        );

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
        stages.push(
            Stage::of(
                StageName::RetrieveFinetuned,
                retrieve::CODE_VERSION,
                runs,
                |c, runs: &Vec<_>| stage_retrieve(c, runs),
            )?
            .on(Some(FINETUNED))
            .reads(inputs)
            .writes(outs),
        );
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
        stages.push(
            Stage::of(
                StageName::TrainRanker,
                rank::TRAIN_CODE_VERSION,
                cfg,
                rank::train,
            )?
            .on(index_name)
            .reads(inputs)
            .writes(vec![output.clone()]),
        );

        let cfg: rank::RerankConfig =
            s.config("rerank", &["--split", "test", "--model", &out_s])?;
        let mut inputs = vec![output, table(index_name), l.items()];
        inputs.extend(candidates(Split::Test, name.as_deref()));
        inputs.extend(candidates(Split::Test, None));
        inputs.extend(reviews(&all));
        inputs.extend(keywords(&held_out));
        inputs.dedup();
        reranked.push(l.reranked(Split::Test));
        stages.push(
            Stage::of(
                StageName::Rerank,
                rank::RERANK_CODE_VERSION,
                cfg,
                rank::rerank,
            )?
            .on(index_name)
            .reads(inputs)
            .writes(reranked.clone()),
        );
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
    stages.push(
        Stage::of(StageName::Eval, eval::CODE_VERSION, cfg, eval::run)?
            .reads(inputs)
            .writes(outs),
    );

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
    stages.push(
        Stage::of(
            StageName::Report,
            report::CODE_VERSION,
            (names, finetuned, settings_file),
            |c, (names, finetuned, file)| {
                report::write(c, names, finetuned.as_deref(), file.as_deref())
            },
        )?
        .reads(inputs)
        .writes(outs),
    );
    for st in &mut stages {
        st.settings = settings_text(ctx, st.index.as_deref(), &st.config)?;
    }
    Ok(stages)
}

/// The settings `etl build-items` makes its missing prerequisites with: the settings file's, as
/// the pipeline's own stages use them (from the pipeline and from `recsys etl build-items` alone).
pub fn build_items_upstream(s: &Settings) -> Result<etl::build_items::Upstream> {
    Ok(etl::build_items::Upstream {
        split: s.config("split", &[])?,
        keywords: s.config("keywords", &[])?,
        summaries: s.config("summaries", &[])?,
    })
}

fn stage_retrieve(ctx: &Ctx, runs: &[retrieve::RetrieveConfig]) -> Result<String> {
    let mut out = Vec::new();
    for r in runs {
        out.push(retrieve::run(ctx, r)?.to_string());
    }
    Ok(out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_no_api_key() {
        let ctx = Ctx::new("d", "All_Beauty", 1, true);
        let mut cfg = crate::etl::keywords::KeywordsConfig::default();
        cfg.llm.api_key = Some("sk-secret".into());
        let text = settings_text(&ctx, None, &cfg).unwrap();
        assert!(
            !text.contains("sk-secret") && !text.contains("api_key"),
            "{text}"
        );
        assert!(text.contains("\"max_keywords\": 20"), "{text}");
    }
}
