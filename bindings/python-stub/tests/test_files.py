"""Files in and out of a box from Python: copy_in / copy_out of trees and files, box.files (read,
write, list, stat, exists, mkdir, remove, rename, watch) in the async API and its sync twin, and
bad input. One busybox box for the module, seen through both APIs."""

import asyncio
import datetime
import hashlib
import os
import time
from pathlib import Path, PurePosixPath

import boxlite
import pytest
from boxlite import BoxOptions
from boxlite.sync_api import SyncBox
from conftest import sh


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def sbox(runtime):
    with runtime.create(BoxOptions(image="busybox:latest"), name="py-files") as b:
        b.start()
        yield b


@pytest.fixture(scope="module")
def abox(sbox):
    """The same box through the async API."""
    return boxlite.Box(sbox)


def make_tree(root: Path) -> Path:
    tree = root / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("alpha\n")
    (tree / "sub" / "b.bin").write_bytes(bytes(range(256)) * 40)
    (tree / "sub").chmod(0o700)
    (tree / "link").symlink_to("a.txt")
    return tree


def test_a_tree_and_a_file_are_copied_in_and_out(sbox, abox, tmp_path):
    tree = make_tree(tmp_path)

    async def main():
        await abox.copy_in(tree, "/root")  # an existing directory: lands as /root/tree
        await abox.copy_in(str(tree / "a.txt"), "/tmp/renamed.txt")  # a new name
        return sh(sbox, "cat /root/tree/a.txt /tmp/renamed.txt; readlink /root/tree/link; stat -c %a /root/tree/sub; md5sum < /root/tree/sub/b.bin")

    digest = hashlib.md5((tree / "sub" / "b.bin").read_bytes()).hexdigest()
    assert run(main()) == f"alpha\nalpha\na.txt\n700\n{digest}  -\n"

    sh(sbox, "echo gamma > /root/tree/sub/c.txt")
    out = tmp_path / "out"
    out.mkdir()

    async def back():
        await abox.copy_out("/root/tree", out)
        await abox.copy_out(PurePosixPath("/tmp/renamed.txt"), str(out / "file.txt"))

    run(back())
    assert (out / "tree" / "a.txt").read_text() == "alpha\n"
    assert (out / "tree" / "sub" / "b.bin").read_bytes() == (tree / "sub" / "b.bin").read_bytes()
    assert (out / "tree" / "sub" / "c.txt").read_text() == "gamma\n"
    assert os.readlink(out / "tree" / "link") == "a.txt"
    assert (out / "file.txt").read_text() == "alpha\n"


def test_an_existing_target_needs_overwrite_both_ways(sbox, abox, tmp_path):
    src = tmp_path / "note.txt"
    src.write_text("one\n")
    sbox.copy_in(src, "/tmp/note.txt")
    src.write_text("two\n")
    with pytest.raises(boxlite.AlreadyExistsError, match="/tmp/note.txt"):
        sbox.copy_in(src, "/tmp/note.txt")
    assert sh(sbox, "cat /tmp/note.txt") == "one\n"
    run(abox.copy_in(src, "/tmp/note.txt", overwrite=True))
    assert sh(sbox, "cat /tmp/note.txt") == "two\n"

    dest = tmp_path / "back.txt"
    sbox.copy_out("/tmp/note.txt", dest)
    sh(sbox, "echo three > /tmp/note.txt")
    with pytest.raises(boxlite.AlreadyExistsError, match="overwrite"):
        run(abox.copy_out("/tmp/note.txt", dest))
    assert dest.read_text() == "two\n"
    sbox.copy_out("/tmp/note.txt", dest, overwrite=True)
    assert dest.read_text() == "three\n"


def test_the_async_files_api(abox, sbox):
    async def main():
        files = abox.files
        await files.mkdir("/adata/deep/er", parents=True)
        await files.mkdir("/adata/deep/er", parents=True)  # mkdir -p: no error
        with pytest.raises(boxlite.AlreadyExistsError):
            await files.mkdir("/adata/deep")
        await files.write("/adata/text.txt", "héllo\n")
        await files.write("/adata/run.sh", b"#!/bin/sh\necho ran\n", mode=0o755)
        await files.write(PurePosixPath("/adata/empty"), b"")
        assert await files.read("/adata/text.txt") == "héllo\n".encode()
        assert await files.read_text("/adata/text.txt") == "héllo\n"
        assert await files.read("/adata/empty") == b""
        assert not await files.exists("/adata/nothing") and await files.exists("/adata/run.sh")

        entries = await files.list("/adata")
        assert [(e.name, e.type) for e in entries] == [("deep", "dir"), ("empty", "file"), ("run.sh", "file"), ("text.txt", "file")]
        run_sh = entries[2]
        assert run_sh.mode == 0o755 and run_sh.size == 19
        assert entries[3].mode == 0o644 and entries[3].size == len("héllo\n".encode())
        now = datetime.datetime.now(datetime.timezone.utc)
        assert isinstance(run_sh.mtime, datetime.datetime) and abs((now - run_sh.mtime).total_seconds()) < 600
        top = await files.stat("/adata")
        assert (top.name, top.type, top.mode) == ("adata", "dir", 0o755)

        await files.rename("/adata/text.txt", "/adata/deep/moved.txt")
        await files.remove("/adata/empty")
        with pytest.raises(boxlite.InvalidArgumentError, match="/adata/deep"):
            await files.remove("/adata/deep")  # not empty
        return await (await abox.exec("sh", "-c", "/adata/run.sh; cat /adata/deep/moved.txt; ls /adata")).wait()

    assert run(main()).stdout == "ran\nhéllo\ndeep\nrun.sh\n"
    run(abox.files.remove("/adata", recursive=True))
    assert not sbox.files.exists("/adata")


def test_the_sync_files_api(sbox):
    files = sbox.files
    files.mkdir("/sdata")
    big = os.urandom(3 << 20)  # several chunks each way
    files.write("/sdata/big.bin", big)
    files.write("/sdata/note", "sync\n", mode=0o600)
    assert files.read("/sdata/big.bin") == big
    assert files.read_text("/sdata/note") == "sync\n"
    assert [(e.name, e.size, e.mode) for e in files.list("/sdata")] == [("big.bin", 3 << 20, 0o644), ("note", 5, 0o600)]
    assert files.stat("/").type == "dir"
    sh(sbox, "ln -s /nowhere /sdata/dangling")
    assert files.exists("/sdata/dangling") and files.stat("/sdata/dangling").type == "symlink"
    files.rename("/sdata", "/sdata2")
    assert files.exists("/sdata2/note") and not files.exists("/sdata")
    files.remove("/sdata2", recursive=True)
    assert not files.exists("/sdata2")


def inotify_count(box: SyncBox) -> int:
    """inotify instances open in the box (the agent's watches)."""
    return int(sh(box, "ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c inotify || true"))


def test_an_async_watch_sees_changes_and_its_close_ends_it_in_the_box(abox, sbox):
    sbox.files.mkdir("/watched")
    before = inotify_count(sbox)

    async def main():
        seen = []
        async with abox.files.watch("/watched", recursive=True) as events:
            assert inotify_count(sbox) == before + 1

            async def collect():
                async for event in events:
                    seen.append(event)
                    if event.kind == "deleted" and event.path == "/watched/a":
                        return

            collector = asyncio.ensure_future(collect())
            # The collector waits for events in the event loop, not in a call that blocks it.
            t = time.monotonic()
            await asyncio.sleep(0.3)
            assert time.monotonic() - t < 1 and not collector.done()
            await abox.files.write("/watched/a", "1")
            await (await abox.exec("sh", "-c", "echo more >> /watched/a; mkdir /watched/d; sleep 0.3; echo x > /watched/d/in; rm /watched/a")).wait()
            await asyncio.wait_for(collector, 20)
            waiter = asyncio.ensure_future(events.__anext__())
            await asyncio.sleep(0.2)
        # Leaving the `async with` closed the watch: a task waiting for an event ends.
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(waiter, 5)
        return seen

    seen = run(main())
    kinds = [(e.kind, e.path, e.is_dir) for e in seen]
    assert seen[0].path == "/watched/a", kinds  # the write (its kind depends on the agent's rename into place)
    assert ("modified", "/watched/a", False) in kinds[1:], kinds
    assert ("created", "/watched/d", True) in kinds, kinds
    assert ("created", "/watched/d/in", False) in kinds, kinds  # recursive: a new subdirectory too
    deadline = time.monotonic() + 5
    while inotify_count(sbox) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert inotify_count(sbox) == before, "closing the watch did not end it in the box"


def test_a_sync_watch_iterates_events(sbox):
    sbox.files.mkdir("/swatched")
    with sbox.files.watch("/swatched") as events:
        sh(sbox, "touch /swatched/t; mv /swatched/t /swatched/u")
        got = []
        for event in events:
            got.append((event.kind, event.path, event.old_path))
            if event.kind == "renamed":
                break
    assert got[0] == ("created", "/swatched/t", None)
    assert got[-1] == ("renamed", "/swatched/u", "/swatched/t")
    assert list(events) == []  # closed: iteration ends


def test_bad_input_fails_clearly_and_fast(abox, sbox, tmp_path):
    t = time.monotonic()
    missing = tmp_path / "no-such-file"
    with pytest.raises(boxlite.NotFoundError, match=f"host path {missing} does not exist"):
        sbox.copy_in(missing, "/tmp")
    with pytest.raises(boxlite.InvalidArgumentError, match="guest path 'tmp' must be absolute"):
        run(abox.copy_in(tmp_path, "tmp"))
    with pytest.raises(boxlite.NotFoundError, match="/no/such/dir"):
        run(abox.copy_out("/no/such/dir", tmp_path))
    with pytest.raises(boxlite.NotFoundError, match="does not exist"):
        sbox.copy_out("/etc/passwd", tmp_path / "missing-parent" / "passwd")
    assert not (tmp_path / "missing-parent").exists()
    with pytest.raises(boxlite.NotFoundError, match="/no/such/file"):
        run(abox.files.read("/no/such/file"))
    with pytest.raises(boxlite.NotFoundError):
        sbox.files.list("/no/such/dir")
    with pytest.raises(boxlite.NotFoundError):
        sbox.files.stat("/no/such/thing")
    with pytest.raises(boxlite.InvalidArgumentError, match="must be absolute"):
        sbox.files.read("etc/passwd")
    with pytest.raises(boxlite.InvalidArgumentError, match="not a directory"):
        sbox.files.watch("/etc/passwd")
    with pytest.raises(boxlite.InvalidArgumentError, match="mode"):
        sbox.files.write("/tmp/m", "x", mode=0o177777)
    with pytest.raises(TypeError, match="str or bytes"):
        sbox.files.write("/tmp/m", 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        sbox.copy_in(42, "/tmp")  # type: ignore[arg-type]
    assert time.monotonic() - t < 10


def test_a_cancelled_copy_task_aborts_without_blocking_the_loop(abox, sbox, tmp_path):
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # sparse: reads as zeros

    async def main():
        gaps = []

        async def tick():
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                gaps.append(time.monotonic() - last)
                last = time.monotonic()

        ticker = asyncio.ensure_future(tick())
        copy = asyncio.ensure_future(abox.copy_in(big, "/root/big.bin"))
        await asyncio.sleep(0.5)
        t = time.monotonic()
        copy.cancel()
        with pytest.raises(asyncio.CancelledError):
            await copy
        took = time.monotonic() - t
        ticker.cancel()
        return took, max(gaps)

    took, worst_gap = run(main())
    assert took < 5, took
    assert worst_gap < 0.5, f"the event loop stalled {worst_gap:.2f} s during the copy"
    # Nothing half-copied is left in the box, neither at the target nor the agent's hidden staging
    # entry beside it: the agent drops that once it sees the stream cut off.
    deadline = time.monotonic() + 5
    while sh(sbox, "ls -a /root | grep -c big || true") != "0\n" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sh(sbox, "ls -a /root | grep -c big || true") == "0\n", sh(sbox, "ls -la /root")


def test_a_watch_ends_when_the_box_stops_and_a_stopped_box_is_refused(abox, sbox, tmp_path):
    # Last: it stops the module's box.
    async def main():
        events = await abox.files.watch("/watched")
        got = []

        async def drain():
            async for event in events:
                got.append(event)

        drainer = asyncio.ensure_future(drain())
        await abox.stop()
        await asyncio.wait_for(drainer, 15)  # ends, does not raise
        await events.aclose()
        return got

    assert run(main()) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(boxlite.InvalidStateError, match="start it first"):
        sbox.copy_in(tmp_path / "f", "/tmp")
    with pytest.raises(boxlite.InvalidStateError):
        run(abox.files.exists("/"))
