"""The C handles (runtime, box, exec) and the records the library returns, shared by the async
API (boxlite) and its sync twin (boxlite.sync_api). Nothing here blocks on an event loop."""

from __future__ import annotations

import codecs
import ctypes
import json
import os
from collections import deque
from ctypes import byref, c_bool, c_char_p, c_int, c_size_t, c_uint8, c_void_p
from dataclasses import dataclass, field, fields
from types import SimpleNamespace
from typing import Any, Deque, Dict, Generator, Generic, List, Optional, Sequence, Set, Tuple, Type, TypeVar, Union

from . import _native
from ._native import BOXLITE_STDERR, BOXLITE_STDOUT, check
from .errors import CODES, InvalidStateError, TimeoutError
from .options import BoxOptions, Env, Network, Options, env_dict, network_json

_READ_CHUNK = 64 * 1024
# Output held in Python per stream before this package stops taking more from the library, whose
# own buffer then fills and stalls the command (pipe semantics) until the stream is read.
_PAUSE_BYTES = 8 * 1024 * 1024

# BOXLITE_ERR_TIMEOUT: a read or wait with a timeout of 0 found nothing yet.
_NOTHING_YET = [i for i, c in enumerate(CODES) if c and c[1] is TimeoutError][0]

T = TypeVar("T")
B = TypeVar("B")  # the box class of the API (Box or SyncBox)


def _record(cls: Type[T], values: Dict[str, Any]) -> T:
    """A record from a JSON object, keeping the fields `cls` knows (the library may add more)."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in values.items() if k in names})


@dataclass(frozen=True)
class VolumeInfo:
    """A shared host directory: host_path (canonical), guest_path, read_only."""

    host_path: str
    guest_path: str
    read_only: bool


@dataclass(frozen=True)
class PortInfo:
    """A published port: host_ip, host_port, guest_port, protocol ("tcp" or "udp")."""

    host_ip: str
    host_port: int
    guest_port: int
    protocol: str


@dataclass(frozen=True)
class BoxInfo:
    """A box's record. `status`: "created", "starting", "running", "paused", "suspended", "stopping",
    "stopped" or "failed". Times are unix milliseconds. `network`: the policy in force ("default", "none",
    {"allow": [...]} or {"deny": [...]}); `ports`: as bound while the box runs (a host port 0
    replaced by the one picked), as asked otherwise. `reason`: why it stopped or failed.
    `volumes`: the shared host directories; `disk_size_gb`: as asked (None: the image's size
    plus 2 GiB)."""

    id: str
    name: Optional[str]
    image: str
    status: str
    pid: Optional[int]
    cpus: int
    memory_mib: int
    created_at: int
    started_at: Optional[int]
    detach: bool
    auto_remove: bool
    reason: Optional[str]
    network: Union[str, Dict[str, List[str]]]
    ports: List[PortInfo] = field(default_factory=list)
    volumes: List[VolumeInfo] = field(default_factory=list)
    disk_size_gb: Optional[int] = None

    @staticmethod
    def _from(values: Dict[str, Any]) -> "BoxInfo":
        values = dict(
            values,
            ports=[_record(PortInfo, p) for p in values.get("ports", [])],
            volumes=[_record(VolumeInfo, v) for v in values.get("volumes", [])],
        )
        return _record(BoxInfo, values)


@dataclass(frozen=True)
class SnapshotInfo:
    """A saved memory snapshot: `name`, `box_id` and `box_name` (the box it was taken of, its name
    then or None), `image`, `created_at` (unix milliseconds), `cpus` and `memory_mib` (of that box,
    and of every box restored from it), `memory_bytes` (the memory file), `disk_bytes` (the frozen
    disk layer: the box's writes since its image or last snapshot), `paused_ms` (how long its vCPUs
    stood still while it was taken)."""

    name: str
    box_id: str
    box_name: Optional[str]
    image: str
    created_at: int
    cpus: int
    memory_mib: int
    memory_bytes: int
    disk_bytes: int
    paused_ms: int

    @staticmethod
    def _from(values: Dict[str, Any]) -> "SnapshotInfo":
        return _record(SnapshotInfo, values)


@dataclass(frozen=True)
class TemplateInfo:
    """A warm start template (see Boxlite.warmup): `path` (its directory in the home), the shape of
    the boxes it serves (`cpus`, `memory_mib`, `network`: boxes with a network, or created with
    network=False), `built` (True if this call built it, False if it was there already),
    `build_ms` (how long building it took, then or earlier), `disk_bytes` (what it takes on disk;
    its RAM file is sparse)."""

    path: str
    cpus: int
    memory_mib: int
    network: bool
    built: bool
    build_ms: int
    disk_bytes: int

    @staticmethod
    def _from(values: Dict[str, Any]) -> "TemplateInfo":
        return _record(TemplateInfo, values)


@dataclass(frozen=True)
class BoxMetrics:
    """A box's metrics since it last started (zeros and None when it is not running):
    `memory_usage_bytes` (the VM process's resident memory on the host), `cpu_percent` (of one
    core, since the previous sample), `commands_executed`, `exec_errors`, `boot_duration_ms`,
    `vm_pid`, `network_bytes_sent` / `network_bytes_received` (payload over TCP and UDP, DNS
    excluded), `network_tcp_connections`."""

    memory_usage_bytes: int
    cpu_percent: float
    commands_executed: int
    exec_errors: int
    boot_duration_ms: Optional[int]
    vm_pid: Optional[int]
    network_bytes_sent: int = 0
    network_bytes_received: int = 0
    network_tcp_connections: int = 0

    @staticmethod
    def _from(values: Dict[str, Any]) -> "BoxMetrics":
        return _record(BoxMetrics, dict(values, memory_usage_bytes=values.get("memory_bytes", 0)))


@dataclass(frozen=True)
class RuntimeMetrics:
    """The runtime's counters: `active_boxes` (boxes of the home running now, from any process),
    and, since this runtime opened, `boxes_created_total`, `boxes_failed_total`,
    `total_commands_executed`, `total_exec_errors` (commands that could not start).

    Both `runtime.metrics().active_boxes` and `(await runtime.metrics()).active_boxes` work: the
    figures are read at once (no VM is asked), and awaiting the record gives it back."""

    active_boxes: int
    boxes_created_total: int
    boxes_failed_total: int
    total_commands_executed: int
    total_exec_errors: int

    @staticmethod
    def _from(values: Dict[str, Any]) -> "RuntimeMetrics":
        return _record(RuntimeMetrics, dict(values, active_boxes=values.get("num_running_boxes", 0)))

    def __await__(self) -> Generator[None, None, "RuntimeMetrics"]:
        return self
        yield  # makes this a generator: awaiting returns at once


@dataclass(frozen=True)
class ExecResult:
    """How a command ended and what it printed, decoded as UTF-8 (undecodable bytes replaced).
    A non-zero exit is a result, not an error.

    `exit_code`: the exit code, or 128 + the signal number when a signal ended the command.
    `error_message`: None when the command exited by itself; otherwise why it did not (its
    timeout passed, or a signal killed it). `signal`: the ending signal, or 0. `timed_out`: the
    command was killed because its `timeout` passed."""

    exit_code: int
    stdout: str
    stderr: str
    error_message: Optional[str] = None
    signal: int = 0
    timed_out: bool = False


def _json_result(call: Any, *args: Any) -> Any:
    """Calls a C function whose last argument receives a JSON string, and returns it decoded
    (the string freed with boxlite_string_free)."""
    out = c_void_p()
    check(call(*args, byref(out)))
    try:
        return json.loads(ctypes.string_at(out))
    finally:
        _native.lib().boxlite_string_free(out)


class RuntimeHandle:
    """A boxlite_runtime: its calls block the calling thread."""

    def __init__(self, options: Optional[Options]):
        self._ptr = c_void_p()  # first, so close() works even if loading the library fails
        self._lib = _native.lib()
        check(self._lib.boxlite_runtime_new((options or Options())._json(), byref(self._ptr)))

    def handle(self) -> c_void_p:
        if not self._ptr:
            raise InvalidStateError("INVALID_STATE", "the runtime is closed")
        return self._ptr

    def create(self, options: BoxOptions, name: Optional[str]) -> "BoxHandle":
        config = options._json(name)
        ptr = c_void_p()
        check(self._lib.boxlite_box_create(self.handle(), options.image.encode(), config, byref(ptr)))
        return BoxHandle(ptr)

    def get(self, id_or_name: str) -> "BoxHandle":
        ptr = c_void_p()
        check(self._lib.boxlite_box_get(self.handle(), id_or_name.encode(), byref(ptr)))
        return BoxHandle(ptr)

    def list_info(self) -> List[BoxInfo]:
        return [BoxInfo._from(b) for b in _json_result(self._lib.boxlite_boxes_list, self.handle())]

    def metrics(self) -> RuntimeMetrics:
        return RuntimeMetrics._from(_json_result(self._lib.boxlite_runtime_metrics, self.handle()))

    def restore(self, snapshot: str, name: Optional[str], detach: bool, auto_remove: bool,
                auto_stop_ms: Optional[int]) -> "BoxHandle":
        options = json.dumps({"name": name, "detach": detach, "auto_remove": auto_remove, "auto_stop_ms": auto_stop_ms}).encode()
        ptr = c_void_p()
        check(self._lib.boxlite_runtime_restore(self.handle(), snapshot.encode(), options, byref(ptr)))
        return BoxHandle(ptr)

    def snapshots(self) -> List[SnapshotInfo]:
        return [SnapshotInfo._from(s) for s in _json_result(self._lib.boxlite_runtime_snapshots, self.handle())]

    def remove_snapshot(self, name: str) -> None:
        check(self._lib.boxlite_runtime_remove_snapshot(self.handle(), name.encode()))

    def warmup(self, cpus: int, memory_mib: int, network: Network) -> TemplateInfo:
        # A template serves boxes with a network (whatever its policy) or without one.
        with_network = network_json(network) != "none"
        options = json.dumps({"cpus": cpus, "memory_mib": memory_mib, "network": with_network}).encode()
        return TemplateInfo._from(_json_result(self._lib.boxlite_runtime_warmup, self.handle(), options))

    def pull(self, reference: str, cancel: Optional["Canceller"]) -> None:
        if cancel is not None and not isinstance(cancel, Canceller):
            raise TypeError(f"cancel must be a boxlite.Canceller or None, not {type(cancel).__name__}")
        canceller = None if cancel is None else cancel._ptr
        check(self._lib.boxlite_runtime_pull(self.handle(), reference.encode(), canceller))

    def images(self) -> List[SimpleNamespace]:
        return [SimpleNamespace(**i) for i in _json_result(self._lib.boxlite_images_list, self.handle())]

    def remove_image(self, reference: str, force: bool) -> SimpleNamespace:
        return SimpleNamespace(**_json_result(self._lib.boxlite_image_remove, self.handle(), reference.encode(), force))

    def prune(self, boxes: bool, all: bool) -> SimpleNamespace:
        options = json.dumps({"boxes": boxes, "all": all}).encode()
        return SimpleNamespace(**_json_result(self._lib.boxlite_images_prune, self.handle(), options))

    def close(self) -> None:
        if self._ptr:
            self._lib.boxlite_runtime_free(self._ptr)
            self._ptr = c_void_p()

    def __del__(self) -> None:
        self.close()


class Canceller:
    """Aborts the calls it is given to (`pull`): after cancel(), from any thread, they raise
    AbortedError. Cancelling is permanent: later calls given this canceller are aborted at once,
    so make a new one per operation."""

    def __init__(self) -> None:
        self._ptr = c_void_p()  # first, so __del__ works even if loading the library fails
        self._lib = _native.lib()
        check(self._lib.boxlite_canceller_new(byref(self._ptr)))

    def cancel(self) -> None:
        """Aborts every call given this canceller; a no-op when called again. Any thread."""
        check(self._lib.boxlite_canceller_cancel(self._ptr))

    def __del__(self) -> None:
        if self._ptr:
            self._lib.boxlite_canceller_free(self._ptr)
            self._ptr = c_void_p()


class BoxHandle:
    """A boxlite_box: its calls block the calling thread."""

    def __init__(self, ptr: c_void_p):
        self._lib = _native.lib()
        self._ptr = ptr
        self.id: str = self._lib.boxlite_box_id(ptr).decode()

    def handle(self) -> c_void_p:
        if not self._ptr:
            raise InvalidStateError("INVALID_STATE", f"the handle of box {self.id} is closed")
        return self._ptr

    def start(self) -> None:
        check(self._lib.boxlite_box_start(self.handle()))

    def stop(self) -> None:
        check(self._lib.boxlite_box_stop(self.handle()))

    def pause(self) -> None:
        check(self._lib.boxlite_box_pause(self.handle()))

    def resume(self) -> None:
        check(self._lib.boxlite_box_resume(self.handle()))

    def snapshot(self, name: str) -> SnapshotInfo:
        return SnapshotInfo._from(_json_result(self._lib.boxlite_box_snapshot, self.handle(), name.encode()))

    def suspend(self) -> None:
        check(self._lib.boxlite_box_suspend(self.handle()))

    def fork(self, count: int) -> List["BoxHandle"]:
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 64:
            raise ValueError(f"fork count must be an integer from 1 to 64, not {count!r}")
        ptrs = (c_void_p * count)()
        check(self._lib.boxlite_box_fork(self.handle(), count, ptrs))
        return [BoxHandle(c_void_p(p)) for p in ptrs]

    def remove(self, force: bool) -> None:
        check(self._lib.boxlite_box_remove(self.handle(), force))

    def info(self) -> BoxInfo:
        return BoxInfo._from(_json_result(self._lib.boxlite_box_info, self.handle()))

    def metrics(self) -> BoxMetrics:
        return BoxMetrics._from(_json_result(self._lib.boxlite_box_metrics, self.handle()))

    def set_network(self, network: Network) -> None:
        check(self._lib.boxlite_box_set_network(self.handle(), json.dumps(network_json(network)).encode()))

    def exec(self, argv: Sequence[str], env: Env, cwd: Optional[str], user: Optional[str],
             timeout: Optional[float], tty: bool) -> "ExecHandle":
        encoded = [a.encode() for a in argv]
        timeout_ms = None if timeout is None else max(1, int(timeout * 1000))
        values = {"env": env_dict(env) or None, "cwd": cwd, "user": user, "timeout_ms": timeout_ms, "tty": tty or None}
        options = json.dumps({k: v for k, v in values.items() if v is not None}).encode()
        ptr = c_void_p()
        check(self._lib.boxlite_box_exec(self.handle(), (c_char_p * len(encoded))(*encoded), len(encoded), options, byref(ptr)))
        return ExecHandle(ptr, timeout)

    def close(self) -> None:
        if self._ptr:
            self._lib.boxlite_box_free(self._ptr)
            self._ptr = c_void_p()

    def __del__(self) -> None:
        self.close()


def argv_of(cmd: str, args: Sequence[Any]) -> List[str]:
    """The command line of exec(cmd, *args): args given as one list (the reference API's
    exec(cmd, [args])) or one by one."""
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        args = args[0]
    return [cmd, *(str(a) for a in args)]


class _Stream:
    """One output stream as taken from the library: raw chunks not yet consumed, and the end."""

    def __init__(self) -> None:
        self.chunks: Deque[bytes] = deque()
        self.buffered = 0
        self.ended = False
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def take(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        return data


class ExecHandle:
    """A boxlite_exec read without blocking: `pump()` takes whatever the library has (after its
    notify fd, `fd`, became readable); the sync API waits for the fd with select, the async one
    with the event loop's add_reader."""

    def __init__(self, ptr: c_void_p, timeout: Optional[float]):
        self._lib = _native.lib()
        self._ptr = ptr
        self.timeout = timeout
        fd = c_int()
        check(self._lib.boxlite_exec_notify_fd(ptr, byref(fd)))
        self.fd = fd.value
        self.streams = {BOXLITE_STDOUT: _Stream(), BOXLITE_STDERR: _Stream()}
        self.result: Optional[Tuple[int, int, bool]] = None  # (exit_code, signal, timed_out) once ended
        self._buf = (c_uint8 * _READ_CHUNK)()

    def done(self) -> bool:
        return self.result is not None and all(s.ended for s in self.streams.values())

    def pump(self) -> None:
        """Drains the notify fd, then takes the output buffered in the library and the status."""
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass
        n = c_size_t()
        for stream, state in self.streams.items():
            while not state.ended and state.buffered < _PAUSE_BYTES:
                result = self._lib.boxlite_exec_read(self._ptr, stream, self._buf, _READ_CHUNK, 0, byref(n))
                if result == _NOTHING_YET:
                    break
                check(result)
                if n.value == 0:
                    state.ended = True
                else:
                    state.chunks.append(ctypes.string_at(self._buf, n.value))
                    state.buffered += n.value
        if self.result is None:
            code, signal, timed_out = c_int(), c_int(), c_bool()
            result = self._lib.boxlite_exec_wait(self._ptr, 0, byref(code), byref(signal), byref(timed_out))
            if result != _NOTHING_YET:
                check(result)
                self.result = (code.value, signal.value, timed_out.value)

    def exec_result(self, stdout: str, stderr: str) -> ExecResult:
        assert self.result is not None
        code, signal, timed_out = self.result
        message = None
        if timed_out:
            message = f"the command was killed after its timeout of {self.timeout} s"
        elif signal:
            message = f"the command was killed by signal {signal}"
        return ExecResult(code, stdout, stderr, message, signal, timed_out)

    def write_stdin(self, data: bytes) -> None:
        buf = (c_uint8 * len(data)).from_buffer_copy(data)
        check(self._lib.boxlite_exec_write_stdin(self._ptr, buf, len(data)))

    def close_stdin(self) -> None:
        check(self._lib.boxlite_exec_close_stdin(self._ptr))

    def signal(self, signal: int) -> None:
        check(self._lib.boxlite_exec_signal(self._ptr, signal))

    def resize_tty(self, rows: int, cols: int) -> None:
        check(self._lib.boxlite_exec_resize_tty(self._ptr, rows, cols))

    def close(self) -> None:
        if self._ptr:
            self._lib.boxlite_exec_free(self._ptr)
            self._ptr = c_void_p()

    def __del__(self) -> None:
        self.close()


def text_chunks(state: _Stream, final: bool) -> str:
    """The stream's consumed bytes decoded, keeping a split UTF-8 sequence for the next call."""
    return state.decoder.decode(state.take(), final)


def split_lines(pending: str, text: str) -> Tuple[List[str], str]:
    """(complete lines, the rest) of pending + text; each line keeps its "\\n"."""
    data = pending + text
    lines = data.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        return lines[:-1], lines[-1]
    return lines, ""


class ExecState:
    """What an Execution (sync or async) knows of its command: the output of the streams no
    iterator took, collected as text for wait()'s result, and the partial lines of the others.
    The caller supplies the waiting: `step()` when `pump()` brought nothing new."""

    def __init__(self, handle: ExecHandle):
        self.handle = handle
        self.taken: Set[int] = set()
        self.collected: Dict[int, List[str]] = {BOXLITE_STDOUT: [], BOXLITE_STDERR: []}

    def pump(self) -> bool:
        """Takes what the library has; True if anything changed."""
        h = self.handle
        before = (h.result, *((s.buffered, s.ended) for s in h.streams.values()))
        h.pump()
        for stream, state in h.streams.items():
            if stream not in self.taken and (state.chunks or state.ended):
                self.collected[stream].append(text_chunks(state, final=state.ended))
        return before != (h.result, *((s.buffered, s.ended) for s in h.streams.values()))

    def take(self, stream: int) -> None:
        if stream in self.taken:
            raise InvalidStateError("INVALID_STATE", "this output stream is already being read: iterate it once")
        self.taken.add(stream)

    def result(self) -> ExecResult:
        out, err = ("".join(self.collected[s]) for s in (BOXLITE_STDOUT, BOXLITE_STDERR))
        return self.handle.exec_result(out, err)


class SimpleBoxBase(Generic[B]):
    """What SimpleBox and SyncSimpleBox share: their options and the box once started."""

    _how_to_start = ""

    def __init__(self, image: str = "python:slim", *, name: Optional[str] = None, runtime: Any = None,
                 reuse_existing: bool = False, auto_remove: bool = True, **options: Any):
        self._options = BoxOptions(image=image, auto_remove=auto_remove, **options)
        self._name = name
        self._runtime = runtime
        self._reuse = reuse_existing
        self._box: Optional[B] = None
        # Executions started with background=True: held here so that dropping the caller's
        # handle never ends the command (the box's end does).
        self._background: List[Any] = []
        self.created = False
        """True if start() made a new box, False if it reused one (`reuse_existing`)."""

    @property
    def id(self) -> str:
        """The box's id (after start())."""
        box_id: str = self._started().id  # type: ignore[attr-defined]
        return box_id

    def _started(self) -> B:
        if self._box is None:
            raise InvalidStateError("INVALID_STATE", f"the box is not started: {self._how_to_start}")
        return self._box
