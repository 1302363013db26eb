"""Graceful drain of a real `serving queue-proxy` process: SIGTERM under load, websockets, wait-for-drain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.fakes.app import FakeApp
from tests.fakes.queueproxy import PROBE_HEADERS, QueueProxyProcess


@pytest.fixture
async def app() -> AsyncIterator[FakeApp]:
    async with FakeApp() as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as client:
        yield client


async def probe_status(session: aiohttp.ClientSession, qp: QueueProxyProcess) -> int:
    async with session.get(qp.url, headers=PROBE_HEADERS) as response:
        return response.status


async def test_sigterm_under_load_loses_no_request(app: FakeApp, session: aiohttp.ClientSession) -> None:
    env = {"DRAIN_QUIET_PERIOD": "1s", "CONTAINER_CONCURRENCY": "2"}
    async with QueueProxyProcess.start(user_port=app.port, env=env) as qp:
        stop_load = asyncio.Event()
        statuses: list[int] = []
        last_request = 0.0

        async def worker() -> None:
            nonlocal last_request
            while not stop_load.is_set():
                last_request = time.monotonic()
                async with session.get(qp.url + "/sleep?ms=20") as response:
                    await response.read()
                    statuses.append(response.status)

        workers = [asyncio.create_task(worker()) for _ in range(4)]
        await asyncio.sleep(0.5)
        qp.terminate()
        await asyncio.sleep(0.1)
        assert await probe_status(session, qp) == 503, "health checks fail as soon as the drain starts"
        await asyncio.sleep(1.5)
        assert qp.process.returncode is None, "traffic keeps pushing the end of the drain back"
        in_flight = asyncio.create_task(session.get(qp.url + "/sleep?ms=1500"))
        await asyncio.sleep(0.1)
        stop_load.set()
        await asyncio.gather(*workers)
        response = await in_flight
        assert response.status == 200, "a request in flight when the drain ends completes"
        assert await response.text() == "slept 1500 ms"
        assert await qp.wait(30) == 0
        exited = time.monotonic()
    assert len(statuses) > 20
    assert set(statuses) == {200}
    assert exited - last_request >= 1.0, "the quiet period runs from the last request"


async def test_websockets_get_their_own_grace(app: FakeApp, session: aiohttp.ClientSession) -> None:
    env = {"DRAIN_QUIET_PERIOD": "200ms", "DRAIN_WEBSOCKET_TIMEOUT": "1500ms"}
    async with QueueProxyProcess.start(user_port=app.port, env=env) as qp:
        async with session.ws_connect(qp.url + "/ws") as ws:
            qp.terminate()
            await asyncio.sleep(0.6)  # past the quiet period: the main port no longer accepts
            await ws.send_str("still here")
            assert await ws.receive_str(timeout=10) == "still here"
            started = time.monotonic()
            message = await ws.receive(timeout=20)
            assert message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            )
            assert time.monotonic() - started < 10
        assert await qp.wait(30) == 0


async def test_wait_for_drain_blocks_until_drained_after_sigterm(
    app: FakeApp, session: aiohttp.ClientSession
) -> None:
    async with QueueProxyProcess.start(user_port=app.port, env={"DRAIN_QUIET_PERIOD": "1s"}) as qp:
        started = time.monotonic()
        waiting = asyncio.create_task(session.get(qp.admin_url + "/wait-for-drain"))
        await asyncio.sleep(0.2)
        qp.terminate()
        response = await waiting
        assert response.status == 200
        assert time.monotonic() - started >= 1.0
        response.release()
        assert await qp.wait(30) == 0


async def test_wait_for_drain_without_sigterm_is_called_off(
    app: FakeApp, session: aiohttp.ClientSession
) -> None:
    """A preStop hook that runs for a liveness restart: no SIGTERM follows, so the pod serves on."""
    async with QueueProxyProcess.start(user_port=app.port, env={"DRAIN_QUIET_PERIOD": "3s"}) as qp:
        waiting = asyncio.create_task(session.get(qp.admin_url + "/wait-for-drain"))
        await asyncio.sleep(0.3)
        assert await probe_status(session, qp) == 503
        response = await asyncio.wait_for(waiting, 15)
        assert response.status == 200
        response.release()
        assert await probe_status(session, qp) == 200
        async with session.get(qp.url + "/echo") as echoed:
            assert echoed.status == 200
        assert qp.process.returncode is None
