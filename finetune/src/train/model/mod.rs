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

use candle_core::{Device, Result, Tensor, Var};
use kvrec_core::rng::Rng;
use kvrec_llm::llama_file::LlamaShape;

use super::lora::{Lora, LoraSpec, Site};

mod arch;
mod attention;
mod forward;
mod ops;
mod scoring;

pub use arch::Arch;

use attention::rope_tables;
use ops::FrozenMatmul;

pub const RMS_EPS: f32 = 1e-5;
pub const ROPE_THETA: f32 = 10_000.0;
/// RoPE tables cover at most this many positions (Gemma declares 32,768; prompts are short).
const MAX_ROPE_POSITIONS: usize = 8192;

/// A named weight: GGUF name, PyTorch-order dims, values.
pub type NamedWeight = (String, Vec<usize>, Vec<f32>);

/// Item features (`train --item-keys`, `--item-vectors`; see [`crate::train::item_features`]):
/// a fixed `(vocab, columns)` matrix of each item token's keys and text vector, not trained…
pub const ITEM_FEATURE_MATRIX: &str = "item_features.matrix";
/// …and the columns' own input and output embeddings, `(columns, d)`, added through the matrix
/// to every item's embedding and head row. Export folds them in: the GGUF is a plain llama.
pub const ITEM_FEATURE_INPUT: &str = "item_features.token_embd";
pub const ITEM_FEATURE_OUTPUT: &str = "item_features.output";
/// The item-feature tensors: checkpoints carry them, the GGUF does not (export folds them in).
const ITEM_FEATURE_TENSORS: [&str; 3] =
    [ITEM_FEATURE_MATRIX, ITEM_FEATURE_INPUT, ITEM_FEATURE_OUTPUT];

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
            for kind in model.arch.layer_tensors() {
                model.tensor_at(layer, kind)?;
            }
        }
        Ok(model)
    }

    /// Adds item features (see [`ITEM_FEATURE_MATRIX`]): `matrix` `(vocab, keys)` and the keys' input
    /// embedding, and their output embedding when the head is untied. Their names go to the
    /// end of [`Self::names`], so checkpoints and the optimizer carry them like any weight.
    pub fn attach_item_features(
        &mut self,
        matrix: Tensor,
        input: Tensor,
        output: Option<Tensor>,
    ) -> Result<()> {
        let (rows, keys) = matrix.dims2()?;
        if rows != self.shape.n_vocab || input.dims() != [keys, self.shape.n_embd] {
            candle_core::bail!(
                "item keys of shape {:?} and {:?} do not fit a vocabulary of {} and width {}",
                matrix.dims(),
                input.dims(),
                self.shape.n_vocab,
                self.shape.n_embd
            );
        }
        if output.is_none() != self.tied {
            candle_core::bail!(
                "item keys need an output embedding exactly when the head is untied"
            );
        }
        for (name, tensor) in
            ITEM_FEATURE_TENSORS
                .into_iter()
                .zip([Some(matrix), Some(input), output])
        {
            if let Some(tensor) = tensor {
                self.index.insert(name.to_string(), self.vars.len());
                self.names.push(name.to_string());
                self.vars.push(Var::from_tensor(&tensor)?);
            }
        }
        Ok(())
    }

    /// Whether the model carries item keys.
    pub fn has_item_features(&self) -> bool {
        self.index.contains_key(ITEM_FEATURE_MATRIX)
    }

    /// `table` plus the item keys' `embedding` through the key matrix (fixed: detached, so it
    /// gets no gradient and the optimizer leaves it as it is).
    fn with_item_features(&self, table: Tensor, embedding: &str) -> Result<Tensor> {
        match (
            self.index.get(ITEM_FEATURE_MATRIX),
            self.index.get(embedding),
        ) {
            (Some(&matrix), Some(&keys)) => {
                let matrix = self.vars[matrix].as_tensor().detach();
                table + matrix.matmul(&self.weight(keys))?
            }
            _ => Ok(table),
        }
    }

    /// The token embedding the forward reads: `token_embd.weight`, with item keys folded in.
    fn token_table(&self) -> Result<Tensor> {
        let table = self.weight(self.named("token_embd.weight")?);
        self.with_item_features(table, ITEM_FEATURE_INPUT)
    }

    /// The weights `spec` puts adapters on.
    pub fn lora_sites(&self, spec: &LoraSpec) -> anyhow::Result<Vec<Site>> {
        spec.sites(self.shape.n_layer)?
            .into_iter()
            .map(|(layer, kind)| {
                let index = self.tensor_at(layer, kind)?;
                let (out, input) = self.vars[index].dims2()?;
                Ok(Site {
                    index,
                    name: self.names[index].clone(),
                    out,
                    input,
                })
            })
            .collect()
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

    /// Logits `(rows, vocab)` for the hidden states at flat positions `rows` of `hidden`.
    pub fn logits_at(&self, hidden: &Tensor, rows: &Tensor) -> Result<Tensor> {
        let (b, t, d) = hidden.dims3()?;
        let picked = hidden.reshape((b * t, d))?.index_select(rows, 0)?;
        self.times_transposed(&picked, &self.head()?)
    }

    /// The output head: the token table when tied, else `output.weight` with item keys.
    fn head(&self) -> Result<Tensor> {
        if self.tied {
            return self.token_table();
        }
        let head = self.weight(self.named("output.weight")?);
        self.with_item_features(head, ITEM_FEATURE_OUTPUT)
    }

    /// Mean cross-entropy of `targets` predicted at flat positions `rows`.
    pub fn loss(&self, ids: &Tensor, rows: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let logits = self.logits_at(&self.hidden(ids)?, rows)?;
        candle_nn::loss::cross_entropy(&logits, targets)
    }

    /// Mean cross-entropy over a subset of the vocabulary: `classes` are the token ids the
    /// softmax runs over, and each row is pulled toward the distribution `goal` gives it over
    /// them (the sequence stage's items; see [`crate::train::targets`]).
    pub fn loss_over(
        &self,
        hidden: &Tensor,
        rows: &Tensor,
        classes: &Tensor,
        goal: &crate::train::targets::Goal,
    ) -> Result<Tensor> {
        let (b, t, d) = hidden.dims3()?;
        let picked = hidden.reshape((b * t, d))?.index_select(rows, 0)?;
        let head = self.head()?.index_select(classes, 0)?;
        goal.loss(&self.times_transposed(&picked, &head)?)
    }

    /// Every GGUF weight as `(name, dims, values)`, for export: item keys are folded into the
    /// embedding and head, and a tied model's `output.weight` is written as the embedding.
    pub fn weights(&self) -> Result<Vec<NamedWeight>> {
        self.names
            .iter()
            .zip(&self.vars)
            .filter(|(name, _)| !ITEM_FEATURE_TENSORS.contains(&name.as_str()))
            .map(|(name, var)| {
                let source = match name.as_str() {
                    "output.weight" => self.head()?,
                    "token_embd.weight" => self.token_table()?,
                    _ => var.as_tensor().clone(),
                };
                Ok((
                    name.clone(),
                    var.dims().to_vec(),
                    source.flatten_all()?.to_vec1::<f32>()?,
                ))
            })
            .collect()
    }

    /// Trained parameters (a tied model's unused head and the fixed key matrix not counted).
    pub fn parameter_count(&self) -> usize {
        let all: usize = self.vars.iter().map(|v| v.elem_count()).sum();
        let count = |name: &str| {
            self.index
                .get(name)
                .map_or(0, |&i| self.vars[i].elem_count())
        };
        all - count(ITEM_FEATURE_MATRIX) - if self.tied { count("output.weight") } else { 0 }
    }
}
