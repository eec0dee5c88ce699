//! Checked conversions of C arguments: NULL pointers, C strings and options JSON become failures
//! that name the argument instead of undefined behaviour.

use crate::error::{boxlite_result, Failure};
use serde::de::DeserializeOwned;
use std::ffi::{c_char, c_int, CStr};
use std::time::Duration;

fn null(name: &str) -> Failure {
    Failure::new(boxlite_result::BOXLITE_ERR_NULL_POINTER, format!("argument `{name}` is NULL"))
}

/// The handle behind `ptr`.
///
/// # Safety
/// `ptr` is NULL or points at a live `T` made by this library.
pub(crate) unsafe fn handle<'a, T>(ptr: *const T, name: &str) -> Result<&'a T, Failure> {
    // SAFETY: non-NULL handles are live per the caller's contract.
    unsafe { ptr.as_ref() }.ok_or_else(|| null(name))
}

/// Frees a handle made by `Box::into_raw`, inside the panic boundary (a `Drop` may stop VMs).
/// NULL is a no-op.
///
/// # Safety
/// `ptr` is NULL or a handle made by `Box::into_raw` in this library and not yet freed.
pub(crate) unsafe fn free_handle<T>(ptr: *mut T) {
    crate::error::boundary(|| {
        if !ptr.is_null() {
            // SAFETY: made by Box::into_raw, freed once per the caller's contract.
            drop(unsafe { Box::from_raw(ptr) });
        }
        Ok(())
    });
}

/// The out-parameter behind `ptr`. Checked before any work, written only on success.
///
/// # Safety
/// `ptr` is NULL or valid for writes of `T`.
pub(crate) unsafe fn out_param<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: non-NULL out-parameters are writable per the caller's contract.
    unsafe { ptr.as_mut() }.ok_or_else(|| null(name))
}

/// A NUL-terminated UTF-8 string.
///
/// # Safety
/// `ptr` is NULL or points at a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn string<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(null(name));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str().map_err(|_| Failure::invalid(format!("argument `{name}` is not valid UTF-8")))
}

/// Options given as a JSON object; NULL means every default.
///
/// # Safety
/// As [`string`].
pub(crate) unsafe fn options<T: DeserializeOwned + Default>(ptr: *const c_char, name: &str) -> Result<T, Failure> {
    if ptr.is_null() {
        return Ok(T::default());
    }
    // SAFETY: forwarded contract.
    unsafe { json(ptr, name, "options JSON") }
}

/// A required JSON argument; a malformed one is named as `what` (e.g. "network JSON").
///
/// # Safety
/// As [`string`].
pub(crate) unsafe fn json<T: DeserializeOwned>(ptr: *const c_char, name: &str, what: &str) -> Result<T, Failure> {
    // SAFETY: forwarded contract.
    let text = unsafe { string(ptr, name)? };
    serde_json::from_str(text).map_err(|e| Failure::invalid(format!("`{name}` is not valid {what}: {e}")))
}

/// A timeout in milliseconds: negative waits forever.
pub(crate) fn timeout(ms: c_int) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}
