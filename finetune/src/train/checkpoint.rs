//! Checkpoints: weights and optimizer moments in one safetensors file, the step and the run's
//! configuration beside it; the loss curve is cut back to the checkpoint on resume.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, Var};
use kvrec_llm::llama_file::LlamaShape;
use serde::{Deserialize, Serialize};

use super::average::{self, WeightAverage};
use super::config::TrainConfig;
use super::model::{self, Transformer};
use super::optimizer::AdamW;

const WEIGHTS: &str = "checkpoint.safetensors";
const STATE: &str = "checkpoint.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub step: usize,
    pub config: TrainConfig,
}

/// Saves the trained tensors `vars` under `names` (every weight, or the LoRA adapters) with
/// their optimizer moments and, in a run with `--ema`, their average.
pub fn save(
    out: &Path,
    names: &[String],
    vars: &[Var],
    optimizer: &AdamW,
    average: Option<&WeightAverage>,
    config: &TrainConfig,
    step: usize,
) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (i, name) in names.iter().enumerate() {
        tensors.insert(name.clone(), vars[i].as_tensor().clone());
        tensors.insert(format!("adam.m.{name}"), optimizer.m[i].clone());
        tensors.insert(format!("adam.v.{name}"), optimizer.v[i].clone());
        if let Some(average) = average {
            tensors.insert(
                format!("{}{name}", average::PREFIX),
                average.tensors[i].clone(),
            );
        }
    }
    save_tensors(&tensors, &out.join(WEIGHTS))?;
    let state = Saved {
        step,
        config: config.clone(),
    };
    std::fs::write(out.join(STATE), serde_json::to_string_pretty(&state)?)?;
    Ok(())
}

const BEST_WEIGHTS: &str = "best.safetensors";
const BEST_STATE: &str = "best.json";

/// Writes `path` through `write` aside and renames it, so an interrupted save never leaves a
/// broken file.
fn write_aside(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    write(Path::new(&tmp))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    write_aside(path, |tmp| {
        Ok(candle_core::safetensors::save(tensors, tmp)?)
    })
}

/// Keeps the checkpoint just saved as the run's best (by validation); export prefers it. With
/// an `average` (a run with `--ema`), the best is the averaged weights under their own names:
/// what was validated is what export writes.
pub fn keep_as_best(out: &Path, names: &[String], average: Option<&WeightAverage>) -> Result<()> {
    let best = out.join(BEST_WEIGHTS);
    match average {
        Some(average) => {
            let tensors = names.iter().cloned().zip(average.tensors.iter().cloned());
            save_tensors(&tensors.collect(), &best)?;
        }
        None => write_aside(&best, |tmp| {
            std::fs::copy(out.join(WEIGHTS), tmp)?;
            Ok(())
        })?,
    }
    std::fs::copy(out.join(STATE), out.join(BEST_STATE))?;
    Ok(())
}

/// The run's best checkpoint by validation if it kept one, else its latest.
pub fn best(out: &Path) -> Result<Option<(PathBuf, Saved)>> {
    match saved(out, BEST_STATE, BEST_WEIGHTS)? {
        Some(best) => Ok(Some(best)),
        None => latest(out),
    }
}

/// The checkpoint in `out`, if there is one.
pub fn latest(out: &Path) -> Result<Option<(PathBuf, Saved)>> {
    saved(out, STATE, WEIGHTS)
}

/// The weights file and state of the checkpoint whose state is `out/state`, if it exists.
fn saved(out: &Path, state: &str, weights: &str) -> Result<Option<(PathBuf, Saved)>> {
    let state = out.join(state);
    if !state.exists() {
        return Ok(None);
    }
    let saved: Saved = serde_json::from_str(&std::fs::read_to_string(&state)?)
        .with_context(|| format!("reading {}", state.display()))?;
    Ok(Some((out.join(weights), saved)))
}

/// Every tensor of a checkpoint by name. Checkpoints written before the item features had a
/// name of their own stored them as `item_keys.*`: they load under today's names, so older
/// runs still resume and export.
pub fn tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    let loaded = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("reading checkpoint {}", path.display()))?;
    Ok(loaded
        .into_iter()
        .map(|(name, tensor)| (name.replace("item_keys.", "item_features."), tensor))
        .collect())
}

/// A from-scratch model's weights, e.g. for export.
pub fn load_model(
    path: &Path,
    shape: LlamaShape,
    tied: bool,
) -> Result<(Transformer, HashMap<String, Tensor>)> {
    let tensors = tensors(path)?;
    let weights = shape
        .tensors()
        .into_iter()
        .map(|(name, dims)| {
            let t = tensors
                .get(&name)
                .with_context(|| format!("checkpoint {} has no {name}", path.display()))?;
            Ok((name, dims, t.flatten_all()?.to_vec1::<f32>()?))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut model = Transformer::from_weights(shape, weights, tied)?;
    if let Some(matrix) = tensors.get(model::ITEM_FEATURE_MATRIX) {
        let named = |name: &str| {
            tensors
                .get(name)
                .cloned()
                .with_context(|| format!("checkpoint {} has no {name}", path.display()))
        };
        let output = if tied {
            None
        } else {
            Some(named(model::ITEM_FEATURE_OUTPUT)?)
        };
        model.attach_item_features(matrix.clone(), named(model::ITEM_FEATURE_INPUT)?, output)?;
    }
    Ok((model, tensors))
}

/// The optimizer state saved with the tensors `names`, at `step`.
pub fn optimizer(path: &Path, names: &[String], step: usize, weight_decay: f64) -> Result<AdamW> {
    let tensors = tensors(path)?;
    let moment = |kind: &str| -> Result<Vec<Tensor>> {
        names
            .iter()
            .map(|name| {
                tensors
                    .get(&format!("adam.{kind}.{name}"))
                    .cloned()
                    .with_context(|| format!("checkpoint has no optimizer state for {name}"))
            })
            .collect()
    };
    Ok(AdamW::with_state(
        moment("m")?,
        moment("v")?,
        step,
        weight_decay,
    ))
}

/// Loss-curve rows of steps before `step` (a resumed run rewrites the rest).
/// The epoch and validation HR@1 of a `valid.csv` row (`step,epoch,hr1,…`).
pub fn epoch_hr1(row: &str) -> Option<(usize, f64)> {
    let mut fields = row.split(',').skip(1);
    Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
}

pub fn loss_rows_before(csv: &Path, step: usize) -> Result<Vec<String>> {
    if step == 0 || !csv.exists() {
        return Ok(Vec::new());
    }
    Ok(std::fs::read_to_string(csv)?
        .lines()
        .skip(1)
        .filter(|line| {
            line.split(',')
                .next()
                .and_then(|s| s.parse::<usize>().ok())
                .is_some_and(|s| s <= step)
        })
        .map(str::to_string)
        .collect())
}

/// Writes a run's CSV (loss curve, validation) whole, so a stopped run never leaves half a file.
pub fn write_rows(path: &Path, header: &str, rows: &[String]) -> Result<()> {
    let mut text = format!("{header}\n");
    for row in rows {
        text.push_str(row);
        text.push('\n');
    }
    crate::io::write_atomically(path, text.as_bytes())
}
