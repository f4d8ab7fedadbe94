//! Positions and masks: RoPE tables, llama.cpp's causal (and sliding-window) masks, and the
//! training-only attention span.

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::rotary_emb::rope_i_slow;

/// cos/sin tables `(context, head_dim / 2)` for llama.cpp's normal RoPE.
pub(super) fn rope_tables(
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
pub(super) fn spanned_scores(
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
    // The causal window of `span` keys, without the BOS column (its score is above).
    let band = mask(t, Some(span), device)?.narrow(1, 1, t - 1)?;
    let rest = scores.narrow(3, 1, t - 1)?.broadcast_add(&band)?;
    Tensor::cat(&[&bos_scores, &rest], 3)
}

/// Causal attention mask `(t, t)`; with `window`, a query also ignores keys `window` or more
/// positions back (llama.cpp's sliding-window rule).
pub(super) fn mask(t: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::model::Transformer;
    use kvrec_llm::llama_file::LlamaShape;

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
