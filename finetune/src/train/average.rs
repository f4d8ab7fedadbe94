//! An exponential moving average of the trained weights (Polyak averaging). The best epoch of
//! the sequence stage comes while the cosine schedule's learning rate is still high, so the
//! raw weights carry the noise of the last few hundred steps; their average ranks like a small
//! ensemble of them, in one model of the same shape and cost.

use std::collections::HashMap;

use anyhow::{Context, Result};
use candle_core::{Tensor, Var};

/// Checkpoint names of the averaged tensors: `ema.<weight name>`.
pub const PREFIX: &str = "ema.";

pub struct WeightAverage {
    decay: f64,
    updates: usize,
    pub tensors: Vec<Tensor>,
}

impl WeightAverage {
    /// Starts the average at the weights `vars` hold now.
    pub fn new(decay: f64, vars: &[Var]) -> Result<Self> {
        Ok(WeightAverage {
            decay,
            updates: 0,
            tensors: vars
                .iter()
                .map(|v| v.as_tensor().copy())
                .collect::<candle_core::Result<_>>()?,
        })
    }

    /// The average a checkpoint saved under `names` after `updates` steps.
    pub fn from_checkpoint(
        decay: f64,
        updates: usize,
        names: &[String],
        saved: &HashMap<String, Tensor>,
    ) -> Result<Self> {
        let tensors = names
            .iter()
            .map(|name| {
                saved
                    .get(&format!("{PREFIX}{name}"))
                    .cloned()
                    .with_context(|| {
                        format!("the checkpoint has no averaged {name}: it was saved without --ema")
                    })
            })
            .collect::<Result<_>>()?;
        Ok(WeightAverage {
            decay,
            updates,
            tensors,
        })
    }

    /// Folds in the weights after one more optimizer step. The decay ramps up over the first
    /// steps, so the random initialisation does not linger in the average.
    pub fn update(&mut self, vars: &[Var]) -> Result<()> {
        self.updates += 1;
        let t = self.updates as f64;
        let decay = self.decay.min((1.0 + t) / (10.0 + t));
        for (avg, var) in self.tensors.iter_mut().zip(vars) {
            *avg = ((&*avg * decay)? + (var.as_tensor() * (1.0 - decay))?)?;
        }
        Ok(())
    }

    /// Exchanges the averaged weights with those `vars` hold; a second call swaps them back.
    pub fn swap(&mut self, vars: &[Var]) -> Result<()> {
        for (avg, var) in self.tensors.iter_mut().zip(vars) {
            let held = var.as_tensor().copy()?;
            var.set(avg)?;
            *avg = held;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn var(values: &[f32]) -> Var {
        Var::from_tensor(&Tensor::new(values, &Device::Cpu).unwrap()).unwrap()
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.to_vec1().unwrap()
    }

    #[test]
    fn the_average_follows_the_weights_with_the_ramped_decay() {
        let w = var(&[0.0, 10.0]);
        let mut average = WeightAverage::new(0.5, std::slice::from_ref(&w)).unwrap();
        w.set(&Tensor::new(&[4.0f32, 2.0], &Device::Cpu).unwrap())
            .unwrap();
        // Step 1: decay min(0.5, 2/11) = 2/11.
        average.update(std::slice::from_ref(&w)).unwrap();
        let d = 2.0 / 11.0;
        let expected = [4.0 * (1.0 - d), 10.0 * d + 2.0 * (1.0 - d)];
        for (got, want) in values(&average.tensors[0]).iter().zip(expected) {
            assert!((got - want as f32).abs() < 1e-5, "{got} vs {want}");
        }
        // Later steps use the configured decay.
        average.tensors[0] = Tensor::new(&[0.0f32, 0.0], &Device::Cpu).unwrap();
        average.updates = 100;
        average.update(std::slice::from_ref(&w)).unwrap();
        assert_eq!(values(&average.tensors[0]), vec![2.0, 1.0]);
    }

    #[test]
    fn swapping_twice_restores_the_trained_weights() {
        let w = var(&[1.0, 2.0]);
        let mut average = WeightAverage::new(0.9, std::slice::from_ref(&w)).unwrap();
        average.tensors[0] = Tensor::new(&[5.0f32, 6.0], &Device::Cpu).unwrap();
        average.swap(std::slice::from_ref(&w)).unwrap();
        assert_eq!(values(w.as_tensor()), vec![5.0, 6.0]);
        assert_eq!(values(&average.tensors[0]), vec![1.0, 2.0]);
        average.swap(std::slice::from_ref(&w)).unwrap();
        assert_eq!(values(w.as_tensor()), vec![1.0, 2.0]);
        assert_eq!(values(&average.tensors[0]), vec![5.0, 6.0]);
    }
}
