//! Item text vectors: what a language model reads in each item's title and genres, as a fixed
//! vector per item, which the trainer projects into its item embeddings beside the keys'.
//!
//! `data --item-text-model GGUF` writes [`ITEM_VECTORS_FILE`] with
//! [`kvrec_llm::embed::embed_texts`].

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::kinds;
use crate::interactions::Item;

/// The file `data --item-text-model` writes beside the item keys.
pub const ITEM_VECTORS_FILE: &str = "item_vectors.jsonl";

/// One item's text vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemVector {
    pub id: i64,
    pub vector: Vec<f32>,
}

/// The text a language model reads for `item`: its title (MovieLens titles carry the year),
/// then its genres or category; `None` for an item with neither.
pub fn item_text(item: &Item) -> Option<String> {
    let kinds: Vec<&str> = kinds(item).map(|(_, value)| value).collect();
    let title = item
        .title
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    match (title, kinds.is_empty()) {
        (None, true) => None,
        (Some(title), true) => Some(title.to_string()),
        (None, false) => Some(kinds.join(", ")),
        (Some(title), false) => Some(format!("{title}: {}", kinds.join(", "))),
    }
}

/// The text vector of every item that has a text, by id, from the GGUF language model at
/// `model` on `threads` threads, made comparable across dimensions by [`standardized`].
pub fn of_items(items: &HashMap<i64, Item>, model: &Path, threads: u32) -> Result<Vec<ItemVector>> {
    let mut texts: Vec<(i64, String)> = items
        .iter()
        .filter_map(|(&id, item)| item_text(item).map(|text| (id, text)))
        .collect();
    texts.sort_by_key(|(id, _)| *id);
    if texts.is_empty() {
        bail!("no item has a title, genres or category to read; --item-text-model needs them");
    }
    let strings: Vec<String> = texts.iter().map(|(_, t)| t.clone()).collect();
    let raw = kvrec_llm::embed::embed_texts(model, &strings, threads)
        .with_context(|| format!("reading the item texts with {}", model.display()))?;
    Ok(texts
        .iter()
        .zip(standardized(raw))
        .map(|((id, _), vector)| ItemVector { id: *id, vector })
        .collect())
}

/// `raw` with each dimension centred and scaled to unit variance over the items (a language
/// model's hidden state has a few dimensions hundreds of times larger than the rest), then
/// each vector scaled to unit length, so an item's text weighs in the model as one key does.
pub fn standardized(raw: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    let n = raw.len().max(1) as f64;
    let dim = raw.first().map_or(0, Vec::len);
    let mut mean = vec![0f64; dim];
    for v in &raw {
        for (m, x) in mean.iter_mut().zip(v) {
            *m += f64::from(*x) / n;
        }
    }
    let mut var = vec![0f64; dim];
    for v in &raw {
        for ((s, x), m) in var.iter_mut().zip(v).zip(&mean) {
            *s += (f64::from(*x) - m).powi(2) / n;
        }
    }
    raw.into_iter()
        .map(|v| {
            let z: Vec<f64> = v
                .iter()
                .zip(&mean)
                .zip(&var)
                .map(|((x, m), s)| {
                    if *s > 0.0 {
                        (f64::from(*x) - m) / s.sqrt()
                    } else {
                        0.0
                    }
                })
                .collect();
            let norm = z.iter().map(|x| x * x).sum::<f64>().sqrt();
            z.iter()
                .map(|x| if norm > 0.0 { (x / norm) as f32 } else { 0.0 })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(title: Option<&str>, genres: Option<&str>) -> Item {
        Item {
            title: title.map(Into::into),
            genres: genres.map(Into::into),
            ..Item::default()
        }
    }

    #[test]
    fn the_text_is_the_title_then_the_genres() {
        let toy = item(
            Some("Toy Story (1995)"),
            Some("Animation|Children's|Comedy"),
        );
        assert_eq!(
            item_text(&toy).as_deref(),
            Some("Toy Story (1995): Animation, Children's, Comedy")
        );
        assert_eq!(
            item_text(&item(Some("Heat (1995)"), None)).as_deref(),
            Some("Heat (1995)")
        );
        assert_eq!(
            item_text(&item(None, Some("Drama"))).as_deref(),
            Some("Drama")
        );
        assert_eq!(item_text(&item(Some("  "), Some(""))), None);
    }

    #[test]
    fn standardizing_centres_scales_and_normalizes() {
        // Dimension 1 is 100 times dimension 0's scale; dimension 2 is constant.
        let raw = vec![
            vec![1.0, 100.0, 5.0],
            vec![-1.0, -100.0, 5.0],
            vec![1.0, -100.0, 5.0],
            vec![-1.0, 100.0, 5.0],
        ];
        let out = standardized(raw);
        let h = std::f32::consts::FRAC_1_SQRT_2;
        let expected = [[h, h, 0.0], [-h, -h, 0.0], [h, -h, 0.0], [-h, h, 0.0]];
        for (got, want) in out.iter().zip(expected) {
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-6, "{out:?}");
            }
        }
    }
}
