"""BoxLite for Python (stub over the C ABI): boot micro-VM sandboxes from OCI images and run
commands in them.

    import boxlite

    with boxlite.Runtime(registries=[{"host": "127.0.0.1:5000", "insecure": True}]) as rt:
        with rt.create("busybox:latest") as box:
            print(box.exec("echo", "hi").text, end="")

Pulls may be aborted from another thread: `rt.pull(image, cancel=c)` raises AbortedError once
`c.cancel()` is called (c = boxlite.Canceller()).

The library is libboxlite.so, found through $BOXLITE_LIBRARY, else beside this package, else in
the cargo target dir.
"""

from . import _native
from ._runtime import Box, Canceller, ExecResult, Runtime
from .errors import (
    AbortedError,
    AlreadyExistsError,
    BoxliteError,
    DatabaseError,
    EngineError,
    GuestBootError,
    GuestError,
    ImageError,
    InternalError,
    InvalidArgumentError,
    InvalidStateError,
    NotFoundError,
    NullPointerError,
    PanicError,
    RegistryError,
    StorageError,
    TimeoutError,  # not in __all__: it would shadow the builtin on `import *`
)

__version__ = "0.1.0"


def library_version() -> str:
    """The version of the loaded libboxlite."""
    return _native.lib().boxlite_version().decode()


__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "Box",
    "BoxliteError",
    "Canceller",
    "DatabaseError",
    "EngineError",
    "ExecResult",
    "GuestBootError",
    "GuestError",
    "ImageError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidStateError",
    "NotFoundError",
    "NullPointerError",
    "PanicError",
    "RegistryError",
    "Runtime",
    "StorageError",
    "library_version",
]
