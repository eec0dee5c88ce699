"""Loads libboxlite.so and declares the C functions this package calls (see bindings/c/include/boxlite.h)."""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import threading
from ctypes import CFUNCTYPE, POINTER, c_bool, c_char_p, c_int, c_size_t, c_uint8, c_uint32, c_void_p
from pathlib import Path

from .errors import error_for

LIBRARY_ENV = "BOXLITE_LIBRARY"
LIBRARY_NAME = "libboxlite.so"

BOXLITE_STDOUT = 1
BOXLITE_STDERR = 2

# name: (restype, argtypes); every handle is an opaque pointer.
_PROTOTYPES = {
    "boxlite_version": (c_char_p, []),
    "boxlite_errmsg": (c_char_p, []),
    "boxlite_runtime_new": (c_int, [c_char_p, POINTER(c_void_p)]),
    "boxlite_runtime_free": (None, [c_void_p]),
    "boxlite_box_create": (c_int, [c_void_p, c_char_p, c_char_p, POINTER(c_void_p)]),
    "boxlite_box_get": (c_int, [c_void_p, c_char_p, POINTER(c_void_p)]),
    "boxlite_box_id": (c_char_p, [c_void_p]),
    "boxlite_box_start": (c_int, [c_void_p]),
    "boxlite_box_stop": (c_int, [c_void_p]),
    "boxlite_box_pause": (c_int, [c_void_p]),
    "boxlite_box_resume": (c_int, [c_void_p]),
    "boxlite_box_snapshot": (c_int, [c_void_p, c_char_p, POINTER(c_void_p)]),
    "boxlite_box_suspend": (c_int, [c_void_p]),
    "boxlite_box_fork": (c_int, [c_void_p, c_uint32, POINTER(c_void_p)]),
    "boxlite_runtime_restore": (c_int, [c_void_p, c_char_p, c_char_p, POINTER(c_void_p)]),
    "boxlite_runtime_snapshots": (c_int, [c_void_p, POINTER(c_void_p)]),
    "boxlite_runtime_remove_snapshot": (c_int, [c_void_p, c_char_p]),
    "boxlite_runtime_warmup": (c_int, [c_void_p, c_char_p, POINTER(c_void_p)]),
    "boxlite_box_remove": (c_int, [c_void_p, c_bool]),
    "boxlite_box_free": (None, [c_void_p]),
    "boxlite_box_info": (c_int, [c_void_p, POINTER(c_void_p)]),
    "boxlite_box_metrics": (c_int, [c_void_p, POINTER(c_void_p)]),
    "boxlite_box_set_network": (c_int, [c_void_p, c_char_p]),
    "boxlite_string_free": (None, [c_void_p]),
    "boxlite_images_list": (c_int, [c_void_p, POINTER(c_void_p)]),
    "boxlite_image_remove": (c_int, [c_void_p, c_char_p, c_bool, POINTER(c_void_p)]),
    "boxlite_images_prune": (c_int, [c_void_p, c_char_p, POINTER(c_void_p)]),
    "boxlite_box_exec": (c_int, [c_void_p, POINTER(c_char_p), c_size_t, c_char_p, POINTER(c_void_p)]),
    "boxlite_exec_read": (c_int, [c_void_p, c_int, POINTER(c_uint8), c_size_t, c_int, POINTER(c_size_t)]),
    "boxlite_exec_write_stdin": (c_int, [c_void_p, POINTER(c_uint8), c_size_t]),
    "boxlite_exec_close_stdin": (c_int, [c_void_p]),
    "boxlite_exec_wait": (c_int, [c_void_p, c_int, POINTER(c_int), POINTER(c_int), POINTER(c_bool)]),
    "boxlite_exec_free": (None, [c_void_p]),
    "boxlite_exec_notify_fd": (c_int, [c_void_p, POINTER(c_int)]),
    "boxlite_exec_signal": (c_int, [c_void_p, c_int]),
    "boxlite_exec_resize_tty": (c_int, [c_void_p, c_uint32, c_uint32]),
    "boxlite_box_copy_in": (c_int, [c_void_p, c_char_p, c_char_p, c_char_p, c_void_p]),
    "boxlite_box_copy_out": (c_int, [c_void_p, c_char_p, c_char_p, c_char_p, c_void_p]),
    "boxlite_box_read_file": (c_int, [c_void_p, c_char_p, POINTER(c_void_p), POINTER(c_size_t)]),
    "boxlite_bytes_free": (None, [c_void_p, c_size_t]),
    "boxlite_box_write_file": (c_int, [c_void_p, c_char_p, c_char_p, c_size_t, c_char_p]),
    "boxlite_box_open_reader": (c_int, [c_void_p, c_char_p, POINTER(c_void_p)]),
    "boxlite_file_reader_read": (c_int, [c_void_p, POINTER(c_uint8), c_size_t, c_int, POINTER(c_size_t)]),
    "boxlite_file_reader_free": (None, [c_void_p]),
    "boxlite_box_open_writer": (c_int, [c_void_p, c_char_p, c_char_p, POINTER(c_void_p)]),
    "boxlite_file_writer_write": (c_int, [c_void_p, c_char_p, c_size_t]),
    "boxlite_file_writer_finish": (c_int, [c_void_p]),
    "boxlite_file_writer_free": (None, [c_void_p]),
    "boxlite_box_list_dir": (c_int, [c_void_p, c_char_p, POINTER(c_void_p)]),
    "boxlite_box_stat_file": (c_int, [c_void_p, c_char_p, POINTER(c_void_p)]),
    "boxlite_box_file_exists": (c_int, [c_void_p, c_char_p, POINTER(c_bool)]),
    "boxlite_box_mkdir": (c_int, [c_void_p, c_char_p, c_char_p]),
    "boxlite_box_remove_file": (c_int, [c_void_p, c_char_p, c_char_p]),
    "boxlite_box_rename_file": (c_int, [c_void_p, c_char_p, c_char_p]),
    "boxlite_box_watch": (c_int, [c_void_p, c_char_p, c_char_p, POINTER(c_void_p)]),
    "boxlite_watch_next": (c_int, [c_void_p, c_int, POINTER(c_void_p)]),
    "boxlite_watch_notify_fd": (c_int, [c_void_p, POINTER(c_int)]),
    "boxlite_watch_free": (None, [c_void_p]),
    "boxlite_boxes_list": (c_int, [c_void_p, POINTER(c_void_p)]),
    "boxlite_runtime_metrics": (c_int, [c_void_p, POINTER(c_void_p)]),
    "boxlite_log_set_callback": (c_int, [c_void_p, c_void_p, c_void_p]),
    "boxlite_runtime_pull": (c_int, [c_void_p, c_char_p, c_void_p]),
    "boxlite_canceller_new": (c_int, [POINTER(c_void_p)]),
    "boxlite_canceller_cancel": (c_int, [c_void_p]),
    "boxlite_canceller_free": (None, [c_void_p]),
}


def _candidates() -> list[Path]:
    """Where the library may be, in order: beside this package, then the cargo target dir (the
    newest build first)."""
    beside = [Path(__file__).resolve().parent / LIBRARY_NAME]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "boxlite"
    target = Path(os.environ.get("CARGO_TARGET_DIR") or cache / "target")
    builds = [target / profile / LIBRARY_NAME for profile in ("debug", "release")]
    builds.sort(key=lambda p: p.stat().st_mtime if p.is_file() else 0, reverse=True)
    return beside + builds


def _find_library() -> Path:
    explicit = os.environ.get(LIBRARY_ENV)
    if explicit:
        if not Path(explicit).is_file():
            raise FileNotFoundError(f"{LIBRARY_ENV}={explicit} does not name a file: point it at libboxlite.so")
        return Path(explicit)
    candidates = _candidates()
    for path in candidates:
        if path.is_file():
            return path
    searched = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"{LIBRARY_NAME} was not found (searched {searched}): build it with `cargo build -p boxlite-ffi` "
        f"or set {LIBRARY_ENV} to its path"
    )


_lib = None
_lock = threading.Lock()

logger = logging.getLogger("boxlite")
"""The runtime's log, when neither BOXLITE_LOG nor RUST_LOG is set: its warnings and errors."""

# boxlite_log_level -> logging level.
_LEVELS = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: logging.DEBUG, 5: logging.DEBUG}


def _log(_userdata: int, level: int, message: bytes) -> None:
    logger.log(_LEVELS.get(level, logging.INFO), "%s", message.decode("utf-8", "replace"))


_on_log = CFUNCTYPE(None, c_void_p, c_int, c_char_p)(_log)  # kept alive for the library


def _forward_logs(loaded: ctypes.CDLL) -> None:
    """Hands the runtime's log to `logger`, unless BOXLITE_LOG or RUST_LOG asks for it on stderr
    (the FAQ's `RUST_LOG=debug python script.py`). Undone at exit, so that nothing calls into an
    interpreter that is shutting down."""
    if os.environ.get("BOXLITE_LOG") or os.environ.get("RUST_LOG"):
        return
    check_with(loaded, loaded.boxlite_log_set_callback(ctypes.cast(_on_log, c_void_p), None, None))
    atexit.register(loaded.boxlite_log_set_callback, None, None, None)


def lib() -> ctypes.CDLL:
    """The loaded library, loaded on first use (importing boxlite never fails for lack of it)."""
    global _lib
    with _lock:
        if _lib is None:
            loaded = ctypes.CDLL(str(_find_library()))
            for name, (restype, argtypes) in _PROTOTYPES.items():
                fn = getattr(loaded, name)
                fn.restype = restype
                fn.argtypes = argtypes
            _forward_logs(loaded)
            _lib = loaded
        return _lib


def check(result: int) -> None:
    """Raises the exception for a failed call. Must run on the thread that made the call: the
    library's error message is per thread."""
    check_with(lib(), result)


def check_with(loaded: ctypes.CDLL, result: int) -> None:
    if result != 0:
        raise error_for(result, loaded.boxlite_errmsg().decode("utf-8", "replace"))
