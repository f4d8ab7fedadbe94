//! Reading DuckDB argument vectors into the shared [`Cell`]s: VARCHAR stays text (JSON or a
//! name), integers stay integers, and STRUCT / LIST / MAP-free nested values become JSON text,
//! so `{'gender': 'F'}` and `'{"gender": "F"}'` reach the shared functions alike.

use std::ffi::CStr;

use duckdb::ffi::{self, duckdb_logical_type, duckdb_string_t, duckdb_vector, idx_t};
use serde_json::{Map, Number, Value};

use crate::functions::Cell;

/// A vector's logical type, destroyed on drop.
struct Type(duckdb_logical_type);

impl Type {
    fn of(vector: duckdb_vector) -> Type {
        // SAFETY: DuckDB hands us a valid vector for the duration of the call.
        Type(unsafe { ffi::duckdb_vector_get_column_type(vector) })
    }

    fn id(&self) -> ffi::duckdb_type {
        // SAFETY: `self.0` is a live logical type.
        unsafe { ffi::duckdb_get_type_id(self.0) }
    }
}

impl Drop for Type {
    fn drop(&mut self) {
        // SAFETY: created by duckdb_vector_get_column_type, destroyed once.
        unsafe { ffi::duckdb_destroy_logical_type(&mut self.0) }
    }
}

fn is_valid(vector: duckdb_vector, row: usize) -> bool {
    // SAFETY: a NULL validity mask means every row is valid.
    unsafe {
        let validity = ffi::duckdb_vector_get_validity(vector);
        validity.is_null() || ffi::duckdb_validity_row_is_valid(validity, row as idx_t)
    }
}

/// Row `row` of a flat vector whose values are `T`.
unsafe fn at<T: Copy>(vector: duckdb_vector, row: usize) -> T {
    unsafe { *(ffi::duckdb_vector_get_data(vector) as *const T).add(row) }
}

fn string_at(vector: duckdb_vector, row: usize) -> std::result::Result<String, ()> {
    // SAFETY: a VARCHAR vector's data is an array of duckdb_string_t, one per row.
    unsafe {
        let mut s: duckdb_string_t = at(vector, row);
        let len = ffi::duckdb_string_t_length(s) as usize;
        let data = ffi::duckdb_string_t_data(&mut s) as *const u8;
        let bytes = std::slice::from_raw_parts(data, len);
        String::from_utf8(bytes.to_vec()).map_err(|_| ())
    }
}

/// The SQL name of a type id, for messages.
fn type_name(id: ffi::duckdb_type) -> &'static str {
    match id {
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN => "BOOLEAN",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_FLOAT | ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE => "DOUBLE",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_DECIMAL => "DECIMAL",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_DATE => "DATE",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP => "TIMESTAMP",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB => "BLOB",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_MAP => "MAP",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_UNION => "UNION",
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_ARRAY => "ARRAY",
        _ => "an unsupported type",
    }
}

/// Integer types as i64 (UBIGINT above i64::MAX is refused as unsupported).
fn int_at(vector: duckdb_vector, id: ffi::duckdb_type, row: usize) -> Option<i64> {
    // SAFETY: each arm reads the physical type of its logical type.
    unsafe {
        match id {
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_TINYINT => Some(i64::from(at::<i8>(vector, row))),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_SMALLINT => Some(i64::from(at::<i16>(vector, row))),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_INTEGER => Some(i64::from(at::<i32>(vector, row))),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BIGINT => Some(at::<i64>(vector, row)),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UTINYINT => Some(i64::from(at::<u8>(vector, row))),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_USMALLINT => Some(i64::from(at::<u16>(vector, row))),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UINTEGER => Some(i64::from(at::<u32>(vector, row))),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_UBIGINT => i64::try_from(at::<u64>(vector, row)).ok(),
            _ => None,
        }
    }
}

/// Row `row` of `vector` as JSON; `Err` names a type JSON cannot carry here.
fn json_at(vector: duckdb_vector, row: usize) -> std::result::Result<Value, &'static str> {
    if !is_valid(vector, row) {
        return Ok(Value::Null);
    }
    let ty = Type::of(vector);
    let id = ty.id();
    if let Some(v) = int_at(vector, id, row) {
        return Ok(Value::from(v));
    }
    // SAFETY (all arms): reads follow the vector's logical type; nested children are read
    // through the C API's accessors at the offsets DuckDB gives.
    unsafe {
        match id {
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR => string_at(vector, row)
                .map(Value::String)
                .map_err(|_| "VARCHAR that is not UTF-8"),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN => Ok(Value::Bool(at::<bool>(vector, row))),
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE => {
                Ok(Number::from_f64(at::<f64>(vector, row)).map_or(Value::Null, Value::Number))
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_FLOAT => {
                Ok(Number::from_f64(f64::from(at::<f32>(vector, row)))
                    .map_or(Value::Null, Value::Number))
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_STRUCT => {
                let n = ffi::duckdb_struct_type_child_count(ty.0);
                let mut object = Map::new();
                for i in 0..n {
                    let name_ptr = ffi::duckdb_struct_type_child_name(ty.0, i);
                    let name = CStr::from_ptr(name_ptr).to_string_lossy().into_owned();
                    ffi::duckdb_free(name_ptr as *mut _);
                    let child = ffi::duckdb_struct_vector_get_child(vector, i);
                    object.insert(name, json_at(child, row)?);
                }
                Ok(Value::Object(object))
            }
            ffi::DUCKDB_TYPE_DUCKDB_TYPE_LIST => {
                let entry: ffi::duckdb_list_entry = at(vector, row);
                let child = ffi::duckdb_list_vector_get_child(vector);
                (entry.offset..entry.offset + entry.length)
                    .map(|i| json_at(child, i as usize))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
            other => Err(type_name(other)),
        }
    }
}

/// Row `row` of an argument vector as a [`Cell`].
pub fn cell_at(vector: duckdb_vector, row: usize) -> Cell {
    if !is_valid(vector, row) {
        return Cell::Null;
    }
    let id = Type::of(vector).id();
    if let Some(v) = int_at(vector, id, row) {
        return Cell::Int(v);
    }
    match id {
        // A BLOB holding UTF-8 text is text, as SQLite reads it; other bytes are refused alike.
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR | ffi::DUCKDB_TYPE_DUCKDB_TYPE_BLOB => {
            match string_at(vector, row) {
                Ok(text) => Cell::Text(text),
                Err(()) => Cell::NotUtf8,
            }
        }
        ffi::DUCKDB_TYPE_DUCKDB_TYPE_STRUCT | ffi::DUCKDB_TYPE_DUCKDB_TYPE_LIST => {
            match json_at(vector, row) {
                Ok(value) => Cell::Text(value.to_string()),
                Err(inner) => Cell::Other(inner),
            }
        }
        other => Cell::Other(type_name(other)),
    }
}
