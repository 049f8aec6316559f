//! Encoder parity with the Python reference (fixtures made by
//! tests/fixtures/encoder/make_fixtures.py) and the every-parameter-gets-a-gradient check.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{D, Tensor};
use recsys::encoder::{Encoder, EncoderArgs, Pooling};
use serde_json::Value;

const TOL: f32 = 1e-4;

fn enc_fixture(name: &str) -> PathBuf {
    common::fixture("encoder").join(name)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn texts(v: &Value) -> Vec<String> {
    v["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn ids(v: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(v["input_ids"].clone()).unwrap()
}

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn args(model: PathBuf, max_length: Option<usize>, pooling: Option<Pooling>) -> EncoderArgs {
    EncoderArgs {
        model,
        max_length,
        pooling,
        ..EncoderArgs::default()
    }
}

fn minilm_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(recsys::encoder::DEFAULT_MODEL);
    assert!(
        dir.join("model.safetensors").is_file(),
        "{} is missing: run `make setup` (it fetches the default model)",
        dir.display()
    );
    dir
}

/// (a) The real all-MiniLM-L6-v2 against sentence-transformers on 30 varied texts, at three
/// batch sizes (embeddings must not depend on the batch they were padded in).
#[test]
fn minilm_matches_sentence_transformers() {
    let fx = json(&enc_fixture("minilm_st.json"));
    let enc = Encoder::load(&args(minilm_dir(), None, None)).unwrap();
    assert_eq!(
        enc.info.pooling,
        Pooling::Mean,
        "pooling from 1_Pooling/config.json"
    );
    assert_eq!(
        enc.info.max_length,
        fx["max_seq_length"].as_u64().unwrap() as usize
    );
    assert_eq!(enc.info.dim, 384);
    let texts = texts(&fx);
    assert_eq!(enc.tokenize(&texts).unwrap(), ids(&fx), "token ids");
    let want = matrix(&fx["embeddings"]);
    let pb = indicatif::ProgressBar::hidden();
    let mut runs = Vec::new();
    for bs in [1, 5, 32] {
        let got = enc.encode(&texts, bs, &pb).unwrap();
        let mut worst = 0f32;
        for (i, w) in want.iter().enumerate() {
            let d = common::max_abs_diff(got.row(i), w);
            worst = worst.max(d);
            assert!(
                d < TOL,
                "batch size {bs}, text {i} {:?}: max abs diff {d}",
                texts[i]
            );
        }
        eprintln!("batch size {bs}: max abs diff vs sentence-transformers {worst:.2e}");
        runs.push(got);
    }
    assert!(common::max_abs_diff(&runs[0].data, &runs[2].data) < 1e-5);
    // Same batch size twice: identical bits.
    let again = enc.encode(&texts, 32, &pb).unwrap();
    assert_eq!(again.data, runs[2].data);
}

/// (b) Tiny randomly initialised BERT / XLM-RoBERTa made by transformers: token states of a
/// padded batch and both poolings, loaded for inference and for training (the fused kernels
/// keep what a backward pass needs only in the second case).
fn tiny_parity(name: &str) {
    let fx = json(&enc_fixture(&format!("{name}.json")));
    let max_len = fx["max_length"].as_u64().unwrap() as usize;
    let texts = texts(&fx);
    for pooling in [Pooling::Mean, Pooling::Cls] {
        let enc = Encoder::load(&args(enc_fixture(name), Some(max_len), Some(pooling))).unwrap();
        let tok = enc.tokenize(&texts).unwrap();
        assert_eq!(tok, ids(&fx), "{name}: token ids");
        let refs: Vec<&[u32]> = tok.iter().map(|r| r.as_slice()).collect();
        let batch = enc.batch(&refs).unwrap();
        let want_hidden: Vec<Vec<Vec<f32>>> = serde_json::from_value(fx["hidden"].clone()).unwrap();
        let trainable =
            Encoder::load_trainable(&args(enc_fixture(name), Some(max_len), Some(pooling)))
                .unwrap();
        for (what, model) in [("inference", &enc.model), ("trainable", &trainable.model)] {
            let states: Vec<Vec<Vec<f32>>> = model.forward(&batch).unwrap().to_vec3().unwrap();
            for (i, want) in want_hidden.iter().enumerate() {
                for (j, w) in want.iter().enumerate() {
                    let d = common::max_abs_diff(&states[i][j], w);
                    assert!(
                        d < TOL,
                        "{name} {what}: text {i} token {j}: max abs diff {d}"
                    );
                }
            }
        }
        let key = if pooling == Pooling::Mean {
            "mean"
        } else {
            "cls"
        };
        let want = matrix(&fx[key]);
        let got = enc
            .encode(&texts, 4, &indicatif::ProgressBar::hidden())
            .unwrap();
        for (i, w) in want.iter().enumerate() {
            let d = common::max_abs_diff(got.row(i), w);
            assert!(d < TOL, "{name} {key} pooling, text {i}: max abs diff {d}");
        }
    }
}

#[test]
fn tiny_bert_matches_transformers() {
    tiny_parity("tiny-bert");
}

/// Also the pytorch_model.bin loader and XLM-RoBERTa position ids (pad + 1 + i).
#[test]
fn tiny_xlmr_matches_transformers() {
    tiny_parity("tiny-xlmr");
}

/// Parameters whose gradient is absent or all zero after one backward pass.
fn params_without_gradient(name: &str) -> (usize, Vec<String>) {
    let enc = Encoder::load_trainable(&args(enc_fixture(name), Some(32), None)).unwrap();
    let texts = ["gentle shampoo for curly hair", "Great product!", "a"];
    let tok = enc.tokenize(&texts).unwrap();
    let refs: Vec<&[u32]> = tok.iter().map(|r| r.as_slice()).collect();
    let batch = enc.batch(&refs).unwrap();
    let v = enc.embed(&batch).unwrap();
    // A loss that depends on every coordinate (unit vectors: a plain sum of squares would not).
    let w = Tensor::arange(0f32, v.dim(D::Minus1).unwrap() as f32, enc.device())
        .unwrap()
        .sin()
        .unwrap();
    let loss = v.broadcast_mul(&w).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let vars = enc.varmap.as_ref().unwrap().data().lock().unwrap();
    let mut missing: Vec<String> = vars
        .iter()
        .filter(|(_, var)| match grads.get(var.as_tensor()) {
            None => true,
            Some(g) => {
                g.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    == 0.0
            }
        })
        .map(|(n, _)| n.clone())
        .collect();
    missing.sort();
    (vars.len(), missing)
}

#[test]
fn every_parameter_gets_a_gradient() {
    for name in ["tiny-bert", "tiny-xlmr"] {
        let (n, missing) = params_without_gradient(name);
        // 5 embedding tensors + 16 per layer × 2 layers
        assert_eq!(n, 5 + 16 * 2, "{name}: parameter count");
        assert!(missing.is_empty(), "{name}: no gradient for {missing:?}");
    }
}

#[test]
fn trainable_and_inference_loads_agree() {
    let a = args(enc_fixture("tiny-bert"), Some(32), None);
    let texts = ["gentle shampoo", "Great product!"];
    let pb = indicatif::ProgressBar::hidden();
    let x = Encoder::load(&a).unwrap().encode(&texts, 2, &pb).unwrap();
    let y = Encoder::load_trainable(&a)
        .unwrap()
        .encode(&texts, 2, &pb)
        .unwrap();
    assert!(common::max_abs_diff(&x.data, &y.data) < 1e-6);
}

#[test]
fn bad_model_directories_are_named() {
    let err = |dir: &Path| {
        Encoder::load(&args(dir.to_path_buf(), None, None))
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap()
    };
    let e = err(Path::new("BAAI/bge-m3"));
    assert!(
        e.contains("Hugging Face Hub id") && e.contains("never downloads"),
        "{e}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(enc_fixture("tiny-bert").join(f), d.join(f)).unwrap();
    }
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    let e = err(d);
    assert!(e.contains("tokenizer.json") && e.contains("missing"), "{e}");
    std::fs::copy(
        enc_fixture("tiny-bert/tokenizer.json"),
        d.join("tokenizer.json"),
    )
    .unwrap();
    // config.json that disagrees with the weights
    let mut cfg = json(&d.join("config.json"));
    cfg["intermediate_size"] = 48.into();
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    let e = err(d);
    assert!(
        e.contains("model.safetensors") && e.contains("intermediate"),
        "{e}"
    );
    // a pooling config that names an unsupported mode
    cfg["intermediate_size"] = 64.into();
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    std::fs::create_dir_all(d.join("1_Pooling")).unwrap();
    std::fs::write(
        d.join("1_Pooling/config.json"),
        r#"{"pooling_mode_max_tokens": true}"#,
    )
    .unwrap();
    let e = err(d);
    assert!(e.contains("1_Pooling") && e.contains("pooling_mode"), "{e}");
}

/// A saved trainable encoder loads back (ours) with the same vectors, pooling and length, in
/// sentence-transformers layout.
#[test]
fn saved_model_loads_back_identically() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, pooling) in [("tiny-bert", Pooling::Mean), ("tiny-xlmr", Pooling::Cls)] {
        let enc =
            Encoder::load_trainable(&args(enc_fixture(name), Some(40), Some(pooling))).unwrap();
        let out = tmp.path().join(format!("{name}-finetuned"));
        enc.save(&out).unwrap();
        for f in [
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "modules.json",
            "1_Pooling/config.json",
            "sentence_bert_config.json",
        ] {
            assert!(out.join(f).is_file(), "{name}: {f} missing");
        }
        // no pooling / length flags: they must come from the saved files
        let back = Encoder::load(&args(out.clone(), None, None)).unwrap();
        assert_eq!(back.info.pooling, pooling);
        assert_eq!(back.info.max_length, 40);
        assert_eq!(back.config.architecture, enc.config.architecture);
        let texts = ["gentle shampoo for curly hair", "Great product!", ""];
        let pb = indicatif::ProgressBar::hidden();
        let a = enc.encode(&texts, 2, &pb).unwrap();
        let b = back.encode(&texts, 2, &pb).unwrap();
        assert!(common::max_abs_diff(&a.data, &b.data) < 1e-6, "{name}");
        // saving again replaces the directory
        enc.save(&out).unwrap();
    }
    let inference_only = Encoder::load(&args(enc_fixture("tiny-bert"), None, None)).unwrap();
    let e = format!(
        "{:#}",
        inference_only.save(&tmp.path().join("x")).unwrap_err()
    );
    assert!(e.contains("load_trainable"), "{e}");
}

/// Truncating token ids afterwards (per-side lengths in training) gives what the tokenizer gives
/// when loaded with that maximum length.
#[test]
fn tokenize_max_matches_tokenizer_truncation() {
    let texts = [
        "a fairly long sentence about shampoo, conditioner and a gentle curly hair routine",
        "short",
        "",
    ];
    for name in ["tiny-bert", "tiny-xlmr"] {
        let full = Encoder::load(&args(enc_fixture(name), None, None)).unwrap();
        let cut = Encoder::load(&args(enc_fixture(name), Some(7), None)).unwrap();
        let expect = cut.tokenize(&texts).unwrap();
        assert_eq!(full.tokenize_max(&texts, 7).unwrap(), expect, "{name}");
        assert!(
            expect[0].len() == 7 && expect[2].len() == 2,
            "{name}: {expect:?}"
        );
    }
}
