"""Boots a box from an image, runs `echo hi` in it, prints what it printed, and removes the box.

    python examples/hello.py IMAGE [INSECURE_REGISTRY]
    python examples/hello.py 127.0.0.1:5000/busybox:latest 127.0.0.1:5000

INSECURE_REGISTRY (default: $REGISTRY, if set) is a host:port spoken to over plain http. The state
goes to $BOXLITE_HOME (default ~/.boxlite). Needs the `boxlite` package importable (installed, or
PYTHONPATH=bindings/python-stub/src) and libboxlite.so (see the package docs).
"""

import asyncio
import os
import sys

import boxlite


async def main(image: str, registry: str) -> int:
    registries = [f"http://{registry}"] if registry else []
    runtime = boxlite.Boxlite(boxlite.Options(image_registries=registries))
    async with boxlite.SimpleBox(image=image, runtime=runtime) as box:
        result = await box.exec("echo", "hi")
    print(result.stdout, end="")
    return result.exit_code


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        print(f"usage: {sys.argv[0]} IMAGE [INSECURE_REGISTRY]", file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else os.environ.get("REGISTRY", ""))))
