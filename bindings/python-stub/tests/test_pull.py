"""Runtime.pull and Canceller against the local test registry (no VM is booted)."""

import os
import shutil
import tempfile
import threading
import time

import boxlite
import pytest
from boxlite import BoxOptions, Options, PortInfo
from boxlite.sync_api import SyncBoxlite
from conftest import run


def entries(home: str, sub: str) -> list:
    return os.listdir(os.path.join(home, "images", sub))


def test_pull_records_the_image(runtime, registry, home):
    runtime.pull(f"{registry}/busybox:latest")
    assert entries(home, "refs") and entries(home, "disks")
    runtime.pull(f"{registry}/busybox:latest", cancel=boxlite.Canceller())  # never cancelled
    assert entries(home, "tmp") == []


def test_pull_errors_are_clear(runtime, registry):
    with pytest.raises(boxlite.ImageError, match="no-such-image"):
        runtime.pull(f"{registry}/no-such-image:v1")
    with pytest.raises(boxlite.InvalidArgumentError):
        runtime.pull("Upper/Case:tag")
    with pytest.raises(TypeError, match="boxlite.Canceller"):
        runtime.pull(f"{registry}/busybox:latest", cancel=threading.Event())


def test_a_cancelled_canceller_aborts_before_any_work(runtime, registry, home):
    refs, disks = entries(home, "refs"), entries(home, "disks")
    cancel = boxlite.Canceller()
    cancel.cancel()
    cancel.cancel()  # again: a no-op
    started = time.monotonic()
    with pytest.raises(boxlite.AbortedError, match="was aborted by its canceller") as info:
        runtime.pull(f"{registry}/python:slim", cancel=cancel)
    assert time.monotonic() - started < 0.5
    assert info.value.code == "ABORTED" and isinstance(info.value, boxlite.BoxliteError)
    assert (entries(home, "refs"), entries(home, "disks")) == (refs, disks)


def test_a_cancel_from_a_timer_aborts_the_pull_and_leaves_nothing(registry):
    fresh = tempfile.mkdtemp(prefix="boxlite-py-pull.", dir="/tmp")  # nothing of python:slim cached
    try:
        with SyncBoxlite(Options(home_dir=fresh, image_registries=[{"host": registry, "insecure": True}])) as rt:
            cancel = boxlite.Canceller()
            timer = threading.Timer(0.3, cancel.cancel)
            timer.start()
            started = time.monotonic()
            with pytest.raises(boxlite.AbortedError, match="python:slim"):
                rt.pull(f"{registry}/python:slim", cancel=cancel)
            timer.join()
            # The whole pull takes 6-8 s with a debug library, most of it building the disk.
            assert time.monotonic() - started < 5
            # A layer whose download had just ended may still be verified on a library thread.
            deadline = time.monotonic() + 2
            while entries(fresh, "tmp") and time.monotonic() < deadline:
                time.sleep(0.01)
            assert entries(fresh, "tmp") == []
            assert entries(fresh, "disks") == []
            assert entries(fresh, "refs") == []
            # The canceller stays cancelled; the runtime stays usable.
            with pytest.raises(boxlite.AbortedError):
                rt.pull(f"{registry}/python:slim", cancel=cancel)
            rt.pull(f"{registry}/busybox:latest")
            assert len(entries(fresh, "refs")) == 1
    finally:
        shutil.rmtree(fresh)
