"""The asyncio API (boxlite.Boxlite, Box, Execution, SimpleBox, CodeBox) on real VMs, and the FAQ's
samples as written apart from the image and registry (a server on this host's 127.0.0.1 stands in
for the internet). Boots three boxes here: a shared busybox box, a CodeBox (python:slim) that the
concurrency test also runs on, and the FAQ's SimpleBox in a process of its own; the snapshot tests
restore one box and fork two from the shared box (about a second each)."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boxlite
import pytest
from boxlite.sync_api import SyncSimpleBox
from conftest import box_processes

SRC = str(Path(__file__).resolve().parent.parent / "src")


def run(coro):
    """Runs one test's coroutine in a loop of its own (boxes outlive loops; executions do not)."""
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def abox(art):
    box = run(art.create(boxlite.BoxOptions(image="busybox:latest", env=[("PAIR", "from-pairs")]), name="py-async"))
    yield box
    run(box.__aexit__(None, None, None))


@pytest.fixture(scope="module")
def codebox(art):
    box = run(boxlite.CodeBox(image="python:slim", runtime=art, memory_mib=256).start())
    yield box
    run(box.shutdown())


def test_version_and_the_reference_import_paths():
    from boxlite.boxlite import BoxOptions, SecurityOptions, SimpleBox

    assert boxlite.__version__ == boxlite.library_version()
    assert SimpleBox is boxlite.SimpleBox and BoxOptions is boxlite.BoxOptions
    assert SecurityOptions(jailer_enabled=False).jailer_enabled is False
    assert issubclass(boxlite.TimeoutError, boxlite.BoxliteError) and issubclass(boxlite.NotFoundError, boxlite.BoxliteError)
    assert (Path(boxlite.__file__).parent / "py.typed").is_file()


def test_execution_streams_lines_and_waits(abox):
    async def main():
        execution = await abox.exec("sh", "-c", "echo one; echo $PAIR; echo err >&2; printf tail; exit 5")
        lines = [line async for line in execution.stdout()]
        result = await execution.wait()
        return lines, result

    lines, result = run(main())
    assert lines == ["one\n", "from-pairs\n", "tail"]
    assert result == boxlite.ExecResult(5, "", "err\n"), "the stream an iterator read is not repeated"


def test_both_streams_and_wait_can_be_awaited_together(abox):
    async def main():
        execution = await abox.exec("sh", "-c", "for i in 1 2 3; do echo o$i; echo e$i >&2; sleep 0.1; done")

        async def collect(stream):
            return [line async for line in stream]

        return await asyncio.gather(collect(execution.stdout()), collect(execution.stderr()), execution.wait())

    out, err, result = run(main())
    assert (out, err, result.exit_code) == (["o1\n", "o2\n", "o3\n"], ["e1\n", "e2\n", "e3\n"], 0)


def test_faq_stdin_sample(abox):
    async def main():
        execution = await abox.exec("cat")
        stdin = execution.stdin()
        await stdin.write("input\n")
        await stdin.close()
        return await execution.wait()

    assert run(main()).stdout == "input\n"


def test_faq_timeout_sample_kills_a_hanging_command(abox):
    async def main():
        execution = await abox.exec("sleep", "30")
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(execution.wait(), timeout=0.5)
        await execution.kill()
        result = await execution.wait()
        return result, time.monotonic() - started

    result, took = run(main())
    assert (result.signal, result.exit_code, result.error_message) == (9, 137, "the command was killed by signal 9")
    assert took < 10


def test_resize_tty_reaches_the_terminal(abox):
    async def main():
        # The resize reaches the terminal before the line that lets `stty` run: one stream, in order.
        execution = await abox.exec("sh", "-c", "read line; stty size", tty=True)
        await execution.resize_tty(40, 100)
        stdin = execution.stdin()
        await stdin.write("\n")
        result = await execution.wait()
        with pytest.raises(boxlite.BoxliteError, match="out of range"):
            await execution.resize_tty(0, 80)
        plain = await abox.exec("cat")
        with pytest.raises(boxlite.InvalidStateError, match="no terminal"):
            await plain.resize_tty(30, 100)
        await plain.kill()
        await plain.wait()
        return result

    assert "40 100" in run(main()).stdout


def test_exec_options_and_argument_shapes(abox):
    async def main():
        listed = await abox.exec("sh", ["-c", "echo $A $PAIR; pwd; id -u"], env={"A": "a"}, cwd="/tmp", user="65534")
        timed = await abox.exec("sleep", "30", timeout=0.3)
        return await listed.wait(), await timed.wait()

    listed, timed = run(main())
    assert listed.stdout == "a from-pairs\n/tmp\n65534\n"
    assert timed.timed_out and timed.error_message == "the command was killed after its timeout of 0.3 s"


def test_runtime_finds_lists_counts_and_names_the_unknown(art, abox):
    async def main():
        await abox.start()
        found = await art.get("py-async")
        info = await art.get_info(abox.id)
        listed = await art.list_info()
        awaited = await art.metrics()
        with pytest.raises(boxlite.NotFoundError, match="no-such-box"):
            await art.get("no-such-box")
        with pytest.raises(boxlite.NotFoundError):
            await art.remove("no-such-box", force=True)
        return found, info, listed, awaited, await art.get_info("no-such-box")

    found, info, listed, awaited, unknown = run(main())
    assert found.id == abox.id and unknown is None
    assert (info.name, info.status, info.image) == ("py-async", "running", "127.0.0.1:5000/busybox:latest".replace("127.0.0.1:5000", os.environ["REGISTRY"]))
    assert abox.id in [i.id for i in listed]
    metrics = art.metrics()  # the FAQ calls it without await
    assert metrics.active_boxes >= 1 and metrics.boxes_created_total >= 1 and awaited.active_boxes >= 1
    assert run(abox.metrics()).memory_usage_bytes > 0


@pytest.mark.parametrize(
    "options, network, ports",
    [
        ({"ports": [(8080, 80, "tcp"), (5432, 5432, "tcp"), (53, 53, "udp")]}, "default",
         [(8080, 80, "tcp"), (5432, 5432, "tcp"), (53, 53, "udp")]),
        ({"ports": [{"guest_port": 443, "host_ip": "0.0.0.0"}], "network": True}, "default", [(0, 443, "tcp")]),
        ({"network": False}, "none", []),
        ({"network": "none", "env": {"A": "1"}}, "none", []),
        ({"network": {"allow": ["pypi.org"]}, "env": [("A", "1"), ("B", "2")]}, {"allow": ["pypi.org"]}, []),
    ],
)
def test_box_options_take_the_faq_and_reference_shapes(art, options, network, ports):
    async def main():
        # Recorded at create, before any boot; removed before any boot.
        box = await art.create(boxlite.BoxOptions(image="busybox:latest", memory_mib=128, cpus=1, **options))
        try:
            return await box.info()
        finally:
            await box.remove()
            box.close()

    info = run(main())
    assert (info.network, [(p.host_port, p.guest_port, p.protocol) for p in info.ports]) == (network, ports)
    assert info.memory_mib == 128 and info.status == "created"


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"memory_mib": 64}, boxlite.InvalidArgumentError, "memory_mib 64 is out of range: use 128 to 65536 MiB"),
        ({"env": [("A",)]}, boxlite.InvalidArgumentError, "env entry ('A',) is not a (name, value) pair"),
        ({"volumes": [("/tmp", "/mnt", "rx")]}, boxlite.InvalidArgumentError, "volume ('/tmp', '/mnt', 'rx') is not (host_path, guest_path)"),
        ({"volumes": [("/nonexistent-boxlite-dir", "/mnt")]}, boxlite.InvalidArgumentError, "'/nonexistent-boxlite-dir' does not exist"),
        ({"disk_size_gb": 0}, boxlite.InvalidArgumentError, "disk_size_gb 0 is out of range"),
        ({"security": boxlite.SecurityOptions(jailer_enabled=True)}, boxlite.InvalidArgumentError, "no jailer"),
        ({"image": "127.0.0.1:1/nothing:here"}, boxlite.RegistryError, "127.0.0.1:1"),
    ],
)
def test_bad_options_raise_naming_the_problem(art, options, error, message):
    with pytest.raises(error) as raised:
        run(art.create(boxlite.BoxOptions(**{"image": "busybox:latest", **options})))
    assert message in str(raised.value)


def test_codebox_runs_python(codebox):
    assert run(codebox.run("print(6 * 7)")) == "42\n"
    assert "ZeroDivisionError" in run(codebox.run("1 / 0"))


def test_faq_background_server_keeps_running_without_its_handle(codebox):
    # The FAQ's `python -m http.server` with the sockets module (the test image has no http module).
    serve = ("import socket; s = socket.create_server(('127.0.0.1', 8000))\n"
             "while True: c, _ = s.accept(); c.sendall(b'hello'); c.close()")
    fetch = "import socket; print(socket.create_connection(('127.0.0.1', 8000), 5).recv(5).decode())"

    async def main():
        server = await codebox.exec("python3", "-c", serve, background=True)
        assert isinstance(server, boxlite.Execution)
        del server  # the box keeps it running
        import gc
        gc.collect()
        for _ in range(50):
            result = await codebox.exec("python3", "-c", fetch)
            if result.exit_code == 0:
                return result
            await asyncio.sleep(0.2)
        return result

    result = run(main())
    assert (result.exit_code, result.stdout) == (0, "hello\n"), result.stderr


def test_twenty_execs_on_two_boxes_overlap(abox, codebox):
    """Each exec sleeps 1 s: one at a time they would take over 20 s."""
    command = ("sh", "-c", "sleep 1; echo done")

    async def one(target, exec_):
        started = time.monotonic()
        result = await exec_(target)
        return started, time.monotonic(), result

    async def low_level(target):
        return await (await target.exec(*command)).wait()

    async def simple(target):
        return await target.exec(*command)

    async def main():
        single = await one(abox, low_level)
        runs = [one(abox, low_level) if i % 2 else one(codebox, simple) for i in range(20)]
        started = time.monotonic()
        results = await asyncio.gather(*runs)
        return single, time.monotonic() - started, results

    single, wall, results = run(main())
    one_exec = single[1] - single[0]
    assert all(r.stdout == "done\n" and r.exit_code == 0 for _, _, r in results)
    assert max(s for s, _, _ in results) < min(e for _, e, _ in results), "every exec started before any ended"
    assert wall < 4 * one_exec, f"20 concurrent execs took {wall:.2f} s, one alone {one_exec:.2f} s"
    print(f"\none exec {one_exec * 1000:.0f} ms; 20 concurrent {wall * 1000:.0f} ms")


def test_the_sync_twin_works_from_a_running_loops_worker_thread(home, registry):
    from boxlite import Options
    from boxlite.sync_api import SyncBoxlite

    def in_thread():
        with SyncBoxlite(Options(home_dir=home, image_registries=[f"http://{registry}"])) as rt:
            with SyncSimpleBox(image="busybox:latest", runtime=rt, name="py-sync-simple") as box:
                result = box.exec("echo", "from-sync", env=[("X", "1")])
                return box.id, box.created, box.info().status, result

    async def main():
        return await asyncio.to_thread(in_thread)

    box_id, created, status, result = run(main())
    assert (created, status, result.stdout) == (True, "running", "from-sync\n")
    assert box_processes(home, box_id) == 0 and not os.path.exists(os.path.join(home, "boxes", box_id))


FAQ = """
import asyncio, signal, sys
import boxlite

def on_int(*_):
    pass

signal.signal(signal.SIGINT, on_int)

async def main():
    # "Does BoxLite support internet access?", the internet being a server of the test's host.
    async with boxlite.SimpleBox(image="python:slim") as box:
        result = await box.exec("python3", "-c", FETCH, sys.argv[1])
        print(result.stdout)
        info = await box.info()
        print(f"Status: {info.status}")
        metrics = await box.metrics()
        print(f"Memory: {metrics.memory_usage_bytes / (1024**2):.2f} MB" if metrics.memory_usage_bytes else "no memory")
        print(box.id, box.created)
    print(signal.getsignal(signal.SIGINT) is on_int, signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)

asyncio.run(main())
print(boxlite.__version__)
"""

FETCH = (
    "import socket, sys; s = socket.create_connection(('host.docker.internal', int(sys.argv[1])), timeout=20); "
    "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); d = b''\n"
    "while c := s.recv(4096): d += c\n"
    "print(d.split(b'\\r\\n\\r\\n', 1)[1].decode(), end='')"
)


def test_the_faq_simplebox_sample_runs_as_written_with_the_debug_log(home, registry, host_server):
    script = FAQ.replace("FETCH", repr(FETCH))
    env = dict(os.environ, PYTHONPATH=SRC, BOXLITE_HOME=home, BOXLITE_INSECURE_REGISTRIES=registry, RUST_LOG="debug")
    env.pop("BOXLITE_LOG", None)
    proc = subprocess.run([sys.executable, "-c", script, str(host_server)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    said = f"stdout:\n{proc.stdout}\nstderr (end):\n{proc.stderr[-3000:]}"
    assert len(lines) == 6 and lines[0] == "hello-from-host" and lines[1] == "Status: running", said
    assert lines[2].startswith("Memory: ") and lines[2].endswith(" MB"), said
    box_id, created = lines[3].split()
    assert created == "True" and lines[4] == "True True", "the runtime leaves the program's signal handlers alone"
    assert lines[5] == boxlite.__version__
    assert "DEBUG" in proc.stderr and "box ready" in proc.stderr, f"RUST_LOG=debug prints the runtime's debug log; {said}"
    assert box_processes(home, box_id) == 0 and not os.path.exists(os.path.join(home, "boxes", box_id))


def test_pause_keeps_a_command_under_way_and_refuses_new_ones(abox, art):
    async def main():
        execution = await abox.exec("sh", "-c", "for i in 1 2 3 4 5; do echo $i; sleep 0.1; done")
        await abox.pause()
        await abox.pause()  # already paused: nothing happens
        assert (await abox.info()).status == "paused"
        assert (await art.get_info(abox.id)).status == "paused"
        with pytest.raises(boxlite.InvalidStateError, match="resume"):
            await abox.exec("true")
        await abox.resume()
        result = await execution.wait()
        assert (result.exit_code, result.stdout) == (0, "1\n2\n3\n4\n5\n")
        assert (await abox.info()).status == "running"

    run(main())


# A process holding a value only in its memory (kept-<its pid>), and an unsynced write; ASK has it
# write the value out and prints it.
KEEPER = ("echo unsynced > /root/note; setsid sh -c 'v=kept-$$; while :; do if [ -e /tmp/ask ]; then rm /tmp/ask; "
          "echo $v > /tmp/answer; fi; sleep 0.05; done' </dev/null >/dev/null 2>&1 &")
ASK = "rm -f /tmp/answer; touch /tmp/ask; i=0; while [ ! -s /tmp/answer ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; cat /tmp/answer"


async def sh(box: boxlite.Box, script: str) -> str:
    result = await (await box.exec("sh", "-c", script)).wait()
    assert result.exit_code == 0, result
    return result.stdout


def test_memory_survives_snapshot_restore_pause_and_suspend(abox, art):
    async def main():
        await sh(abox, KEEPER)
        kept = await sh(abox, ASK)
        assert kept.startswith("kept-"), kept
        snap = await abox.snapshot("py-snap")
        assert isinstance(snap, boxlite.SnapshotInfo)
        assert (snap.name, snap.box_id, snap.box_name, snap.image) == ("py-snap", abox.id, "py-async", (await abox.info()).image)
        assert snap.memory_bytes > 0 and snap.created_at > 0
        with pytest.raises(boxlite.AlreadyExistsError):
            await abox.snapshot("py-snap")
        assert "py-snap" in [s.name for s in art.list_snapshots()]
        restored = await art.restore("py-snap", name="py-restored")
        try:
            assert restored.id != abox.id and (await restored.info()).status == "running"
            assert await sh(restored, ASK) == kept
            assert await sh(restored, "cat /root/note") == "unsynced\n"
        finally:
            await restored.remove(force=True)

        for _ in range(2):
            await abox.pause()
            await abox.resume()
        assert await sh(abox, ASK) == kept

        await abox.suspend()
        await abox.suspend()  # already suspended: nothing happens
        assert (await abox.info()).status == "suspended"
        await abox.resume()
        assert (await abox.info()).status == "running"
        assert await sh(abox, ASK) == kept

        await art.remove_snapshot("py-snap")
        assert "py-snap" not in [s.name for s in art.list_snapshots()]
        with pytest.raises(boxlite.NotFoundError):
            await art.restore("py-snap")
        with pytest.raises(boxlite.NotFoundError):
            await art.remove_snapshot("py-snap")

    run(main())


def test_forks_continue_the_box_with_identities_of_their_own(abox):
    async def main():
        await sh(abox, "echo before-fork > /root/forked")
        with pytest.raises(ValueError):
            await abox.fork(0)
        forks = await abox.fork(2)
        try:
            assert len(forks) == 2 and len({abox.id, *(f.id for f in forks)}) == 3
            seen = [await sh(f, "cat /root/forked; cat /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1")
                    for f in forks]
            lines = [out.splitlines() for out in seen]
            assert all(out[0] == "before-fork" for out in lines), seen
            assert lines[0][1] != lines[1][1], "boot_id"
            assert lines[0][2:] != lines[1][2:], "urandom"
        finally:
            for f in forks:
                await f.remove(force=True)
        assert await sh(abox, "cat /root/forked") == "before-fork\n"

    run(main())
