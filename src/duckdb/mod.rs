//! The DuckDB loadable extension (entry point `kvrec_init_c_api`): the catalog's functions,
//! as in SQLite, reading DuckDB values; `recommend()` ranks a chunk's rows together. The same shared library is the SQLite extension; `scripts/duckdb_extension.py`
//! appends DuckDB's metadata footer to make `kvrec.duckdb_extension`.

mod pending;
mod scalar;
mod table;
mod values;

use std::error::Error;

use duckdb::{duckdb_entrypoint_c_api, Connection};

use crate::functions::catalog::{SCALARS, TABLES};
use scalar::CatalogScalar;
use table::CatalogTable;

/// Registers the listed catalog scalars and tables. DuckDB takes a type per function, so
/// each index is spelled out; a list that does not cover the catalog fails the build.
macro_rules! register_all {
    ($con:expr, scalars: [$($s:literal),*], tables: [$($t:literal),*]) => {{
        const _: () = assert!([$($s),*].len() == SCALARS.len() && [$($t),*].len() == TABLES.len());
        $( $con.register_scalar_function::<CatalogScalar<$s>>(SCALARS[$s].name)?; )*
        $( $con.register_table_function::<CatalogTable<$t>>(TABLES[$t].name)?; )*
    }};
}

/// Registers every function of the catalog.
fn register(con: &Connection) -> duckdb::Result<()> {
    register_all!(con, scalars: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], tables: [0, 1, 2, 3, 4]);
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
