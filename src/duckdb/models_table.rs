//! `kvrec_models()`: the loaded models, one row each, with the columns of SQLite's version
//! in the same order.

use duckdb::core::{DataChunkHandle, Inserter, LogicalTypeHandle, LogicalTypeId};
use duckdb::vtab::{BindInfo, InitInfo, TableFunctionInfo, VTab};
use kvrec_llm::{registry, ModelInfo};

use super::pending::Pending;

pub struct ModelsTable;

/// A column's value for one model.
enum Value<'a> {
    Text(&'a str),
    Int(i64),
}

/// The columns, in the order of SQLite's `kvrec_models` schema.
const COLUMNS: [&str; 10] = [
    "name",
    "path",
    "architecture",
    "size_bytes",
    "n_params",
    "n_ctx",
    "n_ctx_train",
    "n_gpu_layers",
    "template_version",
    "template_source",
];

/// `m`'s values in [`COLUMNS`] order.
fn values(m: &ModelInfo) -> [Value<'_>; 10] {
    [
        Value::Text(&m.name),
        Value::Text(&m.path),
        Value::Text(&m.architecture),
        Value::Int(m.size_bytes as i64),
        Value::Int(m.n_params as i64),
        Value::Int(i64::from(m.n_ctx)),
        Value::Int(i64::from(m.n_ctx_train)),
        Value::Int(i64::from(m.n_gpu_layers)),
        Value::Int(i64::from(m.template_version)),
        Value::Text(m.template_source),
    ]
}

impl VTab for ModelsTable {
    /// The models, listed once when the scan starts.
    type InitData = Pending<ModelInfo>;
    type BindData = ();

    fn bind(bind: &BindInfo) -> Result<(), Box<dyn std::error::Error>> {
        // The column types are those of any model's values.
        let example = ModelInfo::default();
        for (name, value) in COLUMNS.iter().zip(values(&example)) {
            let kind = match value {
                Value::Text(_) => LogicalTypeId::Varchar,
                Value::Int(_) => LogicalTypeId::Bigint,
            };
            bind.add_result_column(name, LogicalTypeHandle::from(kind));
        }
        Ok(())
    }

    fn init(_: &InitInfo) -> Result<Pending<ModelInfo>, Box<dyn std::error::Error>> {
        Ok(Pending::new(registry::list()))
    }

    fn func(
        func: &TableFunctionInfo<Self>,
        output: &mut DataChunkHandle,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let models = func.get_init_data().next_chunk();
        for (row, m) in models.iter().enumerate() {
            for (c, value) in values(m).into_iter().enumerate() {
                let mut vector = output.flat_vector(c);
                match value {
                    Value::Text(text) => vector.insert(row, text),
                    // SAFETY: the column is BIGINT and `row` is below the chunk's capacity.
                    Value::Int(int) => unsafe { vector.as_mut_slice::<i64>()[row] = int },
                }
            }
        }
        output.set_len(models.len());
        Ok(())
    }
}
