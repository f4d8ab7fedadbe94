//! Keeps this library loaded for the life of the process once a host has loaded it.
//!
//! SQLite `dlclose`s an extension when the connection that loaded it closes. When that was the
//! last connection, the library would leave memory while threads still hold thread-exit
//! destructors that point into it (Rust's and llama.cpp's thread locals), and the next such
//! thread to exit crashes the host. llama.cpp cannot be initialised twice per process either.
//! Re-opening ourselves with `RTLD_NODELETE` makes every later `dlclose` leave the code mapped;
//! models are still freed by `kvrec_unload_model`.

use std::sync::Once;

static PINNED: Once = Once::new();

/// Pins the library that contains this function; later calls do nothing.
pub fn pin_library() {
    PINNED.call_once(|| {
        // SAFETY: `dladdr` only reads the loader's tables for an address in our own code and
        // fills `info`; `dlopen` of a path the loader just reported bumps the reference count
        // of the already-loaded object (RTLD_NOLOAD: never loads a second copy).
        unsafe {
            let mut info: libc::Dl_info = std::mem::zeroed();
            let here = pin_library as *const libc::c_void;
            if libc::dladdr(here, &mut info) != 0 && !info.dli_fname.is_null() {
                libc::dlopen(
                    info.dli_fname,
                    libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
                );
            }
        }
    });
}
