//! A pre-trained GGUF as a LoRA base (llama or Gemma 3 architecture): its hyper-parameters
//! from the metadata, every weight dequantized to f32 (frozen), and the merged-model writer
//! that keeps the base's metadata and untouched tensor blocks and re-quantizes only what LoRA
//! changed.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;
use kvrec_core::template::{TemplateSpec, TEMPLATE_METADATA_KEY as TEMPLATE_KEY};
use kvrec_llm::gguf::{GgufWriter, MetaValue};
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
        let merged = lora::merged(&model.vars, lora)?;
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
        let mut writer = GgufWriter::default();
        let mut keys: Vec<&String> = self.content.metadata.keys().collect();
        keys.sort();
        for key in keys.into_iter().filter(|k| k.as_str() != TEMPLATE_KEY) {
            writer.meta(key, meta_value(&self.content.metadata[key]));
        }
        writer.meta(
            TEMPLATE_KEY,
            MetaValue::String(template.to_json().to_string()),
        );
        for (name, tensor) in &tensors {
            writer.encoded_tensor(
                name,
                tensor.shape().dims(),
                ggml_type_id(tensor.dtype()),
                tensor.data()?.into_owned(),
            );
        }
        crate::io::write_with(out, |file| Ok(writer.write(file)?))?;
        Ok(())
    }
}

/// candle's reading of a metadata value, as the writer takes it.
fn meta_value(value: &Value) -> MetaValue {
    match value {
        Value::U8(v) => MetaValue::U8(*v),
        Value::I8(v) => MetaValue::I8(*v),
        Value::U16(v) => MetaValue::U16(*v),
        Value::I16(v) => MetaValue::I16(*v),
        Value::U32(v) => MetaValue::U32(*v),
        Value::I32(v) => MetaValue::I32(*v),
        Value::U64(v) => MetaValue::U64(*v),
        Value::I64(v) => MetaValue::I64(*v),
        Value::F32(v) => MetaValue::F32(*v),
        Value::F64(v) => MetaValue::F64(*v),
        Value::Bool(v) => MetaValue::Bool(*v),
        Value::String(v) => MetaValue::String(v.clone()),
        Value::Array(items) => MetaValue::Array(items.iter().map(meta_value).collect()),
    }
}

/// ggml's id of a tensor type (candle keeps its own private).
fn ggml_type_id(dtype: GgmlDType) -> u32 {
    match dtype {
        GgmlDType::F32 => 0,
        GgmlDType::F16 => 1,
        GgmlDType::Q4_0 => 2,
        GgmlDType::Q4_1 => 3,
        GgmlDType::Q5_0 => 6,
        GgmlDType::Q5_1 => 7,
        GgmlDType::Q8_0 => 8,
        GgmlDType::Q8_1 => 9,
        GgmlDType::Q2K => 10,
        GgmlDType::Q3K => 11,
        GgmlDType::Q4K => 12,
        GgmlDType::Q5K => 13,
        GgmlDType::Q6K => 14,
        GgmlDType::Q8K => 15,
        GgmlDType::BF16 => 30,
    }
}

fn open(path: &Path) -> Result<BufReader<File>> {
    Ok(BufReader::new(
        File::open(path).with_context(|| format!("opening {}", path.display()))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metadata_type_and_encoded_tensor_reads_back_through_candle() {
        let metadata = [
            ("u8", MetaValue::U8(200)),
            ("i8", MetaValue::I8(-100)),
            ("u16", MetaValue::U16(60_000)),
            ("i16", MetaValue::I16(-30_000)),
            ("u32", MetaValue::U32(4_000_000_000)),
            ("i32", MetaValue::I32(-2_000_000_000)),
            ("u64", MetaValue::U64(u64::MAX)),
            ("i64", MetaValue::I64(i64::MIN)),
            ("f32", MetaValue::F32(0.25)),
            ("f64", MetaValue::F64(-1e300)),
            ("bool", MetaValue::Bool(true)),
            ("string", MetaValue::String("kvrec ✓".into())),
            ("strings", MetaValue::strings(&["a".into(), "".into()])),
            (
                "nested",
                MetaValue::Array(vec![MetaValue::i32s(&[1, -2]), MetaValue::i32s(&[])]),
            ),
        ];
        let mut writer = GgufWriter::default();
        for (key, value) in &metadata {
            writer.meta(key, value.clone());
        }
        let values: Vec<f32> = (0..64).map(|i| i as f32 / 8.0 - 4.0).collect();
        let q4 = QTensor::quantize(
            &candle_core::Tensor::from_vec(values.clone(), (2, 32), &Device::Cpu).unwrap(),
            GgmlDType::Q4_0,
        )
        .unwrap();
        writer.encoded_tensor(
            "q4",
            q4.shape().dims(),
            ggml_type_id(q4.dtype()),
            q4.data().unwrap().into_owned(),
        );
        writer.tensor(
            "f16",
            &[2, 3],
            kvrec_llm::gguf::TensorType::F16,
            vec![0.5; 6],
        );
        let mut bytes = Vec::new();
        writer.write(&mut bytes).unwrap();

        let mut reader = std::io::Cursor::new(bytes);
        let content = Content::read(&mut reader).unwrap();
        for (key, value) in &metadata {
            assert_eq!(&meta_value(&content.metadata[*key]), value, "{key}");
        }
        let read = content.tensor(&mut reader, "q4", &Device::Cpu).unwrap();
        assert_eq!(read.dtype(), GgmlDType::Q4_0);
        assert_eq!(read.shape().dims(), &[2, 32]);
        assert_eq!(read.data().unwrap(), q4.data().unwrap());
        let f16 = content.tensor(&mut reader, "f16", &Device::Cpu).unwrap();
        assert_eq!(f16.shape().dims(), &[2, 3]);
        let back = f16.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap();
        assert_eq!(back.to_vec1::<f32>().unwrap(), vec![0.5; 6]);
    }

    #[test]
    fn an_array_of_mixed_types_is_an_error_not_a_corrupt_file() {
        let mut writer = GgufWriter::default();
        writer.meta(
            "mixed",
            MetaValue::Array(vec![MetaValue::U32(1), MetaValue::String("x".into())]),
        );
        let err = writer.write(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("mixes value types"), "{err}");
    }
}
