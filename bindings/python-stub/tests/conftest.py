"""Fixtures: the local test registry (scripts/test-images.sh), a fresh BoxLite home for the
session, and one busybox box shared by every test that does not need its own. Missing fixtures
fail the run; they are never skipped."""

import os
import shutil
import tempfile
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boxlite
import pytest
from boxlite import BoxOptions, Options
from boxlite.sync_api import SyncBox, SyncBoxlite


@pytest.fixture(scope="session")
def registry() -> str:
    host = os.environ.get("REGISTRY")
    if not host:
        pytest.fail('REGISTRY is not set: run `eval "$(bash scripts/test-images.sh)"` first (or bindings/python-stub/test.sh)')
    try:
        urllib.request.urlopen(f"http://{host}/v2/", timeout=3).close()
    except OSError as e:
        pytest.fail(f"the test registry at {host} does not answer ({e}): run `bash scripts/test-images.sh`")
    return host


@pytest.fixture(scope="session")
def home():
    path = tempfile.mkdtemp(prefix="boxlite-py.", dir="/tmp")
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="session")
def runtime(home, registry):
    with SyncBoxlite(Options(home_dir=home, image_registries=[{"host": registry, "insecure": True}])) as rt:
        yield rt


@pytest.fixture(scope="module")
def art(home, registry):
    """An asyncio runtime on the session's home (one per test module)."""
    rt = boxlite.Boxlite(Options(home_dir=home, image_registries=[f"http://{registry}"]))
    yield rt
    rt.close()


@pytest.fixture(scope="session")
def box(runtime):
    with runtime.create(BoxOptions(image="busybox:latest", env={"BOX_VAR": "from-box"}), name="py-shared") as b:
        yield b


def box_processes(home: str, box_id: str) -> int:
    """Processes whose command line names the box's directory: its supervisor, its VM and its
    network helper."""
    needle = os.path.join(home, "boxes", box_id).encode()
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                count += needle in f.read()
        except OSError:
            pass
    return count


def run(box: SyncBox, cmd: str, *args: str, stdin=None, **options) -> boxlite.ExecResult:
    """Runs a command in a sync box to its end, `stdin` written then closed."""
    execution = box.exec(cmd, *args, **options)
    stream = execution.stdin()
    try:
        if stdin:
            stream.write(stdin)
    except boxlite.InvalidStateError:
        pass  # the command ended without reading it all
    stream.close()
    return execution.wait()


def sh(box: SyncBox, script: str) -> str:
    """A shell script's stdout in a sync box; it must exit 0."""
    result = run(box, "sh", "-c", script)
    assert result.exit_code == 0, result
    return result.stdout


@pytest.fixture(scope="module")
def host_server():
    """An HTTP server on this host's 127.0.0.1 answering every GET with "hello-from-host"."""

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "15")
            self.end_headers()
            self.wfile.write(b"hello-from-host")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
