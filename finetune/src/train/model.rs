//! A llama-architecture transformer in candle, with the exact tensor layout llama.cpp reads
//! (names and shapes from [`LlamaShape::tensors`]): RMSNorm, interleaved ("normal") RoPE so
//! no q/k permutation is needed on export, SwiGLU feed-forward, untied output head.
//!
//! Only composite ops are used: candle's fused rms_norm/softmax/rope have no backward.
//!
//! The same forward serves LoRA fine-tuning of a pre-trained llama GGUF: the base is then
//! frozen (its weights enter the graph detached, so no gradient is kept for them and layers
//! below the lowest adapter get no backward pass at all) and [`Lora`] adds `scale·B·A·x` to the
//! projections it targets.

use candle_core::{DType, Device, Result, Tensor, Var, D};
use candle_nn::ops::{rms_norm_slow, softmax};
use candle_nn::rotary_emb::rope_i_slow;
use kvrec_core::rng::Rng;
use kvrec_llm::llama_file::LlamaShape;

use super::lora::Lora;

pub const RMS_EPS: f32 = 1e-5;
pub const ROPE_THETA: f32 = 10_000.0;
/// Tensors per decoder layer in [`LlamaShape::tensors`] order.
pub const PER_LAYER: usize = 9;
const ATTN_NORM: usize = 0;
pub const ATTN_Q: usize = 1;
pub const ATTN_K: usize = 2;
pub const ATTN_V: usize = 3;
pub const ATTN_OUT: usize = 4;
const FFN_NORM: usize = 5;
pub const FFN_GATE: usize = 6;
pub const FFN_UP: usize = 7;
pub const FFN_DOWN: usize = 8;

/// Index in [`Transformer::vars`] of tensor `which` of `layer`.
pub fn tensor_index(layer: usize, which: usize) -> usize {
    1 + layer * PER_LAYER + which
}

/// A named weight: GGUF name, PyTorch-order dims, values.
pub type NamedWeight = (String, Vec<usize>, Vec<f32>);

/// The trainable model: one [`Var`] per GGUF tensor, in file order.
pub struct Transformer {
    pub shape: LlamaShape,
    /// The output head is the token embedding (its own `output.weight` is then unused and
    /// exported as a copy of `token_embd.weight`): a candidate id's embedding read in the
    /// prompt is directly the direction that predicts it, which makes copying ids easy.
    pub tied: bool,
    pub names: Vec<String>,
    pub vars: Vec<Var>,
    /// A pre-trained base under LoRA: its weights get no gradient.
    pub frozen: bool,
    pub lora: Option<Lora>,
    pub rope_theta: f32,
    pub rms_eps: f32,
    cos: Tensor,
    sin: Tensor,
}

impl Transformer {
    /// Fresh weights: N(0, 0.02)-like uniform noise from the seeded kvrec RNG (candle's own
    /// random tensors are not seedable on CPU), residual projections scaled down by depth.
    pub fn init(shape: LlamaShape, seed: u64, tied: bool) -> Result<Self> {
        let mut rng = Rng::new(seed);
        let residual_scale = 1.0 / (2.0 * shape.n_layer as f32).sqrt();
        let weights = shape
            .tensors()
            .into_iter()
            .map(|(name, dims)| {
                let n: usize = dims.iter().product();
                let data = if dims.len() == 1 {
                    vec![1.0; n]
                } else {
                    let residual =
                        name.ends_with("attn_output.weight") || name.ends_with("ffn_down.weight");
                    let std = 0.02 * if residual { residual_scale } else { 1.0 };
                    // Uniform with the same standard deviation as N(0, std).
                    let half_width = std * 3f32.sqrt();
                    (0..n)
                        .map(|_| {
                            let unit = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
                            (unit * 2.0 - 1.0) * half_width
                        })
                        .collect()
                };
                (name, dims, data)
            })
            .collect::<Vec<_>>();
        Self::from_weights(shape, weights, tied)
    }

    /// Builds the model from `(name, dims, values)` in [`LlamaShape::tensors`] order.
    pub fn from_weights(shape: LlamaShape, weights: Vec<NamedWeight>, tied: bool) -> Result<Self> {
        Self::from_weights_with(shape, weights, tied, ROPE_THETA, RMS_EPS)
    }

    /// [`Self::from_weights`] with the RoPE base and norm epsilon of a given file.
    pub fn from_weights_with(
        shape: LlamaShape,
        weights: Vec<NamedWeight>,
        tied: bool,
        rope_theta: f32,
        rms_eps: f32,
    ) -> Result<Self> {
        let device = Device::Cpu;
        let expected = shape.tensors();
        if expected.len() != weights.len() {
            candle_core::bail!(
                "{} tensors given, a model of this shape has {}",
                weights.len(),
                expected.len()
            );
        }
        let mut names = Vec::with_capacity(weights.len());
        let mut vars = Vec::with_capacity(weights.len());
        for ((want_name, want_dims), (name, dims, data)) in expected.into_iter().zip(weights) {
            if want_name != name || want_dims != dims {
                candle_core::bail!(
                    "tensor {name} {dims:?} where {want_name} {want_dims:?} belongs"
                );
            }
            vars.push(Var::from_tensor(&Tensor::from_vec(data, dims, &device)?)?);
            names.push(name);
        }
        let (cos, sin) = rope_tables(shape.head_dim(), shape.context, rope_theta, &device)?;
        Ok(Transformer {
            shape,
            tied,
            names,
            vars,
            frozen: false,
            lora: None,
            rope_theta,
            rms_eps,
            cos,
            sin,
        })
    }

    /// Weight `i` as the graph sees it: detached when frozen, so backward keeps no gradient.
    fn weight(&self, i: usize) -> Tensor {
        let w = self.vars[i].as_tensor();
        if self.frozen {
            w.detach()
        } else {
            w.clone()
        }
    }

    fn layer(&self, layer: usize, which: usize) -> Tensor {
        self.weight(tensor_index(layer, which))
    }

    /// `h · Wᵀ` for projection `which` of `layer`, plus the adapter's `scale · (h·Aᵀ)·Bᵀ`.
    fn project(&self, h: &Tensor, layer: usize, which: usize) -> Result<Tensor> {
        let base = h.matmul(&self.layer(layer, which).t()?)?;
        match &self.lora {
            Some(lora) => match lora.pair(tensor_index(layer, which)) {
                Some(pair) => {
                    let low = h.matmul(&pair.a.as_tensor().t()?)?;
                    base + (low.matmul(&pair.b.as_tensor().t()?)? * lora.scale())?
                }
                None => Ok(base),
            },
            None => Ok(base),
        }
    }

    /// Final hidden states (after the output norm) for token ids `(batch, time)`.
    pub fn hidden(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let s = self.shape;
        let (d, heads, head_dim) = (s.n_embd, s.n_head, s.head_dim());
        let mut x = self
            .weight(0)
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, d))?;
        let mask = causal_mask(t, ids.device())?;
        let cos = self.cos.narrow(0, 0, t)?;
        let sin = self.sin.narrow(0, 0, t)?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let eps = self.rms_eps;
        for layer in 0..s.n_layer {
            let h = rms_norm_slow(&x, &self.layer(layer, ATTN_NORM), eps)?.reshape((b * t, d))?;
            let heads_of = |which: usize, n_heads: usize| -> Result<Tensor> {
                self.project(&h, layer, which)?
                    .reshape((b, t, n_heads, head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = rope_i_slow(&heads_of(ATTN_Q, heads)?, &cos, &sin)?;
            let k = rope_i_slow(&heads_of(ATTN_K, s.n_head_kv)?, &cos, &sin)?;
            let v = heads_of(ATTN_V, s.n_head_kv)?;
            let (k, v) = repeat_kv(k, v, heads / s.n_head_kv)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&mask)?;
            let attended = softmax(&scores, D::Minus1)?
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b * t, d))?;
            x = (x + self
                .project(&attended, layer, ATTN_OUT)?
                .reshape((b, t, d))?)?;
            let h = rms_norm_slow(&x, &self.layer(layer, FFN_NORM), eps)?.reshape((b * t, d))?;
            let gated =
                (self.project(&h, layer, FFN_GATE)?.silu()? * self.project(&h, layer, FFN_UP)?)?;
            x = (x + self.project(&gated, layer, FFN_DOWN)?.reshape((b, t, d))?)?;
        }
        rms_norm_slow(&x, &self.weight(self.vars.len() - 2), eps)
    }

    /// Logits `(rows, vocab)` for the hidden states at flat positions `rows` of `hidden`.
    pub fn logits_at(&self, hidden: &Tensor, rows: &Tensor) -> Result<Tensor> {
        let (b, t, d) = hidden.dims3()?;
        let picked = hidden.reshape((b * t, d))?.index_select(rows, 0)?;
        picked.matmul(&self.head().t()?)
    }

    fn head(&self) -> Tensor {
        self.weight(if self.tied { 0 } else { self.vars.len() - 1 })
    }

    /// Mean cross-entropy of `targets` predicted at flat positions `rows`.
    pub fn loss(&self, ids: &Tensor, rows: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let logits = self.logits_at(&self.hidden(ids)?, rows)?;
        candle_nn::loss::cross_entropy(&logits, targets)
    }

    /// Every weight as `(name, dims, values)`, for checkpoints and export.
    /// A tied model's `output.weight` is written as the embedding it uses.
    pub fn weights(&self) -> Result<Vec<NamedWeight>> {
        let last = self.vars.len() - 1;
        self.names
            .iter()
            .zip(&self.vars)
            .enumerate()
            .map(|(i, (name, var))| {
                let source = if i == last {
                    self.head()
                } else {
                    var.as_tensor().clone()
                };
                Ok((
                    name.clone(),
                    var.dims().to_vec(),
                    source.flatten_all()?.to_vec1::<f32>()?,
                ))
            })
            .collect()
    }

    /// Trained parameters (a tied model's unused head not counted).
    pub fn parameter_count(&self) -> usize {
        let all: usize = self.vars.iter().map(|v| v.elem_count()).sum();
        all - if self.tied {
            self.vars[self.vars.len() - 1].elem_count()
        } else {
            0
        }
    }
}

fn repeat_kv(k: Tensor, v: Tensor, groups: usize) -> Result<(Tensor, Tensor)> {
    if groups == 1 {
        return Ok((k, v));
    }
    let repeat = |x: Tensor| -> Result<Tensor> {
        let (b, h, t, d) = x.dims4()?;
        x.unsqueeze(2)?
            .expand((b, h, groups, t, d))?
            .reshape((b, h * groups, t, d))
    };
    Ok((repeat(k)?, repeat(v)?))
}

/// cos/sin tables `(context, head_dim / 2)` for llama.cpp's normal RoPE.
fn rope_tables(
    head_dim: usize,
    context: usize,
    theta: f32,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| theta.powf(-((2 * i) as f32) / head_dim as f32))
        .collect();
    let mut angles = Vec::with_capacity(context * half);
    for pos in 0..context {
        angles.extend(inv_freq.iter().map(|f| pos as f32 * f));
    }
    let angles = Tensor::from_vec(angles, (context, half), device)?;
    Ok((angles.cos()?, angles.sin()?))
}

fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (t, t), device)?.to_dtype(DType::F32)
}

impl Transformer {
    /// Log-probability of `ids[from..]` given `ids[..from]`: what llama.cpp's scoring computes
    /// for a candidate's answer prefix, so the two can be compared.
    pub fn continuation_logprob(&self, ids: &[u32], from: usize) -> Result<f64> {
        if from == 0 || from >= ids.len() {
            candle_core::bail!("continuation must start inside the sequence");
        }
        let device = Device::Cpu;
        let input = Tensor::new(ids, &device)?.unsqueeze(0)?;
        let rows: Vec<u32> = (from as u32 - 1..ids.len() as u32 - 1).collect();
        let logits = self.logits_at(
            &self.hidden(&input)?,
            &Tensor::new(rows.as_slice(), &device)?,
        )?;
        let log_probs = candle_nn::ops::log_softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
        Ok(log_probs
            .iter()
            .zip(&ids[from..])
            .map(|(row, &token)| f64::from(row[token as usize]))
            .sum())
    }

    /// Each candidate's score as kvrec-llm's constrained scoring computes it (log-probability
    /// renormalised over the candidates where their answer prefixes part ways), from this
    /// forward: what llama.cpp's `rank()` of an exported model must reproduce.
    pub fn candidate_scores(&self, prompt: &[u32], prefixes: &[Vec<u32>]) -> Result<Vec<f64>> {
        let as_i32: Vec<Vec<i32>> = prefixes
            .iter()
            .map(|p| p.iter().map(|&t| t as i32).collect())
            .collect();
        let trie = kvrec_llm::trie::CandidateTrie::new(&as_i32);
        let mut failed = None;
        let scores = trie.scores(|at, token| {
            let mut ids = prompt.to_vec();
            if let Some(node) = at {
                ids.extend(
                    trie.lineage(node)
                        .iter()
                        .map(|&n| trie.nodes[n].token as u32),
                );
            }
            let from = ids.len();
            ids.push(token as u32);
            self.continuation_logprob(&ids, from).unwrap_or_else(|e| {
                failed = Some(e);
                f64::NAN
            })
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(scores),
        }
    }
}
