"""BoxLite for Python: boot micro-VM sandboxes from OCI images and run commands in them, over
the libboxlite C ABI. The API is asyncio's; `boxlite.sync_api` is its blocking twin.

    import asyncio, boxlite

    async def main():
        async with boxlite.SimpleBox(image="python:slim") as box:
            result = await box.exec("echo", "hi")
            print(result.stdout, end="")

    asyncio.run(main())

The library is libboxlite.so, found through $BOXLITE_LIBRARY, else beside this package, else in
the cargo target dir. See docs/python.md for the decisions behind this API.
"""

from . import _native
from ._code import CODE_OUTPUT_LIMIT, CodeContext, CodeError, CodeExecution, CodeResult
from ._aio import Box, Boxlite, CodeBox, Execution, ExecStdin, FileReadStream, FileWatch, Files, SimpleBox
from ._core import BoxInfo, BoxMetrics, Canceller, ExecResult, PortInfo, RuntimeMetrics, SnapshotInfo, TemplateInfo, VolumeInfo
from ._files import FileEntry, WatchEvent
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
from .options import BoxOptions, Options, SecurityOptions

__version__ = "0.1.0"


def library_version() -> str:
    """The version of the loaded libboxlite."""
    version: bytes = _native.lib().boxlite_version()
    return version.decode()


__all__ = [
    "CODE_OUTPUT_LIMIT",
    "CodeContext",
    "CodeError",
    "CodeExecution",
    "CodeResult",
    "AbortedError",
    "AlreadyExistsError",
    "Box",
    "BoxInfo",
    "BoxMetrics",
    "BoxOptions",
    "Boxlite",
    "BoxliteError",
    "Canceller",
    "CodeBox",
    "DatabaseError",
    "EngineError",
    "ExecResult",
    "ExecStdin",
    "Execution",
    "FileEntry",
    "FileReadStream",
    "FileWatch",
    "Files",
    "GuestBootError",
    "GuestError",
    "ImageError",
    "InternalError",
    "InvalidArgumentError",
    "InvalidStateError",
    "NotFoundError",
    "NullPointerError",
    "Options",
    "PanicError",
    "PortInfo",
    "VolumeInfo",
    "RegistryError",
    "RuntimeMetrics",
    "SnapshotInfo",
    "SecurityOptions",
    "SimpleBox",
    "StorageError",
    "TemplateInfo",
    "WatchEvent",
    "library_version",
]
