//! Everything a llama-architecture GGUF needs, in one description: hyper-parameters, a
//! byte-level BPE vocabulary, weights and the kvrec template. The finetune crate's export and
//! the tiny test model both write through [`LlamaFile::write`], so the metadata llama.cpp
//! requires is spelled out once.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;

use kvrec_core::cowatch::{CoWatchPrior, COWATCH_METADATA_KEY};
use kvrec_core::item_ids::{ItemId, ITEM_IDS_METADATA_KEY};
use kvrec_core::template::{TemplateSpec, ITEMS_METADATA_KEY, TEMPLATE_METADATA_KEY};

use crate::gguf::{GgufWriter, MetaValue, TensorType, Q8_0_BLOCK};

/// Shape of a llama-architecture transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LlamaShape {
    pub n_vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_ff: usize,
    pub context: usize,
}

impl LlamaShape {
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    pub fn kv_dim(&self) -> usize {
        self.head_dim() * self.n_head_kv
    }

    /// Every weight tensor's GGUF name and PyTorch-order shape, in file order.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (d, kv, ff) = (self.n_embd, self.kv_dim(), self.n_ff);
        let mut out = vec![("token_embd.weight".to_string(), vec![self.n_vocab, d])];
        for layer in 0..self.n_layer {
            for (t, shape) in [
                ("attn_norm", vec![d]),
                ("attn_q", vec![d, d]),
                ("attn_k", vec![kv, d]),
                ("attn_v", vec![kv, d]),
                ("attn_output", vec![d, d]),
                ("ffn_norm", vec![d]),
                ("ffn_gate", vec![ff, d]),
                ("ffn_up", vec![ff, d]),
                ("ffn_down", vec![d, ff]),
            ] {
                out.push((format!("blk.{layer}.{t}.weight"), shape));
            }
        }
        out.push(("output_norm.weight".into(), vec![d]));
        out.push(("output.weight".into(), vec![self.n_vocab, d]));
        out
    }
}

/// A byte-level BPE vocabulary in id order (GPT-2 style, `tokenizer.ggml.pre = gpt-2`).
#[derive(Debug, Clone, PartialEq)]
pub struct BpeVocab {
    pub tokens: Vec<String>,
    /// llama.cpp token types: 1 normal, 3 control.
    pub types: Vec<i32>,
    /// `"a b"` merge rules, highest priority first.
    pub merges: Vec<String>,
    pub bos: u32,
    pub eos: u32,
}

/// A complete model to write.
pub struct LlamaFile<'a> {
    pub name: &'a str,
    pub shape: LlamaShape,
    pub vocab: &'a BpeVocab,
    pub template: Option<&'a TemplateSpec>,
    /// The item ids the model was trained on (`kvrec.items`), which `recommend_topk` ranks.
    pub items: Option<&'a [i64]>,
    /// The app's ids of those items (`kvrec.item_ids`, parallel to `items`) when the app's ids
    /// are not the model's dense ones (text SKUs, 64-bit ids).
    pub item_ids: Option<&'a [ItemId]>,
    /// The co-watch prior serving adds to the model's scores (`kvrec.cowatch`).
    pub prior: Option<&'a CoWatchPrior>,
    /// Weights by name, in the order and shapes of [`LlamaShape::tensors`].
    pub weights: Vec<Vec<f32>>,
    /// Storage of matrices; vectors (norms) are always F32.
    pub matrix_type: TensorType,
    pub rope_theta: f32,
    pub rms_eps: f32,
}

impl LlamaFile<'_> {
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let s = self.shape;
        let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        if self.vocab.tokens.len() != s.n_vocab || self.vocab.types.len() != s.n_vocab {
            return Err(invalid(format!(
                "vocabulary has {} tokens, the shape says {}",
                self.vocab.tokens.len(),
                s.n_vocab
            )));
        }
        let names = s.tensors();
        if names.len() != self.weights.len() {
            return Err(invalid(format!(
                "{} weight tensors given, the shape needs {}",
                self.weights.len(),
                names.len()
            )));
        }
        let mut w = GgufWriter::default();
        let u32_of = |n: usize| MetaValue::U32(n as u32);
        w.meta("general.architecture", MetaValue::String("llama".into()))
            .meta("general.name", MetaValue::String(self.name.into()))
            .meta(
                "general.file_type",
                // llama_ftype: ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7.
                MetaValue::U32(match self.matrix_type {
                    TensorType::F32 => 0,
                    TensorType::F16 => 1,
                    TensorType::Q8_0 => 7,
                }),
            )
            .meta("llama.context_length", u32_of(s.context))
            .meta("llama.embedding_length", u32_of(s.n_embd))
            .meta("llama.block_count", u32_of(s.n_layer))
            .meta("llama.feed_forward_length", u32_of(s.n_ff))
            .meta("llama.attention.head_count", u32_of(s.n_head))
            .meta("llama.attention.head_count_kv", u32_of(s.n_head_kv))
            .meta(
                "llama.attention.layer_norm_rms_epsilon",
                MetaValue::F32(self.rms_eps),
            )
            .meta("llama.rope.dimension_count", u32_of(s.head_dim()))
            .meta("llama.rope.freq_base", MetaValue::F32(self.rope_theta))
            .meta("llama.vocab_size", u32_of(s.n_vocab))
            .meta("tokenizer.ggml.model", MetaValue::String("gpt2".into()))
            // "gpt-2", not "gpt2": the latter is refused as an unknown pre-tokenizer.
            .meta("tokenizer.ggml.pre", MetaValue::String("gpt-2".into()))
            .meta(
                "tokenizer.ggml.tokens",
                MetaValue::strings(&self.vocab.tokens),
            )
            .meta(
                "tokenizer.ggml.token_type",
                MetaValue::i32s(&self.vocab.types),
            )
            .meta(
                "tokenizer.ggml.merges",
                MetaValue::strings(&self.vocab.merges),
            )
            .meta(
                "tokenizer.ggml.bos_token_id",
                MetaValue::U32(self.vocab.bos),
            )
            .meta(
                "tokenizer.ggml.eos_token_id",
                MetaValue::U32(self.vocab.eos),
            )
            .meta("tokenizer.ggml.add_bos_token", MetaValue::Bool(true));
        if let Some(spec) = self.template {
            w.meta(
                TEMPLATE_METADATA_KEY,
                MetaValue::String(spec.to_json().to_string()),
            );
        }
        if let Some(items) = self.items {
            w.meta(
                ITEMS_METADATA_KEY,
                MetaValue::String(serde_json::Value::from(items.to_vec()).to_string()),
            );
        }
        if let Some(app) = self.item_ids {
            if self.items.map(<[i64]>::len) != Some(app.len()) {
                return Err(invalid(format!(
                    "{} app item ids need a catalog of as many items",
                    app.len()
                )));
            }
            let json = serde_json::to_string(app).map_err(|e| invalid(e.to_string()))?;
            w.meta(ITEM_IDS_METADATA_KEY, MetaValue::String(json));
        }
        if let Some(prior) = self.prior {
            w.meta(COWATCH_METADATA_KEY, MetaValue::String(prior.to_json()));
        }
        for ((name, shape), data) in names.iter().zip(&self.weights) {
            let kind = if shape.len() == 1 {
                TensorType::F32
            } else {
                self.matrix_type
            };
            if shape.iter().product::<usize>() != data.len() {
                return Err(invalid(format!(
                    "tensor {name} has {} values, shape {shape:?} needs {}",
                    data.len(),
                    shape.iter().product::<usize>()
                )));
            }
            if kind == TensorType::Q8_0 && shape[shape.len() - 1] % Q8_0_BLOCK != 0 {
                return Err(invalid(format!(
                    "tensor {name} has rows of {} values; Q8_0 needs a multiple of \
                     {Q8_0_BLOCK}: export as f16 instead",
                    shape[shape.len() - 1]
                )));
            }
            w.tensor(name, shape, kind, data.clone());
        }
        let mut out = BufWriter::new(File::create(path)?);
        w.write(&mut out)?;
        io::Write::flush(&mut out)
    }
}
