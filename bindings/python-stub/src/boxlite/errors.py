"""Exceptions: one class per BoxLite error code, all under BoxliteError.

A command that exits non-zero is not an error: its code is in ExecResult.exit_code.
"""

from __future__ import annotations


class BoxliteError(Exception):
    """A BoxLite call failed. `code` is the stable code name shared with the C and Node APIs
    (e.g. "NOT_FOUND"); `message` says what went wrong and, where there is one, the fix."""

    code = "UNKNOWN"

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"


class InvalidArgumentError(BoxliteError):
    """An option or argument is out of range or malformed, or a command could not start."""


class NotFoundError(BoxliteError):
    """No box or image with that id or name (or the box was removed)."""


class AlreadyExistsError(BoxliteError):
    """A box with that name already exists."""


class InvalidStateError(BoxliteError):
    """Not allowed in the current state (e.g. removing a running box without force)."""


class ImageError(BoxliteError):
    """The image does not exist, is malformed, or a layer could not be applied."""


class RegistryError(BoxliteError):
    """A registry could not be reached or refused the request."""


class EngineError(BoxliteError):
    """The VM engine is missing or cannot run here (QEMU, guest assets)."""


class GuestBootError(BoxliteError):
    """The guest did not come up."""


class GuestError(BoxliteError):
    """Talking to the guest agent failed."""


class StorageError(BoxliteError):
    """A file under the BoxLite home could not be read or written."""


class DatabaseError(BoxliteError):
    """The state database failed."""


class InternalError(BoxliteError):
    """A bug or an unexpected condition."""


class NullPointerError(BoxliteError):
    """The library was handed a NULL pointer (a bug in this package)."""


class PanicError(BoxliteError):
    """The library panicked (a bug: please report it)."""


class TimeoutError(BoxliteError):  # noqa: A001 - named after the code, like asyncio.TimeoutError
    """A call's timeout passed."""


class AbortedError(BoxliteError):
    """The call was aborted through its Canceller."""


# boxlite_result values, in the order of the C enum (codes are only ever appended).
CODES = [
    None,  # BOXLITE_OK
    ("INVALID_ARGUMENT", InvalidArgumentError),
    ("NOT_FOUND", NotFoundError),
    ("ALREADY_EXISTS", AlreadyExistsError),
    ("INVALID_STATE", InvalidStateError),
    ("IMAGE", ImageError),
    ("REGISTRY", RegistryError),
    ("ENGINE", EngineError),
    ("GUEST_BOOT", GuestBootError),
    ("GUEST", GuestError),
    ("STORAGE", StorageError),
    ("DATABASE", DatabaseError),
    ("INTERNAL", InternalError),
    ("NULL_POINTER", NullPointerError),
    ("PANIC", PanicError),
    ("TIMEOUT", TimeoutError),
    ("ABORTED", AbortedError),
]


def error_for(result: int, message: str) -> BoxliteError:
    """The exception for a non-zero boxlite_result."""
    entry = CODES[result] if 0 <= result < len(CODES) else None
    if entry is not None:
        code, cls = entry
        return cls(code, message)
    return BoxliteError("UNKNOWN", f"unknown result code {result}: {message}")
