//! AdamW with its moments in plain tensors, so checkpoints carry them and a resumed run
//! continues exactly (candle-nn's optimizer keeps its state private).

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

pub const BETA1: f64 = 0.9;
pub const BETA2: f64 = 0.95;
pub const EPS: f64 = 1e-8;
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

    /// One update; weight decay applies to matrices only, not to norm gains.
    pub fn step(&mut self, vars: &[Var], grads: &GradStore, lr: f64) -> Result<()> {
        let grads: Vec<Option<&Tensor>> = vars.iter().map(|v| grads.get(v)).collect();
        let mut norm_sq = 0f64;
        for g in grads.iter().flatten() {
            norm_sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
        let clip = (MAX_GRAD_NORM / (norm_sq.sqrt() + 1e-6)).min(1.0);
        self.step += 1;
        let t = self.step as i32;
        let (bias1, bias2) = (1.0 - BETA1.powi(t), 1.0 - BETA2.powi(t));
        for (i, (var, grad)) in vars.iter().zip(grads).enumerate() {
            let Some(grad) = grad else { continue };
            let grad = (grad * clip)?;
            self.m[i] = ((&self.m[i] * BETA1)? + (&grad * (1.0 - BETA1))?)?;
            self.v[i] = ((&self.v[i] * BETA2)? + (grad.sqr()? * (1.0 - BETA2))?)?;
            let update = ((&self.m[i] / bias1)? / ((&self.v[i] / bias2)?.sqrt()? + EPS)?)?;
            let decay = if var.rank() > 1 {
                1.0 - lr * self.weight_decay
            } else {
                1.0
            };
            var.set(&((var.as_tensor() * decay)? - (update * lr)?)?)?;
        }
        Ok(())
    }
}
