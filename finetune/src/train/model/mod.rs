//! The transformers kvrec trains, in candle, with the exact tensor names llama.cpp reads:
//! llama (RMSNorm, interleaved "normal" RoPE so no q/k permutation is needed on export,
//! SwiGLU) — the from-scratch model and any llama GGUF — and Gemma 3 (see [`Arch::Gemma3`]),
//! the pre-trained base LoRA adapts.
//!
//! Only composite ops are used: candle's fused rms_norm/softmax/rope have no backward.
//!
//! Under LoRA the base is frozen (its weights enter the graph detached, so no gradient is kept
//! for them and layers below the lowest adapter get no backward pass at all) and [`Lora`] adds
//! `scale·B·A·x` to the projections it targets.

use std::collections::HashMap;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Device, Layout, Result, Shape, Tensor, Var, D};
use candle_nn::ops::{rms_norm_slow, softmax};
use candle_nn::rotary_emb::{rope_i_slow, rope_slow};
use kvrec_core::rng::Rng;
use kvrec_llm::llama_file::LlamaShape;

use super::lora::Lora;

pub const RMS_EPS: f32 = 1e-5;
pub const ROPE_THETA: f32 = 10_000.0;
/// RoPE tables cover at most this many positions (Gemma declares 32,768; prompts are short).
const MAX_ROPE_POSITIONS: usize = 8192;

/// The forward a model runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arch {
    Llama,
    /// Gemma 3, as llama.cpp's `gemma3` graph: embeddings × √d; per-head RMSNorm of q and k;
    /// NEOX RoPE, base `rope_theta` on every `global_every`-th layer and `rope_local` (with a
    /// causal window of `window` tokens) on the others; queries × `query_scale`; RMSNorm after
    /// attention and after the GELU-tanh gated FFN; head tied to the embedding. The GGUF's
    /// norm weights already include Gemma's `+1`.
    Gemma3 {
        head_dim: usize,
        window: usize,
        global_every: usize,
        rope_local: f32,
        query_scale: f64,
    },
}

/// A named weight: GGUF name, PyTorch-order dims, values.
pub type NamedWeight = (String, Vec<usize>, Vec<f32>);

/// The trainable model: one [`Var`] per GGUF tensor.
pub struct Transformer {
    pub arch: Arch,
    pub shape: LlamaShape,
    /// The output head is the token embedding (its own `output.weight` is then unused and
    /// exported as a copy of `token_embd.weight`): a candidate id's embedding read in the
    /// prompt is directly the direction that predicts it, which makes copying ids easy.
    pub tied: bool,
    pub names: Vec<String>,
    pub vars: Vec<Var>,
    index: HashMap<String, usize>,
    /// A pre-trained base under LoRA: its weights get no gradient.
    pub frozen: bool,
    pub lora: Option<Lora>,
    pub rope_theta: f32,
    pub rms_eps: f32,
    cos: Tensor,
    sin: Tensor,
    /// Gemma's local layers' RoPE tables.
    local_rope: Option<(Tensor, Tensor)>,
    /// Training only: each position attends to the BOS and its last `n` tokens, with the BOS
    /// key rotated as if `n` tokens back, as in a served prompt of `n` items (see
    /// [`spanned_scores`]): exact for one layer; through `L` layers a target reads at most
    /// `L·n` items back, not the whole training window.
    pub attention_span: Option<usize>,
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
        let expected = shape.tensors();
        if expected.len() != weights.len() {
            candle_core::bail!(
                "{} tensors given, a model of this shape has {}",
                weights.len(),
                expected.len()
            );
        }
        for ((want_name, want_dims), (name, dims, _)) in expected.iter().zip(&weights) {
            if want_name != name || want_dims != dims {
                candle_core::bail!(
                    "tensor {name} {dims:?} where {want_name} {want_dims:?} belongs"
                );
            }
        }
        Self::new(Arch::Llama, shape, weights, tied, rope_theta, rms_eps)
    }

    /// A model of `arch` from named weights (any order; looked up by GGUF name).
    pub fn new(
        arch: Arch,
        shape: LlamaShape,
        weights: Vec<NamedWeight>,
        tied: bool,
        rope_theta: f32,
        rms_eps: f32,
    ) -> Result<Self> {
        let device = Device::Cpu;
        let mut names = Vec::with_capacity(weights.len());
        let mut vars = Vec::with_capacity(weights.len());
        for (name, dims, data) in weights {
            vars.push(Var::from_tensor(&Tensor::from_vec(data, dims, &device)?)?);
            names.push(name);
        }
        let index = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        let positions = shape.context.min(MAX_ROPE_POSITIONS);
        let (head_dim, local_rope) = match arch {
            Arch::Llama => (shape.head_dim(), None),
            Arch::Gemma3 {
                head_dim,
                rope_local,
                ..
            } => (
                head_dim,
                Some(rope_tables(head_dim, positions, rope_local, &device)?),
            ),
        };
        let (cos, sin) = rope_tables(head_dim, positions, rope_theta, &device)?;
        let model = Transformer {
            arch,
            shape,
            tied,
            names,
            vars,
            index,
            frozen: false,
            lora: None,
            rope_theta,
            rms_eps,
            cos,
            sin,
            local_rope,
            attention_span: None,
        };
        // Every tensor the forward reads must be there: fail here, not mid-training.
        for layer in 0..shape.n_layer {
            for kind in model.layer_tensors() {
                model.tensor_at(layer, kind)?;
            }
        }
        Ok(model)
    }

    fn layer_tensors(&self) -> &'static [&'static str] {
        match self.arch {
            Arch::Llama => &[
                "attn_norm",
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_norm",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ],
            Arch::Gemma3 { .. } => &[
                "attn_norm",
                "attn_q",
                "attn_q_norm",
                "attn_k",
                "attn_k_norm",
                "attn_v",
                "attn_output",
                "post_attention_norm",
                "ffn_norm",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
                "post_ffw_norm",
            ],
        }
    }

    /// Index in [`Self::vars`] of `blk.<layer>.<kind>.weight`.
    pub fn tensor_at(&self, layer: usize, kind: &str) -> Result<usize> {
        self.named(&format!("blk.{layer}.{kind}.weight"))
    }

    fn named(&self, name: &str) -> Result<usize> {
        match self.index.get(name) {
            Some(&i) => Ok(i),
            None => candle_core::bail!("the model has no tensor {name}"),
        }
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

    fn layer(&self, layer: usize, kind: &str) -> Result<Tensor> {
        Ok(self.weight(self.tensor_at(layer, kind)?))
    }

    /// `x · Wᵀ`; for a frozen weight through [`FrozenMatmul`], which skips W's gradient.
    fn times_transposed(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        if self.frozen {
            x.apply_op2(w, FrozenMatmul)
        } else {
            x.matmul(&w.t()?)
        }
    }

    /// `h · Wᵀ` for projection `kind` of `layer`, plus the adapter's `scale · (h·Aᵀ)·Bᵀ`.
    fn project(&self, h: &Tensor, layer: usize, kind: &str) -> Result<Tensor> {
        let i = self.tensor_at(layer, kind)?;
        let base = self.times_transposed(h, &self.weight(i))?;
        match &self.lora {
            Some(lora) => match lora.pair(i) {
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
        self.hidden_with(ids, None)
    }

    /// [`Self::hidden`], with dropout (rate, seeded stream) on the embeddings and on each
    /// sublayer's output when training; llama.cpp's inference graph has none.
    pub fn hidden_with(
        &self,
        ids: &Tensor,
        mut dropout: Option<(f32, &mut Rng)>,
    ) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let mut drop = |x: Tensor| -> Result<Tensor> {
            match dropout.as_mut() {
                Some((rate, rng)) if *rate > 0.0 => dropout_mask(&x, *rate, rng),
                _ => Ok(x),
            }
        };
        let s = self.shape;
        let gemma = matches!(self.arch, Arch::Gemma3 { .. });
        let (d, heads) = (s.n_embd, s.n_head);
        let (head_dim, scale) = match self.arch {
            Arch::Llama => (s.head_dim(), 1.0 / (s.head_dim() as f64).sqrt()),
            Arch::Gemma3 {
                head_dim,
                query_scale,
                ..
            } => (head_dim, query_scale),
        };
        let mut x = self
            .weight(self.named("token_embd.weight")?)
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, d))?;
        if gemma {
            x = (x * (d as f64).sqrt())?;
        }
        x = drop(x)?;
        let causal = mask(t, None, ids.device())?;
        let eps = self.rms_eps;
        let norm = |x: &Tensor, layer: usize, kind: &str| -> Result<Tensor> {
            rms_norm_slow(x, &self.layer(layer, kind)?, eps)
        };
        for layer in 0..s.n_layer {
            // Gemma's local layers: their own RoPE base and a sliding causal window.
            let (cos, sin, window) = match (self.arch, &self.local_rope) {
                (
                    Arch::Gemma3 {
                        window,
                        global_every,
                        ..
                    },
                    Some((cos, sin)),
                ) if (layer + 1) % global_every != 0 => (cos, sin, Some(window)),
                _ => (&self.cos, &self.sin, None),
            };
            let (cos, sin) = (cos.narrow(0, 0, t)?, sin.narrow(0, 0, t)?);
            let h = norm(&x, layer, "attn_norm")?.reshape((b * t, d))?;
            let heads_of = |kind: &str, n_heads: usize, head_norm: &str| -> Result<Tensor> {
                let mut y = self
                    .project(&h, layer, kind)?
                    .reshape((b, t, n_heads, head_dim))?
                    .transpose(1, 2)?
                    .contiguous()?;
                if gemma && !head_norm.is_empty() {
                    y = norm(&y, layer, head_norm)?;
                }
                Ok(y)
            };
            let rope = |y: Tensor| -> Result<Tensor> {
                if gemma {
                    rope_slow(&y, &cos, &sin)
                } else {
                    rope_i_slow(&y, &cos, &sin)
                }
            };
            let q = rope(heads_of("attn_q", heads, "attn_q_norm")?)?;
            let k = rope(heads_of("attn_k", s.n_head_kv, "attn_k_norm")?)?;
            let v = heads_of("attn_v", s.n_head_kv, "")?;
            let (k, v) = repeat_kv(k, v, heads / s.n_head_kv)?;
            let layer_mask = match window {
                Some(w) if w < t => mask(t, Some(w), ids.device())?,
                _ => causal.clone(),
            };
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
            let scores = match self.attention_span {
                Some(span) if !gemma && t > span + 1 => {
                    spanned_scores(&scores, &q, &k, span, scale, (&cos, &sin))?
                }
                _ => scores.broadcast_add(&layer_mask)?,
            };
            let attended = softmax(&scores, D::Minus1)?
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b * t, heads * head_dim))?;
            // A sublayer's output joins the residual stream (through Gemma's post-norm).
            let residual = |x: &Tensor, out: &Tensor, post_norm: &str| -> Result<Tensor> {
                let out = out.reshape((b, t, d))?;
                if gemma {
                    x + norm(&out, layer, post_norm)?
                } else {
                    x + out
                }
            };
            let out = drop(self.project(&attended, layer, "attn_output")?)?;
            x = residual(&x, &out, "post_attention_norm")?;
            let h = norm(&x, layer, "ffn_norm")?.reshape((b * t, d))?;
            let gate = self.project(&h, layer, "ffn_gate")?;
            let gate = if gemma { gate.gelu()? } else { gate.silu()? };
            let gated = (gate * self.project(&h, layer, "ffn_up")?)?;
            let out = drop(self.project(&gated, layer, "ffn_down")?)?;
            x = residual(&x, &out, "post_ffw_norm")?;
        }
        rms_norm_slow(&x, &self.weight(self.named("output_norm.weight")?), eps)
    }

    /// Logits `(rows, vocab)` for the hidden states at flat positions `rows` of `hidden`.
    pub fn logits_at(&self, hidden: &Tensor, rows: &Tensor) -> Result<Tensor> {
        let (b, t, d) = hidden.dims3()?;
        let picked = hidden.reshape((b * t, d))?.index_select(rows, 0)?;
        self.times_transposed(&picked, &self.head())
    }

    fn head(&self) -> Tensor {
        let name = if self.tied {
            "token_embd.weight"
        } else {
            "output.weight"
        };
        // Every model has its embedding; an untied one was checked to have its head.
        self.weight(self.index.get(name).copied().unwrap_or(0))
    }

    /// Mean cross-entropy of `targets` predicted at flat positions `rows`.
    pub fn loss(&self, ids: &Tensor, rows: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let logits = self.logits_at(&self.hidden(ids)?, rows)?;
        candle_nn::loss::cross_entropy(&logits, targets)
    }

    /// Mean cross-entropy over a subset of the vocabulary: `classes` are the token ids the
    /// softmax runs over and `targets` index into them (the sequence stage's items).
    pub fn loss_over(
        &self,
        hidden: &Tensor,
        rows: &Tensor,
        classes: &Tensor,
        targets: &Tensor,
    ) -> Result<Tensor> {
        let (b, t, d) = hidden.dims3()?;
        let picked = hidden.reshape((b * t, d))?.index_select(rows, 0)?;
        let head = self.head().index_select(classes, 0)?;
        candle_nn::loss::cross_entropy(&self.times_transposed(&picked, &head)?, targets)
    }

    /// Every weight as `(name, dims, values)`, for checkpoints and export.
    /// A tied model's `output.weight` is written as the embedding it uses.
    pub fn weights(&self) -> Result<Vec<NamedWeight>> {
        self.names
            .iter()
            .zip(&self.vars)
            .map(|(name, var)| {
                let source = if name == "output.weight" {
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
            self.index
                .get("output.weight")
                .map_or(0, |&i| self.vars[i].elem_count())
        } else {
            0
        }
    }
}

/// `x (m × k) · Wᵀ` for a frozen `W (n × k)`. candle's matmul backward computes the gradient
/// of both operands even when one is a constant; this op returns only `x`'s, which saves a
/// matmul per projection and, at the head, a vocabulary-sized gradient (671 MB for Gemma).
struct FrozenMatmul;

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = x_layout.shape().dims2()?;
        let (n, k_w) = w_layout.shape().dims2()?;
        if k != k_w {
            candle_core::bail!("frozen matmul: x is {m}×{k}, W is {n}×{k_w}");
        }
        let out = x.matmul(w, (1, m, n, k), x_layout, &w_layout.transpose(0, 1)?)?;
        Ok((out, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(w)?), None))
    }
}

/// Inverted dropout: zeroes each element with probability `rate` and scales the rest by
/// 1 / (1 - rate), with a mask drawn from kvrec's seeded stream (candle's CPU random tensors
/// cannot be seeded, and a resumed run must repeat its masks).
fn dropout_mask(x: &Tensor, rate: f32, rng: &mut Rng) -> Result<Tensor> {
    let keep = 1.0 / (1.0 - rate);
    let threshold = (f64::from(rate) * (1u64 << 32) as f64) as u64;
    let n = x.elem_count();
    let mut mask = Vec::with_capacity(n);
    while mask.len() < n {
        let bits = rng.next_u64();
        for half in [bits >> 32, bits & 0xFFFF_FFFF] {
            if mask.len() < n {
                mask.push(if half < threshold { 0.0 } else { keep });
            }
        }
    }
    x * Tensor::from_vec(mask, x.shape(), x.device())?
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

/// Attention scores `(b, h, t, t)` limited to a span: query `i` sees the keys of positions
/// `i - span + 1 ..= i` and the BOS at position 0, whose key is rotated to position
/// `i - span` (or 0) instead — the BOS sits `min(i, span)` back, as in a served prompt of
/// `span` items. Under RoPE a score depends only on the distance, so each target's scores
/// equal those of llama.cpp's causal pass over `[BOS, its last span items]` given the same
/// key states: a model trained on long windows reads the context it is served with.
fn spanned_scores(
    scores: &Tensor,
    q: &Tensor,
    k: &Tensor,
    span: usize,
    scale: f64,
    (cos, sin): (&Tensor, &Tensor),
) -> Result<Tensor> {
    let (b, h, t, head_dim) = q.dims4()?;
    let device = q.device();
    // RoPE at position 0 is the identity, so k's first row is the BOS key unrotated.
    let bos_key = k
        .narrow(2, 0, 1)?
        .broadcast_as((b, h, t, head_dim))?
        .contiguous()?;
    let positions: Vec<u32> = (0..t).map(|i| i.saturating_sub(span) as u32).collect();
    let positions = Tensor::new(positions.as_slice(), device)?;
    let bos_key = rope_i_slow(
        &bos_key,
        &cos.index_select(&positions, 0)?,
        &sin.index_select(&positions, 0)?,
    )?;
    let bos_scores = ((q * bos_key)?.sum_keepdim(D::Minus1)? * scale)?;
    let band: Vec<f32> = (0..t)
        .flat_map(|i| {
            (1..t).map(move |j| {
                if j > i || i - j >= span {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    let band = Tensor::from_vec(band, (t, t - 1), device)?;
    let rest = scores.narrow(3, 1, t - 1)?.broadcast_add(&band)?;
    Tensor::cat(&[&bos_scores, &rest], 3)
}

/// Causal attention mask `(t, t)`; with `window`, a query also ignores keys `window` or more
/// positions back (llama.cpp's sliding-window rule).
fn mask(t: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
    let window = window.unwrap_or(usize::MAX);
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..t).map(move |j| {
                if j > i || i - j >= window {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_matmul_matches_matmul_and_gives_only_the_input_gradient() {
        let device = Device::Cpu;
        let values = |n: usize, seed: u64| -> Vec<f32> {
            let mut rng = Rng::new(seed);
            (0..n)
                .map(|_| (rng.next_u64() % 1000) as f32 / 500.0 - 1.0)
                .collect()
        };
        let x =
            Var::from_tensor(&Tensor::from_vec(values(15, 1), (3, 5), &device).unwrap()).unwrap();
        let w = Tensor::from_vec(values(20, 2), (4, 5), &device).unwrap();
        let frozen = x.as_tensor().apply_op2(&w, FrozenMatmul).unwrap();
        let plain = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
        let gap = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        assert!(gap(&frozen, &plain) < 1e-6);
        let weights = Tensor::from_vec(values(12, 3), (3, 4), &device).unwrap();
        let grad = |y: &Tensor| {
            (y * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        let (g_frozen, g_plain) = (grad(&frozen), grad(&plain));
        let dx = |g: &candle_core::backprop::GradStore| g.get(x.as_tensor()).unwrap().clone();
        assert!(gap(&dx(&g_frozen), &dx(&g_plain)) < 1e-6);
        assert!(
            g_frozen.get(&w).is_none(),
            "no gradient kept for the frozen weight"
        );
    }

    #[test]
    fn a_spanned_target_reads_what_a_served_prompt_of_span_items_gives() {
        let shape = LlamaShape {
            n_vocab: 50,
            n_embd: 16,
            n_layer: 1,
            n_head: 2,
            n_head_kv: 2,
            n_ff: 32,
            context: 64,
        };
        // One layer: with more, a key's own state has read `span` items further back.
        let mut model = Transformer::init(shape, 7, false).unwrap();
        let span = 5;
        let ids: Vec<u32> = std::iter::once(1)
            .chain((0..29).map(|i| 3 + (i * 7) % 40))
            .collect();
        let long = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let full = model.hidden(&long).unwrap();
        model.attention_span = Some(span);
        let spanned = model.hidden(&long).unwrap();
        model.attention_span = None;
        let row = |h: &Tensor, i: usize| -> Vec<f32> {
            h.get(0).unwrap().get(i).unwrap().to_vec1().unwrap()
        };
        for i in [1, span, span + 1, 17, ids.len() - 1] {
            // What llama.cpp computes for the served prompt: BOS and the last `span` items.
            let first = i.saturating_sub(span - 1).max(1);
            let served: Vec<u32> = std::iter::once(ids[0])
                .chain(ids[first..=i].iter().copied())
                .collect();
            let served = Tensor::new(served.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let served = model.hidden(&served).unwrap();
            let last = served.dim(1).unwrap() - 1;
            let (want, got) = (row(&served, last), row(&spanned, i));
            let gap = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(gap < 1e-4, "position {i}: spanned forward differs by {gap}");
        }
        // Past the span the full causal forward reads more, and differs.
        let (a, b) = (row(&full, 20), row(&spanned, 20));
        assert!(a.iter().zip(&b).any(|(x, y)| (x - y).abs() > 1e-3));
    }
}
