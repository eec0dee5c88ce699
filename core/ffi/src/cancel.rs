//! `boxlite_canceller`: lets any thread abort a call that another thread is blocked in.

use crate::args::{free_handle, handle, out_param};
use crate::error::{boundary, boxlite_result};
use tokio_util::sync::CancellationToken;

/// A cancellation handle. Made by `boxlite_canceller_new`, freed by `boxlite_canceller_free`.
/// Pass it to a call that takes one (`boxlite_runtime_pull`), then `boxlite_canceller_cancel`
/// it from any thread to abort that call with `BOXLITE_ERR_ABORTED`. Cancelling is permanent:
/// every call given a cancelled canceller, then or later, is aborted. Usable from several threads
/// at once.
pub struct boxlite_canceller {
    pub(crate) token: CancellationToken,
}

/// Makes a canceller, not cancelled.
///
/// `out`: receives the new canceller on success (untouched on failure); free it with
/// `boxlite_canceller_free`. One canceller may be given to several calls, which are all
/// aborted by one cancel; make a new one for work that must not be aborted with them. Any thread.
///
/// # Safety
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn boxlite_canceller_new(out: *mut *mut boxlite_canceller) -> boxlite_result {
    boundary(|| {
        // SAFETY: forwarded from this function's contract.
        let out = unsafe { out_param(out, "out")? };
        *out = Box::into_raw(Box::new(boxlite_canceller { token: CancellationToken::new() }));
        Ok(())
    })
}

/// Cancels: every call blocked with `c` returns `BOXLITE_ERR_ABORTED` promptly, and every later
/// call given `c` returns it at once, without doing any work. Cancelling again is a no-op; a call
/// that already finished is not affected.
///
/// Errors: `BOXLITE_ERR_NULL_POINTER`. Any thread, while other threads are blocked in calls
/// given `c`; not from a signal handler (it takes a lock: from a handler, wake a thread that
/// cancels).
///
/// # Safety
/// `c` is NULL or a live canceller.
#[no_mangle]
pub unsafe extern "C" fn boxlite_canceller_cancel(c: *mut boxlite_canceller) -> boxlite_result {
    boundary(|| {
        // SAFETY: forwarded from this function's contract.
        unsafe { handle(c, "canceller")? }.token.cancel();
        Ok(())
    })
}

/// Frees a canceller without cancelling. NULL is a no-op. Free it only after every call given it
/// has returned and no thread will cancel it any more.
///
/// # Safety
/// `c` is NULL or a canceller not yet freed.
#[no_mangle]
pub unsafe extern "C" fn boxlite_canceller_free(c: *mut boxlite_canceller) {
    // SAFETY: forwarded from this function's contract.
    unsafe { free_handle(c) }
}

/// The token behind an optional canceller argument (NULL: the call cannot be cancelled).
///
/// # Safety
/// `c` is NULL or a live canceller.
pub(crate) unsafe fn token(c: *const boxlite_canceller) -> Option<CancellationToken> {
    // SAFETY: forwarded contract.
    unsafe { c.as_ref() }.map(|c| c.token.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ptr;

    #[test]
    fn a_canceller_cancels_once_for_good_and_null_is_named() {
        let mut c = ptr::null_mut();
        // SAFETY: valid out-pointer; c freed once.
        unsafe {
            assert_eq!(boxlite_canceller_new(ptr::null_mut()), boxlite_result::BOXLITE_ERR_NULL_POINTER);
            assert_eq!(boxlite_canceller_cancel(ptr::null_mut()), boxlite_result::BOXLITE_ERR_NULL_POINTER);
            assert!(token(ptr::null()).is_none());
            assert_eq!(boxlite_canceller_new(&mut c), boxlite_result::BOXLITE_OK);
            let t = token(c).unwrap();
            assert!(!t.is_cancelled());
            assert_eq!(boxlite_canceller_cancel(c), boxlite_result::BOXLITE_OK);
            assert_eq!(boxlite_canceller_cancel(c), boxlite_result::BOXLITE_OK);
            assert!(t.is_cancelled() && token(c).unwrap().is_cancelled());
            boxlite_canceller_free(c);
            boxlite_canceller_free(ptr::null_mut());
        }
    }
}
