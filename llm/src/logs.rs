//! llama.cpp's log output, captured instead of printed into the host's stderr.
//!
//! A failed load only tells Rust "null result"; the reason is in the log. Warnings and errors
//! are kept in a small ring buffer so error messages can quote them. Set `KVREC_LOG=1` to also
//! echo everything to stderr.

use std::collections::VecDeque;
use std::ffi::{c_char, c_void, CStr};
use std::sync::Mutex;

use llama_cpp_sys_2::ggml_log_level;

const KEEP: usize = 64;
const LEVEL_WARN: ggml_log_level = 3;
const LEVEL_CONT: ggml_log_level = 5;

struct Buffer {
    lines: VecDeque<String>,
    /// Lines ever pushed: lets a caller read only what its own call produced.
    total: u64,
    last_level: ggml_log_level,
}

static BUFFER: Mutex<Buffer> = Mutex::new(Buffer {
    lines: VecDeque::new(),
    total: 0,
    last_level: 0,
});

unsafe extern "C" fn capture(level: ggml_log_level, text: *const c_char, _: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string valid for the duration of the call.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    if std::env::var_os("KVREC_LOG").is_some() {
        eprint!("{text}");
    }
    let Ok(mut buffer) = BUFFER.lock() else {
        return;
    };
    let effective = if level == LEVEL_CONT {
        buffer.last_level
    } else {
        level
    };
    buffer.last_level = effective;
    if effective >= LEVEL_WARN && effective != LEVEL_CONT {
        let line = text.trim_end().to_string();
        if !line.is_empty() {
            if buffer.lines.len() == KEEP {
                buffer.lines.pop_front();
            }
            buffer.lines.push_back(line);
            buffer.total += 1;
        }
    }
}

/// Routes llama.cpp and ggml logging through [`capture`].
pub fn install() {
    // SAFETY: `capture` is a plain function that only touches a Mutex-guarded buffer.
    unsafe { llama_cpp_sys_2::llama_log_set(Some(capture), std::ptr::null_mut()) }
}

/// A position in the log, to read what happened after it.
pub fn mark() -> u64 {
    BUFFER.lock().map(|b| b.total).unwrap_or(0)
}

/// Warnings and errors logged since `mark`, joined; empty when there were none.
pub fn since(mark: u64) -> String {
    let Ok(buffer) = BUFFER.lock() else {
        return String::new();
    };
    let new = buffer
        .total
        .saturating_sub(mark)
        .min(buffer.lines.len() as u64) as usize;
    buffer
        .lines
        .iter()
        .skip(buffer.lines.len() - new)
        .cloned()
        .collect::<Vec<_>>()
        .join(" | ")
}
