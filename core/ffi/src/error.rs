//! Result codes, the per-thread error message, and the panic boundary every exported function
//! runs inside.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a fallible call returns. `BOXLITE_OK` is 0; every other value names a failure whose
/// details `boxlite_errmsg()` gives. Codes are only ever appended, never renumbered.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum boxlite_result {
    /// Success.
    BOXLITE_OK = 0,
    /// An argument or option is out of range or malformed (including bad options JSON).
    BOXLITE_ERR_INVALID_ARGUMENT = 1,
    /// No box or image with that id or name.
    BOXLITE_ERR_NOT_FOUND = 2,
    /// A box with that name already exists.
    BOXLITE_ERR_ALREADY_EXISTS = 3,
    /// Not allowed in the current state (e.g. removing a running box without force).
    BOXLITE_ERR_INVALID_STATE = 4,
    /// The image does not exist, is malformed, or a layer could not be applied.
    BOXLITE_ERR_IMAGE = 5,
    /// A registry could not be reached or refused the request.
    BOXLITE_ERR_REGISTRY = 6,
    /// The VM engine is missing or cannot run here.
    BOXLITE_ERR_ENGINE = 7,
    /// The guest did not come up.
    BOXLITE_ERR_GUEST_BOOT = 8,
    /// Talking to the guest agent failed.
    BOXLITE_ERR_GUEST = 9,
    /// A file under the BoxLite home could not be read or written.
    BOXLITE_ERR_STORAGE = 10,
    /// The state database failed.
    BOXLITE_ERR_DATABASE = 11,
    /// A bug or an unexpected condition.
    BOXLITE_ERR_INTERNAL = 12,
    /// A required pointer argument was NULL.
    BOXLITE_ERR_NULL_POINTER = 13,
    /// The library panicked; the call did nothing further. A bug: please report it.
    BOXLITE_ERR_PANIC = 14,
    /// The call's timeout passed before anything happened.
    BOXLITE_ERR_TIMEOUT = 15,
    /// The call was aborted through its `boxlite_canceller`.
    BOXLITE_ERR_ABORTED = 16,
}

use boxlite_result::*;

impl boxlite_result {
    /// Every code, in numeric order.
    pub(crate) const ALL: [boxlite_result; 17] = [
        BOXLITE_OK,
        BOXLITE_ERR_INVALID_ARGUMENT,
        BOXLITE_ERR_NOT_FOUND,
        BOXLITE_ERR_ALREADY_EXISTS,
        BOXLITE_ERR_INVALID_STATE,
        BOXLITE_ERR_IMAGE,
        BOXLITE_ERR_REGISTRY,
        BOXLITE_ERR_ENGINE,
        BOXLITE_ERR_GUEST_BOOT,
        BOXLITE_ERR_GUEST,
        BOXLITE_ERR_STORAGE,
        BOXLITE_ERR_DATABASE,
        BOXLITE_ERR_INTERNAL,
        BOXLITE_ERR_NULL_POINTER,
        BOXLITE_ERR_PANIC,
        BOXLITE_ERR_TIMEOUT,
        BOXLITE_ERR_ABORTED,
    ];

    /// Static text for the code, NUL-terminated.
    pub(crate) fn text(self) -> &'static str {
        match self {
            BOXLITE_OK => "ok\0",
            BOXLITE_ERR_INVALID_ARGUMENT => "invalid argument\0",
            BOXLITE_ERR_NOT_FOUND => "not found\0",
            BOXLITE_ERR_ALREADY_EXISTS => "already exists\0",
            BOXLITE_ERR_INVALID_STATE => "invalid state\0",
            BOXLITE_ERR_IMAGE => "image error\0",
            BOXLITE_ERR_REGISTRY => "registry error\0",
            BOXLITE_ERR_ENGINE => "VM engine error\0",
            BOXLITE_ERR_GUEST_BOOT => "guest failed to boot\0",
            BOXLITE_ERR_GUEST => "guest agent error\0",
            BOXLITE_ERR_STORAGE => "storage error\0",
            BOXLITE_ERR_DATABASE => "state database error\0",
            BOXLITE_ERR_INTERNAL => "internal error\0",
            BOXLITE_ERR_NULL_POINTER => "NULL pointer argument\0",
            BOXLITE_ERR_PANIC => "internal panic\0",
            BOXLITE_ERR_TIMEOUT => "timed out\0",
            BOXLITE_ERR_ABORTED => "aborted\0",
        }
    }
}

/// A failed call: its code and the message `boxlite_errmsg()` will return.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub code: boxlite_result,
    pub message: String,
}

impl Failure {
    pub fn new(code: boxlite_result, message: impl Into<String>) -> Self {
        Failure { code, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Failure::new(BOXLITE_ERR_INVALID_ARGUMENT, message)
    }

    /// Makes this the thread's last error and returns its code.
    fn record(self) -> boxlite_result {
        // Interior NULs would cut the C string short; they can only come from user input echoed back.
        let text = CString::new(self.message.replace('\0', "\\0")).unwrap_or_default();
        LAST_ERROR.with(|last| *last.borrow_mut() = text);
        self.code
    }
}

impl From<boxlite::Error> for Failure {
    fn from(e: boxlite::Error) -> Self {
        use boxlite::Error::*;
        // Exhaustive on purpose: a new runtime error must get its own code here.
        let code = match &e {
            InvalidArgument(_) => BOXLITE_ERR_INVALID_ARGUMENT,
            NotFound(_) => BOXLITE_ERR_NOT_FOUND,
            AlreadyExists(_) => BOXLITE_ERR_ALREADY_EXISTS,
            InvalidState(_) => BOXLITE_ERR_INVALID_STATE,
            Image(_) => BOXLITE_ERR_IMAGE,
            Registry(_) => BOXLITE_ERR_REGISTRY,
            Engine(_) => BOXLITE_ERR_ENGINE,
            GuestBoot(_) => BOXLITE_ERR_GUEST_BOOT,
            Guest(_) => BOXLITE_ERR_GUEST,
            Storage { .. } => BOXLITE_ERR_STORAGE,
            Database(_) => BOXLITE_ERR_DATABASE,
            Internal(_) => BOXLITE_ERR_INTERNAL,
        };
        Failure::new(code, e.to_string())
    }
}

thread_local! {
    /// The message of the last failed call on this thread. Replaced only by the next failure, so
    /// a pointer into it stays valid across successful calls.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// A pointer to this thread's last error message ("" before any failure).
pub(crate) fn last_error() -> *const c_char {
    LAST_ERROR.with(|last| last.borrow().as_ptr())
}

/// Runs the body of an exported function: a failure or a panic becomes its code and this thread's
/// message. Unwinding never crosses into C (rustls-ffi's `ffi_panic_boundary`).
pub(crate) fn boundary(body: impl FnOnce() -> Result<(), Failure>) -> boxlite_result {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => BOXLITE_OK,
        Ok(Err(failure)) => failure.record(),
        Err(payload) => panic_failure(payload.as_ref()).record(),
    }
}

/// The boundary for the few functions that return a pointer instead of a code: NULL on panic.
pub(crate) fn pointer_boundary<T>(body: impl FnOnce() -> *const T) -> *const T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(std::ptr::null())
}

pub(crate) fn panic_failure(payload: &(dyn std::any::Any + Send)) -> Failure {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Failure::new(BOXLITE_ERR_PANIC, format!("boxlite panicked (a bug, please report it): {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    fn errmsg() -> String {
        // SAFETY: last_error points at this thread's live message.
        unsafe { CStr::from_ptr(last_error()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn codes_are_numbered_in_order_and_have_text() {
        for (i, code) in boxlite_result::ALL.iter().enumerate() {
            assert_eq!(*code as usize, i);
            assert!(code.text().ends_with('\0') && code.text().len() > 1);
        }
    }

    #[test]
    fn runtime_errors_keep_their_code_name() {
        let cases = [
            boxlite::Error::InvalidArgument("x".into()),
            boxlite::Error::NotFound("x".into()),
            boxlite::Error::AlreadyExists("x".into()),
            boxlite::Error::InvalidState("x".into()),
            boxlite::Error::Image("x".into()),
            boxlite::Error::Registry("x".into()),
            boxlite::Error::Engine("x".into()),
            boxlite::Error::GuestBoot("x".into()),
            boxlite::Error::Guest("x".into()),
            boxlite::Error::storage("read", "/x", std::io::Error::other("x")),
            boxlite::Error::Database(rusqlite::Error::InvalidQuery),
            boxlite::Error::Internal("x".into()),
        ];
        for e in cases {
            let name = e.code();
            assert_eq!(format!("{:?}", Failure::from(e).code), format!("BOXLITE_ERR_{name}"));
        }
    }

    #[test]
    fn failures_and_panics_set_the_thread_message() {
        assert_eq!(boundary(|| Err(Failure::invalid("bad cpus"))), BOXLITE_ERR_INVALID_ARGUMENT);
        assert_eq!(errmsg(), "bad cpus");
        assert_eq!(boundary(|| Ok(())), BOXLITE_OK);
        assert_eq!(errmsg(), "bad cpus", "success leaves the last message");
        assert_eq!(boundary(|| panic!("boom")), BOXLITE_ERR_PANIC);
        assert!(errmsg().contains("boom"), "{}", errmsg());
        let other_thread = std::thread::spawn(errmsg).join().unwrap();
        assert_eq!(other_thread, "", "messages are per thread");
    }
}
