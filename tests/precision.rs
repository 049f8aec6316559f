//! Reduced precision on the CPU: the bf16 / f16 code path is the one a GPU runs (the fused f32
//! CPU kernels step aside for it), so its parity, gradients, training, resume and f16 loss
//! scaling are checked here against the f32 path and the Python reference fixtures.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{D, DType, Tensor};
use recsys::encoder::{DeviceArgs, Encoder, EncoderArgs, Pooling, Precision};
use recsys::etl::pairs::PairFormat;
use recsys::train::loss::{DEFAULT_SCALE, mnrl, same_item_mask};
use recsys::train::retriever::{self, RetrieverConfig};
use serde_json::Value;

/// Largest |a − b| between unit sentence vectors tolerated per precision (the reference is f32
/// from PyTorch; f32 itself is held to 1e-4 in tests/encoder.rs).
fn tolerance(p: Precision) -> f32 {
    match p {
        Precision::F32 => 1e-4,
        Precision::Bf16 => 2e-2,
        Precision::F16 => 4e-3,
    }
}

fn fixture(name: &str) -> PathBuf {
    common::fixture("encoder").join(name)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn on_cpu(p: Precision) -> DeviceArgs {
    DeviceArgs {
        precision: Some(p),
        ..DeviceArgs::cpu()
    }
}

fn args(
    model: PathBuf,
    max_length: Option<usize>,
    pooling: Option<Pooling>,
    p: Precision,
) -> EncoderArgs {
    EncoderArgs {
        model,
        max_length,
        pooling,
        runtime: on_cpu(p),
        ..EncoderArgs::default()
    }
}

/// Encodes the fixture's texts in `p`, loaded for inference and for training (f32 master
/// weights cast per layer), and returns the worst difference from the reference vectors.
fn worst_vs_reference(
    model: PathBuf,
    texts: &[String],
    want: &[Vec<f32>],
    len: Option<usize>,
    pooling: Option<Pooling>,
    p: Precision,
) -> f32 {
    let pb = indicatif::ProgressBar::hidden();
    let a = args(model, len, pooling, p);
    let mut worst = 0f32;
    for enc in [
        Encoder::load(&a).unwrap(),
        Encoder::load_trainable(&a).unwrap(),
    ] {
        assert_eq!(enc.runtime.precision, p);
        assert_eq!(enc.model.dtype(), p.dtype());
        assert_eq!(enc.info.runtime.precision, p, "recorded with the vectors");
        let got = enc.encode(texts, 5, &pb).unwrap();
        for (i, w) in want.iter().enumerate() {
            worst = worst.max(common::max_abs_diff(got.row(i), w));
        }
    }
    worst
}

fn strings(v: &Value) -> Vec<String> {
    serde_json::from_value(v["texts"].clone()).unwrap()
}

/// bf16 and f16 sentence vectors of the real all-MiniLM-L6-v2 and the tiny BERT / XLM-R
/// fixtures against the Python (f32) reference, within the stated tolerance — and f32 through
/// the same flags still within 1e-4.
#[test]
fn reduced_precision_encodings_match_the_reference() {
    let minilm = Path::new(env!("CARGO_MANIFEST_DIR")).join(recsys::encoder::DEFAULT_MODEL);
    let fx = json(&fixture("minilm_st.json"));
    let (texts, want): (Vec<String>, Vec<Vec<f32>>) = (
        strings(&fx),
        serde_json::from_value(fx["embeddings"].clone()).unwrap(),
    );
    for p in [Precision::F32, Precision::Bf16, Precision::F16] {
        let d = worst_vs_reference(minilm.clone(), &texts, &want, None, None, p);
        eprintln!("all-MiniLM-L6-v2 {p}: max abs diff vs sentence-transformers {d:.2e}");
        assert!(d < tolerance(p), "all-MiniLM-L6-v2 {p}: {d}");
    }
    for name in ["tiny-bert", "tiny-xlmr"] {
        let fx = json(&fixture(&format!("{name}.json")));
        let len = fx["max_length"].as_u64().map(|n| n as usize);
        let want: Vec<Vec<f32>> = serde_json::from_value(fx["mean"].clone()).unwrap();
        for p in [Precision::Bf16, Precision::F16] {
            let d = worst_vs_reference(
                fixture(name),
                &strings(&fx),
                &want,
                len,
                Some(Pooling::Mean),
                p,
            );
            eprintln!("{name} {p}: max abs diff vs transformers {d:.2e}");
            assert!(d < tolerance(p), "{name} {p}: {d}");
        }
    }
}

/// Under bf16 and f16 every (f32 master) parameter gets a finite, non-zero f32 gradient, and
/// the gradients agree with the f32 run's in direction (cosine > 0.9; all but the key biases,
/// whose exact gradient is zero).
#[test]
fn every_parameter_gets_a_finite_gradient_in_reduced_precision() {
    for name in ["tiny-bert", "tiny-xlmr"] {
        let grads_of = |p: Precision| {
            let enc = Encoder::load_trainable(&args(fixture(name), Some(32), None, p)).unwrap();
            let texts = ["gentle shampoo for curly hair", "Great product!", "a"];
            let tok = enc.tokenize(&texts).unwrap();
            let refs: Vec<&[u32]> = tok.iter().map(|r| r.as_slice()).collect();
            let v = enc.embed(&enc.batch(&refs).unwrap()).unwrap();
            assert_eq!(v.dtype(), DType::F32, "sentence vectors are f32");
            let w = Tensor::arange(0f32, v.dim(D::Minus1).unwrap() as f32, enc.device())
                .unwrap()
                .sin()
                .unwrap();
            let grads = v
                .broadcast_mul(&w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let vars = enc.varmap.as_ref().unwrap().data().lock().unwrap();
            let mut out: Vec<(String, Vec<f32>)> = vars
                .iter()
                .map(|(n, var)| {
                    assert_eq!(
                        var.dtype(),
                        DType::F32,
                        "{name} {p}: {n} is a master weight"
                    );
                    let g = grads
                        .get(var.as_tensor())
                        .unwrap_or_else(|| panic!("{name} {p}: no gradient for {n}"));
                    assert_eq!(g.dtype(), DType::F32, "{name} {p}: {n}'s gradient");
                    (
                        n.clone(),
                        g.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                    )
                })
                .collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        };
        let exact = grads_of(Precision::F32);
        for p in [Precision::Bf16, Precision::F16] {
            for ((n, g), (_, e)) in grads_of(p).iter().zip(&exact) {
                assert!(
                    g.iter().all(|x| x.is_finite()),
                    "{name} {p}: {n} not finite"
                );
                let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
                assert!(norm(g) > 0.0, "{name} {p}: {n} is all zero");
                // the key bias's true gradient is zero (a constant added to every key shifts a
                // query's scores uniformly, which the softmax ignores): only rounding is left
                if n.ends_with("attention.self.key.bias") {
                    continue;
                }
                let cos = g.iter().zip(e).map(|(a, b)| a * b).sum::<f32>() / (norm(g) * norm(e));
                // word embeddings of tokens that occur once carry little signal: direction only
                assert!(
                    cos > 0.9,
                    "{name} {p}: {n}: cosine with the f32 gradient {cos}"
                );
            }
        }
    }
}

fn cfg(output: &Path, p: Precision) -> RetrieverConfig {
    RetrieverConfig {
        runtime: on_cpu(p),
        ..common::train_cfg(output)
    }
}

/// The in-batch contrastive loss of the first 64 training rows under `model` (in bf16).
fn loss_on_pairs(ctx: &recsys::Ctx, model: &Path) -> f32 {
    let df = recsys::io::read_parquet(&ctx.layout.training_pairs()).unwrap();
    let col = |c: &str| -> Vec<String> {
        let s = df.column(c).unwrap().str().unwrap().clone();
        (0..64.min(s.len()))
            .map(|i| s.get(i).unwrap().to_string())
            .collect()
    };
    let (q, d, items) = (col("query"), col("positive"), col("parent_asin"));
    let ids: Vec<u64> = items
        .iter()
        .map(|a| items.iter().position(|b| b == a).unwrap() as u64)
        .collect();
    let enc = Encoder::load(&args(model.to_path_buf(), Some(48), None, Precision::Bf16)).unwrap();
    let pb = indicatif::ProgressBar::hidden();
    let (qv, dv) = (
        enc.encode(&q, 64, &pb).unwrap(),
        enc.encode(&d, 64, &pb).unwrap(),
    );
    let t = |e: &recsys::encoder::Embeddings| {
        Tensor::from_slice(&e.data, (e.len(), e.dim), enc.device()).unwrap()
    };
    let mask = same_item_mask(&ids, &ids, true, DType::F32, enc.device()).unwrap();
    mnrl(&t(&qv), &t(&dv), None, &mask, DEFAULT_SCALE)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// A short bf16 fine-tune lowers the contrastive loss; the saved model is f32 (master weights)
/// and the run records its precision.
#[test]
fn bf16_fine_tune_lowers_the_loss() {
    let (dir, ctx) = common::pairs_root(PairFormat::Pair);
    let out = dir.path().join("bf16");
    let s = retriever::run(
        &ctx,
        &RetrieverConfig {
            max_steps: Some(30),
            ..cfg(&out, Precision::Bf16)
        },
    )
    .unwrap();
    assert!(s.finished);
    assert!(s.to_string().contains("on cpu, bf16"), "{s}");
    let (before, after) = (
        loss_on_pairs(&ctx, &fixture("tiny-bert")),
        loss_on_pairs(&ctx, &out),
    );
    eprintln!("bf16 fine-tune: loss on 64 training rows {before:.4} → {after:.4}");
    assert!(after < before * 0.95, "loss {before} → {after}");
    let args: Value = json(&out.join("training_args.json"));
    assert_eq!(args["runtime"]["precision"], "bf16");
    assert_eq!(args["args"]["precision"], "bf16");
    let t =
        candle_core::safetensors::load(out.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    assert!(
        t.values().all(|x| x.dtype() == DType::F32),
        "saved weights are f32"
    );
}

/// A bf16 run killed after step 5 and resumed from its checkpoint at step 3 ends with the same
/// weights, to the bit, as one that ran straight through.
#[test]
fn resumed_bf16_run_is_bit_identical() {
    let (dir, ctx) = common::pairs_root(PairFormat::Pair);
    let base = RetrieverConfig {
        max_steps: Some(8),
        save_steps: 3,
        ..cfg(Path::new("unused"), Precision::Bf16)
    };
    let whole = dir.path().join("whole");
    retriever::run(
        &ctx,
        &RetrieverConfig {
            output: Some(whole.clone()),
            ..base.clone()
        },
    )
    .unwrap();
    let cut = dir.path().join("cut");
    let s = retriever::run(
        &ctx,
        &RetrieverConfig {
            output: Some(cut.clone()),
            halt_after: Some(5),
            ..base.clone()
        },
    )
    .unwrap();
    assert!(!s.finished);
    let s = retriever::run(
        &ctx,
        &RetrieverConfig {
            output: Some(cut.clone()),
            resume: true,
            ..base.clone()
        },
    )
    .unwrap();
    assert_eq!((s.finished, s.resumed_from), (true, Some(3)));
    assert_eq!(
        common::model_weights(&whole),
        common::model_weights(&cut),
        "resumed bf16 weights differ"
    );
}

/// f16 with an injected inf at step 3: that step is skipped (no update) and the loss scale
/// halves — one skip more than the same run without the injection — training goes on and ends
/// with finite weights; the skip count and the scale survive a resume.
#[test]
fn f16_loss_scaling_skips_an_inf_step_and_recovers() {
    let (dir, ctx) = common::pairs_root(PairFormat::Pair);
    let plain = RetrieverConfig {
        max_steps: Some(8),
        save_steps: 4,
        ..cfg(Path::new("unused"), Precision::F16)
    };
    let clean = retriever::run(
        &ctx,
        &RetrieverConfig {
            output: Some(dir.path().join("clean")),
            ..plain.clone()
        },
    )
    .unwrap();
    let clean = clean.loss_scale.expect("f16 runs scale the loss");
    let base = RetrieverConfig {
        inject_nonfinite_at: Some(3),
        ..plain
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
    assert!(s.finished);
    let ls = s.loss_scale.expect("f16 runs scale the loss");
    eprintln!("f16: without the inf {clean:?}, with it {ls:?}");
    assert_eq!(
        ls.skipped,
        clean.skipped + 1,
        "the injected step is skipped"
    );
    assert_eq!(ls.scale, clean.scale / 2.0, "and halves the scale");
    assert!(
        s.to_string().contains(&format!("{} step", ls.skipped)),
        "{s}"
    );
    let w = common::model_weights(&whole);
    assert!(w.iter().all(|x| x.is_finite()));
    assert_ne!(
        w,
        common::model_weights(&fixture("tiny-bert")),
        "the other steps trained"
    );
    // the same run killed after step 6 and resumed from checkpoint-4 (scale and skips inside it)
    let cut = dir.path().join("cut");
    retriever::run(
        &ctx,
        &RetrieverConfig {
            output: Some(cut.clone()),
            halt_after: Some(6),
            ..base.clone()
        },
    )
    .unwrap();
    let s = retriever::run(
        &ctx,
        &RetrieverConfig {
            output: Some(cut.clone()),
            resume: true,
            ..base.clone()
        },
    )
    .unwrap();
    assert_eq!(s.loss_scale, Some(ls));
    assert_eq!(w, common::model_weights(&cut), "resumed f16 weights differ");
}
