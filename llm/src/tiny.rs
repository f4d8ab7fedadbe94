//! A tiny random Llama (≈ 0.2 M parameters, byte-level BPE vocabulary) written as GGUF.
//!
//! Tests need a real model that llama.cpp loads and runs, made by the project itself rather
//! than downloaded; its rankings are arbitrary but deterministic, which is what the backend's
//! tests check (permutations, consistency, concurrency, errors).

use std::io;
use std::path::Path;

use kvrec_core::cowatch::CoWatchPrior;
use kvrec_core::item_ids::ItemId;
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

/// The tiny model as a sequence-stage model would be: a `sequence`-layout template, one
/// token per spaced item id (`Ġ17`, reached through merges `Ġ 1`, `Ġ1 7`) and the catalog
/// `items` in its metadata, so `recommend_topk` can rank it. Without `item_tokens` the ids
/// stay split into characters (a catalog the model cannot rank in one pass). With `app_ids`
/// (parallel to `items`) the model answers with the app's own ids, as one trained from an
/// app's tables does.
pub fn write_tiny_catalog_llama(
    path: &Path,
    seed: u64,
    items: &[i64],
    item_tokens: bool,
    app_ids: Option<&[ItemId]>,
) -> io::Result<()> {
    catalog_llama(path, seed, items, item_tokens, app_ids, None)
}

/// [`write_tiny_catalog_llama`] with item tokens, carrying `prior` as a fitted model does.
pub fn write_tiny_catalog_llama_with_prior(
    path: &Path,
    seed: u64,
    items: &[i64],
    prior: &CoWatchPrior,
) -> io::Result<()> {
    catalog_llama(path, seed, items, true, None, Some(prior))
}

fn catalog_llama(
    path: &Path,
    seed: u64,
    items: &[i64],
    item_tokens: bool,
    app_ids: Option<&[ItemId]>,
    prior: Option<&CoWatchPrior>,
) -> io::Result<()> {
    let mut vocab = tiny_vocab();
    let mut known: std::collections::HashSet<String> = vocab.tokens.iter().cloned().collect();
    for id in items.iter().filter(|_| item_tokens) {
        let digits = id.to_string();
        let mut prefix = "Ġ".to_string();
        for digit in digits.chars() {
            let joined = format!("{prefix}{digit}");
            if known.insert(joined.clone()) {
                vocab.merges.push(format!("{prefix} {digit}"));
                vocab.tokens.push(joined.clone());
                vocab.types.push(1);
            }
            prefix = joined;
        }
    }
    let template = TemplateSpec::from_json(&serde_json::json!({
        "version": 4, "layout": "sequence", "list_separator": " ", "max_history": 20
    }))
    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    write(
        path,
        "kvrec tiny catalog llama",
        &vocab,
        Some(&template),
        Some((items, app_ids, prior)),
        (N_EMBD, N_LAYER),
        seed,
    )
}

fn shape(n_vocab: usize, width: usize, layers: usize) -> LlamaShape {
    LlamaShape {
        n_vocab,
        n_embd: width,
        n_layer: layers,
        n_head: N_HEAD,
        n_head_kv: N_HEAD_KV,
        n_ff: 2 * width,
        context: CONTEXT,
    }
}

fn random_weights(shape: &LlamaShape, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng::new(seed);
    shape
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
        .collect()
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
    write(
        path,
        "kvrec tiny test llama",
        &tiny_vocab(),
        template,
        None,
        (width, layers),
        seed,
    )
}

/// A catalog model's items, their app ids and its co-watch prior.
type Catalog<'a> = (&'a [i64], Option<&'a [ItemId]>, Option<&'a CoWatchPrior>);

/// A random model of `vocab` and `(width, layers)` written as a kvrec-trained GGUF would be.
fn write(
    path: &Path,
    name: &str,
    vocab: &BpeVocab,
    template: Option<&TemplateSpec>,
    catalog: Option<Catalog>,
    (width, layers): (usize, usize),
    seed: u64,
) -> io::Result<()> {
    let shape = shape(vocab.tokens.len(), width, layers);
    LlamaFile {
        name,
        shape,
        vocab,
        template,
        items: catalog.map(|(items, _, _)| items),
        item_ids: catalog.and_then(|(_, app, _)| app),
        prior: catalog.and_then(|(_, _, prior)| prior),
        weights: random_weights(&shape, seed),
        matrix_type: TensorType::F32,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
    }
    .write(path)
}
