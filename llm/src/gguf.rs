//! A small GGUF (v3) writer: enough to write the models kvrec trains and the test models its
//! tests make. Tensors are F32, F16 or Q8_0, in PyTorch (out, in) order; dims are written in
//! ggml order (innermost first), as llama.cpp expects.

use std::io::{self, Write};

const ALIGNMENT: usize = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    StringArray(Vec<String>),
    I32Array(Vec<i32>),
    F32Array(Vec<f32>),
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
    kind: TensorType,
    data: Vec<f32>,
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
            kind,
            data,
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
        let mut blobs = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            write_string(&mut header, &t.name)?;
            header.extend_from_slice(&(t.shape.len() as u32).to_le_bytes());
            for dim in t.shape.iter().rev() {
                header.extend_from_slice(&(*dim as u64).to_le_bytes());
            }
            let bytes = t.kind.encode(&t.data);
            header.extend_from_slice(&t.kind.id().to_le_bytes());
            header.extend_from_slice(&(offset as u64).to_le_bytes());
            offset += bytes.len().next_multiple_of(ALIGNMENT);
            blobs.push(bytes);
        }
        header.resize(header.len().next_multiple_of(ALIGNMENT), 0);
        out.write_all(&header)?;
        for bytes in blobs {
            out.write_all(&bytes)?;
            out.write_all(&vec![
                0u8;
                bytes.len().next_multiple_of(ALIGNMENT) - bytes.len()
            ])?;
        }
        Ok(())
    }
}

fn write_value(out: &mut Vec<u8>, value: &MetaValue) -> io::Result<()> {
    const U32: u32 = 4;
    const I32: u32 = 5;
    const F32: u32 = 6;
    const BOOL: u32 = 7;
    const STRING: u32 = 8;
    const ARRAY: u32 = 9;
    let array_header = |out: &mut Vec<u8>, elem: u32, n: usize| {
        out.extend_from_slice(&ARRAY.to_le_bytes());
        out.extend_from_slice(&elem.to_le_bytes());
        out.extend_from_slice(&(n as u64).to_le_bytes());
    };
    match value {
        MetaValue::U32(v) => {
            out.extend_from_slice(&U32.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        MetaValue::I32(v) => {
            out.extend_from_slice(&I32.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        MetaValue::F32(v) => {
            out.extend_from_slice(&F32.to_le_bytes());
            out.extend_from_slice(&v.to_le_bytes());
        }
        MetaValue::Bool(v) => {
            out.extend_from_slice(&BOOL.to_le_bytes());
            out.push(u8::from(*v));
        }
        MetaValue::String(s) => {
            out.extend_from_slice(&STRING.to_le_bytes());
            write_string(out, s)?;
        }
        MetaValue::StringArray(items) => {
            array_header(out, STRING, items.len());
            for s in items {
                write_string(out, s)?;
            }
        }
        MetaValue::I32Array(items) => {
            array_header(out, I32, items.len());
            items
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
        MetaValue::F32Array(items) => {
            array_header(out, F32, items.len());
            items
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
    }
    Ok(())
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
