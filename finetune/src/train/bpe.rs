//! The from-scratch model's vocabulary: a GPT-2-style byte-level BPE trained by `tokenizers`
//! on the training texts, saved as `tokenizer.json` and exported as llama.cpp's `gpt2`
//! vocabulary (tokens in id order, `"a b"` merges by rank).
//!
//! The pre-tokenizer adds no prefix space and uses the GPT-2 regex, which is what llama.cpp's
//! `gpt-2` pre-tokenizer does, so both sides cut the same text into the same ids.
//!
//! No token holds a digit beside anything else: every number is spelled digit by digit. An id
//! then has the same tokens wherever it appears ("[48:" and " 48," and the answer's first
//! "48"), which a BPE merge would break ("48" vs "Ġ48"), so copying a candidate's id into the
//! answer is one pattern for the model to learn instead of thousands of token pairs.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use kvrec_llm::llama_file::BpeVocab;
use serde_json::Value;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

pub const BOS: &str = "<s>";
/// A space as the byte-level alphabet writes it.
const SPACE: char = '\u{120}';
pub const EOS: &str = "</s>";

/// Trains a vocabulary of `size` tokens on `texts` and saves it to `path`; with
/// `number_tokens` > 0 every number up to it becomes one token (see [`with_number_tokens`]),
/// and with `spaced` every such number after a space too (" 531", the sequence layout's item).
pub fn train(
    texts: &[String],
    size: usize,
    number_tokens: usize,
    spaced: bool,
    path: &Path,
) -> Result<Tokenizer> {
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![
            AddedToken::from(BOS, true),
            AddedToken::from(EOS, true),
        ])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let byte_level = ByteLevel::new(false, true, true);
    let mut tokenizer = TokenizerBuilder::<
        BPE,
        tokenizers::NormalizerWrapper,
        ByteLevel,
        tokenizers::PostProcessorWrapper,
        ByteLevel,
    >::new()
    .with_model(BPE::default())
    .with_pre_tokenizer(Some(byte_level))
    .with_decoder(Some(byte_level))
    .build()
    .map_err(|e| anyhow!("building the tokenizer: {e}"))?;
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|e| anyhow!("training the BPE vocabulary: {e}"))?;
    let json: Value = serde_json::from_str(
        &tokenizer
            .to_string(false)
            .map_err(|e| anyhow!("serialising the tokenizer: {e}"))?,
    )?;
    std::fs::write(
        path,
        serde_json::to_string_pretty(&with_number_tokens(
            without_digit_merges(json)?,
            number_tokens,
            spaced,
        )?)?,
    )
    .with_context(|| format!("saving {}", path.display()))?;
    load(path)
}

/// Drops every merge (and merged token) that contains a digit and renumbers the vocabulary.
fn without_digit_merges(mut json: Value) -> Result<Value> {
    let has_digit = |t: &str| t.chars().any(|c| c.is_ascii_digit());
    let model = json
        .get_mut("model")
        .context("tokenizer.json has no model")?;
    let vocab = model["vocab"]
        .as_object()
        .context("tokenizer.json has no model.vocab")?;
    let mut tokens: Vec<(String, u64)> = vocab
        .iter()
        .map(|(t, id)| (t.clone(), id.as_u64().unwrap_or(u64::MAX)))
        .collect();
    tokens.sort_by_key(|(_, id)| *id);
    let kept: serde_json::Map<String, Value> = tokens
        .into_iter()
        .filter(|(t, _)| t.chars().count() == 1 || !has_digit(t))
        .enumerate()
        .map(|(new_id, (t, _))| (t, Value::from(new_id as u64)))
        .collect();
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .context("tokenizer.json has no model.merges")?
        .iter()
        .filter(|m| match m {
            Value::String(s) => !has_digit(s),
            Value::Array(pair) => !pair.iter().any(|p| p.as_str().is_some_and(has_digit)),
            _ => true,
        })
        .cloned()
        .collect();
    model["vocab"] = Value::Object(kept);
    model["merges"] = Value::Array(merges);
    Ok(json)
}

/// Adds a token for every digit string a number up to `max` can be cut into (all strings
/// shorter than `max`'s digits, and those as long that are not above it), each with a merge
/// for every way to split it into two such strings. Whichever merges BPE applies first, two
/// neighbouring pieces of such a number always have a merge, so the number ends as one
/// token — the same in llama.cpp, which applies the same ranked merges. No merge joins a
/// digit to a space or letter, so " 48" is "Ġ" + "48": an id has one token everywhere.
///
/// With `spaced`, each number up to `max` written without leading zeros also gets a token
/// after a space ("Ġ48"), with a merge of "Ġ" + every prefix and the rest: whatever merges
/// apply first, the pieces of " 48" always have one left, so a spaced id is one token.
fn with_number_tokens(mut json: Value, max: usize, spaced: bool) -> Result<Value> {
    if max == 0 {
        return Ok(json);
    }
    let width = max.to_string().len();
    let mut numbers: Vec<String> = Vec::new();
    for len in 2..=width {
        let limit = if len == width {
            max + 1
        } else {
            10usize.pow(len as u32)
        };
        numbers.extend((0..limit).map(|n| format!("{n:0len$}")));
    }
    let model = json
        .get_mut("model")
        .context("tokenizer.json has no model")?;
    let vocab = model["vocab"]
        .as_object_mut()
        .context("tokenizer.json has no model.vocab")?;
    let mut next = vocab.len() as u64;
    for number in &numbers {
        if !vocab.contains_key(number) {
            vocab.insert(number.clone(), Value::from(next));
            next += 1;
        }
    }
    let spaced_numbers: Vec<String> = if spaced {
        (0..=max).map(|n| format!("{SPACE}{n}")).collect()
    } else {
        Vec::new()
    };
    for number in &spaced_numbers {
        if !vocab.contains_key(number) {
            vocab.insert(number.clone(), Value::from(next));
            next += 1;
        }
    }
    let known: std::collections::HashSet<&str> = numbers
        .iter()
        .chain(&spaced_numbers)
        .map(String::as_str)
        .collect();
    let merges = model["merges"]
        .as_array_mut()
        .context("tokenizer.json has no model.merges")?;
    // Written in the form the file already uses ("a b" or ["a", "b"]).
    let as_strings = merges.first().is_some_and(Value::is_string);
    let is_token = |s: &str| s.chars().count() == 1 || known.contains(s);
    for number in numbers.iter().chain(&spaced_numbers) {
        for (split, _) in number.char_indices().skip(1) {
            let (left, right) = number.split_at(split);
            if is_token(left) && is_token(right) {
                merges.push(if as_strings {
                    Value::from(format!("{left} {right}"))
                } else {
                    Value::from(vec![left, right])
                });
            }
        }
    }
    Ok(json)
}

pub fn load(path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_file(path).map_err(|e| anyhow!("reading {}: {e}", path.display()))
}

/// Token ids of `text`, no special tokens added.
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(tokenizer
        .encode(text, false)
        .map_err(|e| anyhow!("tokenizing: {e}"))?
        .get_ids()
        .to_vec())
}

pub fn token_id(tokenizer: &Tokenizer, token: &str) -> Result<u32> {
    tokenizer
        .token_to_id(token)
        .with_context(|| format!("the vocabulary has no {token} token"))
}

/// The vocabulary as llama.cpp's `gpt2` tokenizer metadata.
pub fn gguf_vocab(tokenizer_json: &Path) -> Result<BpeVocab> {
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(tokenizer_json)
            .with_context(|| format!("reading {}", tokenizer_json.display()))?,
    )?;
    let vocab = json["model"]["vocab"]
        .as_object()
        .context("tokenizer.json has no model.vocab")?;
    let mut tokens = vec![String::new(); vocab.len()];
    for (token, id) in vocab {
        let id = id.as_u64().context("a vocabulary id is not a number")? as usize;
        let slot = tokens
            .get_mut(id)
            .with_context(|| format!("vocabulary id {id} is out of range"))?;
        *slot = token.clone();
    }
    if let Some(missing) = tokens.iter().position(String::is_empty) {
        bail!("vocabulary id {missing} has no token");
    }
    let merges = json["model"]["merges"]
        .as_array()
        .context("tokenizer.json has no model.merges")?
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(pair) if pair.len() == 2 => Ok(format!(
                "{} {}",
                pair[0].as_str().unwrap_or_default(),
                pair[1].as_str().unwrap_or_default()
            )),
            other => bail!("unexpected merge entry {other}"),
        })
        .collect::<Result<Vec<_>>>()?;
    let position = |t: &str| {
        tokens
            .iter()
            .position(|x| x == t)
            .with_context(|| format!("the vocabulary has no {t} token"))
    };
    let (bos, eos) = (position(BOS)?, position(EOS)?);
    let types = (0..tokens.len())
        .map(|i| if i == bos || i == eos { 3 } else { 1 })
        .collect();
    Ok(BpeVocab {
        tokens,
        types,
        merges,
        bos: bos as u32,
        eos: eos as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_up_to_the_limit_are_one_token_wherever_they_appear() {
        let path = std::env::temp_dir().join(format!("kvrec-bpe-{}.json", std::process::id()));
        let texts: Vec<String> = (0..200)
            .map(|i| {
                format!(
                    "History movie IDs: [{}; {}; 7]\nthe rating {i}",
                    i * 17,
                    i * 3
                )
            })
            .collect();
        let tokenizer = train(&texts, 300, 3952, false, &path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let one = |text: &str| encode(&tokenizer, text).unwrap();
        for n in [0, 7, 48, 100, 999, 1000, 3114, 3952] {
            let alone = one(&n.to_string());
            assert_eq!(alone.len(), 1, "{n}: {alone:?}");
            let spaced = one(&format!(" {n}"));
            assert_eq!(spaced.len(), 2, "a space and then {n}");
            assert_eq!(spaced[1], alone[0]);
            assert_eq!(one(&format!("[{n};"))[1], alone[0]);
        }
        assert!(one("3953").len() > 1, "above the limit numbers are cut");
        assert_eq!(one("0042").len(), 1, "four digits up to the limit");
    }

    #[test]
    fn spaced_numbers_up_to_the_limit_are_one_token_after_a_space() {
        let path = std::env::temp_dir().join(format!("kvrec-bpe-sp-{}.json", std::process::id()));
        let texts: Vec<String> = (0..200)
            .map(|i| format!(" {} {} 7", i * 17, i * 3))
            .collect();
        let tokenizer = train(&texts, 300, 3952, true, &path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let one = |text: &str| encode(&tokenizer, text).unwrap();
        let ids = [0, 7, 48, 100, 999, 1000, 3042, 3114, 3952];
        for n in ids {
            assert_eq!(one(&format!(" {n}")).len(), 1, "' {n}'");
            assert_eq!(one(&n.to_string()).len(), 1, "{n} alone is still one token");
        }
        let sequence: String = ids.iter().map(|n| format!(" {n}")).collect();
        let tokens = one(&sequence);
        assert_eq!(
            tokens.len(),
            ids.len(),
            "one token per spaced id: {tokens:?}"
        );
        let distinct: std::collections::HashSet<_> = tokens.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        assert!(one(" 3953").len() > 1, "above the limit numbers are cut");
    }
}
