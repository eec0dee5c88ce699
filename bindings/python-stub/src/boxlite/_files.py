"""Files in and out of a box over the C ABI's files calls (boxlite_box_copy_in, boxlite_box_read_file,
boxlite_box_open_reader / _writer, boxlite_box_watch, ...), shared by the async API and its sync
twin. Every call here blocks the calling thread, except WatchHandle.take(), which only takes what
is there."""

from __future__ import annotations

import ctypes
import json
import os
import threading
from collections.abc import Iterable as _IterableABC
from ctypes import byref, c_bool, c_int, c_size_t, c_uint8, c_void_p
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, AsyncIterable, Callable, Dict, Iterable, Iterator, List, Optional, Protocol, Union

from . import _native
from ._core import _NOTHING_YET, BoxHandle, Canceller, _json_result
from ._native import check
from .errors import AbortedError, InvalidStateError

HostPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
"""A path on the host: str, bytes or os.PathLike (pathlib.Path); relative to the current directory."""

GuestPath = Union[str, "os.PathLike[str]"]
"""An absolute path in the box: str or os.PathLike (pathlib.PurePosixPath)."""

Chunk = Union[bytes, bytearray, memoryview, str]
"""One chunk of a streamed write: bytes or any bytes-like object; str is written as UTF-8."""


class Readable(Protocol):
    """A file object to write from (`open(p, "rb")`, io.BytesIO, a socket's makefile(), ...):
    read(size) returns up to `size` bytes, empty at the end."""

    def read(self, size: int, /) -> Union[bytes, bytearray, str]: ...


WriteData = Union[str, bytes, bytearray, memoryview, Iterable[Chunk], Readable]
"""What files.write takes: str (UTF-8), bytes or a bytes-like object (written whole), an iterable
of chunks (a generator, a list), or a file object with read() (read READ_FILE_CHUNK at a time)."""

AsyncWriteData = Union[WriteData, AsyncIterable[Chunk]]
"""WriteData, or an async iterable of chunks (an async generator): the async API's files.write."""

READ_CHUNK = 64 << 10
"""The most bytes one chunk of files.read_stream holds (each read takes up to this much of the
box's stream from the library)."""

READ_FILE_CHUNK = 1 << 20
"""How much files.write asks of a file object's read() at a time."""

WRITE_BATCH = 64 << 10
"""Smaller chunks of a streamed write are joined up to this size (the box's own chunk size)
before they are sent: each write is a message to the box, and in the async API a pool hop."""

_POLL_MS = 200
"""How long a stream read waits in the library before looking whether its stream was closed."""


@dataclass(frozen=True)
class FileEntry:
    """One entry of a box directory (files.list, files.stat). `type`: "file", "dir", "symlink"
    (never followed) or "other" (device, fifo, socket); `size` in bytes (a symlink's is the
    length of its target); `mode`: the permission bits (e.g. 0o644); `mtime`: the last
    modification, a timezone-aware UTC datetime."""

    name: str
    type: str
    size: int
    mode: int
    mtime: datetime

    @staticmethod
    def _from(values: Dict[str, Any]) -> "FileEntry":
        mtime = datetime.fromtimestamp(values["mtime"] / 1000, tz=timezone.utc)
        return FileEntry(values["name"], values["type"], values["size"], values["mode"], mtime)


@dataclass(frozen=True)
class WatchEvent:
    """A change under a watched directory. `kind`: "created" (or moved in from outside the
    watched tree), "modified" (a file written and closed), "deleted" (or moved out) or
    "renamed" (within the tree, from `old_path` to `path`); `old_path` is None for the other
    kinds. Paths are under the watched path as it was given."""

    kind: str
    path: str
    old_path: Optional[str]
    is_dir: bool


def host_path(path: HostPath) -> bytes:
    """A host path for the C ABI (str, bytes or PathLike; TypeError for anything else)."""
    return os.fsencode(path)


def guest_path(path: GuestPath) -> bytes:
    value = os.fspath(path)
    if not isinstance(value, str):
        raise TypeError(f"a guest path must be a str or os.PathLike of str, not {type(value).__name__}")
    return value.encode()


def _options(**values: Any) -> bytes:
    return json.dumps({k: v for k, v in values.items() if v is not None}).encode()


def copy_in(box: BoxHandle, host: HostPath, guest: GuestPath, overwrite: bool, cancel: Optional[Canceller]) -> None:
    lib = _native.lib()
    canceller = None if cancel is None else cancel._ptr
    check(lib.boxlite_box_copy_in(box.handle(), host_path(host), guest_path(guest), _options(overwrite=bool(overwrite)), canceller))


def copy_out(box: BoxHandle, guest: GuestPath, host: HostPath, overwrite: bool, cancel: Optional[Canceller]) -> None:
    lib = _native.lib()
    canceller = None if cancel is None else cancel._ptr
    check(lib.boxlite_box_copy_out(box.handle(), guest_path(guest), host_path(host), _options(overwrite=bool(overwrite)), canceller))


def read(box: BoxHandle, path: GuestPath) -> bytes:
    lib = _native.lib()
    data, length = c_void_p(), c_size_t()
    check(lib.boxlite_box_read_file(box.handle(), guest_path(path), byref(data), byref(length)))
    try:
        return ctypes.string_at(data, length.value) if length.value else b""
    finally:
        lib.boxlite_bytes_free(data, length)


def whole(data: object) -> Optional[bytes]:
    """`data` as bytes when it is written whole (str as UTF-8, bytes, any bytes-like object such
    as bytearray, memoryview or array.array); None when it is something else."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        return None
    return view.tobytes()


def chunk_bytes(chunk: object, index: int) -> bytes:
    """One chunk of a stream as bytes; TypeError naming the type of a chunk that is not bytes-like
    or str."""
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, str):
        return chunk.encode()
    try:
        return memoryview(chunk).tobytes()  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"write: every chunk of the stream must be bytes, a bytes-like object or str, "
                        f"not {type(chunk).__name__} (chunk {index})") from None


def _file_chunks(read: Callable[[int], object]) -> Iterator[object]:
    while True:
        chunk = read(READ_FILE_CHUNK)
        if isinstance(chunk, (bytes, bytearray, str)) and not chunk:
            return  # the end of the file
        yield chunk


def chunks_of(data: object, async_api: bool = False) -> Iterable[object]:
    """The chunks of what files.write was given when it is not written whole: a file object's
    reads or an iterable's items (the async API takes an async iterable before asking this).
    TypeError for anything else, before anything is opened in the box."""
    read = getattr(data, "read", None)
    if callable(read):
        return _file_chunks(read)
    if hasattr(data, "__aiter__") and not async_api:
        raise TypeError("write: an async iterable needs the async API (`await box.files.write(...)` of boxlite.Box); "
                        "the sync API takes str, bytes, an iterable of chunks or a file object")
    if isinstance(data, _IterableABC):
        return data
    raise TypeError(f"write: data must be str or bytes, a bytes-like object, an iterable of bytes chunks"
                    f"{', an async iterable' if async_api else ''} or a binary file object, not {type(data).__name__}")


class Batcher:
    """Joins the small chunks of a streamed write into writes of at least WRITE_BATCH bytes; a
    chunk that big on its own passes through as is (no copy)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def add(self, payload: bytes) -> Optional[bytes]:
        """What to write now, if anything."""
        if not self._buf and len(payload) >= WRITE_BATCH:
            return payload
        self._buf += payload
        return self.rest() if len(self._buf) >= WRITE_BATCH else None

    def rest(self) -> Optional[bytes]:
        """What is left to write at the end, if anything."""
        if not self._buf:
            return None
        out = bytes(self._buf)
        self._buf.clear()
        return out


def write_whole(box: BoxHandle, path: GuestPath, payload: bytes, mode: Optional[int]) -> None:
    check(_native.lib().boxlite_box_write_file(box.handle(), guest_path(path), payload, len(payload), _options(mode=mode)))


def write(box: BoxHandle, path: GuestPath, data: WriteData, mode: Optional[int]) -> None:
    payload = whole(data)
    if payload is not None:
        write_whole(box, path, payload, mode)
    else:
        write_chunks(box, path, chunks_of(data), mode)


def write_chunks(box: BoxHandle, path: GuestPath, chunks: Iterable[object], mode: Optional[int],
                 stop: Optional[threading.Event] = None) -> None:
    """Streams `chunks` to a file through one writer, finished only after the last: a chunk of a
    wrong type, an exception of the iterable or `stop` set (between chunks) frees it unfinished,
    so the box keeps what was at `path`."""
    writer = FileWriter(box, path, mode)
    batch = Batcher()
    try:
        for index, chunk in enumerate(chunks):
            if stop is not None and stop.is_set():
                raise AbortedError("ABORTED", f"the write of {os.fspath(path)} was cancelled")
            payload = batch.add(chunk_bytes(chunk, index))
            if payload:
                writer.write(payload)
        payload = batch.rest()
        if payload:
            writer.write(payload)
        writer.finish()
    finally:
        writer.close()


class FileReader:
    """A boxlite_file_reader (files.read_stream). read() blocks for the next chunk of at most
    READ_CHUNK bytes, b"" at the end (the reader is then freed) and once closed. close() may come
    from another thread while a read waits: that read gives up within _POLL_MS, and the reader
    is freed only after it returned (never under a call in progress)."""

    def __init__(self, box: BoxHandle, path: GuestPath):
        self._lib = _native.lib()
        self._ptr = c_void_p()
        self._lock = threading.Lock()
        self._closing = False
        self.path = os.fspath(path)
        check(self._lib.boxlite_box_open_reader(box.handle(), guest_path(path), byref(self._ptr)))
        self._buf = (c_uint8 * READ_CHUNK)()

    def read(self) -> bytes:
        n = c_size_t()
        with self._lock:
            while self._ptr and not self._closing:
                result = self._lib.boxlite_file_reader_read(self._ptr, self._buf, READ_CHUNK, _POLL_MS, byref(n))
                if result == _NOTHING_YET:
                    continue  # nothing lost: look at _closing, then wait again
                check(result)
                if n.value == 0:
                    self._free()
                    return b""
                return ctypes.string_at(self._buf, n.value)
            return b""

    @property
    def busy(self) -> bool:
        """Whether a read is in progress (close() would wait for it)."""
        return self._lock.locked()

    def close(self) -> None:
        """Frees the reader; the rest of the file is not read. Closing again is a no-op."""
        self._closing = True
        with self._lock:
            self._free()

    def _free(self) -> None:
        if self._ptr:
            self._lib.boxlite_file_reader_free(self._ptr)
            self._ptr = c_void_p()

    def __del__(self) -> None:
        if getattr(self, "_ptr", None):
            self._free()  # unreferenced: no read is in progress


class FileWriter:
    """A boxlite_file_writer: write() and finish() block (write while the box is behind);
    close() frees it, discarding an unfinished file (the box keeps the old one), after any call
    in progress on another thread returned."""

    def __init__(self, box: BoxHandle, path: GuestPath, mode: Optional[int]):
        self._lib = _native.lib()
        self._ptr = c_void_p()
        self._lock = threading.Lock()
        self.path = os.fspath(path)
        check(self._lib.boxlite_box_open_writer(box.handle(), guest_path(path), _options(mode=mode), byref(self._ptr)))

    def _live(self) -> c_void_p:
        if not self._ptr:
            raise InvalidStateError("INVALID_STATE", f"the writer of {self.path} is closed")
        return self._ptr

    def write(self, data: bytes) -> None:
        with self._lock:
            check(self._lib.boxlite_file_writer_write(self._live(), data, len(data)))

    def finish(self) -> None:
        with self._lock:
            check(self._lib.boxlite_file_writer_finish(self._live()))

    def close(self) -> None:
        with self._lock:
            if self._ptr:
                self._lib.boxlite_file_writer_free(self._ptr)
                self._ptr = c_void_p()

    def __del__(self) -> None:
        if getattr(self, "_ptr", None):
            self._lib.boxlite_file_writer_free(self._ptr)
            self._ptr = c_void_p()


def listdir(box: BoxHandle, path: GuestPath) -> List[FileEntry]:
    return [FileEntry._from(e) for e in _json_result(_native.lib().boxlite_box_list_dir, box.handle(), guest_path(path))]


def stat(box: BoxHandle, path: GuestPath) -> FileEntry:
    return FileEntry._from(_json_result(_native.lib().boxlite_box_stat_file, box.handle(), guest_path(path)))


def exists(box: BoxHandle, path: GuestPath) -> bool:
    found = c_bool()
    check(_native.lib().boxlite_box_file_exists(box.handle(), guest_path(path), byref(found)))
    return found.value


def mkdir(box: BoxHandle, path: GuestPath, parents: bool) -> None:
    check(_native.lib().boxlite_box_mkdir(box.handle(), guest_path(path), _options(parents=bool(parents))))


def remove(box: BoxHandle, path: GuestPath, recursive: bool) -> None:
    check(_native.lib().boxlite_box_remove_file(box.handle(), guest_path(path), _options(recursive=bool(recursive))))


def rename(box: BoxHandle, old: GuestPath, new: GuestPath) -> None:
    check(_native.lib().boxlite_box_rename_file(box.handle(), guest_path(old), guest_path(new)))


class WatchHandle:
    """A boxlite_watch taken without blocking: `take()` returns the events there now (after its
    notify fd, `fd`, became readable); the sync API waits for the fd with select, the async one
    with the event loop's add_reader. Closing it ends the watch in the box."""

    def __init__(self, box: BoxHandle, path: GuestPath, recursive: bool):
        self._lib = _native.lib()
        self._ptr = c_void_p()
        check(self._lib.boxlite_box_watch(box.handle(), guest_path(path), _options(recursive=bool(recursive)), byref(self._ptr)))
        fd = c_int()
        check(self._lib.boxlite_watch_notify_fd(self._ptr, byref(fd)))
        self.fd = fd.value
        self.ended = False
        """True once the watch ended: the box stopped, the directory was removed, or close()."""

    def take(self) -> List[WatchEvent]:
        """Drains the notify fd, then takes the events the library holds (none is lost: an event
        that comes later makes the fd readable again)."""
        if not self._ptr:
            self.ended = True
            return []
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass
        events: List[WatchEvent] = []
        out = c_void_p()
        while not self.ended:
            result = self._lib.boxlite_watch_next(self._ptr, 0, byref(out))
            if result == _NOTHING_YET:
                break
            check(result)
            if not out:
                self.ended = True
                break
            try:
                values = json.loads(ctypes.string_at(out))
            finally:
                self._lib.boxlite_string_free(out)
            events.append(WatchEvent(values["kind"], values["path"], values["old_path"], values["is_dir"]))
        return events

    def close(self) -> None:
        if self._ptr:
            self._lib.boxlite_watch_free(self._ptr)
            self._ptr = c_void_p()
        self.ended = True

    def __del__(self) -> None:
        self.close()
