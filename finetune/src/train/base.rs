//! A pre-trained llama-architecture GGUF as a LoRA base: its hyper-parameters from the
//! metadata, every weight dequantized to f32 (frozen), and the merged-model writer that keeps
//! the base's metadata and untouched tensor blocks and re-quantizes only what LoRA changed.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use kvrec_core::template::{TemplateSpec, TEMPLATE_METADATA_KEY as TEMPLATE_KEY};
use kvrec_llm::llama_file::LlamaShape;

use super::lora;
use super::model::Transformer;

pub struct Base {
    pub path: PathBuf,
    pub shape: LlamaShape,
    pub rope_theta: f32,
    pub rms_eps: f32,
    /// No `output.weight`: the head is the token embedding.
    pub tied: bool,
    /// The template stored in the base, when it is a kvrec model.
    pub template: Option<TemplateSpec>,
    content: Content,
}

impl Base {
    pub fn read(path: &Path) -> Result<Base> {
        let mut reader = open(path)?;
        let content = Content::read(&mut reader)
            .with_context(|| format!("{} is not a readable GGUF", path.display()))?;
        let meta = |key: &str| {
            content
                .metadata
                .get(key)
                .with_context(|| format!("{}: no {key} in the metadata", path.display()))
        };
        let arch = meta("general.architecture")?.to_string()?.clone();
        if arch != "llama" {
            bail!(
                "{}: architecture '{arch}' is not supported as a LoRA base yet; use a llama-architecture GGUF",
                path.display()
            );
        }
        let u = |key: &str| -> Result<usize> { Ok(meta(key)?.to_u32()? as usize) };
        let embd = content
            .tensor_infos
            .get("token_embd.weight")
            .context("the base has no token_embd.weight")?;
        let n_head = u("llama.attention.head_count")?;
        let shape = LlamaShape {
            n_vocab: embd.shape.dims()[0],
            n_embd: u("llama.embedding_length")?,
            n_layer: u("llama.block_count")?,
            n_head,
            n_head_kv: u("llama.attention.head_count_kv").unwrap_or(n_head),
            n_ff: u("llama.feed_forward_length")?,
            context: u("llama.context_length")?,
        };
        let rope_theta = meta("llama.rope.freq_base").map_or(Ok(10_000.0), |v| v.to_f32())?;
        let rms_eps = meta("llama.attention.layer_norm_rms_epsilon")?.to_f32()?;
        let template = match content.metadata.get(TEMPLATE_KEY) {
            Some(v) => Some(TemplateSpec::from_json(&serde_json::from_str(
                v.to_string()?,
            )?)?),
            None => None,
        };
        Ok(Base {
            path: path.to_path_buf(),
            shape,
            rope_theta,
            rms_eps,
            tied: !content.tensor_infos.contains_key("output.weight"),
            template,
            content,
        })
    }

    /// The frozen model, every tensor dequantized to f32.
    pub fn model(&self) -> Result<Transformer> {
        let mut reader = open(&self.path)?;
        let weights = self
            .shape
            .tensors()
            .into_iter()
            .map(|(name, dims)| {
                // A tied base has no head: its slot takes the embedding (unused when tied).
                let stored = if self.tied && name == "output.weight" {
                    "token_embd.weight"
                } else {
                    name.as_str()
                };
                let tensor = self
                    .content
                    .tensor(&mut reader, stored, &Device::Cpu)
                    .with_context(|| format!("reading {stored}"))?
                    .dequantize(&Device::Cpu)?;
                if tensor.dims() != dims {
                    bail!(
                        "{name} is {:?}, the metadata implies {dims:?}",
                        tensor.dims()
                    );
                }
                Ok((name, dims, tensor.flatten_all()?.to_vec1::<f32>()?))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut model = Transformer::from_weights_with(
            self.shape,
            weights,
            self.tied,
            self.rope_theta,
            self.rms_eps,
        )?;
        model.frozen = true;
        Ok(model)
    }

    /// Writes the base with `model`'s adapters merged: the merged tensors stored as `dtype`,
    /// every other tensor in its original blocks, the base's metadata plus `template`.
    pub fn write_merged(
        &self,
        model: &Transformer,
        dtype: GgmlDType,
        template: &TemplateSpec,
        out: &Path,
    ) -> Result<()> {
        let lora = model
            .lora
            .as_ref()
            .context("the model has no LoRA adapters to merge")?;
        let merged = lora::merged(model, lora)?;
        let mut reader = open(&self.path)?;
        let mut names: Vec<&String> = self.content.tensor_infos.keys().collect();
        names.sort_by_key(|n| self.content.tensor_infos[*n].offset);
        let mut tensors = Vec::with_capacity(names.len());
        for name in names {
            let replaced = merged.iter().find(|(i, _)| &model.names[*i] == name);
            let tensor = match replaced {
                Some((_, weight)) => QTensor::quantize(weight, dtype)
                    .with_context(|| format!("storing the merged {name} as {dtype:?}"))?,
                None => self.content.tensor(&mut reader, name, &Device::Cpu)?,
            };
            tensors.push((name.clone(), tensor));
        }
        let mut metadata: Vec<(String, Value)> = self
            .content
            .metadata
            .iter()
            .filter(|(k, _)| k.as_str() != TEMPLATE_KEY)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        metadata.push((
            TEMPLATE_KEY.into(),
            Value::String(template.to_json().to_string()),
        ));
        metadata.sort_by(|a, b| a.0.cmp(&b.0));
        let mut file = std::io::BufWriter::new(
            File::create(out).with_context(|| format!("creating {}", out.display()))?,
        );
        gguf_file::write(
            &mut file,
            &metadata
                .iter()
                .map(|(k, v)| (k.as_str(), v))
                .collect::<Vec<_>>(),
            &tensors
                .iter()
                .map(|(k, t)| (k.as_str(), t))
                .collect::<Vec<_>>(),
        )?;
        Ok(())
    }
}

fn open(path: &Path) -> Result<BufReader<File>> {
    Ok(BufReader::new(
        File::open(path).with_context(|| format!("opening {}", path.display()))?,
    ))
}
