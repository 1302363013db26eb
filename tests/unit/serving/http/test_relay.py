"""Upgrades through the engine: the 101 is relayed, then bytes flow both ways untouched."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web

from serving.http import Exchange, UpstreamPool
from tests.unit.serving.http.rawhttp import RawClient, app_server, engine, forwarder, raw_server, read_head


def websocket_app(closed_with: list[int | None]) -> web.Application:
    async def ws(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                if message.data == "bye":
                    await socket.close(code=4001, message=b"server says bye")
                    break
                await socket.send_str("echo:" + message.data)
            elif message.type == WSMsgType.BINARY:
                await socket.send_bytes(message.data[::-1])
        closed_with.append(socket.close_code)
        return socket

    app = web.Application()
    app.router.add_get("/ws", ws)
    return app


async def test_websocket_messages_both_ways_and_server_close_code() -> None:
    closed: list[int | None] = []
    statuses: list[int] = []

    async with app_server(websocket_app(closed)) as port:
        pool = UpstreamPool("127.0.0.1", port)

        async def handler(ex: Exchange) -> None:
            statuses.append(await ex.forward(pool, ex.request.headers))

        async with engine(handler) as eport, aiohttp.ClientSession() as session:
            async with session.ws_connect(f"http://127.0.0.1:{eport}/ws") as socket:
                await socket.send_str("hello")
                assert (await socket.receive_str(timeout=10)) == "echo:hello"
                big = bytes(range(256)) * 1000
                await socket.send_bytes(big)
                assert (await socket.receive_bytes(timeout=10)) == big[::-1]
                await socket.send_str("bye")
                message = await socket.receive(timeout=10)
                assert message.type == WSMsgType.CLOSE
                assert message.data == 4001
                assert message.extra == "server says bye"
            for _ in range(100):
                if statuses:
                    break
                await asyncio.sleep(0.01)
            assert statuses == [101]
        await pool.close()


async def test_websocket_client_close_code_reaches_the_server() -> None:
    closed: list[int | None] = []
    async with app_server(websocket_app(closed)) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport, aiohttp.ClientSession() as session:
            socket = await session.ws_connect(f"http://127.0.0.1:{eport}/ws")
            await socket.send_str("ping")
            assert (await socket.receive_str(timeout=10)) == "echo:ping"
            await socket.close(code=WSCloseCode.GOING_AWAY)
            for _ in range(500):
                if closed:
                    break
                await asyncio.sleep(0.01)
            assert closed == [WSCloseCode.GOING_AWAY]
        await pool.close()


async def test_refused_upgrade_is_relayed_as_a_normal_response_then_closed() -> None:
    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 4\r\n\r\nnope")
        await reader.read()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            response = await client.request(
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nEARLY"
            )
            assert (response.status, response.body) == (426, b"nope")
            assert await client.closed()
            await client.close()
        await pool.close()


async def test_raw_relay_passes_half_close_through() -> None:
    received = bytearray()

    async def app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, headers = await read_head(reader)
        assert headers.get("upgrade") == "raw"
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: raw\r\n\r\nhi")
        received.extend(await reader.read())  # until the client's FIN comes through
        writer.write(b" and bye")
        writer.write_eof()

    async with raw_server(app) as port:
        pool = UpstreamPool("127.0.0.1", port)
        async with engine(forwarder(pool)) as eport:
            client = await RawClient.connect(eport)
            await client.send(
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: raw\r\n\r\nearly;"
            )
            response = await client.read_response()
            assert response.status == 101
            await client.send(b"late")
            client.writer.write_eof()
            rest = await asyncio.wait_for(client.reader.read(), 10)
            assert rest == b"hi and bye"
            await client.close()
        await pool.close()
    assert received == b"early;late"
