//! A trained run → the GGUF llama.cpp serves. A from-scratch run writes its weights (F16, Q8_0
//! or F32 matrices), BPE vocabulary and template; a LoRA run writes its base with the adapters
//! merged (the merged tensors F16, Q8_0 or F32, the rest in the base's own blocks), or the
//! adapters alone as a llama.cpp LoRA GGUF.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::quantized::GgmlDType;
use kvrec_core::cowatch::CoWatchPrior;
use kvrec_core::ItemId;
use kvrec_llm::gguf::{GgufWriter, MetaValue, TensorType};
use kvrec_llm::llama_file::{LlamaFile, LlamaShape};

use super::base::Base;
use super::checkpoint::{self, Saved};
use super::lora::Lora;
use super::model::{Transformer, RMS_EPS, ROPE_THETA};
use crate::recipe::ITEM_IDS_FILE;

/// The co-watch prior `fit` chose for a run, which export carries into the GGUF.
pub const PRIOR_FILE: &str = "cowatch_prior.json";

/// Writes `<run>`'s best (else latest) checkpoint to `gguf`.
pub fn export(run: &Path, gguf: &Path, dtype: GgmlDType, name: &str) -> Result<LlamaShape> {
    let (weights, saved) = latest(run)?;
    if saved.config.lora.is_some() {
        let (base, model) = lora_run(&weights, &saved)?;
        base.write_merged(&model, dtype, &saved.config.template, gguf)
            .with_context(|| format!("writing {}", gguf.display()))?;
        return Ok(base.shape);
    }
    let matrix_type = match dtype {
        GgmlDType::F16 => TensorType::F16,
        GgmlDType::F32 => TensorType::F32,
        GgmlDType::Q8_0 => TensorType::Q8_0,
        other => bail!("a from-scratch model is written as f16, f32 or q8_0, not {other:?}"),
    };
    let vocab = super::bpe::gguf_vocab(&run.join("tokenizer.json"))?;
    let shape = LlamaShape {
        n_vocab: vocab.tokens.len(),
        ..saved.config.shape()
    };
    let (model, _) = checkpoint::load_model(&weights, shape, saved.config.tied)?;
    let items = catalog(run)?;
    let app_ids = match &items {
        Some(items) => app_ids(run, items)?,
        None => None,
    };
    let prior = read_prior(run)?;
    LlamaFile {
        name,
        shape,
        vocab: &vocab,
        template: Some(&saved.config.template),
        items: items.as_deref(),
        item_ids: app_ids.as_deref(),
        prior: prior.as_ref(),
        weights: model.weights()?.into_iter().map(|(_, _, w)| w).collect(),
        matrix_type,
        rope_theta: ROPE_THETA,
        rms_eps: RMS_EPS,
    }
    .write(gguf)
    .with_context(|| format!("writing {}", gguf.display()))?;
    Ok(shape)
}

/// The run's catalog ([`super::CATALOG_FILE`]), which only sequence runs write.
fn catalog(run: &Path) -> Result<Option<Vec<i64>>> {
    let path = run.join(super::CATALOG_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(serde_json::from_str(&text).with_context(|| {
        format!("{} is not a JSON array of item ids", path.display())
    })?))
}

/// The run's [`PRIOR_FILE`], when its fit chose one.
fn read_prior(run: &Path) -> Result<Option<CoWatchPrior>> {
    let path = run.join(PRIOR_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    CoWatchPrior::from_json(&text)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{} is not a co-watch prior: {e}", path.display()))
}

/// The app's ids of `catalog`'s dense ids, when the run's data came from a recipe (its
/// [`ITEM_IDS_FILE`] lists the app id of dense id `i + 1` at index `i`).
fn app_ids(run: &Path, catalog: &[i64]) -> Result<Option<Vec<ItemId>>> {
    let path = run.join(ITEM_IDS_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let all: Vec<ItemId> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JSON array of ids", path.display()))?;
    catalog
        .iter()
        .map(|&d| {
            usize::try_from(d - 1)
                .ok()
                .and_then(|i| all.get(i).cloned())
                .with_context(|| format!("item {d} of the catalog has no id in {}", path.display()))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Writes a LoRA run's adapters as a llama.cpp adapter GGUF (`general.type = adapter`), to
/// be applied to the unchanged base at `alpha / rank`.
pub fn export_adapter(run: &Path, out: &Path) -> Result<()> {
    let (weights, saved) = latest(run)?;
    if saved.config.lora.is_none() {
        bail!(
            "{} trained a whole model, not LoRA adapters; use export",
            run.display()
        );
    }
    let (base, model) = lora_run(&weights, &saved)?;
    let lora = model.lora.as_ref().context("the run has no adapters")?;
    let mut w = GgufWriter::default();
    w.meta(
        "general.architecture",
        MetaValue::String(base.architecture.clone()),
    )
    .meta("general.type", MetaValue::String("adapter".into()))
    .meta("adapter.type", MetaValue::String("lora".into()))
    .meta("adapter.lora.alpha", MetaValue::F32(lora.spec.alpha as f32));
    for (name, var) in lora.tensors() {
        w.tensor(
            &name,
            var.dims(),
            TensorType::F32,
            var.as_tensor().flatten_all()?.to_vec1::<f32>()?,
        );
    }
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
    );
    w.write(&mut file)?;
    Ok(())
}

/// The checkpoint export writes: the best by validation where the run kept one.
fn latest(run: &Path) -> Result<(std::path::PathBuf, Saved)> {
    checkpoint::best(run)?
        .with_context(|| format!("{} holds no checkpoint; run `train` first", run.display()))
}

/// A LoRA run's base and the frozen model with its trained adapters attached.
pub fn lora_run(weights: &Path, saved: &Saved) -> Result<(Base, Transformer)> {
    let (Some(base), Some(spec)) = (&saved.config.base, &saved.config.lora) else {
        bail!("not a LoRA run");
    };
    let base = Base::read(base)?;
    let mut model = base.model()?;
    model.lora = Some(Lora::from_tensors(
        spec,
        &model.lora_sites(spec)?,
        &checkpoint::tensors(weights)?,
    )?);
    Ok((base, model))
}
