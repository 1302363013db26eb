"""Flow control: a stalled reader on one side stops the other side, and big transfers run in flat memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from serving.http import Exchange, UpstreamPool
from tests.unit.serving.http.rawhttp import RawClient, engine, forwarder, get, raw_server, read_head

MIB = 1 << 20
BLOCK = b"0123456789abcdef" * 4096  # 64 KiB


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.asynccontextmanager
async def peak_rss() -> AsyncIterator[list[int]]:
    """Samples this process's RSS while the block runs; yields [baseline, peak]."""
    sample = [rss(), rss()]

    async def watch() -> None:
        while True:
            sample[1] = max(sample[1], rss())
            await asyncio.sleep(0.02)

    task = asyncio.create_task(watch())
    try:
        yield sample
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sample[1] = max(sample[1], rss())


async def test_stalled_client_stops_the_upstream() -> None:
    sent = 0
    total = 256 * MIB

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
        while sent < total:
            writer.write(BLOCK)
            sent += len(BLOCK)
            await writer.drain()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            await client.send(get())
            last = -1
            while sent != last:  # wait until the upstream cannot write any more
                last = sent
                await asyncio.sleep(0.2)
            assert sent < 40 * MIB, f"upstream pushed {sent} bytes into a client that reads nothing"
            response = await client.read_response()
            assert len(response.body) == total
            assert response.body[: len(BLOCK)] == BLOCK
            await client.close()
        await pool.close()


async def test_stalled_upstream_stops_the_client() -> None:
    release = asyncio.Event()
    total = 256 * MIB

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, headers = await read_head(reader)
        await release.wait()
        remaining = int(headers.get("content-length") or 0)
        while remaining:
            remaining -= len(await reader.read(min(remaining, MIB)))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            client.writer.transport.set_write_buffer_limits(high=MIB)
            await client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % total)
            sent = 0

            async def push() -> None:
                nonlocal sent
                while sent < total:
                    client.writer.write(BLOCK)
                    await client.writer.drain()
                    sent += len(BLOCK)

            pusher = asyncio.create_task(push())
            last = -1
            while sent != last:
                last = sent
                await asyncio.sleep(0.2)
            assert sent < 40 * MIB, f"client pushed {sent} bytes into an upstream that reads nothing"
            release.set()
            await asyncio.wait_for(pusher, 60)
            response = await client.read_response()
            assert response.body == b"ok"
            await client.close()
        await pool.close()


async def test_300_mib_each_way_in_flat_memory() -> None:
    size = 300 * MIB

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line, headers = await read_head(reader)
        if line.startswith("POST"):
            remaining = int(headers.get("content-length") or 0)
            while remaining:
                remaining -= len(await reader.read(min(remaining, MIB)))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nreceived")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(size // len(BLOCK)):
                writer.write(b"10000\r\n" + BLOCK + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
        await writer.drain()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            async with peak_rss() as memory:
                await client.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
                for _ in range(size // len(BLOCK)):
                    client.writer.write(BLOCK)
                    await client.writer.drain()
                response = await client.read_response()
                assert response.body == b"received"

                await client.send(get())
                head = await client.reader.readuntil(b"\r\n\r\n")
                assert b"transfer-encoding: chunked" in head.lower()
                received = 0
                while True:
                    chunk_size = int((await client.reader.readuntil(b"\r\n")).strip(), 16)
                    if chunk_size == 0:
                        assert await client.reader.readexactly(2) == b"\r\n"
                        break
                    while chunk_size:
                        data = await client.reader.read(min(chunk_size, MIB))
                        received += len(data)
                        chunk_size -= len(data)
                    assert await client.reader.readexactly(2) == b"\r\n"
                assert received == size
            growth = memory[1] - memory[0]
            assert growth < 50 * MIB, f"RSS grew by {growth / MIB:.1f} MiB"
            await client.close()
        await pool.close()


async def test_a_waiting_request_body_is_buffered_only_up_to_the_high_water_mark() -> None:
    release = asyncio.Event()
    exchanges: list[Exchange] = []
    total = 4 * MIB

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, headers = await read_head(reader)
        remaining = int(headers.get("content-length") or 0)
        while remaining:
            remaining -= len(await reader.read(min(remaining, MIB)))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone")
        await writer.drain()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)

        async def handler(ex: Exchange) -> None:
            exchanges.append(ex)
            await release.wait()  # like a request queued for capacity
            await ex.forward(pool, ex.request.headers)

        async with engine(handler) as eport:
            client = await RawClient.connect(eport)
            client.writer.write(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % total)
            pusher = asyncio.create_task(client.send(b"b" * total))
            await asyncio.sleep(0.3)
            held = sum(map(len, exchanges[0]._body or []))
            assert 0 < held <= 68 * 1024, f"{held} bytes of a waiting body held in memory"
            release.set()
            await asyncio.wait_for(pusher, 30)
            assert (await client.read_response()).body == b"done"
            await client.close()
        await pool.close()
