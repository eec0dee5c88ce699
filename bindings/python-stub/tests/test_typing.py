"""Everything public is typed: mypy --strict passes over the package (py.typed ships it)."""

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def test_the_package_passes_mypy_strict():
    # _code_driver.py is not host code: it runs inside boxes, on whatever python3 the image has.
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--python-version", "3.10", "--no-incremental", "--cache-dir", os.devnull,
                           "--exclude", "_code_driver\\.py$", str(SRC / "boxlite")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
