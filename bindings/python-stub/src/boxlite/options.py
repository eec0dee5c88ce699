"""Options of a runtime (`Options`) and of a box (`BoxOptions`, `SecurityOptions`), as plain data.

They are checked when used (`Boxlite(...)`, `create(...)`): a shape this package does not know
raises InvalidArgumentError naming the value; the library checks the values themselves (ranges,
names, ports in use) and names them too.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import InvalidArgumentError

Network = Union[bool, str, Mapping[str, Sequence[str]], None]
"""A box's network: False or "none" (no NIC, only loopback); True, None or "default" (outbound to
everything); {"allow": [...]} or {"deny": [...]} (host names, "*.name" wildcards, IP addresses,
CIDRs)."""

Port = Union[Tuple[Any, ...], Mapping[str, Any]]
"""A published port: (host_port, guest_port), (host_port, guest_port, "tcp"|"udp"), or a dict
with guest_port and any of host_port (0 or absent: a free one is picked), protocol ("tcp"),
host_ip ("127.0.0.1")."""

Volume = Union[Tuple[Any, ...], Mapping[str, Any]]
"""A host directory shared live into the box: (host_path, guest_path), (host_path, guest_path,
"ro"|"rw"), (host_path, guest_path, read_only_bool), or a dict with host_path, guest_path and
optionally read_only. Read-only is enforced on the host."""

Env = Union[Mapping[str, str], Sequence[Tuple[str, str]], None]
"""Environment variables: a dict, or a list of (name, value) pairs."""

Registry = Union[str, Mapping[str, Any]]
"""An image registry: "host[:port]" (https), "http://host[:port]" (plain http), or a dict with
host and any of insecure (plain http), username, password."""

_PORT_KEYS = ("host_port", "guest_port", "protocol", "host_ip")
_VOLUME_KEYS = {"host_path", "guest_path", "read_only"}
_REGISTRY_KEYS = {"host", "insecure", "username", "password"}


def _invalid(message: str) -> InvalidArgumentError:
    return InvalidArgumentError("INVALID_ARGUMENT", message)


@dataclass
class Options:
    """How a runtime opens: `home_dir` (state directory; default $BOXLITE_HOME, else ~/.boxlite),
    `image_registries` (searched in order for unqualified image names, before docker.io; empty:
    the comma-separated host[:port] lists in $BOXLITE_REGISTRIES and $BOXLITE_INSECURE_REGISTRIES,
    else config.json in the home), `accel` ("auto", "kvm" or "tcg"), `warm_start` (start new boxes
    from a template of their shape, a booted idle guest made by `warmup()` or at the shape's first
    start, instead of booting them; None: on, unless $BOXLITE_WARM_START is "0")."""

    home_dir: Optional[str] = None
    image_registries: List[Registry] = field(default_factory=list)
    accel: Optional[str] = None
    warm_start: Optional[bool] = None

    def _json(self) -> bytes:
        registries = [_registry(r) for r in self.image_registries]
        home = None if self.home_dir is None else str(self.home_dir)
        if self.warm_start is not None and not isinstance(self.warm_start, bool):
            raise _invalid(f"warm_start {self.warm_start!r} is not True, False or None")
        return _options(home=home, registries=registries or None, accel=self.accel, warm_start=self.warm_start)


@dataclass
class SecurityOptions:
    """Isolation of the box's host processes. This runtime has no jailer yet (the VM and its
    helpers run as the calling user, see docs/threat-model.md): `jailer_enabled=True` is refused
    at create rather than ignored."""

    jailer_enabled: bool = False


@dataclass
class BoxOptions:
    """What a box is made of. Units: `memory_mib` in MiB (128-65536, default 512), `cpus` 1-64
    (default 1), `auto_stop_ms` and `ready_timeout_ms` in milliseconds.

    `image`: an image reference ("busybox:latest", "127.0.0.1:5000/python:slim",
    "oci:/path/to/layout:tag"). `env`: a dict or a list of (name, value) pairs, over the image's
    Env. `working_dir`: absolute path, over the image's WorkingDir. `user`: over the image's User.
    `network`: False / "none" (no NIC, only loopback), True / None / "default" (outbound to
    everything; the host's 127.0.0.1 is host.docker.internal), {"allow": [...]} or {"deny": [...]}.
    `ports`: e.g. [(8080, 80), (0, 53, "udp"), {"guest_port": 443, "host_ip": "0.0.0.0"}]; host
    port 0 picks a free one, which info().ports reports while the box runs. `detach`: the box
    outlives this process (until stopped, removed or idle for `auto_stop_ms`). `auto_remove`:
    remove the box once it stops. `volumes`: host directories shared live, at most 3, e.g.
    [("/host/shared", "/mnt/shared", "rw"), ("/host/in", "/in", True)] (True or "ro": read-only,
    enforced on the host); the host directory must exist (a relative path is taken from the
    current directory). `disk_size_gb`: the root filesystem's capacity, 1-1024 GiB and at least
    the image's own disk, sparse on the host (default: the image's size plus 2 GiB).
    """

    image: str = "python:slim"
    cpus: Optional[int] = None
    memory_mib: Optional[int] = None
    env: Env = None
    working_dir: Optional[str] = None
    user: Optional[str] = None
    network: Network = None
    ports: Optional[Sequence[Port]] = None
    volumes: Optional[Sequence[Volume]] = None
    disk_size_gb: Optional[int] = None
    detach: bool = False
    auto_remove: bool = False
    auto_stop_ms: Optional[int] = None
    ready_timeout_ms: Optional[int] = None
    security: Optional[SecurityOptions] = None

    def _json(self, name: Optional[str]) -> bytes:
        if self.security is not None and self.security.jailer_enabled:
            raise _invalid("jailer_enabled=True: this runtime has no jailer yet; use SecurityOptions(jailer_enabled=False)")
        return _options(
            name=name, cpus=self.cpus, memory_mib=self.memory_mib, env=env_dict(self.env) or None,
            working_dir=self.working_dir, user=self.user, detach=self.detach or None,
            auto_stop_ms=self.auto_stop_ms, auto_remove=self.auto_remove or None,
            ready_timeout_ms=self.ready_timeout_ms, network=None if self.network is None else network_json(self.network),
            ports=_ports(self.ports) or None, volumes=_volumes(self.volumes) or None, disk_size_gb=self.disk_size_gb,
        )


def _options(**values: Any) -> bytes:
    """An options JSON object with the values that were given."""
    return json.dumps({k: v for k, v in values.items() if v is not None}).encode()


def env_dict(env: Env) -> Dict[str, str]:
    """`env` as a dict; InvalidArgumentError naming an entry that is not a (name, value) pair."""
    if env is None:
        return {}
    if isinstance(env, Mapping):
        return {str(k): str(v) for k, v in env.items()}
    pairs = {}
    for entry in env:
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
            raise _invalid(f"env entry {entry!r} is not a (name, value) pair: give a dict or a list of pairs")
        pairs[str(entry[0])] = str(entry[1])
    return pairs


def network_json(network: Network) -> Union[str, Dict[str, List[str]]]:
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
    raise _invalid(
        f"network {network!r} is not False/'none', True/'default', {{'allow': [...]}} or {{'deny': [...]}} "
        "(lists of host names, *.name wildcards, IP addresses or CIDRs)"
    )


def _ports(ports: Optional[Sequence[Port]]) -> List[Dict[str, Any]]:
    """The C ABI's "ports" value; InvalidArgumentError naming an entry of no known form. The
    values (numbers, protocol, address, ports in use) are checked by the library, which names
    the entry too."""
    if ports is None:
        return []
    if isinstance(ports, (str, bytes, Mapping)) or not isinstance(ports, Sequence):
        raise _invalid(f"ports {ports!r} is not a list of ports")
    specs = []
    for entry in ports:
        if isinstance(entry, (tuple, list)) and len(entry) in (2, 3):
            specs.append(dict(zip(_PORT_KEYS, entry)))
        elif isinstance(entry, Mapping) and set(entry) <= set(_PORT_KEYS) and "guest_port" in entry:
            specs.append(dict(entry))
        else:
            raise _invalid(
                f"port {entry!r} is not (host_port, guest_port), (host_port, guest_port, 'tcp'|'udp') "
                "or a dict with guest_port and any of host_port, protocol, host_ip"
            )
    return specs


def _volumes(volumes: Optional[Sequence[Volume]]) -> List[Dict[str, Any]]:
    """The C ABI's "volumes" value; InvalidArgumentError naming an entry of no known form. The
    paths are checked by the library (the host directory exists, the guest path is absolute and
    not over the box's own mounts), which names them too."""
    if volumes is None:
        return []
    if isinstance(volumes, (str, bytes, Mapping)) or not isinstance(volumes, Sequence):
        raise _invalid(f"volumes {volumes!r} is not a list of volumes")
    specs = []
    for entry in volumes:
        spec: Optional[Dict[str, Any]] = None
        if isinstance(entry, (tuple, list)) and len(entry) in (2, 3):
            mode = entry[2] if len(entry) == 3 else False
            read_only = {"ro": True, "rw": False, True: True, False: False}.get(mode) if isinstance(mode, (str, bool)) else None
            if read_only is not None:
                spec = {"host_path": entry[0], "guest_path": entry[1], "read_only": read_only}
        elif isinstance(entry, Mapping) and set(entry) <= _VOLUME_KEYS and {"host_path", "guest_path"} <= set(entry):
            spec = {"read_only": False, **entry}
        if spec is None or not isinstance(spec["read_only"], bool):
            raise _invalid(
                f"volume {entry!r} is not (host_path, guest_path), (host_path, guest_path, 'ro'|'rw'), "
                "(host_path, guest_path, read_only_bool) or a dict with host_path, guest_path and optionally read_only"
            )
        # A relative host path is taken from the current directory, as a shell user expects.
        spec["host_path"] = os.path.abspath(os.fspath(spec["host_path"]))
        spec["guest_path"] = os.fspath(spec["guest_path"])
        specs.append(spec)
    return specs


def _registry(entry: Registry) -> Dict[str, Any]:
    if isinstance(entry, str):
        for scheme, insecure in (("http://", True), ("https://", False)):
            if entry.startswith(scheme):
                return {"host": entry[len(scheme):].rstrip("/"), "insecure": insecure}
        return {"host": entry}
    if isinstance(entry, Mapping) and "host" in entry and set(entry) <= _REGISTRY_KEYS:
        return dict(entry)
    raise _invalid(
        f"image registry {entry!r} is not 'host[:port]', 'http://host[:port]' (plain http) or a dict with "
        "host and any of insecure, username, password"
    )
