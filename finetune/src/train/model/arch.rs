//! What differs between the architectures the trainer runs: their block tensors, head size and
//! query scale; the forward reads the rest (norms, RoPE variant, activation) from [`Arch`].

use kvrec_llm::llama_file::LlamaShape;

/// The forward a model runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arch {
    Llama,
    /// Gemma 3, as llama.cpp's `gemma3` graph: embeddings × √d; per-head RMSNorm of q and k;
    /// NEOX RoPE, base `rope_theta` on every `global_every`-th layer and `rope_local` (with a
    /// causal window of `window` tokens) on the others; queries × `query_scale`; RMSNorm after
    /// attention and after the GELU-tanh gated FFN; head tied to the embedding. The GGUF's
    /// norm weights already include Gemma's `+1`.
    Gemma3 {
        head_dim: usize,
        window: usize,
        global_every: usize,
        rope_local: f32,
        query_scale: f64,
    },
}

impl Arch {
    /// The tensors of each block, by llama.cpp's names.
    pub fn layer_tensors(self) -> &'static [&'static str] {
        match self {
            Arch::Llama => &[
                "attn_norm",
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_norm",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ],
            Arch::Gemma3 { .. } => &[
                "attn_norm",
                "attn_q",
                "attn_q_norm",
                "attn_k",
                "attn_k_norm",
                "attn_v",
                "attn_output",
                "post_attention_norm",
                "ffn_norm",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
                "post_ffw_norm",
            ],
        }
    }

    /// Per-head size and the factor queries are scaled by.
    pub fn head_dim_and_query_scale(self, shape: &LlamaShape) -> (usize, f64) {
        match self {
            Arch::Llama => (shape.head_dim(), 1.0 / (shape.head_dim() as f64).sqrt()),
            Arch::Gemma3 {
                head_dim,
                query_scale,
                ..
            } => (head_dim, query_scale),
        }
    }
}
