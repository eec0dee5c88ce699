//! libboxlite: the C ABI of BoxLite (`include/boxlite.h`, generated from this crate by cbindgen).
//!
//! Opaque handles (`boxlite_runtime`, `boxlite_box`, `boxlite_exec`, `boxlite_canceller`, and the
//! files API's `boxlite_file_reader`, `boxlite_file_writer`, `boxlite_watch`), each
//! freed by its own `_free`; every fallible call returns a `boxlite_result` and leaves details in
//! the calling thread's `boxlite_errmsg()`; options are JSON objects; calls block and are safe from
//! any thread.
//! See docs/c-abi.md for the decisions behind this shape.
#![warn(missing_docs)]
// The exported names follow C conventions (`boxlite_box`, `BOXLITE_OK`), not Rust's.
#![allow(non_camel_case_types)]

mod args;
mod boxes;
mod cancel;
mod error;
mod exec;
mod files;
mod images;
mod log;
mod net;
mod runtime;

pub use boxes::boxlite_box;
pub use cancel::boxlite_canceller;
pub use error::boxlite_result;
pub use log::{boxlite_free_fn, boxlite_log_fn, boxlite_log_level};
pub use exec::{boxlite_exec, boxlite_stream, BOXLITE_STDERR, BOXLITE_STDOUT};
pub use files::{boxlite_file_reader, boxlite_file_writer, boxlite_watch};
pub use runtime::boxlite_runtime;

use std::ffi::{c_char, c_int};

// The header promises that handles may be used from several threads at once.
const _: () = {
    const fn thread_safe<T: Send + Sync>() {}
    thread_safe::<boxlite_runtime>();
    thread_safe::<boxlite_box>();
    thread_safe::<boxlite_exec>();
    thread_safe::<boxlite_canceller>();
    thread_safe::<boxlite_file_reader>();
    thread_safe::<boxlite_file_writer>();
    thread_safe::<boxlite_watch>();
};

/// Major version of this header.
pub const BOXLITE_VERSION_MAJOR: u32 = 0;
/// Minor version of this header.
pub const BOXLITE_VERSION_MINOR: u32 = 1;
/// Patch version of this header.
pub const BOXLITE_VERSION_PATCH: u32 = 0;
// The header's `BOXLITE_VERSION` string is built from these three (bindings/c/cbindgen.toml):
// cbindgen cannot export string constants.

/// The library's version, "MAJOR.MINOR.PATCH". A program built against this header can compare
/// it with `BOXLITE_VERSION` to detect that it loaded another version of the library.
///
/// Returns a static NUL-terminated string; never NULL, never freed. Any thread.
#[no_mangle]
pub extern "C" fn boxlite_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// Short static text for a result code, e.g. "not found" for `BOXLITE_ERR_NOT_FOUND`.
///
/// `result`: any value; codes this library does not know give "unknown result code".
/// Returns a static NUL-terminated string; never NULL, never freed. Any thread.
#[no_mangle]
pub extern "C" fn boxlite_result_str(result: c_int) -> *const c_char {
    let text = usize::try_from(result)
        .ok()
        .and_then(|i| boxlite_result::ALL.get(i))
        .map_or("unknown result code\0", |code| code.text());
    text.as_ptr().cast()
}

/// The message of the last call that failed on the calling thread: what went wrong and, where
/// there is one, the fix (e.g. "memory_mib 64 is out of range: use 128 to 65536 MiB").
///
/// Returns a NUL-terminated string owned by the library, "" if no call has failed on this thread.
/// It stays valid, unchanged, until the next failing boxlite call on the same thread (successful
/// calls leave it as is) or until the thread exits; copy it to keep it longer. Never NULL, never
/// freed by the caller. Each thread has its own message, so threads never see each other's errors.
#[no_mangle]
pub extern "C" fn boxlite_errmsg() -> *const c_char {
    error::pointer_boundary(error::last_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn text(ptr: *const c_char) -> String {
        // SAFETY: the functions under test return static or thread-owned C strings.
        unsafe { CStr::from_ptr(ptr) }.to_str().unwrap().to_string()
    }

    #[test]
    fn version_constants_match_cargo_toml() {
        assert_eq!(BOXLITE_VERSION_MAJOR.to_string(), env!("CARGO_PKG_VERSION_MAJOR"));
        assert_eq!(BOXLITE_VERSION_MINOR.to_string(), env!("CARGO_PKG_VERSION_MINOR"));
        assert_eq!(BOXLITE_VERSION_PATCH.to_string(), env!("CARGO_PKG_VERSION_PATCH"));
        assert_eq!(text(boxlite_version()), env!("CARGO_PKG_VERSION"));
    }

    /// The committed header carries the same version (its drift check covers everything else;
    /// the C tests check `BOXLITE_VERSION` against `boxlite_version()`).
    #[test]
    fn header_version_macros_match_cargo_toml() {
        let header_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bindings/c/include/boxlite.h");
        let header = std::fs::read_to_string(header_path).expect("bindings/c/include/boxlite.h");
        for line in [
            format!("#define BOXLITE_VERSION_MAJOR {}", env!("CARGO_PKG_VERSION_MAJOR")),
            format!("#define BOXLITE_VERSION_MINOR {}", env!("CARGO_PKG_VERSION_MINOR")),
            format!("#define BOXLITE_VERSION_PATCH {}", env!("CARGO_PKG_VERSION_PATCH")),
        ] {
            assert!(header.lines().any(|l| l == line), "the header lacks `{line}`: run bindings/c/gen-header.sh");
        }
    }

    #[test]
    fn result_str_covers_every_code_and_rejects_others() {
        assert_eq!(text(boxlite_result_str(0)), "ok");
        assert_eq!(text(boxlite_result_str(boxlite_result::BOXLITE_ERR_TIMEOUT as c_int)), "timed out");
        assert_eq!(text(boxlite_result_str(-1)), "unknown result code");
        assert_eq!(text(boxlite_result_str(9999)), "unknown result code");
    }
}
