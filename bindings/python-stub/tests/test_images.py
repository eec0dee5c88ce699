"""Registry defaults, the image store (list, remove, prune) and the create options detach,
auto_stop_ms and auto_remove, against the local test registry and real VMs."""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boxlite
import pytest
from boxlite import BoxOptions, Options, PortInfo
from boxlite.sync_api import SyncBoxlite
from conftest import run

SRC = str(Path(__file__).resolve().parent.parent / "src")


def python(script: str, home: str, **env: str) -> subprocess.CompletedProcess:
    """Runs `script` in a new Python process on `home` with exactly the registry variables `env`."""
    base = {k: v for k, v in os.environ.items() if k not in ("BOXLITE_REGISTRIES", "BOXLITE_INSECURE_REGISTRIES")}
    return subprocess.run(
        [sys.executable, "-c", script], env=dict(base, PYTHONPATH=SRC, BOXLITE_HOME=home, **env),
        capture_output=True, text=True, timeout=300,
    )


@pytest.fixture
def fresh():
    path = tempfile.mkdtemp(prefix="boxlite-py-img.", dir="/tmp")
    yield path
    shutil.rmtree(path)


PULL = "from boxlite.sync_api import SyncBoxlite\nwith SyncBoxlite() as rt:\n    rt.pull('busybox:latest')\n    print(rt.images()[0].reference)"


def test_a_runtime_without_registries_takes_them_from_the_environment(registry, fresh):
    run = python(PULL, fresh, BOXLITE_INSECURE_REGISTRIES=registry)
    assert (run.returncode, run.stdout) == (0, f"{registry}/busybox:latest\n"), run.stderr


def test_or_from_config_json_in_the_home(registry, fresh):
    Path(fresh, "config.json").write_text(f'{{"registries": ["{registry}"], "insecure_registries": ["{registry}"]}}')
    run = python(PULL, fresh)
    assert (run.returncode, run.stdout) == (0, f"{registry}/busybox:latest\n"), run.stderr


def test_a_malformed_entry_is_an_invalid_argument_naming_it(fresh):
    run = python("from boxlite.sync_api import SyncBoxlite\nSyncBoxlite()", fresh, BOXLITE_REGISTRIES="ghcr.io/x")
    assert run.returncode != 0
    assert "InvalidArgumentError" in run.stderr and "BOXLITE_REGISTRIES" in run.stderr and "'ghcr.io/x'" in run.stderr


def test_remove_image_and_prune(registry, fresh):
    with SyncBoxlite(Options(home_dir=fresh, image_registries=[{"host": registry, "insecure": True}])) as rt:
        b = rt.create(BoxOptions(image="busybox:latest"), name="py-image-user")
        [image] = rt.images()
        assert (image.reference, image.layers) == (f"{registry}/busybox:latest", 1)
        with pytest.raises(boxlite.InvalidStateError, match="py-image-user"):
            rt.remove_image("busybox:latest")
        with pytest.raises(boxlite.NotFoundError):
            rt.remove_image("nosuch:latest")
        removed = rt.remove_image("busybox:latest", force=True)
        assert removed.images == [image.reference] and removed.base_disks == [] and len(removed.blobs) == 3
        assert rt.images() == []
        pruned = rt.prune(boxes=True)
        assert pruned.boxes == [b.id] and pruned.base_disks == [image.config_digest]
        assert pruned.bytes_freed > 0
        b.close()
        rt.pull("busybox:latest")
        pruned = rt.prune(all=True)
        assert pruned.images == [image.reference] and len(pruned.blobs) == 3
        assert os.listdir(os.path.join(fresh, "images", "disks")) == []


DETACHED = """
import sys
from boxlite import BoxOptions, Options
from boxlite.sync_api import SyncBoxlite
with SyncBoxlite(Options(image_registries=[{"host": sys.argv[1], "insecure": True}])) as rt:
    b = rt.create(BoxOptions(image="busybox:latest", detach=True, auto_stop_ms=4000, auto_remove=True), name="py-detached")
    info = b.info()
    print(b.exec("echo", "from-a").wait().stdout.strip(), info.detach, info.auto_remove)
"""


def test_a_detached_box_outlives_its_process_then_stops_when_idle_and_removes_itself(registry, fresh):
    base = {k: v for k, v in os.environ.items() if not k.startswith("BOXLITE_REGISTR")}
    proc = subprocess.run(
        [sys.executable, "-c", DETACHED, registry], env=dict(base, PYTHONPATH=SRC, BOXLITE_HOME=fresh),
        capture_output=True, text=True, timeout=300,
    )
    assert (proc.returncode, proc.stdout) == (0, "from-a True True\n"), proc.stderr
    with SyncBoxlite(Options(home_dir=fresh, image_registries=[{"host": registry, "insecure": True}])) as rt:
        b = rt.get("py-detached")
        assert b.info().status == "running", "a detached box outlives the process that made it"
        assert run(b, "echo", "from-b").stdout == "from-b\n"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                rt.get("py-detached").close()
            except boxlite.NotFoundError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the idle auto_remove box was not removed within 30 s")
        b.close()


LOGGED = """
import logging, sys
from pathlib import Path
from boxlite import Options
from boxlite.sync_api import SyncBoxlite
records = []
logging.getLogger("boxlite").addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: records.append(r)})())
with SyncBoxlite(Options(home_dir=sys.argv[1])) as rt:
    Path(sys.argv[1], "images", "refs", "corrupt.json").write_text("not json")
    assert rt.images() == []
print([(r.levelname, r.getMessage().split(" path=")[0]) for r in records])
"""


def test_the_runtimes_warnings_reach_python_logging_unless_rust_log_is_set(fresh):
    env = {k: v for k, v in os.environ.items() if k not in ("BOXLITE_LOG", "RUST_LOG")}
    proc = subprocess.run([sys.executable, "-c", LOGGED, fresh], env=dict(env, PYTHONPATH=SRC), capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "[('WARNING', 'skipping unreadable image record')]\n"), proc.stderr
    assert "skipping unreadable" not in proc.stderr, "handled by logging, not printed by the library"
    proc = subprocess.run([sys.executable, "-c", LOGGED, fresh], env=dict(env, PYTHONPATH=SRC, RUST_LOG="warn"), capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "[]\n") and "WARN skipping unreadable image record" in proc.stderr, proc.stderr
