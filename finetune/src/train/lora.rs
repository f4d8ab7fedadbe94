//! LoRA adapters on a frozen llama base: which projections and layers get one, their
//! initialisation (A small and random, B zero, so training starts from the base's outputs),
//! the merge `W + (alpha / rank)·B·A`, and their tensors by llama.cpp's adapter names.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use kvrec_core::rng::Rng;
use serde::{Deserialize, Serialize};

/// Projection names accepted in `--lora-targets`, and the GGUF tensor kind each names.
pub const TARGETS: [(&str, &str); 7] = [
    ("q", "attn_q"),
    ("k", "attn_k"),
    ("v", "attn_v"),
    ("o", "attn_output"),
    ("gate", "ffn_gate"),
    ("up", "ffn_up"),
    ("down", "ffn_down"),
];

/// What gets an adapter; stored in the run's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f64,
    /// Names from [`TARGETS`].
    pub targets: Vec<String>,
    /// Layers with adapters; empty = every layer. Adapters on the top layers only leave the
    /// layers below without a backward pass.
    #[serde(default)]
    pub layers: Vec<usize>,
}

impl Default for LoraSpec {
    fn default() -> Self {
        LoraSpec {
            rank: 8,
            alpha: 16.0,
            targets: vec!["q".into(), "v".into()],
            layers: Vec::new(),
        }
    }
}

impl LoraSpec {
    /// The `(layer, tensor kind)` pairs this spec adapts in a model of `n_layer` layers.
    pub fn sites(&self, n_layer: usize) -> Result<Vec<(usize, &'static str)>> {
        if self.rank == 0 {
            bail!("--lora-rank must be at least 1");
        }
        let mut which = Vec::new();
        for target in &self.targets {
            match TARGETS.iter().find(|(name, _)| name == target) {
                Some(&(_, w)) => which.push(w),
                None => bail!(
                    "unknown LoRA target '{target}'; use some of {}",
                    TARGETS.map(|(n, _)| n).join(", ")
                ),
            }
        }
        if which.is_empty() {
            bail!("no LoRA targets; pass e.g. --lora-targets q,v");
        }
        let layers: Vec<usize> = if self.layers.is_empty() {
            (0..n_layer).collect()
        } else {
            self.layers.clone()
        };
        if let Some(bad) = layers.iter().find(|&&l| l >= n_layer) {
            bail!(
                "LoRA layer {bad} does not exist: the base has layers 0 to {}",
                n_layer - 1
            );
        }
        Ok(layers
            .iter()
            .flat_map(|&l| which.iter().map(move |&w| (l, w)))
            .collect())
    }
}

/// One adapted projection `W (out × in)`: `A (rank × in)`, `B (out × rank)`.
pub struct LoraPair {
    /// The base tensor's GGUF name, e.g. `blk.3.attn_q.weight`.
    pub name: String,
    pub a: Var,
    pub b: Var,
}

pub struct Lora {
    pub spec: LoraSpec,
    /// By the adapted tensor's index among the model's tensors.
    pairs: BTreeMap<usize, LoraPair>,
}

/// A weight that gets an adapter: its index among the model's tensors, its name and its
/// `(out, in)` dims (the model lists them: `Transformer::lora_sites`).
pub struct Site {
    pub index: usize,
    pub name: String,
    pub out: usize,
    pub input: usize,
}

impl Lora {
    /// Fresh adapters at `sites`: A uniform in ±1/√in (seeded), B zero.
    pub fn init(spec: &LoraSpec, sites: &[Site], seed: u64) -> Result<Lora> {
        let mut rng = Rng::new(seed ^ 0x10a4);
        Self::build(spec, sites, |_, (rank, input), out| {
            let bound = 1.0 / (input as f32).sqrt();
            let a: Vec<f32> = (0..rank * input)
                .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound)
                .collect();
            Ok((
                Tensor::from_vec(a, (rank, input), &Device::Cpu)?,
                Tensor::zeros((out, rank), candle_core::DType::F32, &Device::Cpu)?,
            ))
        })
    }

    /// Adapters from saved tensors named as [`Lora::tensors`] names them.
    pub fn from_tensors(
        spec: &LoraSpec,
        sites: &[Site],
        saved: &std::collections::HashMap<String, Tensor>,
    ) -> Result<Lora> {
        Self::build(spec, sites, |name, _, _| {
            let get = |suffix: &str| {
                saved
                    .get(&format!("{name}.{suffix}"))
                    .cloned()
                    .with_context(|| format!("the checkpoint has no {name}.{suffix}"))
            };
            Ok((get("lora_a")?, get("lora_b")?))
        })
    }

    fn build(
        spec: &LoraSpec,
        sites: &[Site],
        mut make: impl FnMut(&str, (usize, usize), usize) -> Result<(Tensor, Tensor)>,
    ) -> Result<Lora> {
        let mut pairs = BTreeMap::new();
        for site in sites {
            let (name, out, input) = (site.name.clone(), site.out, site.input);
            let (a, b) = make(&name, (spec.rank, input), out)?;
            if a.dims() != [spec.rank, input] || b.dims() != [out, spec.rank] {
                bail!(
                    "{name}: adapter shapes {:?} / {:?} do not fit a {out}×{input} weight at rank {}",
                    a.dims(),
                    b.dims(),
                    spec.rank
                );
            }
            pairs.insert(
                site.index,
                LoraPair {
                    name,
                    a: Var::from_tensor(&a)?,
                    b: Var::from_tensor(&b)?,
                },
            );
        }
        Ok(Lora {
            spec: spec.clone(),
            pairs,
        })
    }

    /// `alpha / rank`, as llama.cpp scales an adapter.
    pub fn scale(&self) -> f64 {
        self.spec.alpha / self.spec.rank as f64
    }

    pub fn pair(&self, tensor: usize) -> Option<&LoraPair> {
        self.pairs.get(&tensor)
    }

    pub fn pairs(&self) -> impl Iterator<Item = (usize, &LoraPair)> {
        self.pairs.iter().map(|(&i, p)| (i, p))
    }

    /// The trained tensors with llama.cpp adapter names (`<weight>.lora_a` / `.lora_b`).
    pub fn tensors(&self) -> Vec<(String, Var)> {
        self.pairs
            .values()
            .flat_map(|p| {
                [
                    (format!("{}.lora_a", p.name), p.a.clone()),
                    (format!("{}.lora_b", p.name), p.b.clone()),
                ]
            })
            .collect()
    }

    pub fn parameter_count(&self) -> usize {
        self.pairs
            .values()
            .map(|p| p.a.elem_count() + p.b.elem_count())
            .sum()
    }

    /// `scale · B · A` for the pair adapting tensor `i`.
    pub fn delta(&self, pair: &LoraPair) -> Result<Tensor> {
        Ok((pair.b.as_tensor().matmul(pair.a.as_tensor())? * self.scale())?)
    }
}

/// The base `weights` (by tensor index) with every adapter merged in: `W + scale·B·A`.
pub fn merged(weights: &[Var], lora: &Lora) -> Result<Vec<(usize, Tensor)>> {
    lora.pairs()
        .map(|(i, pair)| {
            let weight = weights
                .get(i)
                .with_context(|| format!("no weight {i} for the adapter {}", pair.name))?;
            Ok((i, (weight.as_tensor() + lora.delta(pair)?)?))
        })
        .collect()
}
