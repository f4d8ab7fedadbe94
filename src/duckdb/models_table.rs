//! `kvrec_models()`: the loaded models, one row each (the columns of SQLite's version).

use duckdb::core::{DataChunkHandle, Inserter, LogicalTypeHandle, LogicalTypeId};
use duckdb::vtab::{BindInfo, InitInfo, TableFunctionInfo, VTab};
use kvrec_llm::{registry, ModelInfo};

use super::pending::Pending;

pub struct ModelsTable;

const TEXT: [&str; 4] = ["name", "path", "architecture", "template_source"];
const INTS: [&str; 6] = [
    "size_bytes",
    "n_params",
    "n_ctx",
    "n_ctx_train",
    "n_gpu_layers",
    "template_version",
];

impl VTab for ModelsTable {
    /// The models, listed once when the scan starts.
    type InitData = Pending<ModelInfo>;
    type BindData = ();

    fn bind(bind: &BindInfo) -> Result<(), Box<dyn std::error::Error>> {
        for name in TEXT {
            bind.add_result_column(name, LogicalTypeHandle::from(LogicalTypeId::Varchar));
        }
        for name in INTS {
            bind.add_result_column(name, LogicalTypeHandle::from(LogicalTypeId::Bigint));
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
            let texts = [m.name.as_str(), &m.path, &m.architecture, m.template_source];
            for (c, value) in texts.iter().enumerate() {
                output.flat_vector(c).insert(row, *value);
            }
            let ints = [
                m.size_bytes as i64,
                m.n_params as i64,
                i64::from(m.n_ctx),
                i64::from(m.n_ctx_train),
                i64::from(m.n_gpu_layers),
                i64::from(m.template_version),
            ];
            for (c, value) in ints.iter().enumerate() {
                let mut vector = output.flat_vector(TEXT.len() + c);
                // SAFETY: the column is BIGINT and `row` is below the chunk's capacity.
                unsafe { vector.as_mut_slice::<i64>()[row] = *value };
            }
        }
        output.set_len(models.len());
        Ok(())
    }
}
