"""Warm start templates on real VMs, in a fresh home of their own (so that the first warmup
builds): Boxlite.warmup and its sync twin, two boxes started from a template, and a runtime with
warm_start=False that boots the same shape cold although the template is there. Boots four VMs:
the template's guest, two warm boxes and one cold box (1 cpu, 256 MiB, no network)."""

import asyncio
import os
import shutil
import tempfile
import time

import boxlite
import pytest
from boxlite import BoxOptions, Options
from boxlite.sync_api import SyncBoxlite
from conftest import run

SHAPE = {"cpus": 1, "memory_mib": 256, "network": False}
BOX = {"image": "busybox:latest", "memory_mib": 256, "network": False}
# boot_id, 16 bytes of urandom, then the guest's clock
IDENTITY = "cat /proc/sys/kernel/random/boot_id; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; date +%s"


@pytest.fixture(scope="module")
def warm_home():
    path = tempfile.mkdtemp(prefix="boxlite-py-warm.", dir="/tmp")
    yield path
    shutil.rmtree(path)


def options(home: str, registry: str, **more) -> Options:
    return Options(home_dir=home, image_registries=[f"http://{registry}"], **more)


def vm_cmdline(vm_pid) -> str:
    assert vm_pid, "the box's VM has a pid while it runs"
    with open(f"/proc/{vm_pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def check_clock(guest_seconds: str, before: float, after: float) -> None:
    """The guest's `date +%s`, read between `before` and `after` on the host, is within 2 s."""
    guest = int(guest_seconds)
    assert int(before) - 2 <= guest <= after + 2, (guest, before, after)


def test_warmup_builds_a_template_once_and_boxes_of_its_shape_start_from_it(warm_home, registry):
    async def sh(box: boxlite.Box, script: str) -> str:
        result = await (await box.exec("sh", "-c", script)).wait()
        assert result.exit_code == 0, result
        return result.stdout

    async def main():
        async with boxlite.Boxlite(options(warm_home, registry)) as rt:
            first = await rt.warmup(**SHAPE)
            assert isinstance(first, boxlite.TemplateInfo)
            assert (first.cpus, first.memory_mib, first.network, first.built) == (1, 256, False, True)
            assert first.path.startswith(os.path.join(warm_home, "templates") + os.sep) and os.path.isdir(first.path)
            assert first.build_ms > 0 and first.disk_bytes > 0

            # The sync twin, on another runtime of the home: found, not built; "none" is network=False.
            with SyncBoxlite(options(warm_home, registry)) as twin:
                again = twin.warmup(cpus=1, memory_mib=256, network="none")
                assert (again.built, again.path, again.build_ms, again.network) == (False, first.path, first.build_ms, False)
                with pytest.raises(boxlite.InvalidArgumentError, match="memory_mib 64 is out of range"):
                    twin.warmup(memory_mib=64)
            with pytest.raises(boxlite.InvalidArgumentError, match="cpus 0 is out of range"):
                await rt.warmup(cpus=0, memory_mib=256, network=False)
            with pytest.raises(boxlite.InvalidArgumentError, match="network"):
                await rt.warmup(network="sometimes")

            boxes = []
            try:
                seen = []
                for _ in range(2):
                    box = await rt.create(BoxOptions(**BOX))
                    boxes.append(box)
                    await box.start()
                    before = time.time()
                    lines = (await sh(box, IDENTITY)).splitlines()
                    check_clock(lines[2], before, time.time())
                    seen.append(lines)
                    cmdline = vm_cmdline((await box.metrics()).vm_pid)
                    assert f"mem-path={first.path}/ram," in cmdline, f"box {box.id} did not start from the template: {cmdline}"
                assert all(len(lines[0]) == 36 and len(lines[1]) == 32 for lines in seen), seen
                assert seen[0][0] != seen[1][0], "boot_id"
                assert seen[0][1] != seen[1][1], "urandom"
            finally:
                for box in boxes:
                    await box.remove(force=True)

    asyncio.run(main())


def test_a_runtime_without_warm_start_boots_cold_beside_a_template(warm_home, registry):
    with pytest.raises(boxlite.InvalidArgumentError, match="warm_start"):
        SyncBoxlite(options(warm_home, registry, warm_start="yes"))
    with SyncBoxlite(options(warm_home, registry, warm_start=False)) as rt:
        template = rt.warmup(**SHAPE)  # there already (made by the test above, or now)
        with rt.create(BoxOptions(**BOX)) as box:
            box.start()
            before = time.time()
            result = run(box, "sh", "-c", IDENTITY)
            assert result.exit_code == 0, result
            lines = result.stdout.splitlines()
            assert len(lines[0]) == 36, lines
            check_clock(lines[2], before, time.time())
            cmdline = vm_cmdline(box.metrics().vm_pid)
            assert "templates" not in cmdline, cmdline
        assert os.path.isdir(template.path), "a cold box leaves the template alone"
