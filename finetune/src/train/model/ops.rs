//! The model's custom and seeded ops: a matmul that keeps no gradient for frozen weights,
//! dropout with kvrec's seeded masks, and grouped-query key/value repetition.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use kvrec_core::rng::Rng;

/// `x (m × k) · Wᵀ` for a frozen `W (n × k)`. candle's matmul backward computes the gradient
/// of both operands even when one is a constant; this op returns only `x`'s, which saves a
/// matmul per projection and, at the head, a vocabulary-sized gradient (671 MB for Gemma).
pub(super) struct FrozenMatmul;

impl CustomOp2 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        w: &CpuStorage,
        w_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (m, k) = x_layout.shape().dims2()?;
        let (n, k_w) = w_layout.shape().dims2()?;
        if k != k_w {
            candle_core::bail!("frozen matmul: x is {m}×{k}, W is {n}×{k_w}");
        }
        let out = x.matmul(w, (1, m, n, k), x_layout, &w_layout.transpose(0, 1)?)?;
        Ok((out, Shape::from((m, n))))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        w: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(w)?), None))
    }
}

/// Inverted dropout: zeroes each element with probability `rate` and scales the rest by
/// 1 / (1 - rate), with a mask drawn from kvrec's seeded stream (candle's CPU random tensors
/// cannot be seeded, and a resumed run must repeat its masks).
pub(super) fn dropout_mask(x: &Tensor, rate: f32, rng: &mut Rng) -> Result<Tensor> {
    let keep = 1.0 / (1.0 - rate);
    let threshold = (f64::from(rate) * (1u64 << 32) as f64) as u64;
    let n = x.elem_count();
    let mut mask = Vec::with_capacity(n);
    while mask.len() < n {
        let bits = rng.next_u64();
        for half in [bits >> 32, bits & 0xFFFF_FFFF] {
            if mask.len() < n {
                mask.push(if half < threshold { 0.0 } else { keep });
            }
        }
    }
    x * Tensor::from_vec(mask, x.shape(), x.device())?
}

pub(super) fn repeat_kv(k: Tensor, v: Tensor, groups: usize) -> Result<(Tensor, Tensor)> {
    if groups == 1 {
        return Ok((k, v));
    }
    let repeat = |x: Tensor| -> Result<Tensor> {
        let (b, h, t, d) = x.dims4()?;
        x.unsqueeze(2)?
            .expand((b, h, groups, t, d))?
            .reshape((b, h * groups, t, d))
    };
    Ok((repeat(k)?, repeat(v)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn frozen_matmul_matches_matmul_and_gives_only_the_input_gradient() {
        let device = Device::Cpu;
        let values = |n: usize, seed: u64| -> Vec<f32> {
            let mut rng = Rng::new(seed);
            (0..n)
                .map(|_| (rng.next_u64() % 1000) as f32 / 500.0 - 1.0)
                .collect()
        };
        let x =
            Var::from_tensor(&Tensor::from_vec(values(15, 1), (3, 5), &device).unwrap()).unwrap();
        let w = Tensor::from_vec(values(20, 2), (4, 5), &device).unwrap();
        let frozen = x.as_tensor().apply_op2(&w, FrozenMatmul).unwrap();
        let plain = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
        let gap = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        assert!(gap(&frozen, &plain) < 1e-6);
        let weights = Tensor::from_vec(values(12, 3), (3, 4), &device).unwrap();
        let grad = |y: &Tensor| {
            (y * &weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        let (g_frozen, g_plain) = (grad(&frozen), grad(&plain));
        let dx = |g: &candle_core::backprop::GradStore| g.get(x.as_tensor()).unwrap().clone();
        assert!(gap(&dx(&g_frozen), &dx(&g_plain)) < 1e-6);
        assert!(
            g_frozen.get(&w).is_none(),
            "no gradient kept for the frozen weight"
        );
    }
}
