//! The transformer encoder body (every [`super::config::Family`] shares it), one code path for
//! inference and training: the fused kernels of [`super::ops`] have backward passes, and each
//! records its graph node only when its inputs track gradients (and keeps what its backward
//! pass needs only then). Weight names follow Hugging Face's `BertModel` / `XLMRobertaModel`
//! (`embeddings.*`, `encoder.layer.{i}.*`), so checkpoints load and save unchanged.
//!
//! Reduced precision (`--precision bf16|f16`) is mixed precision, as PyTorch's autocast does it:
//! the dense layers and the attention products run in the compute dtype (weights of a model
//! under training stay f32 "master" variables and are cast on the way in, so their gradients
//! arrive in f32); the embedding sum, every layer norm (with its residual add), the attention
//! softmax and the pooling / normalisation run in f32. Sentence vectors are always f32.

use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::{Embedding, Init, Linear, VarBuilder};

use super::config::{Architecture, ModelConfig, Pooling};
use super::ops::{self, Act};

/// One padded batch of token ids, ready for the model.
#[derive(Debug)]
pub struct Batch {
    /// (batch, seq) u32
    pub input_ids: Tensor,
    /// (batch, seq) u32: 0/1 as in the tokenizer's type ids
    pub type_ids: Tensor,
    /// (batch, seq) u32: position ids (XLM-RoBERTa numbers real tokens from pad_id + 1)
    pub position_ids: Tensor,
    /// (batch, seq) f32: 1 for real tokens, 0 for padding
    pub mask: Tensor,
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// The weights are f32 whatever the compute dtype (layer norms run in f32).
    fn new(vb: VarBuilder, size: usize, eps: f64) -> Result<Self> {
        let get = |name, init| vb.get_with_hints_dtype(size, name, init, DType::F32);
        Ok(LayerNorm {
            weight: get("weight", Init::Const(1.0))?,
            bias: get("bias", Init::Const(0.0))?,
            eps,
        })
    }
    /// LN(x + residual) in f32 arithmetic, returned in x's dtype.
    fn forward(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        if x.dtype() == DType::F32 {
            return ops::add_layer_norm(x, residual, &self.weight, &self.bias, self.eps);
        }
        let f32 = |t: &Tensor| t.to_dtype(DType::F32);
        let r = residual.map(f32).transpose()?;
        ops::add_layer_norm(&f32(x)?, r.as_ref(), &self.weight, &self.bias, self.eps)?
            .to_dtype(x.dtype())
    }
}

/// A dense layer `x Wᵀ + b` over the last dimension.
struct Dense(Linear);

impl Dense {
    fn forward(&self, x: &Tensor, act: Act) -> Result<Tensor> {
        linear_in(x, self.weight(), self.bias(), act)
    }
    fn weight(&self) -> &Tensor {
        self.0.weight()
    }
    fn bias(&self) -> &Tensor {
        self.0.bias().expect("dense layers have a bias")
    }
}

/// A dense layer in x's dtype: f32 master weights are cast to it (a differentiable cast, so
/// their gradients come back in f32).
fn linear_in(x: &Tensor, w: &Tensor, b: &Tensor, act: Act) -> Result<Tensor> {
    if w.dtype() == x.dtype() {
        return ops::linear(x, w, b, act);
    }
    ops::linear(x, &w.to_dtype(x.dtype())?, &b.to_dtype(x.dtype())?, act)
}

fn linear(vb: VarBuilder, inp: usize, out: usize) -> Result<Dense> {
    let bound = 1.0 / (inp as f64).sqrt();
    let init = Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let w = vb.get_with_hints((out, inp), "weight", init)?;
    let b = vb.get_with_hints(out, "bias", init)?;
    Ok(Dense(Linear::new(w, Some(b))))
}

fn embedding(vb: VarBuilder, n: usize, dim: usize) -> Result<Embedding> {
    let w = vb.get_with_hints(
        (n, dim),
        "weight",
        Init::Randn {
            mean: 0.0,
            stdev: 0.02,
        },
    )?;
    Ok(Embedding::new(w, dim))
}

/// The query, key and value projections, run as one product of their stacked weights.
enum Qkv {
    /// Fixed weights: stacked once at load (the separate matrices are not kept).
    Fixed(Dense),
    /// Weights under training: stacked per forward pass (a small differentiable copy), so the
    /// gradients reach the three variables.
    Trained([Dense; 3]),
}

impl Qkv {
    fn new(qkv: [Dense; 3]) -> Result<Self> {
        if qkv[0].weight().is_variable() {
            return Ok(Qkv::Trained(qkv));
        }
        let (w, b) = Self::stack(&qkv)?;
        Ok(Qkv::Fixed(Dense(Linear::new(w, Some(b)))))
    }

    fn stack([q, k, v]: &[Dense; 3]) -> Result<(Tensor, Tensor)> {
        Ok((
            Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?,
            Tensor::cat(&[q.bias(), k.bias(), v.bias()], 0)?,
        ))
    }

    /// (b, t, 3h): each token's query, key and value side by side.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Qkv::Fixed(d) => d.forward(x, Act::Identity),
            Qkv::Trained(qkv) => {
                let (w, b) = Self::stack(qkv)?;
                linear_in(x, &w, &b, Act::Identity)
            }
        }
    }
}

struct Layer {
    qkv: Qkv,
    attn_out: Dense,
    attn_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    out_norm: LayerNorm,
}

impl Layer {
    fn new(vb: VarBuilder, c: &ModelConfig) -> Result<Self> {
        let h = c.hidden_size;
        let att = vb.pp("attention");
        let qkv = Qkv::new([
            linear(att.pp("self").pp("query"), h, h)?,
            linear(att.pp("self").pp("key"), h, h)?,
            linear(att.pp("self").pp("value"), h, h)?,
        ])?;
        Ok(Layer {
            qkv,
            attn_out: linear(att.pp("output").pp("dense"), h, h)?,
            attn_norm: LayerNorm::new(att.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
            intermediate: linear(vb.pp("intermediate").pp("dense"), h, c.intermediate_size)?,
            output: linear(vb.pp("output").pp("dense"), c.intermediate_size, h)?,
            out_norm: LayerNorm::new(vb.pp("output").pp("LayerNorm"), h, c.layer_norm_eps)?,
        })
    }

    /// `x`: (b, t, h); `bias`: (b, 1, 1, t) additive attention bias.
    fn forward(&self, x: &Tensor, bias: &Tensor, heads: usize) -> Result<Tensor> {
        let qkv = self.qkv.forward(x)?;
        let ctx = ops::attention(&qkv, bias, heads)?;
        let a = self
            .attn_norm
            .forward(&self.attn_out.forward(&ctx, Act::Identity)?, Some(x))?;
        let i = self.intermediate.forward(&a, Act::Gelu)?;
        self.out_norm
            .forward(&self.output.forward(&i, Act::Identity)?, Some(&a))
    }
}

/// A BERT / XLM-RoBERTa encoder body (no pooler head).
pub struct Transformer {
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    /// The dtype the layers compute in (the weights' own, or f32 masters cast to it).
    dtype: DType,
    pub architecture: Architecture,
}

impl Transformer {
    /// Builds the model from `vb` (weights under `embeddings.*` / `encoder.layer.*`), computing
    /// in `dtype`. With a `VarMap`-backed builder, missing weights are created with BERT-style
    /// init.
    pub fn new(vb: VarBuilder, c: &ModelConfig, dtype: DType) -> Result<Self> {
        let e = vb.pp("embeddings");
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::new(vb.pp(format!("encoder.layer.{i}")), c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Transformer {
            word: embedding(e.pp("word_embeddings"), c.vocab_size, c.hidden_size)?,
            position: embedding(
                e.pp("position_embeddings"),
                c.max_position_embeddings,
                c.hidden_size,
            )?,
            token_type: embedding(
                e.pp("token_type_embeddings"),
                c.type_vocab_size.max(1),
                c.hidden_size,
            )?,
            emb_norm: LayerNorm::new(e.pp("LayerNorm"), c.hidden_size, c.layer_norm_eps)?,
            layers,
            heads: c.num_attention_heads,
            dtype,
            architecture: c.architecture,
        })
    }

    /// The dtype the layers compute in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Token states (b, t, hidden) of the last layer, in the compute dtype.
    pub fn forward(&self, batch: &Batch) -> Result<Tensor> {
        let f32 = |t: Tensor| t.to_dtype(DType::F32);
        // the three embeddings summed and normalised in f32, then cast to the compute dtype
        let x = f32(self.word.forward(&batch.input_ids)?)?
            .add(&f32(self.position.forward(&batch.position_ids)?)?)?
            .add(&f32(self.token_type.forward(&batch.type_ids)?)?)?;
        let mut x = self.emb_norm.forward(&x, None)?.to_dtype(self.dtype)?;
        let (b, t) = batch.mask.dims2()?;
        // 0 for real tokens, -10000 for padding (Hugging Face's value for BERT-era models;
        // exp() of it is 0 in f32 and it stays finite in f16); f32, added to f32 scores.
        let bias = ((batch.mask.to_dtype(DType::F32)? - 1.0)? * 10000.0)?.reshape((b, 1, 1, t))?;
        for layer in &self.layers {
            x = layer.forward(&x, &bias, self.heads)?;
        }
        Ok(x)
    }
}

/// Sentence vectors (b, hidden), f32, from token states under `mask`, L2-normalised when
/// asked (pooled and normalised in f32 whatever the states' dtype).
pub fn pool(states: &Tensor, mask: &Tensor, pooling: Pooling, normalize: bool) -> Result<Tensor> {
    let states = &states.to_dtype(DType::F32)?;
    let pooled = match pooling {
        Pooling::Cls => states.narrow(1, 0, 1)?.squeeze(1)?,
        Pooling::Mean => {
            let m = mask.to_dtype(states.dtype())?.unsqueeze(2)?;
            let sum = states.broadcast_mul(&m)?.sum(1)?;
            let count = m.sum(1)?.clamp(1e-9, f64::MAX)?;
            sum.broadcast_div(&count)?
        }
    };
    if normalize {
        l2_normalize(&pooled)
    } else {
        Ok(pooled)
    }
}

/// Rows scaled to unit L2 length (differentiable; zero rows stay zero).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}
