"""Volumes and disk size through Python on one real box: every volume form ((host, guest),
(host, guest, "ro"|"rw"), (host, guest, bool), dicts), live both ways, read-only refused, df of
the size asked for, both in info(); bad forms refused before any box exists."""

import os

import boxlite
import pytest
from boxlite.sync_api import SyncSimpleBox

from conftest import run


def test_volumes_in_every_form_and_the_disk_size(runtime, tmp_path):
    dirs = {name: tmp_path / name for name in ("rw", "ro", "flag", "dict")}
    for d in dirs.values():
        d.mkdir()
    (dirs["ro"] / "given.txt").write_text("given")
    volumes = [
        (str(dirs["rw"]), "/mnt/rw"),
        (str(dirs["ro"]), "/mnt/ro", "ro"),
        {"host_path": dirs["dict"], "guest_path": "/mnt/dict", "read_only": False},
    ]
    with SyncSimpleBox(image="busybox:latest", runtime=runtime, volumes=volumes, disk_size_gb=4) as box:
        (dirs["rw"] / "from-host.txt").write_text("host wrote")
        result = box.exec("sh", "-c", "cat /mnt/rw/from-host.txt; echo; cat /mnt/ro/given.txt; echo; "
                          "echo guest > /mnt/dict/out.txt; echo x > /mnt/ro/x 2>/dev/null || echo refused; "
                          "df -k / | tail -1")
        assert result.exit_code == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[:3] == ["host wrote", "given", "refused"], result.stdout
        assert 3_700_000 < int(lines[3].split()[1]) < 4_200_000, lines[3]
        assert (dirs["dict"] / "out.txt").read_text() == "guest\n"
        assert not (dirs["ro"] / "x").exists()
        info = box.info()
        assert info.disk_size_gb == 4
        assert [(v.host_path, v.guest_path, v.read_only) for v in info.volumes] == [
            (os.path.realpath(dirs["rw"]), "/mnt/rw", False),
            (os.path.realpath(dirs["ro"]), "/mnt/ro", True),
            (os.path.realpath(dirs["dict"]), "/mnt/dict", False),
        ]


def test_the_boolean_form_and_relative_paths_become_the_c_abi_json(tmp_path, monkeypatch):
    from boxlite.options import _volumes

    monkeypatch.chdir(tmp_path)
    assert _volumes([("data", "/d", True), ("/abs", "/e", "rw"), ("/abs", "/f", False)]) == [
        {"host_path": str(tmp_path / "data"), "guest_path": "/d", "read_only": True},
        {"host_path": "/abs", "guest_path": "/e", "read_only": False},
        {"host_path": "/abs", "guest_path": "/f", "read_only": False},
    ]


@pytest.mark.parametrize(
    "volumes, message",
    [
        ("/tmp:/mnt", "is not a list of volumes"),
        ([("/tmp",)], "volume ('/tmp',) is not (host_path, guest_path)"),
        ([("/tmp", "/mnt", "yes")], "volume ('/tmp', '/mnt', 'yes') is not"),
        ([{"host_path": "/tmp"}], "a dict with host_path, guest_path"),
        ([{"host_path": "/tmp", "guest_path": "/m", "read_only": "no"}], "is not (host_path"),
        ([("/tmp", "relative")], "guest path 'relative' must be absolute"),
    ],
)
def test_bad_volumes_are_refused_naming_the_entry(runtime, volumes, message):
    before = len(runtime.list_info())
    with pytest.raises(boxlite.InvalidArgumentError) as raised:
        runtime.create(boxlite.BoxOptions(image="busybox:latest", volumes=volumes))
    assert message in str(raised.value)
    assert len(runtime.list_info()) == before
