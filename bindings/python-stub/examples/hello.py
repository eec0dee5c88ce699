"""Boots a box from an image, runs `echo hi` in it, prints what it printed, and removes the box.

    python examples/hello.py IMAGE [INSECURE_REGISTRY]
    python examples/hello.py 127.0.0.1:5000/busybox:latest 127.0.0.1:5000

INSECURE_REGISTRY (default: $REGISTRY, if set) is a host:port spoken to over plain http. The state
goes to $BOXLITE_HOME (default ~/.boxlite). Needs the `boxlite` package importable (installed, or
PYTHONPATH=bindings/python-stub/src) and libboxlite.so (see the package docs).
"""

import os
import sys

import boxlite


def main() -> int:
    if len(sys.argv) not in (2, 3):
        print(f"usage: {sys.argv[0]} IMAGE [INSECURE_REGISTRY]", file=sys.stderr)
        return 2
    image = sys.argv[1]
    registry = sys.argv[2] if len(sys.argv) == 3 else os.environ.get("REGISTRY")
    registries = [{"host": registry, "insecure": True}] if registry else None
    with boxlite.Runtime(registries=registries) as rt, rt.create(image) as box:
        result = box.exec("echo", "hi")
    print(result.text, end="")
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
