//! `recsys pipeline` on a small synthetic root with the tiny committed BERT: a second run runs
//! nothing, a changed setting re-runs exactly the stages downstream of it, and a run killed with
//! SIGKILL in the ETL, index and training stages ends, when run again, with the same outputs as an
//! uninterrupted run.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use recsys::Ctx;
use recsys::config::Settings;
use recsys::pipeline::{self, PipelineConfig, StageName};

/// A settings file for a quick run: tiny model, short training with checkpoints, few rounds.
fn settings_text(top_k: usize, train_steps: usize) -> String {
    let tiny = common::fixture("encoder").join("tiny-bert");
    let tiny = tiny.display();
    format!(
        r#"# a quick pipeline for tests
[pipeline]
baselines = ["popularity"]

[split]
quantiles = [0.8, 0.9]

[index]
model = "{tiny}"
max_length = 48
batch_size = 16

[retrieve]
top_k = {top_k}

[train_retriever]
base_model = "{tiny}"
max_steps = {train_steps}
batch_size = 16
lr = 0.001
max_query_len = 48
max_doc_len = 48
eval_queries = 60
eval_steps = 10
save_steps = 5

[train_ranker]
num_rounds = 20
"#
    )
}

fn write_settings(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("recsys.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// `recsys pipeline` with the file's `[pipeline]` section and these run flags (the binary gets the
/// same merge from its command line).
fn run(ctx: &Ctx, settings: &Path, flags: PipelineConfig) -> Vec<StageName> {
    let s = Settings::read(settings).unwrap();
    let pc = PipelineConfig {
        from: flags.from,
        to: flags.to,
        force: flags.force,
        dry_run: flags.dry_run,
        ..s.config("pipeline", &[]).unwrap()
    };
    pipeline::run(ctx, &pc, &s).unwrap().ran()
}

#[test]
fn second_run_runs_nothing_and_a_change_reruns_exactly_what_depends_on_it() {
    let (dir, ctx) = common::synth_raw(1_500, 150);
    let file = write_settings(dir.path(), &settings_text(20, 10));
    let all = run(&ctx, &file, PipelineConfig::default());
    assert_eq!(all.len(), 14, "{all:?}");
    let report = std::fs::read_to_string(ctx.layout.report()).unwrap();
    for part in [
        "## Data",
        "## Stage 1",
        "## Stage 2",
        "## Fine-tuning",
        "## Stages: time and memory",
        "over",
    ] {
        assert!(report.contains(part), "report lacks {part}:\n{report}");
    }
    assert!(ctx.layout.training_curve().is_file());

    let t = Instant::now();
    assert_eq!(run(&ctx, &file, PipelineConfig::default()), vec![]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    let s = Settings::read(&file).unwrap();
    let status = pipeline::status(&ctx, &s.config("pipeline", &[]).unwrap(), &s).unwrap();
    assert_eq!(status.matches("up to date").count(), 14, "{status}");

    // retrieve.top_k: both stage-1 runs and everything reading their candidates; not the
    // index, not fine-tuning.
    write_settings(dir.path(), &settings_text(15, 10));
    let dry = PipelineConfig {
        dry_run: true,
        ..Default::default()
    };
    let expected = vec![
        StageName::Retrieve,
        StageName::RetrieveFinetuned,
        StageName::TrainRanker,
        StageName::Rerank,
        StageName::Eval,
        StageName::Report,
    ];
    assert_eq!(run(&ctx, &file, dry.clone()), expected);
    // a dry run changed nothing
    assert_eq!(run(&ctx, &file, dry.clone()), expected);
    assert_eq!(run(&ctx, &file, PipelineConfig::default()), expected);
    assert_eq!(run(&ctx, &file, PipelineConfig::default()), vec![]);

    // --force a stage: it and what reads its outputs.
    let forced = PipelineConfig {
        force: vec![StageName::Eval],
        dry_run: true,
        ..Default::default()
    };
    assert_eq!(
        run(&ctx, &file, forced),
        vec![StageName::Eval, StageName::Report]
    );

    // A record made by the stage's older code (another CODE_VERSION) or by another recsys:
    // that stage and what reads its outputs run again, and `recsys status` says why.
    let rec_path = ctx.layout.pipeline_dir().join("pairs.json");
    let original = std::fs::read_to_string(&rec_path).unwrap();
    let mut rec: serde_json::Value = serde_json::from_str(&original).unwrap();
    let code = rec["code_version"].as_u64().unwrap();
    rec["code_version"] = (code + 1).into();
    std::fs::write(&rec_path, rec.to_string()).unwrap();
    let readers_of_pairs = vec![
        StageName::Pairs,
        StageName::TrainRetriever,
        StageName::Reindex,
        StageName::RetrieveFinetuned,
        StageName::TrainRanker,
        StageName::Rerank,
        StageName::Eval,
        StageName::Report,
    ];
    assert_eq!(run(&ctx, &file, dry.clone()), readers_of_pairs);
    let status_text = || {
        let s = Settings::read(&file).unwrap();
        pipeline::status(&ctx, &s.config("pipeline", &[]).unwrap(), &s).unwrap()
    };
    let why = format!(
        "pairs: the stage's code changed since (version {} → {code})",
        code + 1
    );
    assert!(status_text().contains(&why), "{}", status_text());
    rec["code_version"] = code.into();
    rec["recsys_version"] = "0.0.1".into();
    std::fs::write(&rec_path, rec.to_string()).unwrap();
    assert_eq!(run(&ctx, &file, dry.clone()), readers_of_pairs);
    let why = format!(
        "pairs: made by recsys 0.0.1, this is recsys {}",
        env!("CARGO_PKG_VERSION")
    );
    assert!(status_text().contains(&why), "{}", status_text());
    // The original record back: only the report, which reads the records, sees a new file.
    std::fs::write(&rec_path, &original).unwrap();
    assert_eq!(run(&ctx, &file, dry.clone()), vec![StageName::Report]);

    // An input rewritten (the raw metadata, same content, new time) re-runs what reads it and
    // what follows, not what came before.
    std::thread::sleep(Duration::from_millis(20));
    let meta = ctx.layout.raw_meta().unwrap();
    std::fs::write(&meta, std::fs::read(&meta).unwrap()).unwrap();
    let ran = run(&ctx, &file, dry.clone());
    assert_eq!(
        ran[..2],
        [StageName::Summaries, StageName::BuildItems],
        "{ran:?}"
    );
    assert!(
        ran.contains(&StageName::Index) && !ran.contains(&StageName::Keywords),
        "{ran:?}"
    );
    // An output changed by hand is made again by its stage.
    let mut items = recsys::io::read_parquet(&ctx.layout.items()).unwrap();
    recsys::io::write_parquet(&mut items, &ctx.layout.items()).unwrap();
    let ran = run(&ctx, &file, dry);
    assert_eq!(ran[0], StageName::Summaries, "{ran:?}");
    drop(dir);
}

#[test]
fn a_bad_settings_file_is_refused_before_anything_runs() {
    let (dir, ctx) = common::synth_raw(300, 30);
    let file = write_settings(
        dir.path(),
        "[retrieve]\ntop_k = 10\n\n[train_ranker]\nmax_depth = \"deep\"\n",
    );
    let e = Settings::read(&file).unwrap_err().to_string();
    assert!(
        e.contains("line 5") && e.contains("train_ranker.max_depth"),
        "{e}"
    );
    // seconds instead of milliseconds leave valid and test empty: the pipeline stops there.
    let raw = ctx.layout.raw_reviews().unwrap();
    let text = std::fs::read_to_string(&raw).unwrap();
    let secs: Vec<String> = text
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["timestamp"] = (v["timestamp"].as_i64().unwrap() / 1000).into();
            v.to_string()
        })
        .collect();
    std::fs::write(&raw, secs.join("\n")).unwrap();
    let file = write_settings(dir.path(), "");
    let s = Settings::read(&file).unwrap();
    let e = pipeline::run(&ctx, &PipelineConfig::default(), &s).unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("left valid and test empty"), "{e}");
}

#[test]
fn an_unreadable_training_record_stops_the_run_and_deletes_nothing() {
    let (dir, ctx) = common::synth_raw(600, 60);
    let file = write_settings(dir.path(), &settings_text(10, 5));
    // What an earlier fine-tuning run left, with its training_args.json damaged.
    let out = ctx.layout.root.join("models").join("tiny-bert-finetuned");
    std::fs::create_dir_all(out.join("checkpoint-5")).unwrap();
    std::fs::write(out.join("training_args.json"), "{\"args\": {\"lr\": ").unwrap();
    std::fs::write(out.join("checkpoint-5/model.safetensors"), "weights").unwrap();
    let s = Settings::read(&file).unwrap();
    let e = pipeline::run(&ctx, &s.config("pipeline", &[]).unwrap(), &s).unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains(&format!(
            "{}: unreadable",
            out.join("training_args.json").display()
        )) && e.contains("nothing was deleted"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("checkpoint-5/model.safetensors")).unwrap(),
        "weights"
    );
    assert!(out.join("training_args.json").is_file());
}

/// Runs the binary's pipeline; with `kill_when`, SIGKILLs it once the predicate holds for a line
/// of its stderr (checked again every 20 ms). Returns its stderr and whether it was killed.
fn pipeline_bin(
    root: &Path,
    settings: &Path,
    kill_when: Option<&dyn Fn(&str) -> bool>,
) -> (String, bool) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_recsys"))
        .args([
            "--data-dir",
            &root.display().to_string(),
            "--seed",
            "5",
            "--quiet",
            "--config",
        ])
        .arg(settings)
        .arg("pipeline")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = String::new();
    let mut armed = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(line) => {
                if kill_when.is_some_and(|k| k(&line)) {
                    armed = true;
                }
                log.push_str(&line);
                log.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if armed || kill_when.is_some_and(|k| k("")) {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return (log, true);
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "pipeline failed:\n{log}");
    (log, false)
}

fn frame(p: &Path) -> polars::prelude::DataFrame {
    recsys::io::read_parquet(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn killed_in_etl_index_and_training_it_ends_as_an_uninterrupted_run() {
    let (ref_dir, reference) = common::synth_raw(1_500, 150);
    let text = settings_text(20, 40);
    let ref_file = write_settings(ref_dir.path(), &text);
    let (_, killed) = pipeline_bin(reference.layout.root.as_path(), &ref_file, None);
    assert!(!killed);

    let (dir, ctx) = common::synth_raw(1_500, 150);
    let file = write_settings(dir.path(), &text);
    let root = ctx.layout.root.clone();
    let record = |stage: &str| root.join("pipeline").join(format!("{stage}.json"));
    let ckpt_dir = root.join("models").join("tiny-bert-finetuned");
    let has_checkpoint = move || {
        std::fs::read_dir(&ckpt_dir).is_ok_and(|rd| {
            rd.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("checkpoint-"))
        })
    };
    let stage_started =
        |stage: &'static str| move |l: &str| l.contains(&format!("] {stage}: running"));
    let (_, k1) = pipeline_bin(&root, &file, Some(&stage_started("keywords")));
    let (_, k2) = pipeline_bin(&root, &file, Some(&stage_started("index")));
    assert!(k1 && k2);
    assert!(
        !record("index").exists(),
        "the index stage was not interrupted"
    );
    let (_, k3) = pipeline_bin(&root, &file, Some(&|_: &str| has_checkpoint()));
    assert!(k3);
    assert!(
        !record("train-retriever").exists(),
        "training was not interrupted"
    );
    // The run that finishes has a second `recsys pipeline` started beside it: refused at once,
    // touching nothing (the outputs below still equal the lone reference run's).
    let second = std::cell::RefCell::new(None);
    let start_second = |l: &str| {
        if l.contains(": running") && second.borrow().is_none() {
            let t0 = Instant::now();
            let out = Command::new(env!("CARGO_BIN_EXE_recsys"))
                .args(["--data-dir", &root.display().to_string(), "--config"])
                .arg(&file)
                .arg("pipeline")
                .output()
                .unwrap();
            *second.borrow_mut() = Some((out, t0.elapsed()));
        }
        false
    };
    let (log, killed) = pipeline_bin(&root, &file, Some(&start_second));
    assert!(!killed);
    assert!(
        log.contains("continuing the interrupted fine-tuning"),
        "{log}"
    );
    let (out, took) = second.into_inner().expect("no stage ran in the final run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the second pipeline ran: {err}");
    assert!(took < Duration::from_secs(1), "refused after {took:?}");
    assert!(
        err.contains(&format!(
            "data root {} is in use by recsys pid ",
            root.display()
        )) && err.contains("(stage pipeline"),
        "{err}"
    );
    assert!(!log.contains("] split: running"), "{log}");

    let l = &ctx.layout;
    let r = &reference.layout;
    let mut files = vec![
        l.items(),
        l.training_pairs(),
        l.reranked(recsys::Split::Test),
    ];
    for s in recsys::Split::ALL {
        files.push(l.reviews(s));
        files.push(l.keywords(s));
    }
    for s in [recsys::Split::Valid, recsys::Split::Test] {
        files.push(l.candidates(s, None));
        files.push(l.candidates(s, Some("finetuned")));
    }
    for f in files {
        let rel = f.strip_prefix(&l.root).unwrap();
        assert!(
            frame(&f).equals_missing(&frame(&r.root.join(rel))),
            "{} differs",
            rel.display()
        );
    }
    let weights = |root: &Path| {
        std::fs::read(root.join("models/tiny-bert-finetuned/model.safetensors")).unwrap()
    };
    assert!(
        weights(&l.root) == weights(&r.root),
        "fine-tuned weights differ"
    );
    // And a further run has nothing to do.
    let (log, _) = pipeline_bin(&root, &file, None);
    assert!(!log.contains(": running"), "{log}");
}

/// Without fine-tuning and ranker (and so without a training curve) a finished run is also final.
#[test]
fn a_run_without_the_optional_stages_is_up_to_date_after_it() {
    let (dir, ctx) = common::synth_raw(600, 60);
    let text = settings_text(10, 2).replace(
        "[pipeline]\n",
        "[pipeline]\nno_finetune = true\nno_ranker = true\n",
    );
    let file = write_settings(dir.path(), &text);
    let ran = run(&ctx, &file, PipelineConfig::default());
    assert!(!ran.contains(&StageName::TrainRetriever) && !ran.contains(&StageName::Rerank));
    assert_eq!(ran.last(), Some(&StageName::Report));
    assert!(!ctx.layout.training_curve().exists());
    assert_eq!(run(&ctx, &file, PipelineConfig::default()), vec![]);
}
