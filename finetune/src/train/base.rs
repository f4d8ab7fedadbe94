//! A pre-trained GGUF as a LoRA base (llama or Gemma 3 architecture): its hyper-parameters
//! from the metadata, every weight dequantized to f32 (frozen), and the merged-model writer
//! that keeps the base's metadata and untouched tensor blocks and re-quantizes only what LoRA
//! changed.

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
use super::model::{Arch, Transformer};

pub struct Base {
    pub path: PathBuf,
    /// `general.architecture`: `llama` or `gemma3`.
    pub architecture: String,
    pub arch: Arch,
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
        let architecture = meta("general.architecture")?.to_string()?.clone();
        if architecture != "llama" && architecture != "gemma3" {
            bail!(
                "{}: architecture '{architecture}' is not supported as a LoRA base; use a llama or gemma3 GGUF",
                path.display()
            );
        }
        let key = |name: &str| format!("{architecture}.{name}");
        let u = |name: &str| -> Result<usize> { Ok(meta(&key(name))?.to_u32()? as usize) };
        let embd = content
            .tensor_infos
            .get("token_embd.weight")
            .context("the base has no token_embd.weight")?;
        let n_head = u("attention.head_count")?;
        let shape = LlamaShape {
            n_vocab: embd.shape.dims()[0],
            n_embd: u("embedding_length")?,
            n_layer: u("block_count")?,
            n_head,
            n_head_kv: u("attention.head_count_kv").unwrap_or(n_head),
            n_ff: u("feed_forward_length")?,
            context: u("context_length")?,
        };
        let rope_theta = meta(&key("rope.freq_base")).map_or(Ok(10_000.0), |v| v.to_f32())?;
        let rms_eps = meta(&key("attention.layer_norm_rms_epsilon"))?.to_f32()?;
        let arch = if architecture == "gemma3" {
            let head_dim = u("attention.key_length")?;
            // llama.cpp's gemma3 constants: every 6th layer global, local RoPE base 10,000.
            Arch::Gemma3 {
                head_dim,
                window: u("attention.sliding_window")?,
                global_every: 6,
                rope_local: 10_000.0,
                query_scale: 1.0 / (head_dim as f64).sqrt(),
            }
        } else {
            Arch::Llama
        };
        let template = match content.metadata.get(TEMPLATE_KEY) {
            Some(v) => Some(TemplateSpec::from_json(&serde_json::from_str(
                v.to_string()?,
            )?)?),
            None => None,
        };
        Ok(Base {
            path: path.to_path_buf(),
            architecture,
            arch,
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
        let mut names: Vec<&String> = self.content.tensor_infos.keys().collect();
        names.sort();
        let weights = names
            .into_iter()
            .map(|name| {
                let tensor = self
                    .content
                    .tensor(&mut reader, name, &Device::Cpu)
                    .with_context(|| format!("reading {name}"))?
                    .dequantize(&Device::Cpu)?;
                Ok((
                    name.clone(),
                    tensor.dims().to_vec(),
                    tensor.flatten_all()?.to_vec1::<f32>()?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut model = Transformer::new(
            self.arch,
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
