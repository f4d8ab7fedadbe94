//! A tiny random Llama (≈ 0.2 M parameters, byte-level BPE vocabulary) written as GGUF.
//!
//! Tests need a real model that llama.cpp loads and runs, made by the project itself rather
//! than downloaded; its rankings are arbitrary but deterministic, which is what the backend's
//! tests check (permutations, consistency, concurrency, errors).

use std::io;
use std::path::Path;

use kvrec_core::rng::Rng;
use kvrec_core::template::TemplateSpec;

use crate::gguf::TensorType;
use crate::llama_file::{BpeVocab, LlamaFile, LlamaShape};

const N_EMBD: usize = 64;
const N_LAYER: usize = 2;
const N_HEAD: usize = 4;
const N_HEAD_KV: usize = 2;
const CONTEXT: usize = 4096;
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

/// The tiny model's vocabulary: control tokens, the 256 byte tokens and a few merges.
pub fn tiny_vocab() -> BpeVocab {
    let (tokens, types) = tokens();
    BpeVocab {
        tokens,
        types,
        merges: MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect(),
        bos: 0,
        eos: 1,
    }
}

/// Writes the tiny model to `path`. `template`, when given, is stored under
/// `kvrec.template` as a model trained by kvrec would store it.
pub fn write_tiny_llama(path: &Path, seed: u64, template: Option<&TemplateSpec>) -> io::Result<()> {
    write_random_llama(path, seed, template, N_EMBD, N_LAYER)
}

/// A random model with the tiny vocabulary and `width × layers` (FFN 2 × width): large ones
/// make memory effects measurable (loading, unloading) without a trained model.
pub fn write_random_llama(
    path: &Path,
    seed: u64,
    template: Option<&TemplateSpec>,
    width: usize,
    layers: usize,
) -> io::Result<()> {
    let vocab = tiny_vocab();
    let shape = LlamaShape {
        n_vocab: vocab.tokens.len(),
        n_embd: width,
        n_layer: layers,
        n_head: N_HEAD,
        n_head_kv: N_HEAD_KV,
        n_ff: 2 * width,
        context: CONTEXT,
    };
    let mut rng = Rng::new(seed);
    let weights = shape
        .tensors()
        .into_iter()
        .map(|(name, dims)| {
            let n = dims.iter().product();
            if dims.len() == 1 {
                vec![1.0; n]
            } else if name == "token_embd.weight" {
                random(&mut rng, n, 0.5)
            } else if name == "output.weight" {
                // Small logits keep the random model's scores spread out rather than saturated.
                random(&mut rng, n, 0.1)
            } else {
                random(&mut rng, n, 0.2)
            }
        })
        .collect();
    LlamaFile {
        name: "kvrec tiny test llama",
        shape,
        vocab: &vocab,
        template,
        weights,
        matrix_type: TensorType::F32,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
    }
    .write(path)
}
