"""Runtime, Box and ExecResult over the C handles."""

from __future__ import annotations

import ctypes
import json
import threading
from ctypes import byref, c_bool, c_char_p, c_int, c_size_t, c_uint8, c_void_p
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Mapping, Optional, Sequence, Union

from . import _native
from ._native import BOXLITE_STDERR, BOXLITE_STDOUT, check
from .errors import InvalidArgumentError, InvalidStateError, NotFoundError

_READ_CHUNK = 64 * 1024

Network = Union[bool, str, Mapping[str, Sequence[str]], None]
"""A box's network: False or "none" (no NIC, only loopback); True, None or "default" (outbound to
everything); {"allow": [...]} or {"deny": [...]} (host names, "*.name" wildcards, IP addresses,
CIDRs)."""

Port = Union[tuple, Mapping[str, Any]]
"""A published port: (host_port, guest_port), (host_port, guest_port, "tcp"|"udp"), or a dict
with guest_port and any of host_port (0 or absent: a free one is picked), protocol ("tcp"),
host_ip ("127.0.0.1")."""

_PORT_KEYS = ("host_port", "guest_port", "protocol", "host_ip")


def _options(**values: Any) -> bytes:
    """An options JSON object with the values that were given."""
    return json.dumps({k: v for k, v in values.items() if v is not None}).encode()


def _network(network: Network) -> Union[str, dict]:
    """The C ABI's "network" value for one of the Python forms; InvalidArgumentError naming it
    otherwise. The entries themselves are checked by the library."""
    if network is None or network is True or network == "default":
        return "default"
    if network is False or network == "none":
        return "none"
    if isinstance(network, Mapping) and len(network) == 1:
        ((kind, entries),) = network.items()
        if kind in ("allow", "deny") and isinstance(entries, (list, tuple)) and all(isinstance(e, str) for e in entries):
            return {kind: list(entries)}
    raise InvalidArgumentError(
        "INVALID_ARGUMENT",
        f"network {network!r} is not False/'none', True/'default', {{'allow': [...]}} or {{'deny': [...]}} "
        "(lists of host names, *.name wildcards, IP addresses or CIDRs)",
    )


def _ports(ports: Optional[Sequence[Port]]) -> list[dict]:
    """The C ABI's "ports" value; InvalidArgumentError naming an entry of no known form. The
    values (numbers, protocol, address, ports in use) are checked by the library, which names
    the entry too."""
    if ports is None:
        return []
    if isinstance(ports, (str, bytes, Mapping)) or not isinstance(ports, Sequence):
        raise InvalidArgumentError("INVALID_ARGUMENT", f"ports {ports!r} is not a list of ports")
    specs = []
    for entry in ports:
        if isinstance(entry, tuple) and len(entry) in (2, 3):
            specs.append(dict(zip(_PORT_KEYS, entry)))
        elif isinstance(entry, Mapping) and set(entry) <= set(_PORT_KEYS) and "guest_port" in entry:
            specs.append(dict(entry))
        else:
            raise InvalidArgumentError(
                "INVALID_ARGUMENT",
                f"port {entry!r} is not (host_port, guest_port), (host_port, guest_port, 'tcp'|'udp') "
                "or a dict with guest_port and any of host_port, protocol, host_ip",
            )
    return specs


def _json_result(lib: ctypes.CDLL, call: Any, *args: Any) -> Any:
    """Calls a C function whose last argument receives a JSON string, and returns it decoded
    (the string freed with boxlite_string_free)."""
    out = c_void_p()
    check(call(*args, byref(out)))
    try:
        return json.loads(ctypes.string_at(out.value))
    finally:
        lib.boxlite_string_free(out)


@dataclass(frozen=True)
class ExecResult:
    """How a command ended and everything it printed. A non-zero exit is a result, not an error."""

    exit_code: int
    """The exit code, or 128 + the signal number when a signal ended the command."""
    stdout: bytes
    stderr: bytes
    signal: int = 0
    """The signal that ended the command, or 0."""
    timed_out: bool = False
    """The command was killed because its `timeout` passed."""

    @property
    def text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")


class Runtime:
    """A BoxLite runtime over one home directory. Use it as a context manager, or call close().

    `home`: state directory (default $BOXLITE_HOME, else ~/.boxlite). `registries`: dicts with
    `host` and optionally `insecure` (plain http), `username`, `password`, searched in order for
    unqualified image names; without them, the comma-separated host[:port] lists in
    $BOXLITE_REGISTRIES and $BOXLITE_INSECURE_REGISTRIES (plain http), else `registries` and
    `insecure_registries` in the home's config.json. `accel`: "auto" (default), "kvm" or "tcg".
    """

    def __init__(
        self,
        home: Optional[str] = None,
        registries: Optional[Sequence[Mapping[str, Any]]] = None,
        accel: Optional[str] = None,
    ):
        self._ptr = c_void_p()  # first, so close() works even if loading the library fails
        self._lib = _native.lib()
        options = _options(home=None if home is None else str(home), registries=registries, accel=accel)
        check(self._lib.boxlite_runtime_new(options, byref(self._ptr)))

    def pull(self, reference: str, cancel: Optional["Canceller"] = None) -> None:
        """Pulls `reference` (e.g. "busybox:latest", "127.0.0.1:5000/python:slim",
        "oci:/path/to/layout:tag") into the home and builds its base disk, so that create() then
        needs no network. Blocks until done; other threads keep running meanwhile.

        `cancel`: a Canceller; calling its cancel() from another thread (e.g. a
        `threading.Timer`) makes this raise AbortedError soon after, with the partial download
        deleted and the image not recorded. ImageError / RegistryError when the image cannot be
        pulled, InvalidArgumentError for a malformed reference.
        """
        if cancel is not None and not isinstance(cancel, Canceller):
            raise TypeError(f"cancel must be a boxlite.Canceller or None, not {type(cancel).__name__}")
        canceller = None if cancel is None else cancel._ptr
        check(self._lib.boxlite_runtime_pull(self._handle(), reference.encode(), canceller))

    def create(
        self,
        image: str,
        name: Optional[str] = None,
        cpus: Optional[int] = None,
        memory_mib: Optional[int] = None,
        env: Optional[Mapping[str, str]] = None,
        working_dir: Optional[str] = None,
        user: Optional[str] = None,
        detach: bool = False,
        auto_stop_ms: Optional[int] = None,
        auto_remove: bool = False,
        ready_timeout_ms: Optional[int] = None,
        network: Network = None,
        ports: Optional[Sequence[Port]] = None,
    ) -> "Box":
        """Creates a box from `image` (pulled if needed). It boots on start() or its first exec.
        Use it as a context manager to stop and remove it at the end.

        `detach`: the box keeps running after this process ends (until stopped, removed or idle
        for `auto_stop_ms`); without it, it stops cleanly when this process ends. `auto_stop_ms`:
        stop after this many milliseconds with no command running. `auto_remove`: remove the box
        (record and disk) once it has stopped. `ready_timeout_ms`: how long the guest may take to
        answer once its VM starts (default 30000).

        `network`: False or "none" (no NIC, only loopback), True / None / "default" (outbound to
        everything; the host's 127.0.0.1 is host.docker.internal), {"allow": [...]} or
        {"deny": [...]} (host names, "*.name" wildcards, IP addresses, CIDRs; enforced on the
        host). `ports`: published ports, e.g. [(8080, 80), (0, 53, "udp"), {"guest_port": 443,
        "host_ip": "0.0.0.0"}]; host port 0 picks a free one, which info().ports reports while
        the box runs. A bad network, port or a host port in use raises InvalidArgumentError
        naming it, before anything is pulled."""
        options = _options(
            name=name, cpus=cpus, memory_mib=memory_mib, env=env, working_dir=working_dir, user=user,
            detach=detach or None, auto_stop_ms=auto_stop_ms, auto_remove=auto_remove or None,
            ready_timeout_ms=ready_timeout_ms, network=None if network is None else _network(network),
            ports=_ports(ports) or None,
        )
        ptr = c_void_p()
        check(self._lib.boxlite_box_create(self._handle(), image.encode(), options, byref(ptr)))
        return Box(self._lib, ptr)

    def images(self) -> list[SimpleNamespace]:
        """The images pulled into the home, sorted by reference: reference, digest, config_digest,
        layers, size_bytes and pulled_at (unix seconds)."""
        return [SimpleNamespace(**i) for i in _json_result(self._lib, self._lib.boxlite_images_list, self._handle())]

    def remove_image(self, reference: str, force: bool = False) -> SimpleNamespace:
        """Removes an image: its reference, then its blobs and base disk unless another image or a
        box still needs them. InvalidStateError (naming the boxes) if boxes use its base disk,
        unless `force`: then the disk is kept until they are gone. NotFoundError if the home has
        no such image. Returns what was removed: boxes, images, blobs, base_disks, bytes_freed."""
        removed = _json_result(self._lib, self._lib.boxlite_image_remove, self._handle(), reference.encode(), force)
        return SimpleNamespace(**removed)

    def prune(self, boxes: bool = False, all: bool = False) -> SimpleNamespace:
        """Deletes the blobs and base disks that no image references and no box uses; `boxes`:
        first remove every box that is not running; `all`: also remove images no box uses.
        Returns what was removed: boxes (ids), images, blobs, base_disks, bytes_freed."""
        options = _options(boxes=boxes or None, all=all or None)
        return SimpleNamespace(**_json_result(self._lib, self._lib.boxlite_images_prune, self._handle(), options))

    def get(self, id_or_name: str) -> "Box":
        """An existing box by id or name; NotFoundError if there is none."""
        ptr = c_void_p()
        check(self._lib.boxlite_box_get(self._handle(), id_or_name.encode(), byref(ptr)))
        return Box(self._lib, ptr)

    def close(self) -> None:
        """Frees the runtime. Boxes made from it stay usable until closed; the boxes it booted that
        still run when the last of them is closed are stopped, except detached ones."""
        if self._ptr:
            self._lib.boxlite_runtime_free(self._ptr)
            self._ptr = c_void_p()

    def _handle(self) -> c_void_p:
        if not self._ptr:
            raise InvalidStateError("INVALID_STATE", "the runtime is closed")
        return self._ptr

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class Canceller:
    """Aborts the calls it is given to (Runtime.pull): after cancel(), from any thread, they raise
    AbortedError. Cancelling is permanent: later calls given this canceller are aborted at once,
    so make a new one per operation. Freed when garbage collected (a call in progress keeps it
    alive)."""

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


class Box:
    """One box. As a context manager, it is stopped and removed on exit."""

    def __init__(self, lib: ctypes.CDLL, ptr: c_void_p):
        self._lib = lib
        self._ptr = ptr
        self.id: str = lib.boxlite_box_id(ptr).decode()

    def start(self) -> None:
        """Boots the VM and waits for the guest (a no-op if it runs)."""
        check(self._lib.boxlite_box_start(self._handle()))

    def stop(self) -> None:
        """Stops the VM; the disk is kept."""
        check(self._lib.boxlite_box_stop(self._handle()))

    def remove(self, force: bool = False) -> None:
        """Deletes the box and its disk. A running box needs `force` (it is stopped first)."""
        check(self._lib.boxlite_box_remove(self._handle(), force))

    def info(self) -> SimpleNamespace:
        """The box's record: id, name, image, status ("created", "starting", "running", "stopping",
        "stopped" or "failed"), pid, cpus, memory_mib, created_at, started_at (unix ms), detach,
        auto_remove, reason, network ("default", "none", {"allow": [...]} or {"deny": [...]}: the
        policy in force) and ports (each with host_ip, host_port, guest_port, protocol: while
        the box runs, as bound, a host port 0 replaced by the one picked; otherwise as asked).
        The box may have been started by another process."""
        info = self._json(self._lib.boxlite_box_info)
        info.ports = [SimpleNamespace(**p) for p in info.ports]
        return info

    def metrics(self) -> SimpleNamespace:
        """cpu_percent, memory_bytes, commands_executed, exec_errors, boot_duration_ms, vm_pid,
        network_bytes_sent, network_bytes_received (payload bytes over TCP and UDP, DNS excluded)
        and network_tcp_connections, since the box last started (zeros and None when the box is
        not running)."""
        return self._json(self._lib.boxlite_box_metrics)

    def set_network(self, network: Network) -> None:
        """Replaces the box's egress policy: on the running box at once (open connections stay),
        and for its later starts. `network`: True / None / "default" (everything), {"allow":
        [...]} or {"deny": [...]}. A network cannot be switched on or off after create: False /
        "none", or any policy for a box created without a network, raises InvalidArgumentError,
        as a bad entry does (naming it). Never boots the box."""
        check(self._lib.boxlite_box_set_network(self._handle(), json.dumps(_network(network)).encode()))

    def _json(self, call: Any) -> SimpleNamespace:
        return SimpleNamespace(**_json_result(self._lib, call, self._handle()))

    def exec(
        self,
        cmd: str,
        *args: str,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[str] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        stdin: Union[bytes, str, None] = None,
        tty: bool = False,
    ) -> ExecResult:
        """Runs `cmd` with `args` in the box (booting it if needed) and waits for it to end.

        `stdin` is written to the command, then closed (no stdin: it reads end of file at once).
        `timeout` in seconds is enforced in the guest: the command is killed and the result says
        `timed_out`. A command that cannot start (not found, bad cwd or user) raises
        InvalidArgumentError.
        """
        argv = [a.encode() for a in (cmd, *args)]
        timeout_ms = None if timeout is None else max(1, int(timeout * 1000))
        options = _options(env=env, cwd=cwd, user=user, timeout_ms=timeout_ms, tty=tty or None)
        exec_ptr = c_void_p()
        check(
            self._lib.boxlite_box_exec(
                self._handle(), (c_char_p * len(argv))(*argv), len(argv), options, byref(exec_ptr)
            )
        )
        try:
            return self._complete(exec_ptr, stdin.encode() if isinstance(stdin, str) else stdin)
        finally:
            self._lib.boxlite_exec_free(exec_ptr)

    def _complete(self, exec_ptr: c_void_p, stdin: Optional[bytes]) -> ExecResult:
        # One thread per output stream, so neither stream's buffer can fill while the other is read.
        readers = [_StreamReader(self._lib, exec_ptr, stream) for stream in (BOXLITE_STDOUT, BOXLITE_STDERR)]
        for reader in readers:
            reader.start()
        try:
            self._feed(exec_ptr, stdin)
        finally:
            for reader in readers:
                reader.join()
        for reader in readers:
            if reader.error:
                raise reader.error
        code, signal, timed_out = c_int(), c_int(), c_bool()
        check(self._lib.boxlite_exec_wait(exec_ptr, -1, byref(code), byref(signal), byref(timed_out)))
        stdout, stderr = (b"".join(reader.chunks) for reader in readers)
        return ExecResult(code.value, stdout, stderr, signal.value, timed_out.value)

    def _feed(self, exec_ptr: c_void_p, stdin: Optional[bytes]) -> None:
        """Writes `stdin` to the command, then closes its stdin whatever happened."""
        try:
            if stdin:
                data = (c_uint8 * len(stdin)).from_buffer_copy(stdin)
                check(self._lib.boxlite_exec_write_stdin(exec_ptr, data, len(stdin)))
        except InvalidStateError:
            pass  # the command ended without reading all of it, as with a closed pipe
        finally:
            check(self._lib.boxlite_exec_close_stdin(exec_ptr))

    def close(self) -> None:
        """Frees this handle; the box itself is untouched."""
        if self._ptr:
            self._lib.boxlite_box_free(self._ptr)
            self._ptr = c_void_p()

    def _handle(self) -> c_void_p:
        if not self._ptr:
            raise InvalidStateError("INVALID_STATE", f"the handle of box {self.id} is closed")
        return self._ptr

    def __enter__(self) -> "Box":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.remove(force=True)
        except NotFoundError:
            pass  # already removed
        finally:
            self.close()

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Box(id={self.id!r})"


class _StreamReader(threading.Thread):
    """Reads one output stream of an exec to its end."""

    def __init__(self, lib: ctypes.CDLL, exec_ptr: c_void_p, stream: int):
        super().__init__(daemon=True)
        self._lib = lib
        self._exec = exec_ptr
        self._stream = stream
        self.chunks: list[bytes] = []
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        buf = (c_uint8 * _READ_CHUNK)()
        n = c_size_t()
        try:
            while True:
                check(self._lib.boxlite_exec_read(self._exec, self._stream, buf, _READ_CHUNK, -1, byref(n)))
                if n.value == 0:
                    return
                self.chunks.append(ctypes.string_at(buf, n.value))
        except BaseException as e:  # handed to the caller's thread
            self.error = e
