"""The box network from Python, on real VMs, every packet staying on this machine: a server in the
box on a published port (host port 0, the port picked read from info), a server of this process
reached from the box as host.docker.internal, policy changes on the running box, a box without a
network, and bad options. Two boxes boot: one python:slim box serves every case with a network."""

import socket
import threading
import time
from types import SimpleNamespace

import boxlite
import pytest
from boxlite import BoxOptions, Options, PortInfo
from boxlite.sync_api import SyncBoxlite
from conftest import run
from conftest import box_processes

HOST_ALIAS = "192.168.127.254"  # the host's 127.0.0.1 as a box sees it

# Serves one HTTP request on port 8000 in the box, then exits (the slim image has no http module).
SERVE_ONCE = """
import socket
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('0.0.0.0', 8000)); l.listen(1)
c, _ = l.accept(); c.recv(4096)
c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: 14\\r\\n\\r\\nhello-from-box'); c.close()
"""

# GETs / from host.docker.internal:PORT; prints the body, or the error's class name.
FETCH = """
import socket, sys
try:
    s = socket.create_connection(('host.docker.internal', int(sys.argv[1])), timeout=10)
    s.sendall(b'GET / HTTP/1.0\\r\\nHost: host.docker.internal\\r\\n\\r\\n'); data = b''
    while chunk := s.recv(4096): data += chunk
    print(data.split(b'\\r\\n\\r\\n', 1)[1].decode(), end='')
except OSError as e:
    print(type(e).__name__, end='')
"""


@pytest.fixture(scope="module")
def web_box(runtime):
    ports = [(0, 8000), {"guest_port": 5353, "protocol": "udp"}]
    with runtime.create(BoxOptions(image="python:slim", ports=ports), name="py-net") as b:
        yield b


def host_get(port: int, within: float) -> bytes:
    """A GET of / on 127.0.0.1:port, retried until a response arrives (the server in the box may
    not listen yet: the host side then closes the connection without a byte)."""
    deadline = time.monotonic() + within
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
                response = b"".join(iter(lambda: s.recv(4096), b""))
            if response:
                return response
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"127.0.0.1:{port} never answered")
        time.sleep(0.2)


def fetch_from_box(box, port: int) -> str:
    return run(box, "python3", "-c", FETCH, str(port)).stdout


def test_info_reports_the_ports_as_asked_before_the_box_runs(web_box):
    info = web_box.info()
    assert info.status == "created" and info.network == "default"
    assert info.ports == [
        PortInfo(host_ip="127.0.0.1", host_port=0, guest_port=8000, protocol="tcp"),
        PortInfo(host_ip="127.0.0.1", host_port=0, guest_port=5353, protocol="udp"),
    ]


def test_a_server_in_the_box_answers_on_the_port_picked(web_box):
    web_box.start()
    tcp, udp = web_box.info().ports
    assert tcp.guest_port == 8000 and tcp.protocol == "tcp" and 0 < tcp.host_port < 65536
    assert udp.guest_port == 5353 and udp.protocol == "udp" and udp.host_port > 0
    served = []
    server = threading.Thread(target=lambda: served.append(run(web_box, "python3", "-c", SERVE_ONCE, timeout=120)))
    server.start()
    try:
        response = host_get(tcp.host_port, within=60)
    finally:
        server.join()
    assert response.startswith(b"HTTP/1.0 200 OK") and response.endswith(b"hello-from-box"), response
    assert served[0].exit_code == 0, served[0].stderr


def test_the_box_reaches_a_host_server_as_host_docker_internal(web_box, host_server):
    assert fetch_from_box(web_box, host_server) == "hello-from-host"


def test_metrics_count_the_network_traffic(web_box):
    metrics = web_box.metrics()
    assert metrics.network_bytes_sent > 0 and metrics.network_bytes_received > 0
    assert metrics.network_tcp_connections >= 2, metrics


def test_a_policy_set_on_the_running_box_applies_at_once_and_can_be_lifted(web_box, host_server):
    web_box.set_network({"deny": [HOST_ALIAS]})
    assert web_box.info().network == {"deny": [HOST_ALIAS]}
    started = time.monotonic()
    assert fetch_from_box(web_box, host_server) in ("ConnectionRefusedError", "ConnectionResetError")
    assert time.monotonic() - started < 10, "refused at once, not dropped until a timeout"
    web_box.set_network(True)
    assert web_box.info().network == "default"
    assert fetch_from_box(web_box, host_server) == "hello-from-host"


@pytest.mark.parametrize(
    "network, message",
    [
        (False, "cannot be switched on or off"),
        ("none", "cannot be switched on or off"),
        ({"allow": ["pypi.org", "http://x"]}, "network entry 'http://x'"),
        ({"allow": "pypi.org"}, "network {'allow': 'pypi.org'} is not"),
        ("off", "network 'off' is not"),
    ],
)
def test_bad_policies_are_refused_and_change_nothing(web_box, network, message):
    with pytest.raises(boxlite.InvalidArgumentError) as raised:
        web_box.set_network(network)
    assert message in raised.value.message and raised.value.code == "INVALID_ARGUMENT"
    assert web_box.info().network == "default"


def test_network_false_leaves_only_loopback_and_no_network_helper(runtime, home):
    with runtime.create(BoxOptions(image="busybox:latest", network=False)) as b:
        assert run(b, "ls", "/sys/class/net").stdout.split() == ["lo"]
        assert box_processes(home, b.id) == 2, "a supervisor and a VM, no network helper"
        assert (b.info().network, b.info().ports) == ("none", [])
        with pytest.raises(boxlite.InvalidArgumentError, match="cannot be switched on or off"):
            b.set_network({"allow": ["pypi.org"]})


@pytest.mark.parametrize(
    "network, expected",
    [
        ("none", "none"),
        (True, "default"),
        ("default", "default"),
        ({"allow": ("pypi.org", "*.pythonhosted.org")}, {"allow": ["pypi.org", "*.pythonhosted.org"]}),
    ],
)
def test_every_form_of_network_is_taken(runtime, network, expected):
    # Recorded at create, before any boot: no VM needed to check the translation.
    b = runtime.create(BoxOptions(image="busybox:latest", network=network))
    try:
        assert b.info().network == expected
    finally:
        b.remove()
        b.close()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"ports": [(8080,)]}, "port (8080,) is not (host_port, guest_port)"),
        ({"ports": [8080]}, "port 8080 is not"),
        ({"ports": [{"host": 8080, "guest_port": 80}]}, "port {'host': 8080, 'guest_port': 80} is not"),
        ({"ports": "8080:80"}, "ports '8080:80' is not a list"),
        ({"ports": [(8080, 0)]}, "port 127.0.0.1:8080:0/tcp: the guest port must be 1 to 65535"),
        ({"ports": [(0, 80), (8080, 70000)]}, 'ports[1] {"guest_port":70000,"host_port":8080} is not a port'),
        ({"ports": [("8080", 80)]}, 'ports[0] {"guest_port":80,"host_port":"8080"} is not a port'),
        ({"ports": [(8080, 80, "sctp")]}, "unknown variant `sctp`"),
        ({"ports": [(18080, 80), (18080, 81, "tcp")]}, "host port 127.0.0.1:18080/tcp is published twice"),
        ({"ports": [(0, 80)], "network": False}, "ports need a network"),
        ({"network": {"deny": ["pypi.org", "bad name!"]}}, "network entry 'bad name!'"),
        ({"network": {"allow": [], "deny": []}}, "is not False/'none'"),
        ({"network": "enabled"}, "network 'enabled' is not"),
    ],
)
def test_bad_ports_and_networks_are_invalid_arguments_naming_the_entry(runtime, options, message):
    with pytest.raises(boxlite.InvalidArgumentError) as raised:
        runtime.create(BoxOptions(image="busybox:latest", **options))
    assert message in raised.value.message, raised.value.message


def test_a_host_port_in_use_is_named(runtime):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with pytest.raises(boxlite.InvalidArgumentError, match=f"host port 127.0.0.1:{port}/tcp cannot be used"):
            runtime.create(BoxOptions(image="busybox:latest", ports=[(port, 80)]))
