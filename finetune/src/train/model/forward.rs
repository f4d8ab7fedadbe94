//! The forward pass: token ids to final hidden states, llama.cpp's graph for each [`Arch`],
//! with training's dropout and attention span.

use candle_core::{Result, Tensor, D};
use candle_nn::ops::{rms_norm_slow, softmax};
use candle_nn::rotary_emb::{rope_i_slow, rope_slow};
use kvrec_core::rng::Rng;

use super::attention::{mask, spanned_scores};
use super::ops::{dropout_mask, repeat_kv};
use super::{Arch, Transformer};

impl Transformer {
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
        let d = self.shape.n_embd;
        let gemma = matches!(self.arch, Arch::Gemma3 { .. });
        let mut x = self
            .token_table()?
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
        for layer in 0..self.shape.n_layer {
            // A sublayer's output joins the residual stream (through Gemma's post-norm).
            let residual = |x: &Tensor, out: &Tensor, post_norm: &str| -> Result<Tensor> {
                let out = out.reshape((b, t, d))?;
                if gemma {
                    x + norm(&out, layer, post_norm)?
                } else {
                    x + out
                }
            };
            let h = norm(&x, layer, "attn_norm")?.reshape((b * t, d))?;
            let attended = self.attention(&h, layer, (b, t), &causal)?;
            let out = drop(self.project(&attended, layer, "attn_output")?)?;
            x = residual(&x, &out, "post_attention_norm")?;
            let h = norm(&x, layer, "ffn_norm")?.reshape((b * t, d))?;
            let out = drop(self.feed_forward(&h, layer)?)?;
            x = residual(&x, &out, "post_ffw_norm")?;
        }
        rms_norm_slow(&x, &self.weight(self.named("output_norm.weight")?), eps)
    }

    /// Layer `layer`'s RoPE tables for `t` positions and its attention window: Gemma's local
    /// layers have their own RoPE base and a sliding causal window.
    fn layer_rope(&self, layer: usize, t: usize) -> Result<(Tensor, Tensor, Option<usize>)> {
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
        Ok((cos.narrow(0, 0, t)?, sin.narrow(0, 0, t)?, window))
    }

    /// Layer `layer`'s self-attention over the normed hidden states `h` (`(b·t, d)`), before
    /// its output projection: `(b·t, heads·head_dim)`.
    fn attention(
        &self,
        h: &Tensor,
        layer: usize,
        (b, t): (usize, usize),
        causal: &Tensor,
    ) -> Result<Tensor> {
        let s = self.shape;
        let gemma = matches!(self.arch, Arch::Gemma3 { .. });
        let (head_dim, scale) = self.arch.head_dim_and_query_scale(&s);
        let (cos, sin, window) = self.layer_rope(layer, t)?;
        let heads_of = |kind: &str, n_heads: usize, head_norm: &str| -> Result<Tensor> {
            let mut y = self
                .project(h, layer, kind)?
                .reshape((b, t, n_heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()?;
            if gemma && !head_norm.is_empty() {
                y = rms_norm_slow(&y, &self.layer(layer, head_norm)?, self.rms_eps)?;
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
        let q = rope(heads_of("attn_q", s.n_head, "attn_q_norm")?)?;
        let k = rope(heads_of("attn_k", s.n_head_kv, "attn_k_norm")?)?;
        let v = heads_of("attn_v", s.n_head_kv, "")?;
        let (k, v) = repeat_kv(k, v, s.n_head / s.n_head_kv)?;
        let layer_mask = match window {
            Some(w) if w < t => mask(t, Some(w), h.device())?,
            _ => causal.clone(),
        };
        let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?;
        let scores = match self.attention_span {
            Some(span) if !gemma && t > span + 1 => {
                spanned_scores(&scores, &q, &k, span, scale, (&cos, &sin))?
            }
            _ => scores.broadcast_add(&layer_mask)?,
        };
        softmax(&scores, D::Minus1)?
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b * t, s.n_head * head_dim))
    }

    /// Layer `layer`'s gated feed-forward (SwiGLU; GELU-gated for Gemma) of the normed `h`.
    fn feed_forward(&self, h: &Tensor, layer: usize) -> Result<Tensor> {
        let gate = self.project(h, layer, "ffn_gate")?;
        let gate = match self.arch {
            Arch::Gemma3 { .. } => gate.gelu()?,
            _ => gate.silu()?,
        };
        let gated = (gate * self.project(h, layer, "ffn_up")?)?;
        self.project(&gated, layer, "ffn_down")
    }
}
