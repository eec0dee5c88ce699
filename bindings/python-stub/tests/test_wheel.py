"""The wheel: built by build-wheel.sh from this build's libboxlite, shim and guest assets,
installed with pip into a fresh virtualenv, it runs the FAQ's SimpleBox sample from /tmp with no
repo, no cargo target dir and no asset overrides in sight."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import boxlite
from conftest import box_processes

HERE = Path(__file__).resolve().parent.parent

SAMPLE = """
import asyncio
import boxlite

async def reproduce():
    async with boxlite.SimpleBox(image="busybox:latest") as box:
        result = await box.exec("echo", "from-the-wheel")
        print(result.stdout, end="")
        print(box.id)

asyncio.run(reproduce())
print(boxlite.__version__, boxlite.__file__)
"""

# What would let the installed package find a build of this repo instead of its own files.
OVERRIDES = ("BOXLITE_LIBRARY", "BOXLITE_ASSETS_DIR", "BOXLITE_SHIM", "CARGO_TARGET_DIR", "PYTHONPATH", "XDG_CACHE_HOME")


def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_faq_sample(tmp_path, home, registry):
    built = subprocess.run(["bash", str(HERE / "build-wheel.sh"), "debug", str(tmp_path / "dist")],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    wheel = Path(built.stdout.strip().splitlines()[-1])
    assert wheel.name.startswith(f"boxlite-{boxlite.__version__}-py3-none-manylinux_") and wheel.name.endswith("_x86_64.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for inside in ("libboxlite.so", "py.typed", "sync_api.py", *(f"boxlite-guest/{f}" for f in ("vmlinux", "initramfs.cpio", "boxlite-shim", "boxlite-net"))):
        assert f"boxlite/{inside}" in names, f"the wheel lacks boxlite/{inside}"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if k not in OVERRIDES}
    env.update(HOME=str(tmp_path), BOXLITE_HOME=home, BOXLITE_INSECURE_REGISTRIES=registry)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--no-index", str(wheel)],
                               env=env, capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr

    proc = subprocess.run([str(venv / "bin" / "python"), "-c", SAMPLE], env=env, cwd="/tmp", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    output, box_id, version_line = proc.stdout.splitlines()
    assert output == "from-the-wheel"
    version, location = version_line.split()
    assert version == boxlite.__version__ and location.startswith(str(venv)), "imported from the venv, not the repo"
    assert box_processes(home, box_id) == 0
