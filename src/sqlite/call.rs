//! The FFI boundary for SQL scalar functions: argument access with typed errors, results, and
//! the guard that turns every error and every panic into an SQL error naming the function.
//!
//! sqlite-loadable calls our closures from `extern "C"` callbacks without catching panics, and
//! a panic unwinding into SQLite would abort the host process; so nothing runs outside
//! [`guarded`].

use std::os::raw::c_int;

use sqlite_loadable::prelude::*;
use sqlite_loadable::{api, define_scalar_function};

use crate::functions::catalog::Scalar;
pub use crate::functions::guarded;
use crate::functions::{param_name, SqlArgs};
use kvrec_core::error::{KvrecError, Result};

/// The arguments of one call, with the declared parameter names for messages.
pub struct Args<'a> {
    values: &'a [*mut sqlite3_value],
    params: &'static [&'static str],
    /// The connection running the call, to ask whether its statement was interrupted.
    db: Option<Connection>,
}

/// A connection handle. SQLite connections are serialized (SQLITE_THREADSAFE=1, as every
/// host we load into builds them), and [`kvrec_llm::Cancel`] only probes on the thread that
/// runs the statement.
#[derive(Clone, Copy)]
pub struct Connection(pub *mut sqlite3);

// SAFETY: see the type's comment: the handle is used only by the thread that owns the call.
unsafe impl Send for Connection {}
unsafe impl Sync for Connection {}

impl Connection {
    pub fn of(ctx: *mut sqlite3_context) -> Connection {
        // SAFETY: `ctx` is the live context of the function call SQLite is making.
        Connection(unsafe { sqlite_loadable::ext::sqlite3ext_context_db_handle(ctx) })
    }

    /// [`Connection::interrupted`] as the probe a call's [`kvrec_llm::Cancel`] asks.
    pub fn probe<'a>(self) -> Box<dyn Fn() -> bool + Sync + 'a> {
        Box::new(move || self.interrupted())
    }

    /// Whether the host interrupted the statement: `sqlite3_interrupt()`, or a progress
    /// handler that returned non-zero (Datasette's time limit is one). Neither is visible
    /// from inside a function, so this runs a small statement on the connection that takes a
    /// few thousand VM steps: SQLite calls the progress handler during it and fails it with
    /// SQLITE_INTERRUPT when the host wants the statement to stop.
    pub fn interrupted(self) -> bool {
        const PROBE: &std::ffi::CStr = c"WITH RECURSIVE n(i) AS (VALUES(0) UNION ALL SELECT i + 1 FROM n WHERE i < 400) SELECT count(*) FROM n";
        let mut stmt = std::ptr::null_mut();
        // SAFETY: a live connection; the statement is finalized before returning.
        unsafe {
            let rc = sqlite_loadable::ext::sqlite3ext_prepare_v2(
                self.0,
                PROBE.as_ptr(),
                -1,
                &mut stmt,
                std::ptr::null_mut(),
            );
            if rc != SQLITE_OK || stmt.is_null() {
                return rc == SQLITE_INTERRUPT;
            }
            let mut rc = sqlite_loadable::ext::sqlite3ext_step(stmt);
            while rc == SQLITE_ROW {
                rc = sqlite_loadable::ext::sqlite3ext_step(stmt);
            }
            sqlite_loadable::ext::sqlite3ext_finalize(stmt);
            rc == SQLITE_INTERRUPT
        }
    }
}

const SQLITE_OK: c_int = 0;
const SQLITE_INTERRUPT: c_int = 9;
const SQLITE_ROW: c_int = 100;

impl SqlArgs for Args<'_> {
    fn len(&self) -> usize {
        self.values.len()
    }

    fn tail<'s>(&'s self, skip: usize, params: &'static [&'static str]) -> Box<dyn SqlArgs + 's> {
        Box::new(Args {
            values: &self.values[skip.min(self.values.len())..],
            params,
            db: self.db,
        })
    }

    fn host_probe(&self) -> Option<Box<dyn Fn() -> bool + Sync + '_>> {
        self.db.map(Connection::probe)
    }

    fn is_null(&self, i: usize) -> bool {
        self.values
            .get(i)
            .is_none_or(|v| api::value_type(v) == api::ValueType::Null)
    }

    fn text(&self, i: usize, expected: &'static str) -> Result<&str> {
        let arg = param_name(self.params, i);
        if self.is_null(i) {
            return Err(KvrecError::NullArgument { arg, expected });
        }
        api::value_text(&self.values[i]).map_err(|_| KvrecError::NotUtf8 { arg, expected })
    }

    fn int(&self, i: usize, expected: &'static str) -> Result<i64> {
        let arg = param_name(self.params, i);
        if self.is_null(i) {
            return Err(KvrecError::NullArgument { arg, expected });
        }
        let value = &self.values[i];
        match api::value_type(value) {
            api::ValueType::Integer => Ok(api::value_int64(value)),
            other => Err(KvrecError::WrongType {
                arg,
                expected,
                got: sql_type_name(&other).into(),
            }),
        }
    }
}

pub fn sql_type_name(t: &api::ValueType) -> &'static str {
    match t {
        api::ValueType::Text => "TEXT",
        api::ValueType::Integer => "INTEGER",
        api::ValueType::Float => "REAL",
        api::ValueType::Blob => "BLOB",
        api::ValueType::Null => "NULL",
    }
}

/// The text SQLite shows for an error of function `name`. NUL bytes (possible when an
/// error quotes user input) would truncate the C string, so they are replaced.
pub fn error_text(name: &str, error: &KvrecError) -> String {
    format!("{name}: {error}").replace('\0', "\\0")
}

/// Reports `error` of function `name` to SQLite. An interrupted call fails as SQLite's own
/// interrupts do (SQLITE_INTERRUPT, "interrupted"), so hosts recognise their time limit.
pub fn result_error(ctx: *mut sqlite3_context, name: &str, error: &KvrecError) {
    if *error == KvrecError::Interrupted {
        // SAFETY: the live context of the current call.
        unsafe { sqlite_loadable::ext::sqlite3ext_result_error_code(ctx, SQLITE_INTERRUPT) };
    } else {
        // Setting an error result cannot fail in a way worth more than the error itself.
        let _ = api::result_error(ctx, &error_text(name, error));
    }
}

/// `name(a, b, c?)`, with a note on `?` when there are optional parameters.
pub fn signature(name: &str, params: &[&str]) -> String {
    let note = if params.iter().any(|p| p.ends_with('?')) {
        " ('?' marks an optional argument)"
    } else {
        ""
    };
    format!("{name}({}){note}", params.join(", "))
}

/// Registers catalog scalar `function`. The argument count is checked here so the message
/// can show the signature.
pub fn scalar(
    db: *mut sqlite3,
    function: &'static Scalar,
    flags: FunctionFlags,
) -> sqlite_loadable::Result<()> {
    let arity = function.arity();
    let call = move |ctx: *mut sqlite3_context, values: &[*mut sqlite3_value]| {
        let result = guarded(|| {
            if !arity.contains(&values.len()) {
                return Err(KvrecError::BadArity {
                    signature: signature(function.name, function.params),
                    got: values.len(),
                });
            }
            function.call_text(&Args {
                values,
                params: function.params,
                db: Some(Connection::of(ctx)),
            })
        });
        match result {
            Ok(text) => api::result_text(ctx, text),
            Err(error) => {
                result_error(ctx, function.name, &error);
                Ok(())
            }
        }
    };
    define_scalar_function(db, function.name, -1 as c_int, call, flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guarded_turns_panics_into_internal_errors() {
        let err = guarded::<()>(|| panic!("boom {}", 7)).unwrap_err();
        assert_eq!(
            err,
            KvrecError::Internal {
                detail: "boom 7".into()
            }
        );
        assert_eq!(
            error_text("kvrec_x", &err),
            "kvrec_x: internal error (this is a kvrec bug, please report it): boom 7"
        );
        assert_eq!(guarded(|| Ok(3)).unwrap(), 3);
    }

    #[test]
    fn error_text_never_holds_nul() {
        let err = KvrecError::UnknownOption {
            key: "a\0b".into(),
            allowed: String::new(),
        };
        assert!(!error_text("f", &err).contains('\0'));
    }
}
