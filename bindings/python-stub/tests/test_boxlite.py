"""The Python stub against real VMs booted from the local test registry."""

import os
import subprocess
import sys
from pathlib import Path

import boxlite
import pytest
from boxlite import BoxOptions, Options, PortInfo
from boxlite.sync_api import SyncBoxlite
from conftest import run
from conftest import box_processes

HERE = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def test_versions_agree():
    pyproject = (HERE / "pyproject.toml").read_text()
    assert f'version = "{boxlite.__version__}"' in pyproject
    assert boxlite.library_version() == boxlite.__version__


def test_echo_prints_hi(box):
    result = run(box, "echo", "hi")
    assert result == boxlite.ExecResult(0, "hi\n", "")


def test_info_and_metrics_describe_the_running_box(box):
    run(box, "true")
    info = box.info()
    assert (info.status, info.detach, info.reason) == ("running", False, None)
    assert info.pid > 0 and info.started_at >= info.created_at
    metrics = box.metrics()
    assert metrics.memory_usage_bytes > 0 and metrics.commands_executed >= 1 and metrics.vm_pid == info.pid


def test_a_non_zero_exit_is_a_result(box):
    result = run(box, "sh", "-c", "exit 3")
    assert (result.exit_code, result.signal, result.timed_out) == (3, 0, False)


def test_stdout_and_stderr_are_separate(box):
    result = run(box, "sh", "-c", "echo out; echo oops >&2")
    assert (result.stdout, result.stderr) == ("out\n", "oops\n")


def test_env_and_cwd_layer_image_box_and_exec(box):
    assert run(box, "sh", "-c", "echo $GREETING $BOX_VAR; pwd").stdout == "hello-from-image from-box\n/home\n"
    result = run(box, "sh", "-c", "echo $GREETING $BOX_VAR; pwd", env={"GREETING": "from-exec"}, cwd="/tmp")
    assert result.stdout == "from-exec from-box\n/tmp\n"


def test_large_output_arrives_in_full(box):
    result = run(box, "sh", "-c", "head -c 20971520 /dev/zero & head -c 10485760 /dev/zero >&2; wait")
    assert len(result.stdout) == 20 * MIB and len(result.stderr) == 10 * MIB
    assert result.stdout.count("\0") == 20 * MIB


def test_stdin_reaches_the_command(box):
    assert run(box, "cat", stdin="piped input").stdout == "piped input"
    assert run(box, "cat").stdout == "", "without stdin the command reads end of file"
    assert run(box, "true", stdin=b"x" * MIB).exit_code == 0, "unread input is not an error"


def test_the_timeout_kills_the_command(box):
    result = run(box, "sleep", "30", timeout=0.3)
    assert result.timed_out and result.signal == 9 and result.exit_code == 137
    assert result.error_message == "the command was killed after its timeout of 0.3 s"


def test_a_missing_command_is_an_invalid_argument(box):
    with pytest.raises(boxlite.InvalidArgumentError, match="no-such-command") as info:
        run(box, "no-such-command")
    assert info.value.code == "INVALID_ARGUMENT"


def test_boxes_are_found_by_name_and_id(runtime, box):
    by_name = runtime.get("py-shared")
    assert by_name.id == box.id
    assert runtime.get(box.id).id == box.id
    with pytest.raises(boxlite.NotFoundError, match="no-such-box"):
        runtime.get("no-such-box")
    with pytest.raises(boxlite.AlreadyExistsError):
        runtime.create(BoxOptions(image="busybox:latest"), name="py-shared")


def test_a_missing_image_is_an_image_error(runtime, registry, home):
    with pytest.raises(boxlite.ImageError) as info:
        runtime.create(BoxOptions(image=f"{registry}/no-such-image:v1"))
    assert isinstance(info.value, boxlite.BoxliteError)
    assert info.value.code == "IMAGE"
    assert "no-such-image" in str(info.value)


def test_out_of_range_memory_is_an_invalid_argument(runtime):
    with pytest.raises(boxlite.InvalidArgumentError, match="memory_mib 64 is out of range"):
        runtime.create(BoxOptions(image="busybox:latest", memory_mib=64))


def test_the_context_manager_removes_the_box_and_leaves_nothing(runtime, home):
    with runtime.create(BoxOptions(image="busybox:latest", memory_mib=128)) as b:
        assert run(b, "echo", "inside").stdout == "inside\n"
        assert box_processes(home, b.id) == 3
        box_id = b.id
    assert box_processes(home, box_id) == 0
    assert not os.path.exists(os.path.join(home, "boxes", box_id))
    with pytest.raises(boxlite.NotFoundError):
        runtime.get(box_id)
    with pytest.raises(boxlite.InvalidStateError, match="closed"):
        run(b, "true")


def test_exec_after_remove_is_not_found(runtime):
    b = runtime.create(BoxOptions(image="busybox:latest"))
    b.remove()
    with pytest.raises(boxlite.NotFoundError, match="removed"):
        run(b, "true")
    b.close()


def test_a_missing_library_is_named_with_the_fix():
    env = dict(os.environ, BOXLITE_LIBRARY="/nonexistent/libboxlite.so", PYTHONPATH=str(HERE / "src"))
    proc = subprocess.run([sys.executable, "-c", "from boxlite.sync_api import SyncBoxlite; SyncBoxlite()"], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "BOXLITE_LIBRARY=/nonexistent/libboxlite.so does not name a file" in proc.stderr


def test_the_example_prints_hi(home, registry):
    env = dict(os.environ, BOXLITE_HOME=home, PYTHONPATH=str(HERE / "src"))
    proc = subprocess.run(
        [sys.executable, str(HERE / "examples" / "hello.py"), f"{registry}/busybox:latest", registry],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert (proc.returncode, proc.stdout) == (0, "hi\n"), proc.stderr


def test_a_sync_snapshot_restores_into_a_new_box(runtime, box):
    assert run(box, "sh", "-c", "echo sync-unsynced > /root/sync-note").exit_code == 0
    snap = box.snapshot("py-sync-snap")
    assert isinstance(snap, boxlite.SnapshotInfo) and snap.box_id == box.id
    try:
        restored = runtime.restore("py-sync-snap")
        try:
            assert restored.info().status == "running"
            assert run(restored, "cat", "/root/sync-note").stdout == "sync-unsynced\n"
        finally:
            restored.remove(force=True)
    finally:
        runtime.remove_snapshot("py-sync-snap")
    assert "py-sync-snap" not in [s.name for s in runtime.list_snapshots()]
