"""Streamed file reads and writes from Python: files.read_stream (an async iterator of chunks, a
sync iterator in the twin) and files.write of bytes-like objects, iterables, async iterables and
file objects, over the C ABI's reader and writer handles. One busybox box for the module, seen
through both APIs; digests are checked inside the box with sha256sum."""

import asyncio
import hashlib
import io
import os
import time
import tracemalloc

import boxlite
import pytest
from boxlite import BoxOptions
from boxlite.sync_api import SyncBox
from conftest import sh

BIG = 20 << 20  # 20 MiB
CHUNK = 64 << 10  # the most one chunk of read_stream holds


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def sbox(runtime):
    with runtime.create(BoxOptions(image="busybox:latest"), name="py-file-streams") as b:
        b.start()
        b.files.mkdir("/s")
        yield b


@pytest.fixture(scope="module")
def abox(sbox):
    """The same box through the async API."""
    return boxlite.Box(sbox)


def box_sha256(box: SyncBox, path: str) -> str:
    return sh(box, f"sha256sum {path}").split()[0]


def leftovers(box: SyncBox, directory: str) -> str:
    """The directory's entries (hidden ones too), once the agent dropped any temporary of a write
    that was cut off (it does so a moment after the call ends)."""
    deadline = time.monotonic() + 5
    while True:
        listing = sh(box, f"ls -A {directory}")
        if ".boxlite" not in listing or time.monotonic() > deadline:
            return listing
        time.sleep(0.1)


def test_a_big_file_streams_out_chunk_by_chunk_without_blocking_the_loop(abox, sbox):
    sh(sbox, f"head -c {BIG} /dev/urandom > /s/big.bin")
    expected = box_sha256(sbox, "/s/big.bin")

    async def main():
        gaps = []

        async def tick():
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.01)
                gaps.append(time.monotonic() - last)
                last = time.monotonic()

        ticker = asyncio.ensure_future(tick())
        digest, sizes = hashlib.sha256(), []
        tracemalloc.start()
        try:
            async with abox.files.read_stream("/s/big.bin") as chunks:
                async for chunk in chunks:
                    assert type(chunk) is bytes
                    sizes.append(len(chunk))
                    digest.update(chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        ticker.cancel()
        return digest.hexdigest(), sizes, peak, max(gaps)

    digest, sizes, peak, worst_gap = run(main())
    assert digest == expected
    assert sum(sizes) == BIG
    assert max(sizes) <= CHUNK and len(sizes) >= BIG // CHUNK, (max(sizes), len(sizes))
    assert peak < 4 << 20, f"Python held {peak} bytes at once while streaming {BIG}"
    assert worst_gap < 0.5, f"the event loop stalled {worst_gap:.2f} s during the read"


def test_the_sync_read_stream_iterates_and_stops_early(sbox):
    data = os.urandom(300_000)
    sbox.files.write("/s/mid.bin", data)
    with sbox.files.read_stream("/s/mid.bin") as chunks:
        assert b"".join(chunks) == data
    assert list(chunks) == []  # read once: the end stays the end

    with sbox.files.read_stream("/s/big.bin") as chunks:
        first = next(chunks)
        assert 0 < len(first) <= CHUNK
    assert list(chunks) == []  # closed on leaving the `with`: iteration ends
    # An unclosed stream is freed with its object; the box goes on serving files.
    iter(sbox.files.read_stream("/s/mid.bin")).__next__()
    assert sbox.files.read("/s/mid.bin") == data


def test_an_async_read_stream_opens_lazily_and_closes_on_break(abox, sbox):
    async def main():
        got = b""
        async for chunk in abox.files.read_stream("/s/mid.bin"):  # no `async with`: opened by the loop
            got += chunk
        stream = await abox.files.read_stream("/s/big.bin")  # `await` opens it
        async for chunk in stream:
            break
        await stream.aclose()
        after = [c async for c in stream]
        empty = [c async for c in abox.files.read_stream("/s/empty")]
        return got, after, empty

    sbox.files.write("/s/empty", b"")
    got, after, empty = run(main())
    assert got == sbox.files.read("/s/mid.bin")
    assert after == [] and empty == []


def test_read_stream_of_a_missing_file_or_a_directory_fails_clearly(abox, sbox):
    with pytest.raises(boxlite.NotFoundError, match="/s/no-such-file"):
        sbox.files.read_stream("/s/no-such-file")

    async def missing_on_enter():
        async with abox.files.read_stream("/s/no-such-file"):
            pass

    async def missing_on_iteration():
        async for _ in abox.files.read_stream("/no/such/dir/f"):
            pass

    with pytest.raises(boxlite.NotFoundError, match="/s/no-such-file"):
        run(missing_on_enter())
    with pytest.raises(boxlite.NotFoundError):
        run(missing_on_iteration())
    with pytest.raises(boxlite.InvalidArgumentError):
        sbox.files.read_stream("/s")
    with pytest.raises(boxlite.InvalidArgumentError, match="must be absolute"):
        sbox.files.read_stream("s/big.bin")


def chunks(total: int, seed: bytes, size: int = 100_000):
    """`total` deterministic pseudo-random bytes in chunks of `size`, and their sha256."""
    digest = hashlib.sha256()
    parts = []
    block = hashlib.sha256(seed).digest() * (size // 32 + 1)
    sent = 0
    while sent < total:
        part = block[: min(size, total - sent)]
        block = block[1:] + block[:1]
        parts.append(part)
        digest.update(part)
        sent += len(part)
    return parts, digest.hexdigest()


def test_sync_writes_stream_from_a_generator_a_file_and_bytes_likes(sbox, tmp_path):
    parts, digest = chunks(5 << 20, b"gen")
    pulled = []

    def generate():
        for i, part in enumerate(parts):
            pulled.append(i)
            # Mixed chunk types: bytes, bytearray, memoryview, str.
            yield (part, bytearray(part), memoryview(part))[i % 3]

    sbox.files.write("/s/from-gen.bin", generate(), mode=0o600)
    assert box_sha256(sbox, "/s/from-gen.bin") == digest and len(pulled) == len(parts)
    assert sbox.files.stat("/s/from-gen.bin").mode == 0o600

    host = tmp_path / "host.bin"
    host.write_bytes(os.urandom(3 << 20) + b"tail")
    with open(host, "rb") as f:
        sbox.files.write("/s/from-file.bin", f)
    assert box_sha256(sbox, "/s/from-file.bin") == hashlib.sha256(host.read_bytes()).hexdigest()

    sbox.files.write("/s/text-chunks", ["héllo ", "wörld\n"])
    sbox.files.write("/s/bytesio", io.BytesIO(b"from BytesIO\n"))
    sbox.files.write("/s/bytearray", bytearray(b"ba\n"))
    sbox.files.write("/s/memoryview", memoryview(b"xmv\n")[1:])
    sbox.files.write("/s/nothing", iter([]))
    assert sh(sbox, "cat /s/text-chunks /s/bytesio /s/bytearray /s/memoryview /s/nothing") == "héllo wörld\nfrom BytesIO\nba\nmv\n"
    assert sbox.files.stat("/s/nothing").size == 0


def test_async_writes_stream_from_an_async_generator_a_generator_and_a_file(abox, sbox, tmp_path):
    parts, digest = chunks(4 << 20, b"agen", size=64 << 10)
    host = tmp_path / "host.bin"
    host.write_bytes(os.urandom(2 << 20))

    async def main():
        async def agenerate():
            for part in parts:
                await asyncio.sleep(0)
                yield part

        await abox.files.write("/s/from-agen.bin", agenerate(), mode=0o755)
        await abox.files.write("/s/from-sync-gen.bin", (p for p in parts))
        with open(host, "rb") as f:
            await abox.files.write("/s/from-afile.bin", f)
        await abox.files.write("/s/abytearray", bytearray(b"abytes\n"))

        async def lines():
            for i in range(200_000):
                yield f"{i}\n"  # tiny chunks: joined into bigger writes, not one message each

        t = time.monotonic()
        await abox.files.write("/s/lines.txt", lines())
        return time.monotonic() - t

    took = run(main())
    lines = "".join(f"{i}\n" for i in range(200_000)).encode()
    assert box_sha256(sbox, "/s/lines.txt") == hashlib.sha256(lines).hexdigest()
    assert took < 30, f"200000 small chunks took {took:.1f} s"
    assert box_sha256(sbox, "/s/from-agen.bin") == digest
    assert box_sha256(sbox, "/s/from-sync-gen.bin") == digest
    assert box_sha256(sbox, "/s/from-afile.bin") == hashlib.sha256(host.read_bytes()).hexdigest()
    assert sbox.files.stat("/s/from-agen.bin").mode == 0o755
    assert sbox.files.read("/s/abytearray") == b"abytes\n"


class Boom(Exception):
    pass


def test_a_stream_that_raises_midway_keeps_the_old_file(abox, sbox):
    sbox.files.write("/s/keep", "old\n")

    def failing():
        yield b"new " * 100_000  # a chunk reaches the box first
        raise Boom("midway")

    with pytest.raises(Boom):
        sbox.files.write("/s/keep", failing())
    assert sbox.files.read("/s/keep") == b"old\n"

    async def main():
        async def afailing():
            yield b"new " * 100_000
            await asyncio.sleep(0)
            raise Boom("async midway")

        with pytest.raises(Boom):
            await abox.files.write("/s/keep", afailing())
        with pytest.raises(Boom):
            await abox.files.write("/s/keep", failing())  # pulled on the pool

    run(main())
    assert sbox.files.read("/s/keep") == b"old\n"
    assert leftovers(sbox, "/s").count("keep") == 1, sh(sbox, "ls -la /s")


def test_a_cancelled_async_write_keeps_the_old_file(abox, sbox):
    sbox.files.write("/s/cancelled", "old\n")

    async def main():
        async def endless():
            while True:
                yield b"x" * 65536
                await asyncio.sleep(0.001)

        def endless_sync():
            while True:
                yield b"y" * 65536

        for data in (endless(), endless_sync()):
            write = asyncio.ensure_future(abox.files.write("/s/cancelled", data))
            await asyncio.sleep(0.5)
            assert not write.done()
            t = time.monotonic()
            write.cancel()
            with pytest.raises(asyncio.CancelledError):
                await write
            assert time.monotonic() - t < 5

    run(main())
    assert sbox.files.read("/s/cancelled") == b"old\n"
    assert leftovers(sbox, "/s").count("cancelled") == 1, sh(sbox, "ls -la /s")


def test_wrong_data_and_chunk_types_are_refused_naming_the_type(abox, sbox):
    sbox.files.write("/s/typed", "old\n")
    with pytest.raises(TypeError, match=r"chunk.*not int \(chunk 1\)"):
        sbox.files.write("/s/typed", [b"ok", 42])
    with pytest.raises(TypeError, match="not NoneType"):
        sbox.files.write("/s/typed", iter([None]))
    with pytest.raises(TypeError, match="str or bytes.*not int"):
        sbox.files.write("/s/typed", 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="str or bytes.*not float"):
        run(abox.files.write("/s/typed", 4.2))  # type: ignore[arg-type]

    async def agen():
        yield b"fine"

    async def main():
        async def bad():
            yield b"fine"
            yield {"not": "bytes"}

        with pytest.raises(TypeError, match="not dict"):
            await abox.files.write("/s/typed", bad())
        # The sync API cannot pull an async iterable.
        with pytest.raises(TypeError, match="async API"):
            sbox.files.write("/s/typed", agen())  # type: ignore[arg-type]

    run(main())
    assert sbox.files.read("/s/typed") == b"old\n"
    with pytest.raises(boxlite.NotFoundError):
        sbox.files.write("/no/such/dir/f", iter([b"x"]))
    with pytest.raises(boxlite.InvalidArgumentError, match="mode"):
        sbox.files.write("/s/typed", iter([b"x"]), mode=0o177777)
