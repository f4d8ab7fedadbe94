//! The DuckDB loadable extension (entry point `kvrec_init_c_api`): the SQLite extension's
//! functions under the same names, reading DuckDB values, plus `recommend()` scored a chunk at
//! a time. The same shared library is the SQLite extension; `scripts/duckdb_extension.py`
//! appends DuckDB's metadata footer to make `kvrec.duckdb_extension`.

mod models_table;
mod pending;
mod recommend;
mod recommend_each;
mod scalar;
mod values;

use std::error::Error;

use duckdb::{duckdb_entrypoint_c_api, Connection};

use crate::functions::{meta, model_fns, prompt_fns, SqlArgs};
use kvrec_core::error::Result;
use scalar::{Kind, RowFunction, TextFunction};

/// A shared row function as a DuckDB scalar returning VARCHAR.
macro_rules! row_function {
    ($type:ident, $name:literal, [$($param:literal: $kind:ident),*], $volatile:literal, $body:path) => {
        struct $type;
        impl RowFunction for $type {
            const NAME: &'static str = $name;
            const PARAMS: &'static [&'static str] = &[$($param),*];
            const KINDS: &'static [Kind] = &[$(Kind::$kind),*];
            const VOLATILE: bool = $volatile;
            fn call(args: &dyn SqlArgs) -> Result<String> {
                $body(args)
            }
        }
    };
}

row_function!(Version, "kvrec_version", [], false, meta::version);
row_function!(Debug, "kvrec_debug", [], false, meta::debug);
row_function!(Template, "kvrec_template", [], false, meta::template);
row_function!(Prompt, "kvrec_prompt", ["user": Json, "history": Json, "candidates": Json, "options?": Json], false, prompt_fns::prompt);
row_function!(Target, "kvrec_target", ["candidates": Json, "positive_id": Int, "options?": Json], false, prompt_fns::target);
row_function!(ParseAnswer, "kvrec_parse_answer", ["text": Text, "candidates": Json], false, prompt_fns::parse);
row_function!(Augment, "kvrec_augment", ["user": Json, "history": Json, "candidates": Json, "strategy": Text, "seed": Int, "options?": Json], false, prompt_fns::augment);
row_function!(LoadModel, "kvrec_load_model", ["name": Text, "path": Text, "options?": Json], true, model_fns::load);
row_function!(UnloadModel, "kvrec_unload_model", ["name": Text], true, model_fns::unload);

fn text<F: RowFunction>(con: &Connection) -> duckdb::Result<()> {
    con.register_scalar_function::<TextFunction<F>>(F::NAME)
}

/// Registers every kvrec function: one line per SQL function.
fn register(con: &Connection) -> duckdb::Result<()> {
    text::<Version>(con)?;
    text::<Debug>(con)?;
    text::<Template>(con)?;
    text::<Prompt>(con)?;
    text::<Target>(con)?;
    text::<ParseAnswer>(con)?;
    text::<Augment>(con)?;
    text::<LoadModel>(con)?;
    text::<UnloadModel>(con)?;
    con.register_scalar_function::<recommend::Recommend>(recommend::NAME)?;
    con.register_table_function::<models_table::ModelsTable>("kvrec_models")?;
    con.register_table_function::<recommend_each::RecommendEach>("recommend_each")?;
    Ok(())
}

/// The extension's entry point. C API v1.5.6: loads in DuckDB 1.5.6 through 2.0.x.
#[duckdb_entrypoint_c_api(ext_name = "kvrec", min_duckdb_version = "v1.5.6")]
pub fn kvrec_duckdb_init(con: Connection) -> std::result::Result<(), Box<dyn Error>> {
    crate::pin::pin_library();
    let registered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| register(&con)));
    match registered {
        Ok(result) => {
            result.map_err(|e| format!("kvrec: registering functions failed: {e}").into())
        }
        Err(_) => Err(
            "kvrec: registering functions panicked (this is a kvrec bug, please report it)".into(),
        ),
    }
}
