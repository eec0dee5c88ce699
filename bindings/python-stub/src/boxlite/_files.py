"""Files in and out of a box over the C ABI's files calls (boxlite_box_copy_in, boxlite_box_read_file,
boxlite_box_watch, ...), shared by the async API and its sync twin. Every call here blocks the
calling thread, except WatchHandle.take(), which only takes what is there."""

from __future__ import annotations

import ctypes
import json
import os
from ctypes import byref, c_bool, c_int, c_size_t, c_void_p
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Union

from . import _native
from ._core import _NOTHING_YET, BoxHandle, Canceller, _json_result
from ._native import check

HostPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
"""A path on the host: str, bytes or os.PathLike (pathlib.Path); relative to the current directory."""

GuestPath = Union[str, "os.PathLike[str]"]
"""An absolute path in the box: str or os.PathLike (pathlib.PurePosixPath)."""


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


def write(box: BoxHandle, path: GuestPath, data: Union[str, bytes], mode: Optional[int]) -> None:
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be str or bytes, not {type(data).__name__}")
    payload = bytes(data)
    check(_native.lib().boxlite_box_write_file(box.handle(), guest_path(path), payload, len(payload), _options(mode=mode)))


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
