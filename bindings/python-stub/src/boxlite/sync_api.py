"""The synchronous twin of the boxlite API, with the same names prefixed `Sync`: for plain
scripts, and for threads beside a running event loop (each call blocks only its thread).

    from boxlite.sync_api import SyncSimpleBox

    with SyncSimpleBox(image="python:slim") as box:
        print(box.exec("echo", "hi").stdout, end="")
"""

from __future__ import annotations

import asyncio
import select
import threading
from types import SimpleNamespace
from typing import Any, Callable, Coroutine, Dict, Iterator, List, Literal, Optional, TypeVar, Union, overload

from ._core import (
    BoxHandle,
    BoxInfo,
    BoxMetrics,
    Canceller,
    ExecHandle,
    ExecResult,
    ExecState,
    RuntimeHandle,
    RuntimeMetrics,
    SimpleBoxBase,
    SnapshotInfo,
    TemplateInfo,
    argv_of,
    split_lines,
    text_chunks,
)
from . import _files
from ._code import PIP_ENV, CodeContext, CodeContexts, CodeExecution
from ._files import FileEntry, FileReader, GuestPath, HostPath, WatchEvent, WatchHandle, WriteData
from ._native import BOXLITE_STDERR, BOXLITE_STDOUT
from .errors import InvalidStateError, NotFoundError
from .options import BoxOptions, Env, Network, Options

T = TypeVar("T")

__all__ = ["SyncBox", "SyncBoxlite", "SyncCodeBox", "SyncExecStdin", "SyncExecution", "SyncFileReadStream", "SyncFileWatch", "SyncFiles", "SyncSimpleBox"]


class SyncBoxlite:
    """A runtime over one home directory (see `Options`). Use it as a context manager, or call
    close(); `SyncBoxlite.default()` is one shared runtime on the default home."""

    _default: Optional["SyncBoxlite"] = None

    def __init__(self, options: Optional[Options] = None):
        self._rt = RuntimeHandle(options)

    @classmethod
    def default(cls) -> "SyncBoxlite":
        """The process's shared runtime with `Options()` (made on first use, never closed)."""
        if cls._default is None:
            cls._default = cls()
        return cls._default

    def create(self, options: BoxOptions, name: Optional[str] = None) -> "SyncBox":
        """Creates a box (pulling its image if needed); it boots on start() or its first exec.
        InvalidArgumentError for a bad option (naming it, e.g. "memory_mib 64 is out of range:
        use 128 to 65536 MiB"), AlreadyExistsError for a name taken, ImageError / RegistryError
        when the image cannot be pulled; nothing is left behind then."""
        return SyncBox(self._rt.create(options, name))

    def get(self, id_or_name: str) -> "SyncBox":
        """An existing box by id or name; NotFoundError if there is none."""
        return SyncBox(self._rt.get(id_or_name))

    def get_info(self, id_or_name: str) -> Optional[BoxInfo]:
        """The record of a box by id or name, or None if there is none."""
        try:
            box = self._rt.get(id_or_name)
        except NotFoundError:
            return None
        try:
            return box.info()
        finally:
            box.close()

    def list_info(self) -> List[BoxInfo]:
        """Every box of the home, oldest first, with its current status."""
        return self._rt.list_info()

    def remove(self, id_or_name: str, force: bool = False) -> None:
        """Removes a box and its disk; a running one needs `force` (it is stopped first).
        NotFoundError if there is no such box."""
        box = self._rt.get(id_or_name)
        try:
            box.remove(force)
        finally:
            box.close()

    def metrics(self) -> RuntimeMetrics:
        """The runtime's counters (active_boxes, boxes_created_total, ...)."""
        return self._rt.metrics()

    def pull(self, reference: str, cancel: Optional[Canceller] = None) -> None:
        """Pulls an image and builds its base disk, so that create() then needs no network.
        `cancel`: a Canceller whose cancel(), from another thread, makes this raise AbortedError
        soon after, with the partial download deleted."""
        self._rt.pull(reference, cancel)

    def restore(self, snapshot: str, name: Optional[str] = None, detach: bool = False, auto_remove: bool = False,
                auto_stop_ms: Optional[int] = None) -> "SyncBox":
        """A new box continuing from a snapshot (see SyncBox.snapshot): its processes, memory and
        files as they were then, on a disk of its own, with a fresh identity; returned running.
        `name`, `detach`, `auto_remove` as for create(); `auto_stop_ms`: stop it after this long
        without a guest call. NotFoundError if there is no such snapshot; InvalidStateError if the
        VM engine, guest kernel or agent changed since."""
        return SyncBox(self._rt.restore(snapshot, name, detach, auto_remove, auto_stop_ms))

    def list_snapshots(self) -> List[SnapshotInfo]:
        """Every snapshot of the home, oldest first."""
        return self._rt.snapshots()

    def remove_snapshot(self, name: str) -> None:
        """Removes a snapshot; boxes restored from it keep working. NotFoundError if none."""
        self._rt.remove_snapshot(name)

    def warmup(self, cpus: int = 1, memory_mib: int = 512, network: Network = True) -> TemplateInfo:
        """Makes sure the warm start template for boxes of this shape exists, building it if needed
        (one guest booted cold and saved idle; this blocks for that boot). With warm start on (see
        Options.warm_start) boxes of that shape then start from it instead of booting; without a
        warmup, a shape's template is built at the first start of a box of that shape. `network`:
        as in BoxOptions; one template serves every box with a network (whatever its allow/deny
        policy), another the boxes with network=False / "none".
        InvalidArgumentError for cpus or memory_mib out of range (1-64, 128-65536 MiB)."""
        return self._rt.warmup(cpus, memory_mib, network)

    def images(self) -> List[SimpleNamespace]:
        """The images of the home, sorted by reference: reference, digest, config_digest,
        layers, size_bytes, pulled_at (unix seconds)."""
        return self._rt.images()

    def remove_image(self, reference: str, force: bool = False) -> SimpleNamespace:
        """Removes an image; InvalidStateError (naming them) if boxes use its base disk, unless
        `force`. Returns what was removed: boxes, images, blobs, base_disks, bytes_freed."""
        return self._rt.remove_image(reference, force)

    def prune(self, boxes: bool = False, all: bool = False) -> SimpleNamespace:
        """Deletes blobs and base disks nothing uses; `boxes`: first remove every box not
        running; `all`: also images no box uses. Returns what was removed."""
        return self._rt.prune(boxes, all)

    def close(self) -> None:
        """Frees the runtime. Boxes it booted stop when their last handle is closed too, except
        detached ones."""
        self._rt.close()

    def __enter__(self) -> "SyncBoxlite":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncBox:
    """One box. As a context manager it is stopped and removed on exit."""

    def __init__(self, handle: BoxHandle):
        self._box = handle
        self.id: str = handle.id

    def start(self) -> None:
        """Boots the VM and waits for the guest (a no-op if it runs)."""
        self._box.start()

    def stop(self) -> None:
        """Stops the VM; the disk is kept."""
        self._box.stop()

    def pause(self) -> None:
        """Stops the VM's vCPUs and keeps its memory until resume() (see Box.pause)."""
        self._box.pause()

    def resume(self) -> None:
        """Lets a paused box run again, its clock set to the host's; continues a suspended box."""
        self._box.resume()

    def snapshot(self, name: str) -> SnapshotInfo:
        """Saves the running box's memory and disk at one instant under `name` while the box goes
        on (see Box.snapshot); SyncBoxlite.restore(name) starts boxes from it."""
        return self._box.snapshot(name)

    def suspend(self) -> None:
        """Saves the box's memory and ends its VM (see Box.suspend); resume() continues it."""
        self._box.suspend()

    def fork(self, count: int = 1) -> List["SyncBox"]:
        """`count` (1 to 64) new running boxes continuing from this one as it is now (see Box.fork)."""
        return [SyncBox(h) for h in self._box.fork(count)]

    def remove(self, force: bool = False) -> None:
        """Deletes the box and its disk; a running box needs `force`."""
        self._box.remove(force)

    def info(self) -> BoxInfo:
        """The box's record (status, ports, ...); the box may run in another process."""
        return self._box.info()

    def metrics(self) -> BoxMetrics:
        """The box's metrics since it last started."""
        return self._box.metrics()

    def set_network(self, network: Network) -> None:
        """Replaces the allow/deny policy, on the running box at once and for later starts;
        switching the network on or off after create raises InvalidArgumentError."""
        self._box.set_network(network)

    def exec(self, cmd: str, *args: Any, env: Env = None, cwd: Optional[str] = None, user: Optional[str] = None,
             timeout: Optional[float] = None, tty: bool = False) -> "SyncExecution":
        """Starts `cmd` with `args` (one by one, or as one list) in the box, booting it if
        needed, and returns at once. `timeout` in seconds is enforced in the guest. A command
        that cannot start (not found, bad cwd or user) raises InvalidArgumentError."""
        return SyncExecution(self._box.exec(argv_of(cmd, args), env, cwd, user, timeout, tty))

    def copy_in(self, host_path: HostPath, guest_path: GuestPath, overwrite: bool = False,
                cancel: Optional[Canceller] = None) -> None:
        """Copies a host file or directory into the running box, as `docker cp`: into an existing
        directory under its own name, else as `guest_path` (an absolute path whose parent
        exists). Modes, mtimes and symlinks are kept; it streams, and lands whole or not at all.
        An existing target raises AlreadyExistsError unless `overwrite` (which replaces it
        whole). NotFoundError for a missing host path, InvalidArgumentError for a relative guest
        path, InvalidStateError when the box is not running; `cancel.cancel()` from another
        thread aborts it (AbortedError)."""
        _files.copy_in(self._box, host_path, guest_path, overwrite, cancel)

    def copy_out(self, guest_path: GuestPath, host_path: HostPath, overwrite: bool = False,
                 cancel: Optional[Canceller] = None) -> None:
        """Copies a file or directory of the running box to the host, with copy_in's rules. Nothing
        the box sends is trusted: entries land only beneath `host_path`, symlinks are never
        followed, setuid bits are dropped, and a failed copy leaves nothing. NotFoundError for a
        missing guest path or host parent directory; AlreadyExistsError unless `overwrite`."""
        _files.copy_out(self._box, guest_path, host_path, overwrite, cancel)

    @property
    def files(self) -> "SyncFiles":
        """The box's files: read, write, list, stat, exists, mkdir, remove, rename, watch."""
        return SyncFiles(self._box)

    def close(self) -> None:
        """Frees this handle; the box itself is untouched."""
        self._box.close()

    def __enter__(self) -> "SyncBox":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.remove(force=True)
        except NotFoundError:
            pass  # already removed
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"SyncBox(id={self.id!r})"


class SyncExecution:
    """A running command: read `stdout()` / `stderr()` (iterators of lines, each with its "\\n"),
    write `stdin()`, `wait()` for the result, `kill()`. Waits on the library's notify fd: no
    thread per stream. Use one Execution from one thread at a time."""

    def __init__(self, handle: ExecHandle):
        self._state = ExecState(handle)

    def _step(self) -> None:
        """Returns once something changed: new output, a stream's end, or the command's end."""
        while not self._state.pump():
            select.select([self._state.handle.fd], [], [])

    def _lines(self, stream: int) -> Iterator[str]:
        state = self._state.handle.streams[stream]
        pending = ""
        while True:
            lines, pending = split_lines(pending, text_chunks(state, final=state.ended))
            yield from lines
            if state.ended:
                if pending:
                    yield pending
                return
            self._step()

    def stdout(self) -> Iterator[str]:
        """The command's stdout, line by line as it arrives; once per execution. wait()'s result
        then has an empty stdout."""
        self._state.take(BOXLITE_STDOUT)  # now, so that no output is collected for wait() meanwhile
        return self._lines(BOXLITE_STDOUT)

    def stderr(self) -> Iterator[str]:
        """The command's stderr, line by line as it arrives; once per execution."""
        self._state.take(BOXLITE_STDERR)
        return self._lines(BOXLITE_STDERR)

    def stdin(self) -> "SyncExecStdin":
        """The command's stdin."""
        return SyncExecStdin(self._state.handle)

    def wait(self) -> ExecResult:
        """Waits for the command to end and returns its result, with the output of the streams
        no iterator read."""
        while not self._state.handle.done():
            self._step()
        return self._state.result()

    def kill(self, signal: int = 9) -> None:
        """Sends `signal` (default SIGKILL) to the command and its process group;
        InvalidStateError if it has ended."""
        self._state.handle.signal(signal)

    def resize_tty(self, rows: int, cols: int) -> None:
        """Resizes the command's terminal to `rows` x `cols` (1 to 65535 each; a terminal starts
        at 24x80); its foreground process group gets SIGWINCH. InvalidStateError for a command
        started without `tty=True` or one that has ended."""
        self._state.handle.resize_tty(rows, cols)


class SyncFiles:
    """The files of a running box (`box.files`). Paths are absolute paths in the box (str or
    PurePosixPath); the box's symlinks resolve inside the box. Every call needs the box running
    (InvalidStateError otherwise); a missing path raises NotFoundError, a relative one
    InvalidArgumentError."""

    def __init__(self, handle: BoxHandle):
        self._box = handle

    def read(self, path: GuestPath) -> bytes:
        """A regular file's bytes, whole (symlinks followed inside the box). For big files see
        read_stream()."""
        return _files.read(self._box, path)

    def read_text(self, path: GuestPath, encoding: str = "utf-8") -> str:
        """A file decoded as `encoding` (UnicodeDecodeError if it is not)."""
        return self.read(path).decode(encoding)

    def read_stream(self, path: GuestPath) -> "SyncFileReadStream":
        """A regular file's bytes as they come from the box, chunk by chunk (bytes of at most 64
        KiB each), never held whole; opened now (NotFoundError for a missing file):

            with box.files.read_stream("/var/log/big.log") as chunks:
                for chunk in chunks:
                    out.write(chunk)

        Leaving the `with` (or close(), or reaching the end) ends the read in the box."""
        return SyncFileReadStream(FileReader(self._box, path))

    def write(self, path: GuestPath, data: WriteData, mode: Optional[int] = None) -> None:
        """Writes `data` to a file: created, or replaced whole once all is written (a failed write
        keeps the old content). Its directory must exist. `data`: str (as UTF-8), bytes or a
        bytes-like object (bytearray, memoryview); or, streamed chunk by chunk and never held
        whole, an iterable of chunks (bytes-like or str, e.g. a generator) or a file object with
        read() (`open(p, "rb")`, read 1 MiB at a time). An exception raised by the stream, or a
        chunk of another type (TypeError), ends the write unfinished: the box keeps the old file.
        `mode`: permission bits (e.g. 0o755); None keeps an existing file's, a new file gets 0o644."""
        _files.write(self._box, path, data, mode)

    def list(self, path: GuestPath) -> List[FileEntry]:
        """The entries of a directory, sorted by name (symlinks not followed)."""
        return _files.listdir(self._box, path)

    def stat(self, path: GuestPath) -> FileEntry:
        """One entry (a final symlink not followed)."""
        return _files.stat(self._box, path)

    def exists(self, path: GuestPath) -> bool:
        """Whether `path` exists (a dangling symlink does)."""
        return _files.exists(self._box, path)

    def mkdir(self, path: GuestPath, parents: bool = False) -> None:
        """Creates a directory (0o755); `parents`: also the missing ones above it, and an existing
        directory is no error (`mkdir -p`). AlreadyExistsError otherwise."""
        _files.mkdir(self._box, path, parents)

    def remove(self, path: GuestPath, recursive: bool = False) -> None:
        """Removes a file, symlink or empty directory; `recursive`: a directory with everything
        in it (`rm -r`)."""
        _files.remove(self._box, path, recursive)

    def rename(self, old: GuestPath, new: GuestPath) -> None:
        """Renames (moves) `old` to `new` within the box, replacing a file at `new`."""
        _files.rename(self._box, old, new)

    def watch(self, path: GuestPath, recursive: bool = False) -> "SyncFileWatch":
        """Watches a directory (inotify in the box), from now: an iterator of WatchEvents that
        ends when the box stops or the directory is removed. `recursive`: also every
        subdirectory, present and future. Close it (or leave its `with` block) to end the watch
        in the box."""
        return SyncFileWatch(WatchHandle(self._box, path, recursive))


class SyncFileReadStream:
    """A file of the box being read (SyncFiles.read_stream): `for chunk in stream` (bytes, at most
    64 KiB each) until the end of the file. Read it once. Close it (or leave its `with` block) to
    stop early; a close() from another thread ends an iteration waiting for the box."""

    def __init__(self, reader: FileReader):
        self._reader = reader

    def __iter__(self) -> "SyncFileReadStream":
        return self

    def __next__(self) -> bytes:
        chunk = self._reader.read()
        if not chunk:
            raise StopIteration
        return chunk

    def close(self) -> None:
        """Stops reading; the read ends in the box. Closing again is a no-op."""
        self._reader.close()

    def __enter__(self) -> "SyncFileReadStream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncFileWatch:
    """File events of a watched directory: `for event in watch` (WatchEvent: kind, path,
    old_path, is_dir) until the box stops or close(). Waits on the library's notify fd."""

    def __init__(self, handle: WatchHandle):
        self._handle = handle
        self._pending: List[WatchEvent] = []

    def __iter__(self) -> "SyncFileWatch":
        return self

    def __next__(self) -> WatchEvent:
        while not self._pending:
            if self._handle.ended:
                raise StopIteration
            self._pending = self._handle.take()
            if not self._pending and not self._handle.ended:
                select.select([self._handle.fd], [], [])
        return self._pending.pop(0)

    def close(self) -> None:
        """Ends the watch in the box; iteration then stops. Closing again is a no-op."""
        self._handle.close()

    def __enter__(self) -> "SyncFileWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncExecStdin:
    """Writes to a command's stdin; write() blocks until the guest takes the bytes."""

    def __init__(self, handle: ExecHandle):
        self._handle = handle

    def write(self, data: Union[str, bytes]) -> None:
        """Writes `data` (str: as UTF-8). InvalidStateError if stdin is closed or the command ended."""
        self._handle.write_stdin(data.encode() if isinstance(data, str) else bytes(data))

    def close(self) -> None:
        """Closes stdin: the command reads end of file. Closing again is a no-op."""
        self._handle.close_stdin()


class SyncSimpleBox(SimpleBoxBase[SyncBox]):
    """A box that is created and booted on enter (or start()) and removed on exit (or
    shutdown()): `with SyncSimpleBox(image="python:slim") as box: box.exec("echo", "hi")`.
    Takes every field of BoxOptions as a keyword; see `boxlite.SimpleBox`."""

    _how_to_start = "use `with SyncSimpleBox(...)` or call start()"

    def start(self) -> "SyncSimpleBox":
        """Creates the box (or, with `reuse_existing` and a `name`, takes the box of that name if
        there is one) and boots it."""
        if self._box is None:
            runtime = self._runtime or SyncBoxlite.default()
            if self._reuse and self._name and runtime.get_info(self._name):
                self._box, self.created = runtime.get(self._name), False
            else:
                self._box, self.created = runtime.create(self._options, self._name), True
        self._box.start()
        return self

    @overload
    def exec(self, cmd: str, *args: Any, env: Env = None, timeout: Optional[float] = None, cwd: Optional[str] = None,
             user: Optional[str] = None, stdin: Union[str, bytes, None] = None,
             background: Literal[False] = False) -> ExecResult: ...

    @overload
    def exec(self, cmd: str, *args: Any, env: Env = None, timeout: Optional[float] = None, cwd: Optional[str] = None,
             user: Optional[str] = None, stdin: Union[str, bytes, None] = None,
             background: Literal[True]) -> "SyncExecution": ...

    def exec(self, cmd: str, *args: Any, env: Env = None, timeout: Optional[float] = None, cwd: Optional[str] = None,
             user: Optional[str] = None, stdin: Union[str, bytes, None] = None,
             background: bool = False) -> Union[ExecResult, "SyncExecution"]:
        """Runs a command to its end: ExecResult(exit_code, stdout, stderr, error_message).
        `stdin` is written to it, then closed. `timeout` in seconds. `background=True` returns
        the running SyncExecution at once, kept running by the box until the box ends (output
        waits for stdout()/stderr(), up to 8 MiB per stream)."""
        execution = self._started().exec(cmd, *args, env=env, cwd=cwd, user=user, timeout=timeout)
        _feed(execution.stdin(), stdin)
        if background:
            self._background.append(execution)
            return execution
        return execution.wait()

    def info(self) -> BoxInfo:
        return self._started().info()

    def metrics(self) -> BoxMetrics:
        return self._started().metrics()

    def copy_in(self, host_path: HostPath, guest_path: GuestPath, overwrite: bool = False,
                cancel: Optional[Canceller] = None) -> None:
        """Copies a host file or directory into the box (see SyncBox.copy_in)."""
        self._started().copy_in(host_path, guest_path, overwrite, cancel)

    def copy_out(self, guest_path: GuestPath, host_path: HostPath, overwrite: bool = False,
                 cancel: Optional[Canceller] = None) -> None:
        """Copies a file or directory of the box to the host (see SyncBox.copy_out)."""
        self._started().copy_out(guest_path, host_path, overwrite, cancel)

    @property
    def files(self) -> SyncFiles:
        """The box's files (see SyncFiles)."""
        return self._started().files

    def stop(self) -> None:
        """Stops the box; its disk is kept (start() boots it again)."""
        self._started().stop()

    def pause(self) -> None:
        """Pauses the box (see SyncBox.pause)."""
        self._started().pause()

    def resume(self) -> None:
        """Resumes a paused or suspended box."""
        self._started().resume()

    def snapshot(self, name: str) -> SnapshotInfo:
        """Snapshots the box under `name` (see SyncBox.snapshot)."""
        return self._started().snapshot(name)

    def suspend(self) -> None:
        """Suspends the box (see SyncBox.suspend)."""
        self._started().suspend()

    def fork(self, count: int = 1) -> List[SyncBox]:
        """Forks the box (see SyncBox.fork): the new boxes are plain SyncBoxes, removed by the caller."""
        return self._started().fork(count)

    def shutdown(self) -> None:
        """Ends the box: removes it (`auto_remove`, the default) or stops it, keeping its disk
        for a later `reuse_existing`. A no-op when not started."""
        box, self._box = self._box, None
        if box is None:
            return
        try:
            if self._options.auto_remove:
                box.remove(force=True)
            else:
                box.stop()
        except NotFoundError:
            pass  # removed meanwhile
        finally:
            self._background.clear()
            box.close()

    def __enter__(self) -> "SyncSimpleBox":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class SyncCodeBox(SyncSimpleBox):
    """A box that runs Python code: `run(code)` in a fresh interpreter each time, or
    `run_code(code)` in a context whose state lasts (as CodeBox; contexts are served by an event
    loop on a thread of this box's own, so they work from any thread)."""

    def __init__(self, image: str = "python:slim", **options: Any):
        super().__init__(image, **options)
        self._contexts = CodeContexts()
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def run(self, code: str, timeout: Optional[float] = None) -> str:
        """Runs `code` with python3 and returns its stdout followed by its stderr."""
        result = self.exec("python3", "-c", code, timeout=timeout)
        return result.stdout + result.stderr

    def install_packages(self, *names: str) -> ExecResult:
        """pip-installs `names` in the box (see CodeBox.install_packages)."""
        return self.exec("python3", "-m", "pip", "install", "--quiet", *names, env=PIP_ENV)

    def create_context(self, language: str = "python", cwd: Optional[str] = None,
                       env: Optional[Dict[str, str]] = None) -> CodeContext:
        """Starts a new context (see CodeBox.create_context)."""
        return self._in_loop(lambda box: self._contexts.create(box, language, cwd, env))

    def list_contexts(self) -> List[CodeContext]:
        """The contexts made by create_context() and not removed."""
        return self._contexts.list()

    def remove_context(self, context: Union[CodeContext, str]) -> None:
        """Ends a context's interpreter. NotFoundError if unknown."""
        self._in_loop(lambda box: self._contexts.remove(context))

    def run_code(self, code: str, context: Union[CodeContext, str, None] = None, timeout: Optional[float] = None,
                 on_stdout: Optional[Callable[[str], Any]] = None,
                 on_stderr: Optional[Callable[[str], Any]] = None) -> CodeExecution:
        """Runs a cell (see CodeBox.run_code); the callbacks run on the contexts' thread."""
        return self._in_loop(lambda box: self._contexts.run(box, code, context, timeout, on_stdout, on_stderr))

    def _in_loop(self, call: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
        from ._aio import Box  # the async wrapper of this box, used on the contexts' loop only

        box = Box(self._started())
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, name="boxlite-code", daemon=True).start()
        return asyncio.run_coroutine_threadsafe(call(box), self._loop).result()

    def shutdown(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._contexts.close(), loop).result()
            loop.call_soon_threadsafe(loop.stop)
        super().shutdown()


def _feed(stdin: SyncExecStdin, data: Union[str, bytes, None]) -> None:
    """Writes `data`, then closes stdin whatever happened (unread input is not an error)."""
    try:
        if data:
            stdin.write(data)
    except InvalidStateError:
        pass  # the command ended without reading all of it, as with a closed pipe
    finally:
        stdin.close()
