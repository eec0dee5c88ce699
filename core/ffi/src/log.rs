//! The library's log: tracing events, filtered by `BOXLITE_LOG`, else `RUST_LOG`, else "warn",
//! written to stderr, or handed to a callback the program registers (`boxlite_log_set_callback`),
//! e.g. to feed Python's `logging`.

use crate::error::{boundary, boxlite_result};
use crate::runtime::lock;
use std::ffi::{c_char, c_int, c_void, CString};
use std::io::Write;
use std::sync::{Mutex, Once};
use tracing_subscriber::fmt::MakeWriter;

/// Level of a log event handed to a `boxlite_log_fn`.
pub type boxlite_log_level = c_int;
/// Something failed.
pub const BOXLITE_LOG_ERROR: boxlite_log_level = 1;
/// Something is off but the work goes on (e.g. KVM unusable, TCG used instead).
pub const BOXLITE_LOG_WARN: boxlite_log_level = 2;
/// Progress worth knowing.
pub const BOXLITE_LOG_INFO: boxlite_log_level = 3;
/// Detail for debugging (e.g. "box ready" with its boot time).
pub const BOXLITE_LOG_DEBUG: boxlite_log_level = 4;
/// Everything.
pub const BOXLITE_LOG_TRACE: boxlite_log_level = 5;

/// Receives one log event: `userdata` as registered, the level, and the event as one line of
/// text (NUL-terminated UTF-8, no trailing newline, valid only during the call).
pub type boxlite_log_fn = Option<unsafe extern "C" fn(userdata: *mut c_void, level: boxlite_log_level, message: *const c_char)>;

/// Frees the `userdata` of a callback that is replaced or removed.
pub type boxlite_free_fn = Option<unsafe extern "C" fn(userdata: *mut c_void)>;

struct Callback {
    call: unsafe extern "C" fn(*mut c_void, boxlite_log_level, *const c_char),
    userdata: *mut c_void,
    free: boxlite_free_fn,
}

// SAFETY: the registrant promises (see boxlite_log_set_callback) that the callback and its
// userdata may be used from any thread.
unsafe impl Send for Callback {}

impl Drop for Callback {
    fn drop(&mut self) {
        if let Some(free) = self.free {
            // SAFETY: the finalizer the registrant gave for this userdata, called once.
            unsafe { free(self.userdata) };
        }
    }
}

static CALLBACK: Mutex<Option<Callback>> = Mutex::new(None);

/// Where one formatted event goes: collected, then on drop handed to the callback or stderr.
struct EventWriter {
    line: Vec<u8>,
}

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The level and message of a line as `init`'s format writes it: the level first (" WARN
/// message": no time, no target, no colours). Read back from the text because naming tracing's
/// `Metadata` would take one more dependency for five words.
fn level_and_message(line: &str) -> (boxlite_log_level, &str) {
    let line = line.trim();
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let level = match word {
        "ERROR" => BOXLITE_LOG_ERROR,
        "WARN" => BOXLITE_LOG_WARN,
        "INFO" => BOXLITE_LOG_INFO,
        "DEBUG" => BOXLITE_LOG_DEBUG,
        "TRACE" => BOXLITE_LOG_TRACE,
        _ => return (BOXLITE_LOG_INFO, line),
    };
    (level, rest.trim_start())
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let callback = lock(&CALLBACK);
        match &*callback {
            Some(cb) => {
                let text = String::from_utf8_lossy(&self.line).replace('\0', " ");
                let (level, message) = level_and_message(&text);
                if let Ok(message) = CString::new(message) {
                    // SAFETY: a callback registered for any thread, given a string valid during the call.
                    unsafe { (cb.call)(cb.userdata, level, message.as_ptr()) };
                }
            }
            None => {
                let _ = std::io::stderr().write_all(&self.line);
            }
        }
    }
}

struct Sink;

impl<'a> MakeWriter<'a> for Sink {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter { line: Vec::new() }
    }
}

/// Installs the library's subscriber once (skipped if the process already installed one): events
/// that `BOXLITE_LOG`, else `RUST_LOG` (tracing's env-filter syntax; `RUST_LOG=debug` is the
/// debug step users know), else "warn" lets through go to the callback, or to stderr.
pub(crate) fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_env("BOXLITE_LOG")
            .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(Sink)
            .with_target(false)
            .without_time()
            .with_ansi(false)
            .try_init();
    });
}

/// Sends the library's log events to `callback` instead of stderr; NULL sends them to stderr
/// again. Which events: those `BOXLITE_LOG`, else `RUST_LOG`, else "warn" selects (read once, when
/// the first runtime opens).
///
/// `callback` is called from library threads, several at once, possibly while another thread is
/// blocked in a boxlite call; it must not call boxlite functions. `userdata` is passed to it as
/// is. `free_userdata`: NULL, or called once with `userdata` when this registration is replaced
/// or removed (after which `callback` is no longer called with it). Any thread.
///
/// # Safety
/// `callback` and `free_userdata` are NULL or functions safe to call with `userdata` from any
/// thread until `free_userdata` (or a replacing registration) returns.
#[no_mangle]
pub unsafe extern "C" fn boxlite_log_set_callback(
    callback: boxlite_log_fn,
    userdata: *mut c_void,
    free_userdata: boxlite_free_fn,
) -> boxlite_result {
    boundary(|| {
        init();
        let new = callback.map(|call| Callback { call, userdata, free: free_userdata });
        let old = std::mem::replace(&mut *lock(&CALLBACK), new);
        drop(old); // its finalizer runs after the lock is released
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_level_is_read_back_from_the_formatted_line() {
        assert_eq!(level_and_message(" WARN KVM cannot be used\n"), (BOXLITE_LOG_WARN, "KVM cannot be used"));
        assert_eq!(level_and_message("DEBUG box ready box_id=x\n"), (BOXLITE_LOG_DEBUG, "box ready box_id=x"));
        assert_eq!(level_and_message("ERROR x"), (BOXLITE_LOG_ERROR, "x"));
        assert_eq!(level_and_message("no level"), (BOXLITE_LOG_INFO, "no level"));
    }
}
