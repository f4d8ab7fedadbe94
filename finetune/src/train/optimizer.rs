//! AdamW with its moments in plain tensors, so checkpoints carry them and a resumed run
//! continues exactly (candle-nn's optimizer keeps its state private).

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use rayon::prelude::*;

pub const BETA1: f64 = 0.9;
pub const BETA2: f64 = 0.95;
pub const EPS: f64 = 1e-8;
/// Elements per task of the update on the thread pool (an 18k-item embedding table is ~70).
const CHUNK: usize = 1 << 15;
/// Gradients are clipped to this global L2 norm.
pub const MAX_GRAD_NORM: f64 = 1.0;

pub struct AdamW {
    pub m: Vec<Tensor>,
    pub v: Vec<Tensor>,
    pub step: usize,
    weight_decay: f64,
}

impl AdamW {
    pub fn new(vars: &[Var], weight_decay: f64) -> Result<Self> {
        let zeros = || -> Result<Vec<Tensor>> { vars.iter().map(|v| v.zeros_like()).collect() };
        Ok(AdamW {
            m: zeros()?,
            v: zeros()?,
            step: 0,
            weight_decay,
        })
    }

    pub fn with_state(m: Vec<Tensor>, v: Vec<Tensor>, step: usize, weight_decay: f64) -> Self {
        AdamW {
            m,
            v,
            step,
            weight_decay,
        }
    }

    /// One update; weight decay applies to matrices only, not to norm gains. Each tensor is
    /// updated in one pass over plain slices: as a dozen tensor ops, each allocating its
    /// result, the update of a large embedding table cost a fifth of a training step.
    pub fn step(&mut self, vars: &[Var], grads: &GradStore, lr: f64) -> Result<()> {
        let grads: Vec<Option<&Tensor>> = vars.iter().map(|v| grads.get(v)).collect();
        let mut norm_sq = 0f64;
        let mut flat = Vec::with_capacity(grads.len());
        for g in &grads {
            let g = match g {
                Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
                None => Vec::new(),
            };
            // Summed chunk by chunk in a fixed order: the same norm on any number of threads.
            let chunks: Vec<f64> = g
                .par_chunks(CHUNK)
                .map(|c| c.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
                .collect();
            norm_sq += chunks.iter().sum::<f64>();
            flat.push(g);
        }
        let clip = (MAX_GRAD_NORM / (norm_sq.sqrt() + 1e-6)).min(1.0) as f32;
        self.step += 1;
        let t = self.step as i32;
        let (bias1, bias2) = (1.0 - BETA1.powi(t), 1.0 - BETA2.powi(t));
        let (beta1, beta2) = (BETA1 as f32, BETA2 as f32);
        let (bias1, bias2, eps, rate) = (bias1 as f32, bias2 as f32, EPS as f32, lr as f32);
        for (i, (var, grad)) in vars.iter().zip(flat).enumerate() {
            if grads[i].is_none() {
                continue;
            }
            let decay = if var.rank() > 1 {
                (1.0 - lr * self.weight_decay) as f32
            } else {
                1.0
            };
            let (shape, device) = (var.shape().clone(), var.device().clone());
            let mut w = var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let mut m = self.m[i].flatten_all()?.to_vec1::<f32>()?;
            let mut v = self.v[i].flatten_all()?.to_vec1::<f32>()?;
            let chunks = (
                w.par_chunks_mut(CHUNK),
                m.par_chunks_mut(CHUNK),
                v.par_chunks_mut(CHUNK),
                grad.par_chunks(CHUNK),
            );
            chunks.into_par_iter().for_each(|(w, m, v, grad)| {
                for (((w, m), v), g) in w.iter_mut().zip(m).zip(v).zip(grad) {
                    let g = g * clip;
                    *m = *m * beta1 + g * (1.0 - beta1);
                    *v = *v * beta2 + g * g * (1.0 - beta2);
                    let update = (*m / bias1) / ((*v / bias2).sqrt() + eps);
                    *w = *w * decay - update * rate;
                }
            });
            self.m[i] = Tensor::from_vec(m, &shape, &device)?;
            self.v[i] = Tensor::from_vec(v, &shape, &device)?;
            var.set(&Tensor::from_vec(w, &shape, &device)?)?;
        }
        Ok(())
    }
}
