//! `kvrec_models()`: the loaded models, one row each (the columns of SQLite's version).

use std::sync::Mutex;

use duckdb::core::{DataChunkHandle, Inserter, LogicalTypeHandle, LogicalTypeId};
use duckdb::vtab::{BindInfo, InitInfo, TableFunctionInfo, VTab};
use kvrec_llm::{registry, ModelInfo};

pub struct ModelsTable;

/// The models not yet written out (listed once, when the scan starts).
pub struct Pending(Mutex<Vec<ModelInfo>>);

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
    type InitData = Pending;
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

    fn init(_: &InitInfo) -> Result<Pending, Box<dyn std::error::Error>> {
        let mut models = registry::list();
        models.reverse(); // popped from the end: name order
        Ok(Pending(Mutex::new(models)))
    }

    fn func(
        func: &TableFunctionInfo<Self>,
        output: &mut DataChunkHandle,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let mut pending = func
            .get_init_data()
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let capacity = 2048.min(pending.len());
        let mut row = 0;
        while row < capacity {
            let Some(m) = pending.pop() else { break };
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
            row += 1;
        }
        output.set_len(row);
        Ok(())
    }
}
