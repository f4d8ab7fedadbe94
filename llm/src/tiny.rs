//! A tiny random Llama (≈ 0.2 M parameters, byte-level BPE vocabulary) written as GGUF.
//!
//! Tests need a real model that llama.cpp loads and runs, made by the project itself rather
//! than downloaded; its rankings are arbitrary but deterministic, which is what the backend's
//! tests check (permutations, consistency, concurrency, errors).

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;

use kvrec_core::rng::Rng;
use kvrec_core::template::{TemplateSpec, TEMPLATE_METADATA_KEY};

use crate::gguf::{GgufWriter, MetaValue, TensorType};

const N_EMBD: usize = 64;
const N_LAYER: usize = 2;
const N_HEAD: usize = 4;
const N_HEAD_KV: usize = 2;
const N_FF: usize = 128;
const CONTEXT: u32 = 4096;
/// Extra merges so the BPE path is exercised; each result is also a token.
const MERGES: [(&str, &str); 4] = [("Ġ", "t"), ("h", "e"), ("i", "n"), (",", "Ġ")];

/// GPT-2's reversible byte → printable character mapping used by byte-level BPE vocabularies.
pub fn byte_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let c = if printable {
            b
        } else {
            extra += 1;
            255 + extra
        };
        table[b as usize] = char::from_u32(c).expect("valid code point");
    }
    table
}

fn tokens() -> (Vec<String>, Vec<i32>) {
    let mut tokens = vec!["<s>".to_string(), "</s>".to_string()];
    let mut types = vec![3, 3];
    for c in byte_to_unicode() {
        tokens.push(c.to_string());
        types.push(1);
    }
    for (a, b) in MERGES {
        tokens.push(format!("{a}{b}"));
        types.push(1);
    }
    (tokens, types)
}

fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| ((rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale)
        .collect()
}

/// Writes the tiny model to `path`. `template`, when given, is stored under
/// `kvrec.template` as a model trained by kvrec would store it.
pub fn write_tiny_llama(path: &Path, seed: u64, template: Option<&TemplateSpec>) -> io::Result<()> {
    let (tokens, types) = tokens();
    let n_vocab = tokens.len();
    let mut rng = Rng::new(seed);
    let mut w = GgufWriter::default();
    w.meta("general.architecture", MetaValue::String("llama".into()))
        .meta(
            "general.name",
            MetaValue::String("kvrec tiny test llama".into()),
        )
        .meta("general.file_type", MetaValue::U32(0))
        .meta("llama.context_length", MetaValue::U32(CONTEXT))
        .meta("llama.embedding_length", MetaValue::U32(N_EMBD as u32))
        .meta("llama.block_count", MetaValue::U32(N_LAYER as u32))
        .meta("llama.feed_forward_length", MetaValue::U32(N_FF as u32))
        .meta("llama.attention.head_count", MetaValue::U32(N_HEAD as u32))
        .meta(
            "llama.attention.head_count_kv",
            MetaValue::U32(N_HEAD_KV as u32),
        )
        .meta(
            "llama.attention.layer_norm_rms_epsilon",
            MetaValue::F32(1e-5),
        )
        .meta(
            "llama.rope.dimension_count",
            MetaValue::U32((N_EMBD / N_HEAD) as u32),
        )
        .meta("llama.rope.freq_base", MetaValue::F32(10_000.0))
        .meta("llama.vocab_size", MetaValue::U32(n_vocab as u32))
        .meta("tokenizer.ggml.model", MetaValue::String("gpt2".into()))
        .meta("tokenizer.ggml.pre", MetaValue::String("gpt-2".into()))
        .meta("tokenizer.ggml.tokens", MetaValue::StringArray(tokens))
        .meta("tokenizer.ggml.token_type", MetaValue::I32Array(types))
        .meta(
            "tokenizer.ggml.merges",
            MetaValue::StringArray(MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect()),
        )
        .meta("tokenizer.ggml.bos_token_id", MetaValue::U32(0))
        .meta("tokenizer.ggml.eos_token_id", MetaValue::U32(1))
        .meta("tokenizer.ggml.add_bos_token", MetaValue::Bool(true));
    if let Some(spec) = template {
        w.meta(
            TEMPLATE_METADATA_KEY,
            MetaValue::String(spec.to_json().to_string()),
        );
    }
    let kv = N_EMBD / N_HEAD * N_HEAD_KV;
    w.tensor(
        "token_embd.weight",
        &[n_vocab, N_EMBD],
        TensorType::F32,
        random(&mut rng, n_vocab * N_EMBD, 0.5),
    );
    for layer in 0..N_LAYER {
        let name = |t: &str| format!("blk.{layer}.{t}.weight");
        w.tensor(
            &name("attn_norm"),
            &[N_EMBD],
            TensorType::F32,
            vec![1.0; N_EMBD],
        );
        w.tensor(
            &name("attn_q"),
            &[N_EMBD, N_EMBD],
            TensorType::F32,
            random(&mut rng, N_EMBD * N_EMBD, 0.2),
        );
        w.tensor(
            &name("attn_k"),
            &[kv, N_EMBD],
            TensorType::F32,
            random(&mut rng, kv * N_EMBD, 0.2),
        );
        w.tensor(
            &name("attn_v"),
            &[kv, N_EMBD],
            TensorType::F32,
            random(&mut rng, kv * N_EMBD, 0.2),
        );
        w.tensor(
            &name("attn_output"),
            &[N_EMBD, N_EMBD],
            TensorType::F32,
            random(&mut rng, N_EMBD * N_EMBD, 0.2),
        );
        w.tensor(
            &name("ffn_norm"),
            &[N_EMBD],
            TensorType::F32,
            vec![1.0; N_EMBD],
        );
        w.tensor(
            &name("ffn_gate"),
            &[N_FF, N_EMBD],
            TensorType::F32,
            random(&mut rng, N_FF * N_EMBD, 0.2),
        );
        w.tensor(
            &name("ffn_up"),
            &[N_FF, N_EMBD],
            TensorType::F32,
            random(&mut rng, N_FF * N_EMBD, 0.2),
        );
        w.tensor(
            &name("ffn_down"),
            &[N_EMBD, N_FF],
            TensorType::F32,
            random(&mut rng, N_EMBD * N_FF, 0.2),
        );
    }
    w.tensor(
        "output_norm.weight",
        &[N_EMBD],
        TensorType::F32,
        vec![1.0; N_EMBD],
    );
    w.tensor(
        "output.weight",
        &[n_vocab, N_EMBD],
        TensorType::F16,
        random(&mut rng, n_vocab * N_EMBD, 0.1),
    );
    let mut out = BufWriter::new(File::create(path)?);
    w.write(&mut out)?;
    io::Write::flush(&mut out)
}
