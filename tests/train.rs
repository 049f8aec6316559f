//! `train retriever` and `train mine-negatives` on a small synthetic root with the tiny committed
//! BERT encoder.

mod common;

use std::path::Path;

use recsys::Ctx;
use recsys::encoder::{Encoder, EncoderArgs};
use recsys::etl::pairs::PairFormat;
use recsys::index::{self, IndexBuildConfig};
use recsys::train::negatives::{self, MineConfig};
use recsys::train::retriever::{self, RetrieverConfig};

/// The error of `--resume` on `out`.
fn resume_error(ctx: &Ctx, out: &Path) -> String {
    let cfg = RetrieverConfig {
        resume: true,
        ..common::train_cfg(out)
    };
    retriever::run(ctx, &cfg).unwrap_err().to_string()
}

fn vector(model: &Path, text: &str) -> Vec<f32> {
    let enc = Encoder::load(&EncoderArgs {
        model: model.to_path_buf(),
        ..Default::default()
    })
    .unwrap();
    enc.encode(&[text], 1, &indicatif::ProgressBar::hidden())
        .unwrap()
        .row(0)
        .to_vec()
}

#[test]
fn training_improves_valid_recall_and_saves_a_loadable_model() {
    let (dir, ctx) = common::pairs_root(PairFormat::Triplet);
    let out = dir.path().join("models/tiny-ft");
    let s = retriever::run(
        &ctx,
        &RetrieverConfig {
            max_steps: Some(40),
            eval_queries: 100,
            eval_steps: 20,
            ..common::train_cfg(&out)
        },
    )
    .unwrap();
    assert!(s.finished);
    assert_eq!((s.steps_done, s.total_steps), (40, 40));
    assert_eq!(s.eval_queries, 100);
    let (base, best) = (s.base.unwrap(), s.best.unwrap());
    assert!(
        best.recall_at_10 > base.recall_at_10 && best.mrr > base.mrr,
        "no improvement: base {base:?}, best {best:?}"
    );
    // HF / sentence-transformers layout plus the run's records; no checkpoint left behind
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
        "training_args.json",
        "metrics.jsonl",
        "trainer_state.json",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert!(
        !common::files_under(&out)
            .iter()
            .any(|f| f.contains("checkpoint")),
        "checkpoints left: {:?}",
        common::files_under(&out)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = lines.iter().map(|l| l["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 20, 40]);
    assert!(lines[1]["train_loss"].as_f64().unwrap() > 0.0);
    let best_line = lines
        .iter()
        .find(|l| l["step"].as_u64() == Some(best.step as u64))
        .unwrap();
    assert_eq!(
        best_line["valid_recall_at_10"].as_f64(),
        Some(best.recall_at_10)
    );
    let args: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("training_args.json")).unwrap())
            .unwrap();
    assert_eq!(args["args"]["batch_size"], 16);
    assert_eq!(args["base_model"]["name"], "tiny-bert");

    // the saved model loads, embeds differently from the base, and its index can be built
    let text = "gentle shampoo for curly hair";
    let (a, b) = (vector(&common::tiny_bert(), text), vector(&out, text));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-3));
    index::build(
        &ctx,
        &IndexBuildConfig {
            encoder: EncoderArgs {
                model: out.clone(),
                ..Default::default()
            },
            max_items: None,
        },
    )
    .unwrap();

    // a second run into the same directory is refused unless it resumes
    let err = retriever::run(&ctx, &common::train_cfg(&out))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--resume"), "{err}");
    let err = resume_error(&ctx, &out);
    assert!(err.contains("has finished"), "{err}");
}

/// A run stopped at step 8 (checkpoint at step 5) and resumed ends with exactly the weights of a
/// run that was never interrupted.
#[test]
fn killed_run_resumes_to_the_same_weights() {
    let (dir, ctx) = common::pairs_root(PairFormat::Pair);
    let base = RetrieverConfig {
        max_steps: Some(12),
        save_steps: 5,
        ..common::train_cfg(Path::new("unused"))
    };
    let whole = dir.path().join("whole");
    let s = retriever::run(
        &ctx,
        &RetrieverConfig {
            output: Some(whole.clone()),
            ..base.clone()
        },
    )
    .unwrap();
    assert_eq!(s.steps_done, 12);

    let cut = dir.path().join("cut");
    let s = retriever::run(
        &ctx,
        &RetrieverConfig {
            output: Some(cut.clone()),
            halt_after: Some(8),
            ..base.clone()
        },
    )
    .unwrap();
    assert!(!s.finished);
    assert_eq!(s.steps_done, 8);
    assert!(cut.join("checkpoint-5/optimizer.safetensors").is_file());
    assert!(
        !cut.join("model.safetensors").exists(),
        "no model before the end"
    );

    // --resume ignores the other flags and the seed (the run's own training_args.json holds
    // them): resumed under another --seed, the batches are still the run's own
    let other_seed = Ctx::new(dir.path(), "All_Beauty", ctx.seed + 1, true);
    let s = retriever::run(
        &other_seed,
        &RetrieverConfig {
            output: Some(cut.clone()),
            resume: true,
            lr: 0.5,
            ..base.clone()
        },
    )
    .unwrap();
    assert!(s.finished);
    assert_eq!(s.resumed_from, Some(5));
    assert_eq!(s.steps_done, 12);
    assert_eq!(
        common::model_weights(&whole),
        common::model_weights(&cut),
        "resumed weights differ"
    );
    assert!(!cut.join("checkpoint-5").exists());
    vector(&cut, "loads");
}

#[test]
fn resume_without_a_checkpoint_is_explained() {
    let (dir, ctx) = common::pairs_root(PairFormat::Pair);
    let out = dir.path().join("early");
    retriever::run(
        &ctx,
        &RetrieverConfig {
            max_steps: Some(10),
            save_steps: 5,
            halt_after: Some(3),
            ..common::train_cfg(&out)
        },
    )
    .unwrap();
    let err = resume_error(&ctx, &out);
    assert!(err.contains("no checkpoint"), "{err}");
    // resuming against another data root is refused before anything is read
    let elsewhere = tempfile::tempdir().unwrap();
    let other = Ctx::new(elsewhere.path(), "All_Beauty", ctx.seed, true);
    let err = resume_error(&other, &out);
    assert!(err.contains("--data-dir"), "{err}");
}

#[test]
fn missing_pairs_file_is_explained() {
    let (dir, ctx) = common::synth_root(300, 30);
    let err = retriever::run(&ctx, &common::train_cfg(&dir.path().join("m")))
        .unwrap_err()
        .to_string();
    assert!(err.contains("training_pairs.parquet"), "{err}");
    assert!(err.contains("train pairs"), "{err}");
}

#[test]
fn mined_negatives_come_from_the_window_and_train() {
    let (dir, ctx) = common::pairs_root(PairFormat::Pair);
    index::build(
        &ctx,
        &IndexBuildConfig {
            encoder: EncoderArgs {
                model: common::tiny_bert(),
                max_length: Some(48),
                ..Default::default()
            },
            max_items: None,
        },
    )
    .unwrap();
    let s = negatives::run(
        &ctx,
        &MineConfig {
            max_rows: Some(300),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(s.rows, 300);
    assert_eq!(
        s.mined, 300,
        "150 items: every window 10–100 has another item"
    );
    let df = recsys::io::read_parquet(&ctx.layout.training_pairs_mined()).unwrap();
    let items = recsys::io::read_parquet(&ctx.layout.items()).unwrap();
    let text_of: std::collections::HashMap<String, String> = items
        .column("parent_asin")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .zip(
            items
                .column("embedding_text")
                .unwrap()
                .str()
                .unwrap()
                .iter(),
        )
        .map(|(a, t)| (a.unwrap().to_string(), t.unwrap().to_string()))
        .collect();
    let col = |n: &str| df.column(n).unwrap().clone();
    let (pos, neg, neg_text, rank) = (
        col("parent_asin"),
        col("negative_parent_asin"),
        col("negative"),
        col("negative_rank"),
    );
    for i in 0..df.height() {
        let p = pos.str().unwrap().get(i).unwrap();
        let n = neg.str().unwrap().get(i).unwrap();
        let r = rank.u32().unwrap().get(i).unwrap();
        assert_ne!(p, n, "row {i}: the negative is the positive");
        assert!((10..=100).contains(&r), "row {i}: rank {r}");
        assert_eq!(neg_text.str().unwrap().get(i).unwrap(), text_of[n]);
    }
    // the same seed mines the same negatives
    negatives::run(
        &ctx,
        &MineConfig {
            max_rows: Some(300),
            output: Some(dir.path().join("again.parquet")),
            ..Default::default()
        },
    )
    .unwrap();
    let again = recsys::io::read_parquet(&dir.path().join("again.parquet")).unwrap();
    assert!(again.equals_missing(&df));

    // training reads the mined triplets
    let s = retriever::run(
        &ctx,
        &RetrieverConfig {
            pairs: Some(ctx.layout.training_pairs_mined()),
            max_steps: Some(3),
            ..common::train_cfg(&dir.path().join("hard"))
        },
    )
    .unwrap();
    assert_eq!(s.rows, 300);
    assert!(s.finished);
}
