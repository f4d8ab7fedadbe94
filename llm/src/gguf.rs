//! The project's one GGUF (v3) writer: the models kvrec trains, the LoRA merges it writes
//! over a base file, and the test models its tests make. Tensors are encoded here as F32, F16
//! or Q8_0, or come already in any ggml type (a base file's tensors, candle's quantizers);
//! shapes are given in PyTorch (out, in) order and written in ggml order (innermost first),
//! as llama.cpp expects.

use std::io::{self, Write};

const ALIGNMENT: usize = 32;

/// A metadata value: every GGUF value type, so a base file's metadata is written back as read.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    /// Elements of one type (an empty array is written as an array of U8).
    Array(Vec<MetaValue>),
}

impl MetaValue {
    pub fn strings(items: &[String]) -> Self {
        MetaValue::Array(items.iter().cloned().map(MetaValue::String).collect())
    }

    pub fn i32s(items: &[i32]) -> Self {
        MetaValue::Array(items.iter().copied().map(MetaValue::I32).collect())
    }

    /// GGUF's value type id.
    fn type_id(&self) -> u32 {
        match self {
            MetaValue::U8(_) => 0,
            MetaValue::I8(_) => 1,
            MetaValue::U16(_) => 2,
            MetaValue::I16(_) => 3,
            MetaValue::U32(_) => 4,
            MetaValue::I32(_) => 5,
            MetaValue::F32(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::String(_) => 8,
            MetaValue::Array(_) => 9,
            MetaValue::U64(_) => 10,
            MetaValue::I64(_) => 11,
            MetaValue::F64(_) => 12,
        }
    }

    /// The value without its type id (an array's elements are written so).
    fn write_payload(&self, out: &mut Vec<u8>) -> io::Result<()> {
        match self {
            MetaValue::U8(v) => out.push(*v),
            MetaValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
            MetaValue::Bool(v) => out.push(u8::from(*v)),
            MetaValue::String(s) => write_string(out, s)?,
            MetaValue::Array(items) => {
                let elem = items.first().map_or(0, MetaValue::type_id);
                if let Some(other) = items.iter().find(|v| v.type_id() != elem) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "a GGUF array mixes value types {elem} and {}",
                            other.type_id()
                        ),
                    ));
                }
                out.extend_from_slice(&elem.to_le_bytes());
                out.extend_from_slice(&(items.len() as u64).to_le_bytes());
                for item in items {
                    item.write_payload(out)?;
                }
            }
        }
        Ok(())
    }
}

/// How a tensor's values are stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    /// Blocks of 32 values: an F16 scale and 32 signed bytes (ggml's `Q8_0`); the innermost
    /// dimension must be a multiple of 32.
    Q8_0,
}

/// Values per Q8_0 block.
pub const Q8_0_BLOCK: usize = 32;

impl TensorType {
    /// ggml's type id.
    fn id(self) -> u32 {
        match self {
            TensorType::F32 => 0,
            TensorType::F16 => 1,
            TensorType::Q8_0 => 8,
        }
    }

    fn encode(self, data: &[f32]) -> Vec<u8> {
        match self {
            TensorType::F32 => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            TensorType::F16 => data
                .iter()
                .flat_map(|v| f32_to_f16(*v).to_le_bytes())
                .collect(),
            TensorType::Q8_0 => data.chunks(Q8_0_BLOCK).flat_map(q8_0_block).collect(),
        }
    }
}

/// One Q8_0 block, rounded as ggml's reference quantizer does (scale = max |x| / 127).
fn q8_0_block(values: &[f32]) -> Vec<u8> {
    let amax = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = amax / 127.0;
    let inverse = if scale == 0.0 { 0.0 } else { 1.0 / scale };
    let mut block = f32_to_f16(scale).to_le_bytes().to_vec();
    block.extend(values.iter().map(|v| (v * inverse).round() as i8 as u8));
    block
}

struct Tensor {
    name: String,
    /// PyTorch order: outermost first.
    shape: Vec<usize>,
    /// ggml's type id of `bytes`.
    ggml_type: u32,
    bytes: Vec<u8>,
}

/// Collects metadata and tensors, then writes one GGUF file.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    tensors: Vec<Tensor>,
}

fn write_string(out: &mut impl Write, s: &str) -> io::Result<()> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s.as_bytes())
}

impl GgufWriter {
    pub fn meta(&mut self, key: &str, value: MetaValue) -> &mut Self {
        self.metadata.push((key.to_string(), value));
        self
    }

    /// Adds a tensor given in PyTorch order (`shape[0]` = rows = output features).
    pub fn tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        kind: TensorType,
        data: Vec<f32>,
    ) -> &mut Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "tensor {name}: shape and data disagree"
        );
        assert!(
            kind != TensorType::Q8_0 || shape.last().is_some_and(|n| n % Q8_0_BLOCK == 0),
            "tensor {name}: Q8_0 rows must be a multiple of {Q8_0_BLOCK} values"
        );
        self.tensors.push(Tensor {
            name: name.to_string(),
            shape: shape.to_vec(),
            ggml_type: kind.id(),
            bytes: kind.encode(&data),
        });
        self
    }

    /// Adds a tensor already in ggml's encoding of type `ggml_type` (a base file's tensor, or
    /// one a quantizer wrote), shape in PyTorch order.
    pub fn encoded_tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        ggml_type: u32,
        bytes: Vec<u8>,
    ) -> &mut Self {
        self.tensors.push(Tensor {
            name: name.to_string(),
            shape: shape.to_vec(),
            ggml_type,
            bytes,
        });
        self
    }

    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let mut header = Vec::new();
        header.extend_from_slice(b"GGUF");
        header.extend_from_slice(&3u32.to_le_bytes());
        header.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        header.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_string(&mut header, key)?;
            write_value(&mut header, value)?;
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            write_string(&mut header, &t.name)?;
            header.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for dim in t.shape.iter().rev() {
                header.extend_from_slice(&(*dim as u64).to_le_bytes());
            }
            header.extend_from_slice(&t.ggml_type.to_le_bytes());
            header.extend_from_slice(&(offset as u64).to_le_bytes());
            offset += t.bytes.len().next_multiple_of(ALIGNMENT);
        }
        header.resize(header.len().next_multiple_of(ALIGNMENT), 0);
        out.write_all(&header)?;
        for Tensor { bytes, .. } in &self.tensors {
            out.write_all(bytes)?;
            out.write_all(&vec![
                0u8;
                bytes.len().next_multiple_of(ALIGNMENT) - bytes.len()
            ])?;
        }
        Ok(())
    }
}

fn write_value(out: &mut Vec<u8>, value: &MetaValue) -> io::Result<()> {
    out.extend_from_slice(&value.type_id().to_le_bytes());
    value.write_payload(out)
}

/// IEEE 754 half precision, round to nearest even (finite inputs of model-weight size).
pub fn f32_to_f16(value: f32) -> u16 {
    let bits = value.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let mantissa = bits & 0x7f_ffff;
    if exp >= 0x1f {
        return sign | 0x7c00;
    }
    if exp <= 0 {
        if exp < -10 {
            return sign;
        }
        let m = (mantissa | 0x80_0000) >> (1 - exp);
        let rounded = (m + 0x1000 + ((m >> 13) & 1) - 1) >> 13;
        return sign | rounded as u16;
    }
    let half = (((exp as u32) << 10) | (mantissa >> 13)) as u16;
    let rest = mantissa & 0x1fff;
    let round_up = rest > 0x1000 || (rest == 0x1000 && half & 1 == 1);
    sign | (half + u16::from(round_up))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision() {
        assert_eq!(f32_to_f16(1.0), 0x3c00);
        assert_eq!(f32_to_f16(-2.0), 0xc000);
        assert_eq!(f32_to_f16(0.0), 0);
        assert_eq!(f32_to_f16(65504.0), 0x7bff);
        assert_eq!(f32_to_f16(1e9), 0x7c00);
        assert_eq!(f32_to_f16(0.000_061_035_156), 0x0400);
    }

    #[test]
    fn layout_is_aligned() {
        let mut w = GgufWriter::default();
        w.meta("general.architecture", MetaValue::String("llama".into()));
        w.tensor("a", &[2, 3], TensorType::F32, vec![0.0; 6]);
        w.tensor("b", &[5], TensorType::F16, vec![1.0; 5]);
        let mut bytes = Vec::new();
        w.write(&mut bytes).unwrap();
        assert_eq!(&bytes[..4], b"GGUF");
        assert_eq!(bytes.len() % ALIGNMENT, 0);
    }

    #[test]
    fn q8_0_blocks_hold_a_scale_and_rounded_bytes() {
        let mut values: Vec<f32> = (0..32).map(|i| i as f32 - 16.0).collect();
        values[5] = 0.3;
        let block = q8_0_block(&values);
        assert_eq!(block.len(), 34);
        // max |x| = 16, so the scale is 16/127 and -16 maps to -127.
        assert_eq!(block[..2], f32_to_f16(16.0 / 127.0).to_le_bytes());
        assert_eq!(block[2] as i8, -127);
        assert_eq!(block[2 + 5] as i8, 2); // 0.3 * 127/16 = 2.38
        assert_eq!(block[2 + 16] as i8, 0);
        assert_eq!(q8_0_block(&[0.0; 32])[2..], [0u8; 32]);
    }
}
