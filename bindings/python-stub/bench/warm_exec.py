"""Warm exec round trips from Python, as `boxlite-bench warm-exec` measures them in Rust: `true`
started and waited on one running busybox box, RUNS times after 10 warm-up runs, through the async
API (SimpleBox.exec) and the sync twin (SyncSimpleBox.exec). Prints JSON: p50, p90, mean in ms.

    python bench/warm_exec.py REGISTRY RUNS        (BOXLITE_LIBRARY: the libboxlite to measure)
"""

import asyncio
import json
import statistics
import sys
import tempfile
import time

import boxlite
from boxlite.sync_api import SyncBoxlite, SyncSimpleBox


def stats(rtts):
    rtts = sorted(rtts)
    return {"p50": rtts[len(rtts) // 2], "p90": rtts[int(len(rtts) * 0.9)], "mean": statistics.fmean(rtts)}


async def async_rtts(options, runs):
    runtime = boxlite.Boxlite(options)
    async with boxlite.SimpleBox(image="busybox:latest", runtime=runtime) as box:
        rtts = []
        for i in range(runs + 10):
            started = time.perf_counter()
            await box.exec("true")
            if i >= 10:
                rtts.append((time.perf_counter() - started) * 1000)
    runtime.close()
    return rtts


def sync_rtts(options, runs):
    with SyncBoxlite(options) as runtime, SyncSimpleBox(image="busybox:latest", runtime=runtime) as box:
        rtts = []
        for i in range(runs + 10):
            started = time.perf_counter()
            box.exec("true")
            if i >= 10:
                rtts.append((time.perf_counter() - started) * 1000)
    return rtts


def main():
    registry, runs = sys.argv[1], int(sys.argv[2])
    with tempfile.TemporaryDirectory(prefix="bxpy", dir="/tmp") as home:
        options = boxlite.Options(home_dir=home, image_registries=[f"http://{registry}"])
        print(json.dumps({"async": stats(asyncio.run(async_rtts(options, runs))), "sync": stats(sync_rtts(options, runs))}))


if __name__ == "__main__":
    main()
