"""The asyncio API: Boxlite, Box, Execution, SimpleBox, CodeBox.

An execution's output and end are awaited on the library's notify fd through the event loop
(loop.add_reader): no thread waits for a running command, so any number of commands run at once.
Calls that do block in the library (create, start, stop, remove, starting a command, writing
stdin) run on a pool of up to BLOCKING_THREADS threads, each only for the call's own length.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, AsyncIterable, AsyncIterator, Callable, Dict, Generator, Iterable, List, Literal, Optional, TypeVar, Union, overload

from ._code import PIP_ENV, CodeContext, CodeContexts, CodeExecution
from ._core import (
    BoxHandle,
    BoxInfo,
    BoxMetrics,
    Canceller,
    ExecHandle,
    ExecResult,
    ExecState,
    RuntimeMetrics,
    SimpleBoxBase,
    SnapshotInfo,
    TemplateInfo,
    argv_of,
    split_lines,
    text_chunks,
)
from . import _files
from ._files import AsyncWriteData, FileEntry, FileReader, FileWriter, GuestPath, HostPath, WatchEvent, WatchHandle
from ._native import BOXLITE_STDERR, BOXLITE_STDOUT
from .errors import BoxliteError, InvalidStateError, NotFoundError
from .options import BoxOptions, Env, Network, Options
from .sync_api import SyncBox, SyncBoxlite, SyncFiles

T = TypeVar("T")

BLOCKING_THREADS = 64
"""Threads for the library calls that block; a boot or a pull holds one for its length."""

_pool = ThreadPoolExecutor(max_workers=BLOCKING_THREADS, thread_name_prefix="boxlite")


async def _blocking(call: Callable[..., T], *args: Any) -> T:
    """Runs a blocking library call on the pool (its error message is read on the same thread)."""
    return await asyncio.get_running_loop().run_in_executor(_pool, functools.partial(call, *args))


async def _abortable(call: Callable[..., T], *args: Any, cancel: Optional[Canceller]) -> T:
    """As _blocking, for a call that takes a canceller last: cancelling the awaiting task cancels
    the call in the library too, and waits until it has returned (nothing half done is left
    running)."""
    canceller = cancel or Canceller()
    done = asyncio.get_running_loop().run_in_executor(_pool, functools.partial(call, *args, canceller))
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        canceller.cancel()
        try:
            await done
        except BoxliteError:
            pass  # AbortedError, or whatever ended it first
        raise


class Boxlite:
    """A runtime over one home directory: `Boxlite.default()` (the default home, shared), or
    `Boxlite(Options(home_dir=..., image_registries=[...]))`. Use it as an (async) context
    manager, or call close()."""

    _default: Optional["Boxlite"] = None

    def __init__(self, options: Optional[Options] = None):
        self._sync = SyncBoxlite(options)

    @classmethod
    def default(cls) -> "Boxlite":
        """The process's shared runtime with `Options()` (made on first use, never closed)."""
        if cls._default is None:
            cls._default = cls()
        return cls._default

    async def create(self, options: BoxOptions, name: Optional[str] = None) -> "Box":
        """Creates a box (pulling its image if needed); it boots on start() or its first exec.
        InvalidArgumentError for a bad option, naming it (e.g. "memory_mib 64 is out of range:
        use 128 to 65536 MiB"); AlreadyExistsError for a name taken; ImageError / RegistryError
        when the image cannot be pulled."""
        return Box(await _blocking(self._sync.create, options, name))

    async def get(self, id_or_name: str) -> "Box":
        """An existing box by id or name; NotFoundError if there is none."""
        return Box(await _blocking(self._sync.get, id_or_name))

    async def get_info(self, id_or_name: str) -> Optional[BoxInfo]:
        """The record of a box by id or name, or None if there is none."""
        return await _blocking(self._sync.get_info, id_or_name)

    async def list_info(self) -> List[BoxInfo]:
        """Every box of the home, oldest first, with its current status."""
        return await _blocking(self._sync.list_info)

    async def remove(self, id_or_name: str, force: bool = False) -> None:
        """Removes a box and its disk; a running one needs `force`. NotFoundError if none."""
        await _blocking(self._sync.remove, id_or_name, force)

    def metrics(self) -> RuntimeMetrics:
        """The runtime's counters, read at once: `runtime.metrics().active_boxes`; awaiting the
        record (`await runtime.metrics()`) gives it back too."""
        return self._sync.metrics()

    async def pull(self, reference: str, cancel: Optional[Canceller] = None) -> None:
        """Pulls an image and builds its base disk; `cancel.cancel()` aborts it (AbortedError)."""
        await _blocking(self._sync.pull, reference, cancel)

    async def restore(self, snapshot: str, name: Optional[str] = None, detach: bool = False, auto_remove: bool = False,
                      auto_stop_ms: Optional[int] = None) -> "Box":
        """A new box continuing from a snapshot (see Box.snapshot): its processes, memory and files
        as they were then, on a disk of its own, with a fresh identity (id, hostname, RNG, clock);
        returned running. `name`, `detach`, `auto_remove` as for create(); `auto_stop_ms`: stop
        it after this long without a guest call. NotFoundError if there is no such snapshot;
        InvalidStateError if the VM engine, guest kernel or agent changed since."""
        return Box(await _blocking(self._sync.restore, snapshot, name, detach, auto_remove, auto_stop_ms))

    def list_snapshots(self) -> List[SnapshotInfo]:
        """Every snapshot of the home, oldest first (read at once, no VM is asked)."""
        return self._sync.list_snapshots()

    async def remove_snapshot(self, name: str) -> None:
        """Removes a snapshot; boxes restored from it keep working. NotFoundError if none."""
        await _blocking(self._sync.remove_snapshot, name)

    async def warmup(self, cpus: int = 1, memory_mib: int = 512, network: Network = True) -> TemplateInfo:
        """Makes sure the warm start template for boxes of this shape exists, building it if needed
        (one guest booted cold and saved idle: awaits that boot). With warm start on (see
        Options.warm_start) boxes of that shape then start from it instead of booting; without a
        warmup, a shape's template is built at the first start of a box of that shape. `network`:
        as in BoxOptions; one template serves every box with a network (whatever its allow/deny
        policy), another the boxes with network=False / "none".
        InvalidArgumentError for cpus or memory_mib out of range (1-64, 128-65536 MiB)."""
        return await _blocking(self._sync.warmup, cpus, memory_mib, network)

    async def images(self) -> List[SimpleNamespace]:
        """The images of the home (see SyncBoxlite.images)."""
        return await _blocking(self._sync.images)

    async def remove_image(self, reference: str, force: bool = False) -> SimpleNamespace:
        """Removes an image (see SyncBoxlite.remove_image)."""
        return await _blocking(self._sync.remove_image, reference, force)

    async def prune(self, boxes: bool = False, all: bool = False) -> SimpleNamespace:
        """Deletes what nothing uses (see SyncBoxlite.prune)."""
        return await _blocking(self._sync.prune, boxes, all)

    def close(self) -> None:
        """Frees the runtime (see SyncBoxlite.close)."""
        self._sync.close()

    async def __aenter__(self) -> "Boxlite":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Box:
    """One box. As an async context manager it is stopped and removed on exit."""

    def __init__(self, sync: SyncBox):
        self._sync = sync
        self.id: str = sync.id

    async def start(self) -> None:
        """Boots the VM and waits for the guest (a no-op if it runs)."""
        await _blocking(self._sync.start)

    async def stop(self) -> None:
        """Stops the VM; the disk is kept."""
        await _blocking(self._sync.stop)

    async def pause(self) -> None:
        """Stops the VM's vCPUs and keeps its memory (processes, files, connections) until
        resume(); commands under way wait and go on after it, new calls raise InvalidStateError
        meanwhile; info().status is "paused". Pausing a paused box does nothing; a box that is
        not running raises InvalidStateError."""
        await _blocking(self._sync.pause)

    async def resume(self) -> None:
        """Lets a paused box run again, its clock set to the host's; continues a suspended box
        from its saved memory; a no-op on a running box."""
        await _blocking(self._sync.resume)

    async def snapshot(self, name: str) -> SnapshotInfo:
        """Saves the running box's memory and disk at one instant under `name` (1 to 64 letters,
        digits, '_', '.' or '-'), while the box goes on: its vCPUs stand still only while it is
        taken. `Boxlite.restore(name)` starts new boxes from it. AlreadyExistsError for a name
        taken, InvalidStateError for a box not running, InvalidArgumentError for one with volumes."""
        return await _blocking(self._sync.snapshot, name)

    async def suspend(self) -> None:
        """Saves the box's memory to its directory and ends its VM: info().status is "suspended"
        and it uses no CPU or memory until resume() (or an exec) continues it, processes and all.
        Suspending a suspended box does nothing; a box not running raises InvalidStateError, one
        with volumes InvalidArgumentError (pause() it instead)."""
        await _blocking(self._sync.suspend)

    async def fork(self, count: int = 1) -> List["Box"]:
        """`count` (1 to 64) new boxes continuing from this one as it is now, each running, with its
        own disk and identity; this box goes on as well. Remove them when done."""
        return [Box(b) for b in await _blocking(self._sync.fork, count)]

    async def remove(self, force: bool = False) -> None:
        """Deletes the box and its disk; a running box needs `force`."""
        await _blocking(self._sync.remove, force)

    async def info(self) -> BoxInfo:
        """The box's record: `.status`, `.ports`, ..."""
        return await _blocking(self._sync.info)

    async def metrics(self) -> BoxMetrics:
        """The box's metrics: `.memory_usage_bytes`, `.cpu_percent`, ..."""
        return await _blocking(self._sync.metrics)

    async def set_network(self, network: Network) -> None:
        """Replaces the allow/deny policy (see SyncBox.set_network)."""
        await _blocking(self._sync.set_network, network)

    async def exec(self, cmd: str, *args: Any, env: Env = None, cwd: Optional[str] = None, user: Optional[str] = None,
                   timeout: Optional[float] = None, tty: bool = False) -> "Execution":
        """Starts `cmd` with `args` (one by one, or as one list), booting the box if needed, and
        returns its Execution once it runs. `timeout` in seconds is enforced in the guest. A
        command that cannot start raises InvalidArgumentError."""
        return Execution(await _blocking(self._sync._box.exec, argv_of(cmd, args), env, cwd, user, timeout, tty))

    async def copy_in(self, host_path: HostPath, guest_path: GuestPath, overwrite: bool = False,
                      cancel: Optional[Canceller] = None) -> None:
        """Copies a host file or directory into the running box, as `docker cp`: into an existing
        directory under its own name, else as `guest_path` (an absolute path whose parent
        exists). Modes, mtimes and symlinks are kept; it streams, and lands whole or not at all.
        An existing target raises AlreadyExistsError unless `overwrite` (which replaces it
        whole). NotFoundError for a missing host path, InvalidArgumentError for a relative guest
        path, InvalidStateError when the box is not running. Cancelling the task (or
        `cancel.cancel()`) aborts the copy."""
        await _abortable(self._sync.copy_in, host_path, guest_path, overwrite, cancel=cancel)

    async def copy_out(self, guest_path: GuestPath, host_path: HostPath, overwrite: bool = False,
                       cancel: Optional[Canceller] = None) -> None:
        """Copies a file or directory of the running box to the host, with copy_in's rules. Nothing
        the box sends is trusted: entries land only beneath `host_path`, symlinks are never
        followed, setuid bits are dropped, and a failed copy leaves nothing. NotFoundError for a
        missing guest path or host parent directory; AlreadyExistsError unless `overwrite`."""
        await _abortable(self._sync.copy_out, guest_path, host_path, overwrite, cancel=cancel)

    @property
    def files(self) -> "Files":
        """The box's files: read, write, list, stat, exists, mkdir, remove, rename, watch."""
        return Files(self._sync.files)

    def close(self) -> None:
        """Frees this handle; the box itself is untouched."""
        self._sync.close()

    async def __aenter__(self) -> "Box":
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.remove(force=True)
        except NotFoundError:
            pass  # already removed
        finally:
            self.close()

    def __repr__(self) -> str:
        return f"Box(id={self.id!r})"


class Execution:
    """A running command: `async for line in execution.stdout()`, `execution.stdin()`,
    `await execution.wait()` (an ExecResult), `await execution.kill()`. Lives in the event loop
    that made it."""

    def __init__(self, handle: ExecHandle):
        self._state = ExecState(handle)
        self._loop = asyncio.get_running_loop()
        self._changed: Optional[asyncio.Future[None]] = None
        self._watching = False

    def _on_ready(self) -> None:
        if self._state.pump():
            self._wake()
        if self._state.handle.done():
            self._unwatch()

    def _wake(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)

    def _unwatch(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._state.handle.fd)
            self._watching = False

    async def _step(self) -> None:
        """Returns once something changed: new output, a stream's end, or the command's end."""
        if self._state.pump():
            self._wake()  # other waiters may wait for what this pump took
            return
        if self._changed is None or self._changed.done():
            self._changed = self._loop.create_future()  # shared by every waiter of this step
        if not self._watching and not self._state.handle.done():
            self._loop.add_reader(self._state.handle.fd, self._on_ready)
            self._watching = True
        await self._changed

    async def _lines(self, stream: int) -> AsyncIterator[str]:
        state = self._state.handle.streams[stream]
        pending = ""
        while True:
            lines, pending = split_lines(pending, text_chunks(state, final=state.ended))
            for line in lines:
                yield line
            if state.ended:
                if pending:
                    yield pending
                return
            await self._step()

    def stdout(self) -> AsyncIterator[str]:
        """The command's stdout, line by line as it arrives (each line with its "\\n"); once per
        execution; call it before wait(), whose result then has an empty stdout."""
        self._state.take(BOXLITE_STDOUT)  # now, so that no output is collected for wait() meanwhile
        return self._lines(BOXLITE_STDOUT)

    def stderr(self) -> AsyncIterator[str]:
        """The command's stderr, line by line as it arrives; once per execution."""
        self._state.take(BOXLITE_STDERR)
        return self._lines(BOXLITE_STDERR)

    def stdin(self) -> "ExecStdin":
        """The command's stdin: `await stdin.write(...)`, `await stdin.close()`."""
        return ExecStdin(self._state.handle)

    async def wait(self) -> ExecResult:
        """Waits for the command to end: ExecResult(exit_code, stdout, stderr, error_message),
        with the output of the streams no iterator read. Cancelling the wait (e.g.
        asyncio.wait_for's timeout) leaves the command running: kill() it."""
        try:
            while not self._state.handle.done():
                await self._step()
        finally:
            if self._state.handle.done():
                self._unwatch()
        return self._state.result()

    async def kill(self, signal: int = 9) -> None:
        """Sends `signal` (default SIGKILL) to the command and its process group;
        InvalidStateError if it has ended."""
        await _blocking(self._state.handle.signal, signal)

    async def resize_tty(self, rows: int, cols: int) -> None:
        """Resizes the command's terminal to `rows` x `cols` (1 to 65535 each; a terminal starts
        at 24x80); its foreground process group gets SIGWINCH. InvalidStateError for a command
        started without `tty=True` or one that has ended."""
        await _blocking(self._state.handle.resize_tty, rows, cols)

    def __del__(self) -> None:
        if self._watching and not self._loop.is_closed():
            self._loop.remove_reader(self._state.handle.fd)


class Files:
    """The files of a running box (`box.files`). Paths are absolute paths in the box (str or
    PurePosixPath); the box's symlinks resolve inside the box. Every call needs the box running
    (InvalidStateError otherwise); a missing path raises NotFoundError, a relative one
    InvalidArgumentError."""

    def __init__(self, sync: SyncFiles):
        self._sync = sync

    async def read(self, path: GuestPath) -> bytes:
        """A regular file's bytes, whole (symlinks followed inside the box). For big files see
        read_stream()."""
        return await _blocking(self._sync.read, path)

    async def read_text(self, path: GuestPath, encoding: str = "utf-8") -> str:
        """A file decoded as `encoding` (UnicodeDecodeError if it is not)."""
        return (await self.read(path)).decode(encoding)

    def read_stream(self, path: GuestPath) -> "FileReadStream":
        """A regular file's bytes as they come from the box, chunk by chunk (bytes of at most 64
        KiB each), never held whole: an async iterator, each chunk pulled from the box on a
        pool thread, so the event loop is never blocked. The file is opened on `async with` (or
        `await`), else on the first iteration; a missing one raises NotFoundError there:

            async with box.files.read_stream("/var/log/big.log") as chunks:
                async for chunk in chunks:
                    out.write(chunk)

        Leaving the `async with` (or aclose(), or reaching the end) ends the read in the box."""
        return FileReadStream(self._sync, path)

    async def write(self, path: GuestPath, data: AsyncWriteData, mode: Optional[int] = None) -> None:
        """Writes `data` to a file: created, or replaced whole once all is written (a failed write
        keeps the old content). Its directory must exist. `data`: str (as UTF-8), bytes or a
        bytes-like object (bytearray, memoryview); or, streamed chunk by chunk and never held
        whole, an async iterable of chunks (bytes-like or str, e.g. an async generator), an
        iterable of chunks or a file object with read() (`open(p, "rb")`, read 1 MiB at a time;
        these two are pulled on a pool thread). An exception raised by the stream, a chunk of
        another type (TypeError) or cancelling the task ends the write unfinished: the box keeps
        the old file. `mode`: permission bits (e.g. 0o755); None keeps an existing file's, a new
        file gets 0o644."""
        box = self._sync._box
        payload = _files.whole(data)
        if payload is not None:
            await _blocking(_files.write_whole, box, path, payload, mode)
        elif hasattr(data, "__aiter__"):
            await _write_async_chunks(box, path, data, mode)  # type: ignore[arg-type]
        else:
            await _write_chunks(box, path, _files.chunks_of(data, async_api=True), mode)

    async def list(self, path: GuestPath) -> List[FileEntry]:
        """The entries of a directory, sorted by name (symlinks not followed)."""
        return await _blocking(self._sync.list, path)

    async def stat(self, path: GuestPath) -> FileEntry:
        """One entry (a final symlink not followed)."""
        return await _blocking(self._sync.stat, path)

    async def exists(self, path: GuestPath) -> bool:
        """Whether `path` exists (a dangling symlink does)."""
        return await _blocking(self._sync.exists, path)

    async def mkdir(self, path: GuestPath, parents: bool = False) -> None:
        """Creates a directory (0o755); `parents`: also the missing ones above it, and an existing
        directory is no error (`mkdir -p`). AlreadyExistsError otherwise."""
        await _blocking(self._sync.mkdir, path, parents)

    async def remove(self, path: GuestPath, recursive: bool = False) -> None:
        """Removes a file, symlink or empty directory; `recursive`: a directory with everything
        in it (`rm -r`)."""
        await _blocking(self._sync.remove, path, recursive)

    async def rename(self, old: GuestPath, new: GuestPath) -> None:
        """Renames (moves) `old` to `new` within the box, replacing a file at `new`."""
        await _blocking(self._sync.rename, old, new)

    def watch(self, path: GuestPath, recursive: bool = False) -> "FileWatch":
        """Watches a directory (inotify in the box): an async iterator of WatchEvents that ends
        when the box stops or the directory is removed. `recursive`: also every subdirectory,
        present and future. The watch starts on `async with` (or `await`), else on the first
        iteration; events before that are not seen:

            async with box.files.watch("/work") as events:
                ...  # changes from here on are seen
                async for event in events:
                    print(event.kind, event.path)

        Leaving the `async with` (or aclose()) ends the watch in the box."""
        return FileWatch(self._sync, path, recursive)


async def _write_async_chunks(box: BoxHandle, path: GuestPath, chunks: AsyncIterable[object], mode: Optional[int]) -> None:
    """Streams an async iterable's chunks through one writer, each written on the pool. Whatever
    ends it early (the iterable's exception, a bad chunk, a cancelled task) frees the writer
    unfinished, once the write in progress returned: the box keeps the old file."""
    writer = await _blocking(FileWriter, box, path, mode)
    batch = _files.Batcher()
    try:
        index = 0
        async for chunk in chunks:
            payload = batch.add(_files.chunk_bytes(chunk, index))
            index += 1
            if payload:
                await _blocking(writer.write, payload)
        payload = batch.rest()
        if payload:
            await _blocking(writer.write, payload)
        await _blocking(writer.finish)
    finally:
        # On the pool: close() waits for a write still running for a cancelled task.
        await asyncio.shield(_blocking(writer.close))


async def _write_chunks(box: BoxHandle, path: GuestPath, chunks: Iterable[object], mode: Optional[int]) -> None:
    """Streams a sync iterable's chunks (or a file object's reads) on one pool thread; cancelling
    the task stops it before the next chunk and waits until the writer is freed unfinished."""
    stop = threading.Event()
    done = asyncio.get_running_loop().run_in_executor(_pool, functools.partial(_files.write_chunks, box, path, chunks, mode, stop))
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        stop.set()
        try:
            await done
        except Exception:
            pass  # AbortedError, or whatever ended it first
        raise


class FileReadStream:
    """A file of the box being read (Files.read_stream): an async iterator of bytes chunks (at
    most 64 KiB each), each read by the library on a pool thread. Read it once."""

    def __init__(self, files: SyncFiles, path: GuestPath):
        self._files = files
        self._path = path
        self._reader: Optional[FileReader] = None
        self._closed = False

    async def _open(self) -> FileReader:
        if self._reader is None:
            if self._closed:
                raise InvalidStateError("INVALID_STATE", "the file stream is closed")
            self._reader = await _blocking(FileReader, self._files._box, self._path)
        return self._reader

    def __await__(self) -> Generator[Any, None, "FileReadStream"]:
        return self.__aenter__().__await__()

    async def __aenter__(self) -> "FileReadStream":
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> "FileReadStream":
        return self

    async def __anext__(self) -> bytes:
        if self._closed:
            raise StopAsyncIteration
        chunk = await _blocking((await self._open()).read)
        if not chunk:
            self._closed = True  # the reader freed itself at the end
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Stops reading; the read ends in the box. A read still running for a cancelled task
        gives up within a moment, and the reader is freed after it. Closing again is a no-op."""
        self._closed = True
        reader = self._reader
        if reader is not None:
            if reader.busy:
                await asyncio.shield(_blocking(reader.close))
            else:
                reader.close()


class FileWatch:
    """File events of a watched directory (Files.watch), waited for on the library's notify fd
    through the event loop: no thread waits for events."""

    def __init__(self, files: SyncFiles, path: GuestPath, recursive: bool):
        self._files = files
        self._args = (path, recursive)
        self._handle: Optional[WatchHandle] = None
        self._pending: List[WatchEvent] = []
        self._closed = False
        self._wake: Optional[Callable[[], None]] = None  # wakes the task waiting for an event

    async def _open(self) -> WatchHandle:
        if self._handle is None:
            if self._closed:
                raise InvalidStateError("INVALID_STATE", "the watch is closed")
            self._handle = await _blocking(WatchHandle, self._files._box, *self._args)
        return self._handle

    def __await__(self) -> Generator[Any, None, "FileWatch"]:
        return self.__aenter__().__await__()

    async def __aenter__(self) -> "FileWatch":
        await self._open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> "FileWatch":
        return self

    async def __anext__(self) -> WatchEvent:
        handle = await self._open()
        while not self._pending:
            if handle.ended:
                raise StopAsyncIteration
            self._pending = handle.take()
            if not self._pending and not handle.ended:
                await self._readable(handle.fd)
                if self._closed:
                    raise StopAsyncIteration
        return self._pending.pop(0)

    async def _readable(self, fd: int) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, wake)
        self._wake = wake
        try:
            await ready
        finally:
            self._wake = None
            loop.remove_reader(fd)

    async def aclose(self) -> None:
        """Ends the watch in the box; iteration then stops (a task waiting for an event wakes up
        and ends). Closing again is a no-op."""
        self._closed = True
        if self._wake is not None:
            self._wake()  # before the fd closes under the waiting task's reader
            await asyncio.sleep(0)  # let it unregister the fd
        if self._handle is not None:
            self._handle.close()


class ExecStdin:
    """Writes to a command's stdin; write() waits until the guest takes the bytes."""

    def __init__(self, handle: ExecHandle):
        self._handle = handle

    async def write(self, data: Union[str, bytes]) -> None:
        """Writes `data` (str: as UTF-8). InvalidStateError if stdin is closed or the command ended."""
        await _blocking(self._handle.write_stdin, data.encode() if isinstance(data, str) else bytes(data))

    async def close(self) -> None:
        """Closes stdin: the command reads end of file. Closing again is a no-op."""
        await _blocking(self._handle.close_stdin)


class SimpleBox(SimpleBoxBase[Box]):
    """A box made and booted on `async with` (or start()) and ended on exit (or shutdown()):

        async with boxlite.SimpleBox(image="python:slim") as box:
            result = await box.exec("echo", "hi")   # ExecResult: exit_code, stdout, stderr

    Keywords: every field of BoxOptions (cpus, memory_mib in MiB, env, working_dir, ports,
    network, ...), `name`, `runtime` (default Boxlite.default()), `auto_remove` (default True:
    the box is removed at the end; False: only stopped) and `reuse_existing` (with a `name`:
    take the box of that name if there is one)."""

    _how_to_start = "use `async with SimpleBox(...)` or await start()"

    async def start(self) -> "SimpleBox":
        """Creates the box (or takes the existing one, see `reuse_existing`) and boots it."""
        if self._box is None:
            runtime = self._runtime or Boxlite.default()
            if self._reuse and self._name and await runtime.get_info(self._name):
                self._box, self.created = await runtime.get(self._name), False
            else:
                self._box, self.created = await runtime.create(self._options, self._name), True
        await self._box.start()
        return self

    @overload
    async def exec(self, cmd: str, *args: Any, env: Env = None, timeout: Optional[float] = None, cwd: Optional[str] = None,
                   user: Optional[str] = None, stdin: Union[str, bytes, None] = None,
                   background: Literal[False] = False) -> ExecResult: ...

    @overload
    async def exec(self, cmd: str, *args: Any, env: Env = None, timeout: Optional[float] = None, cwd: Optional[str] = None,
                   user: Optional[str] = None, stdin: Union[str, bytes, None] = None,
                   background: Literal[True]) -> "Execution": ...

    async def exec(self, cmd: str, *args: Any, env: Env = None, timeout: Optional[float] = None, cwd: Optional[str] = None,
                   user: Optional[str] = None, stdin: Union[str, bytes, None] = None,
                   background: bool = False) -> Union[ExecResult, "Execution"]:
        """Runs a command to its end: ExecResult(exit_code, stdout, stderr, error_message), whole
        decoded strings. `stdin` is written to it, then closed. `timeout` in seconds: the guest
        kills the command (timed_out, exit code 137).

        `background=True` (a server, say) returns its Execution as soon as it runs instead; the
        box keeps it running until the box ends, whether or not the handle is kept. Its output
        waits, up to 8 MiB per stream, for `stdout()` / `stderr()`; a command that writes more
        without being read pauses, so send a chatty server's logs to a file."""
        execution = await self._started().exec(cmd, *args, env=env, cwd=cwd, user=user, timeout=timeout)
        if stdin:
            try:
                await execution.stdin().write(stdin)
            except InvalidStateError:
                pass  # the command ended without reading all of it, as with a closed pipe
        await execution.stdin().close()
        if background:
            self._background.append(execution)
            return execution
        return await execution.wait()

    async def info(self) -> BoxInfo:
        """The box's record (`.status`, ...)."""
        return await self._started().info()

    async def metrics(self) -> BoxMetrics:
        """The box's metrics (`.memory_usage_bytes`, ...)."""
        return await self._started().metrics()

    async def copy_in(self, host_path: HostPath, guest_path: GuestPath, overwrite: bool = False,
                      cancel: Optional[Canceller] = None) -> None:
        """Copies a host file or directory into the box (see Box.copy_in)."""
        await self._started().copy_in(host_path, guest_path, overwrite, cancel)

    async def copy_out(self, guest_path: GuestPath, host_path: HostPath, overwrite: bool = False,
                       cancel: Optional[Canceller] = None) -> None:
        """Copies a file or directory of the box to the host (see Box.copy_out)."""
        await self._started().copy_out(guest_path, host_path, overwrite, cancel)

    @property
    def files(self) -> Files:
        """The box's files (see Files)."""
        return self._started().files

    async def stop(self) -> None:
        """Stops the box (with auto_remove, the library then removes it)."""
        await self._started().stop()

    async def pause(self) -> None:
        """Pauses the box (see Box.pause)."""
        await self._started().pause()

    async def resume(self) -> None:
        """Resumes a paused or suspended box (see Box.resume)."""
        await self._started().resume()

    async def snapshot(self, name: str) -> SnapshotInfo:
        """Snapshots the box under `name` (see Box.snapshot)."""
        return await self._started().snapshot(name)

    async def suspend(self) -> None:
        """Suspends the box (see Box.suspend)."""
        await self._started().suspend()

    async def fork(self, count: int = 1) -> List[Box]:
        """Forks the box (see Box.fork): the new boxes are plain Boxes, removed by the caller."""
        return await self._started().fork(count)

    async def shutdown(self) -> None:
        """Ends the box: removes it (`auto_remove`, the default) or stops it, keeping its disk
        for a later `reuse_existing`. A no-op when not started."""
        box, self._box = self._box, None
        if box is None:
            return
        try:
            if self._options.auto_remove:
                await box.remove(force=True)
            else:
                await box.stop()
        except NotFoundError:
            pass  # removed meanwhile
        finally:
            self._background.clear()
            box.close()

    async def __aenter__(self) -> "SimpleBox":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()


class CodeBox(SimpleBox):
    """A box that runs Python code (default image python:slim): `await box.run(code)` in a fresh
    interpreter each time, or `await box.run_code(code)` in a context whose variables and imports
    last from call to call, with rich results (see docs/code-interpreter.md):

        async with boxlite.CodeBox(image="...") as box:
            await box.run_code("x = 6 * 7")
            execution = await box.run_code("x")     # execution.results[0].text == "42"
    """

    def __init__(self, image: str = "python:slim", **options: Any):
        super().__init__(image, **options)
        self._contexts = CodeContexts()

    async def run(self, code: str, timeout: Optional[float] = None) -> str:
        """Runs `code` with python3 and returns its stdout followed by its stderr."""
        result = await self.exec("python3", "-c", code, timeout=timeout)
        return result.stdout + result.stderr

    async def install_packages(self, *names: str) -> ExecResult:
        """pip-installs `names` in the box (needs pip in the image and the box's network to reach
        the index; pip's own config, e.g. /etc/pip.conf or PIP_INDEX_URL in the box's env, picks it).
        A distribution's "externally managed" guard is lifted: the box is the environment."""
        return await self.exec("python3", "-m", "pip", "install", "--quiet", *names, env=PIP_ENV)

    async def create_context(self, language: str = "python", cwd: Optional[str] = None,
                             env: Optional[Dict[str, str]] = None) -> CodeContext:
        """Starts a new context: an interpreter of its own, independent of every other context."""
        return await self._contexts.create(self._started(), language, cwd, env)

    def list_contexts(self) -> List[CodeContext]:
        """The contexts made by create_context() and not removed (not the default one)."""
        return self._contexts.list()

    async def remove_context(self, context: Union[CodeContext, str]) -> None:
        """Ends a context's interpreter; its variables are gone. NotFoundError if unknown."""
        await self._contexts.remove(context)

    async def run_code(self, code: str, context: Union[CodeContext, str, None] = None, timeout: Optional[float] = None,
                       on_stdout: Optional[Callable[[str], Any]] = None,
                       on_stderr: Optional[Callable[[str], Any]] = None) -> CodeExecution:
        """Runs a cell in `context` (default: the box's default context, started on first use
        and again if its interpreter died): CodeExecution(results, stdout, stderr, error,
        timed_out). Results are the last expression's value, display()ed values and matplotlib
        figures as MIME bundles. After `timeout` seconds the cell is interrupted
        (KeyboardInterrupt) and the context keeps its state."""
        return await self._contexts.run(self._started(), code, context, timeout, on_stdout, on_stderr)

    async def shutdown(self) -> None:
        await self._contexts.close()
        await super().shutdown()
