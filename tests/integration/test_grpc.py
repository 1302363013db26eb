"""gRPC through `serving up`: the example greeter (examples/grpc-python) behind a port named `h2c`, called
with grpcio over HTTP/2 cleartext through the ingress, the activator and the queue-proxy.

Each test writes its own Service around the example's `server.py` (run by this interpreter), so it can set
the revision's concurrency, timeout and scale bounds; the calls use `grpc.aio` on one channel to the ingress
with the Service's host as `:authority`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import grpc

from serving.stat import decode_stat
from tests.integration.conftest import ROOT, ServingUp
from tests.unit.serving.http.rawh2 import H2Peer

Start = Callable[..., Awaitable[ServingUp]]
EXAMPLE = ROOT / "examples" / "grpc-python"
TARGET = "gRPC test"
FAST = ["--autoscaler-config", "scale-to-zero-grace-period=2s"]
"""A 2 s scale-to-zero grace and a 6 s window (Knative's minimum): a revision reaches zero in about 10 s."""
WINDOW = {"autoscaling.knative.dev/window": "6s"}
ONE_POD = {"autoscaling.knative.dev/min-scale": "1", "autoscaling.knative.dev/max-scale": "1"}
ANSWERED = 30.0
"""Deadline (s) of calls that should succeed: room for a pod to start on a loaded machine."""
SHOULD_FAIL = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
"""How a call the platform ends (timeout, overload) should end: a status a gRPC client knows how to treat,
never UNKNOWN, INTERNAL or CANCELLED (the client did not cancel)."""


def _load(name: str) -> ModuleType:
    """One of the example's generated modules, loaded from its file (the folder is not a package)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # helloworld_pb2_grpc imports helloworld_pb2 by this name
    spec.loader.exec_module(module)
    return module


pb2 = _load("helloworld_pb2")
pb2_grpc = _load("helloworld_pb2_grpc")


def greeting(name: str) -> str:
    return f"Hello {name} from {TARGET}!"


def grpc_service(
    folder: Path,
    name: str,
    *,
    annotations: dict[str, str] | None = None,
    container_concurrency: int = 0,
    timeout_seconds: int | None = None,
) -> Path:
    """A Service YAML in `folder` running the example greeter with its port named h2c; returns its path."""
    timeout = "" if timeout_seconds is None else f"\n      timeoutSeconds: {timeout_seconds}"
    notes = "".join(f'\n        {k}: "{v}"' for k, v in (annotations or {}).items())
    path = folder / f"{name}.yaml"
    path.write_text(
        f"""apiVersion: serving.knative.dev/v1
kind: Service
metadata:
  name: {name}
spec:
  template:
    metadata:
      annotations:{notes or " {}"}
    spec:
      containerConcurrency: {container_concurrency}{timeout}
      containers:
        - image: example/{name}
          command: ["{sys.executable}", "{EXAMPLE / "server.py"}"]
          ports:
            - name: h2c
              containerPort: 8080
          env:
            - name: TARGET
              value: "{TARGET}"
"""
    )
    return path


@contextlib.asynccontextmanager
async def greeter(up: ServingUp, service: str) -> AsyncIterator[Any]:
    """A stub on a channel to the ingress that names `service`'s host as `:authority`."""
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{up.port}", options=[("grpc.default_authority", up.host(service))]
    )
    try:
        yield pb2_grpc.GreeterStub(channel)
    finally:
        await channel.close()


async def outcome(call: Awaitable[Any]) -> tuple[grpc.StatusCode, float]:
    """How a unary call ended, and after how many seconds."""
    started = time.monotonic()
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code(), time.monotonic() - started
    return grpc.StatusCode.OK, time.monotonic() - started


async def say_hello(stub: Any, name: str, delay_ms: int = 0, timeout: float = ANSWERED) -> str:
    reply = await stub.SayHello(pb2.HelloRequest(name=name, delay_ms=delay_ms), timeout=timeout)
    message: str = reply.message
    return message


async def start_one_pod(serving_up: Start, tmp_path: Path, name: str, **spec: Any) -> ServingUp:
    """`serving up` with a Service of exactly one pod (min and max scale 1), once that pod answers a call."""
    up = await serving_up([grpc_service(tmp_path, name, annotations=ONE_POD, **spec)])
    await up.wait_revision(f"{name}-00001", lambda r: r["ready_pods"] == 1, 60, "the pod never came up")
    async with greeter(up, name) as stub:
        assert await say_hello(stub, "warm-up") == greeting("warm-up")
    return up


async def test_every_kind_of_call_is_answered_through_the_platform(serving_up: Start, tmp_path: Path) -> None:
    up = await serving_up([grpc_service(tmp_path, "greeter")])
    async with greeter(up, "greeter") as stub:
        assert await say_hello(stub, "Ada") == greeting("Ada")

        request = pb2.HelloStreamRequest(name="Ada", count=5, interval_ms=10)
        replies = [reply.message async for reply in stub.SayHelloStream(request, timeout=ANSWERED)]
        assert replies == [f"{greeting('Ada')} ({i}/5)" for i in range(1, 6)]

        async def names() -> AsyncIterator[Any]:
            for name in ("Ada", "Grace", "Linus"):
                yield pb2.HelloRequest(name=name)

        reply = await stub.SayHelloClientStream(names(), timeout=ANSWERED)
        assert reply.message == greeting("Ada, Grace, Linus")

        # Each reply comes back before the next request is written: the proxies stream both ways at once.
        bidi = stub.SayHelloBidi(timeout=ANSWERED)
        for name in ("Ada", "Grace", "Linus"):
            await bidi.write(pb2.HelloRequest(name=name))
            assert (await asyncio.wait_for(bidi.read(), 10)).message == greeting(name)
        await bidi.done_writing()
        assert await bidi.read() == grpc.aio.EOF
        assert await bidi.code() == grpc.StatusCode.OK

        # Bodies larger than HTTP/2's initial 64 KiB flow-control window, both ways.
        big = "x" * (1 << 20)
        assert await say_hello(stub, big) == greeting(big)

        # Many calls at once share the client's one connection (one stream each).
        answers = await asyncio.gather(*(say_hello(stub, f"n{i}") for i in range(50)))
        assert answers == [greeting(f"n{i}") for i in range(50)]


async def test_a_call_to_a_revision_at_zero_waits_for_its_pod(serving_up: Start, tmp_path: Path) -> None:
    annotations = {**WINDOW, "autoscaling.knative.dev/min-scale": "0"}
    up = await serving_up([grpc_service(tmp_path, "cold", annotations=annotations)], FAST)
    await up.wait_revision(
        "cold-00001", lambda r: r["actual_pods"] == 0, 40, "revision did not scale to zero"
    )

    async with greeter(up, "cold") as stub:
        call = stub.SayHello(pb2.HelloRequest(name="Ada"), timeout=ANSWERED)
        reply = await call
        metadata = await call.initial_metadata()
    assert reply.message == greeting("Ada")
    rev = await up.revision("cold-00001")
    assert rev is not None
    assert rev["ready_pods"] >= 1
    timing = dict(metadata).get("server-timing", "")
    assert timing.startswith("activator;dur="), f"a cold start is visible in Server-Timing: {metadata}"


async def test_overflow_is_shed_with_unavailable(serving_up: Start, tmp_path: Path) -> None:
    """One pod at its max-scale with containerConcurrency 1: one call runs, one may wait, the others are shed
    at once; gRPC clients see UNAVAILABLE, the status they retry, and the revision serves again after."""
    up = await start_one_pod(serving_up, tmp_path, "busy", container_concurrency=1)
    async with greeter(up, "busy") as stub:
        results = await asyncio.gather(*(outcome(say_hello(stub, f"n{i}", delay_ms=3000)) for i in range(8)))
        codes = sorted(code.name for code, _ in results)
        assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
        assert "OK" in codes, codes
        assert "UNAVAILABLE" in codes, codes
        shed = [seconds for code, seconds in results if code == grpc.StatusCode.UNAVAILABLE]
        assert max(shed) < 2.0, f"shed calls learn it at once, not after the running one: {shed}"
        assert await say_hello(stub, "after") == greeting("after")


async def test_a_client_deadline_ends_the_call_and_frees_the_slot(serving_up: Start, tmp_path: Path) -> None:
    """containerConcurrency 1: if the timed-out call kept running in the app, the next call would wait."""
    up = await start_one_pod(serving_up, tmp_path, "deadline", container_concurrency=1)
    async with greeter(up, "deadline") as stub:
        code, seconds = await outcome(say_hello(stub, "slow", delay_ms=10_000, timeout=0.5))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert seconds < 2.0
        started = time.monotonic()
        assert await say_hello(stub, "next", timeout=5) == greeting("next")
        assert time.monotonic() - started < 3.0, "the next call waited for the timed-out one"


async def call_without_deadline_enforcement(
    up: ServingUp, service: str, grpc_timeout: str, delay_ms: int
) -> tuple[str | None, float]:
    """A unary SayHello sent with `grpc-timeout` by a client that does not enforce it itself (a raw HTTP/2
    client, where grpcio would cancel on its own): what ends the call is the platform. Returns the call's
    grpc-status and the seconds it took."""
    message = pb2.HelloRequest(name="raw", delay_ms=delay_ms).SerializeToString()
    client = await H2Peer.connect(up.port)
    try:
        started = time.monotonic()
        stream_id = client.request(
            "/helloworld.Greeter/SayHello",
            method="POST",
            authority=up.host(service),
            extra=[("content-type", "application/grpc"), ("te", "trailers"), ("grpc-timeout", grpc_timeout)],
            end=False,
        )
        await client.send_data(stream_id, struct.pack(">BI", 0, len(message)) + message, end=True)
        stream = await client.response(stream_id, timeout=ANSWERED)
        seconds = time.monotonic() - started
        assert stream.status == 200, stream
        return stream.trailer("grpc-status") or stream.header("grpc-status"), seconds
    finally:
        await client.close()


async def test_the_calls_grpc_timeout_is_enforced_by_the_platform(serving_up: Start, tmp_path: Path) -> None:
    """`grpc-timeout: 700m` on a call that takes 10 s, containerConcurrency 1: the queue-proxy ends it with
    DEADLINE_EXCEEDED after about 0.7 s (not the 300 s revision timeout) and frees the slot."""
    up = await start_one_pod(serving_up, tmp_path, "grpcdeadline", container_concurrency=1)
    status, seconds = await call_without_deadline_enforcement(up, "grpcdeadline", "700m", 10_000)
    assert status == "4", status  # DEADLINE_EXCEEDED
    assert 0.6 < seconds < 3.0, seconds
    async with greeter(up, "grpcdeadline") as stub:
        started = time.monotonic()
        assert await say_hello(stub, "next", timeout=5) == greeting("next")
        assert time.monotonic() - started < 3.0, "the next call waited for the timed-out one"
    # A deadline longer than the call changes nothing.
    status, _ = await call_without_deadline_enforcement(up, "grpcdeadline", "20S", 100)
    assert status == "0", status


async def test_a_calls_grpc_timeout_bounds_its_wait_for_a_cold_start(
    serving_up: Start, tmp_path: Path
) -> None:
    """A call to a revision at zero with `grpc-timeout: 50m` (a pod takes longer than that to start: about
    0.2 s on a fast machine) ends in the activator with DEADLINE_EXCEEDED, not when the pod is up."""
    annotations = {**WINDOW, "autoscaling.knative.dev/min-scale": "0"}
    up = await serving_up([grpc_service(tmp_path, "coldline", annotations=annotations)], FAST)
    await up.wait_revision(
        "coldline-00001", lambda r: r["actual_pods"] == 0, 40, "revision did not scale to zero"
    )
    status, seconds = await call_without_deadline_enforcement(up, "coldline", "50m", 0)
    assert status == "4", (status, seconds)
    assert seconds < 1.5, seconds


async def test_the_revision_timeout_ends_calls_with_a_grpc_status(serving_up: Start, tmp_path: Path) -> None:
    """timeoutSeconds 1 against calls that take 10 s: they end after about a second with DEADLINE_EXCEEDED
    or UNAVAILABLE, for a unary call (nothing answered yet) and for a stream already under way."""
    up = await start_one_pod(serving_up, tmp_path, "short", timeout_seconds=1)
    async with greeter(up, "short") as stub:
        code, seconds = await outcome(say_hello(stub, "slow", delay_ms=10_000))
        assert code in SHOULD_FAIL, code
        assert seconds < 5.0, f"the call ran {seconds:.1f}s"

        call = stub.SayHelloStream(
            pb2.HelloStreamRequest(name="s", count=100, interval_ms=100), timeout=ANSWERED
        )
        received = 0
        started = time.monotonic()
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for _ in call:
                received += 1
        seconds = time.monotonic() - started
        assert 0 < received < 100, received
        assert seconds < 5.0, f"the stream ran {seconds:.1f}s"
        assert await call.code() in SHOULD_FAIL, (await call.code(), await call.details())
        assert await say_hello(stub, "after") == greeting("after")


async def test_a_stream_cancelled_by_its_client_frees_everything(serving_up: Start, tmp_path: Path) -> None:
    """containerConcurrency 1 and a 50 s stream cancelled after three replies: the next calls are served at
    once (the app stopped streaming), and nothing stays in flight in the router or the queue-proxy."""
    up = await start_one_pod(serving_up, tmp_path, "cancel", container_concurrency=1)
    async with greeter(up, "cancel") as stub:
        call = stub.SayHelloStream(pb2.HelloStreamRequest(name="c", count=1000, interval_ms=50), timeout=120)
        for i in range(1, 4):
            assert (await asyncio.wait_for(call.read(), 10)).message == f"{greeting('c')} ({i}/1000)"
        assert call.cancel()
        assert await call.code() == grpc.StatusCode.CANCELLED

        for i in range(3):
            assert await say_hello(stub, f"n{i}", timeout=10) == greeting(f"n{i}")
        request = pb2.HelloStreamRequest(name="again", count=3)
        replies = [reply.message async for reply in stub.SayHelloStream(request, timeout=10)]
        assert len(replies) == 3

    async def idle() -> tuple[int, list[float]]:
        rev = await up.revision("cancel-00001")
        assert rev is not None
        return rev["requests_in_flight"], await queue_proxy_concurrency(up, "cancel-00001")

    deadline = time.monotonic() + 10
    while (now := await idle()) != (0, [0.0]) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert now == (0, [0.0]), f"(router in flight, queue-proxy concurrency per pod) stayed {now}"


async def queue_proxy_concurrency(up: ServingUp, revision: str) -> list[float]:
    """Each pod's average concurrency over its queue-proxy's last 1 s window (the `Stat` the autoscaler
    scrapes): 0 only when nothing was in flight through the whole window."""
    state = json.loads((up.state_dir / "up.json").read_text())
    averages: list[float] = []
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{state['platform_url']}/v1/revisions") as resp:
            revisions = (await resp.json())["revisions"]
        for pod in next(r for r in revisions if r["name"] == revision)["pods"]:
            async with session.get(f"http://{pod['host']}:{pod['stats_port']}/metrics") as resp:
                averages.append(decode_stat(await resp.read()).average_concurrent_requests)
    return averages


def grpc_frame(message: Any) -> bytes:
    """A gRPC length-prefixed message: not compressed, 4-byte big-endian length, the protobuf bytes."""
    data: bytes = message.SerializeToString()
    return struct.pack(">BI", 0, len(data)) + data


def grpc_messages(body: bytes) -> Iterator[bytes]:
    while body:
        _, length = struct.unpack(">BI", body[:5])
        yield body[5 : 5 + length]
        body = body[5 + length :]


async def test_an_http1_client_is_answered_by_the_h2c_app(serving_up: Start, tmp_path: Path) -> None:
    """The engine carries an HTTP/1.1 request to the app over HTTP/2 and the answer back: a gRPC call written
    by hand gets the app's reply, and a request that is no gRPC call gets the app's own refusal (grpcio
    answers a POST that accepts trailers with `grpc-status: 12`), not a platform 5xx."""
    up = await serving_up([grpc_service(tmp_path, "http1")])
    async with greeter(up, "http1") as stub:  # the pod is up
        assert await say_hello(stub, "warm-up") == greeting("warm-up")
    headers = {
        "Host": up.host("http1"),
        "Content-Type": "application/grpc",
        "TE": "trailers",
        "Connection": "TE",
    }
    body = grpc_frame(pb2.HelloRequest(name="http1"))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ANSWERED)) as session:
        async with session.post(up.url("/helloworld.Greeter/SayHello"), data=body, headers=headers) as resp:
            assert resp.status == 200, (resp.status, resp.headers, await resp.text())
            assert resp.headers["Content-Type"].startswith("application/grpc")
            answer = await resp.read()
        [message] = grpc_messages(answer)
        assert pb2.HelloReply.FromString(message).message == greeting("http1")

        headers["Content-Type"] = "text/plain"
        async with session.post(up.url("/"), data=b"hello", headers=headers) as resp:
            assert resp.status < 500, (resp.status, resp.headers, await resp.text())
            assert "grpc-status" in resp.headers, resp.headers


async def test_an_http1_get_to_a_grpc_app_gets_an_http_answer(serving_up: Start, tmp_path: Path) -> None:
    """grpcio resets a stream that is no gRPC call (a GET): the HTTP/1.1 client still gets a well-formed
    response at once, and the platform keeps serving gRPC calls."""
    up = await serving_up([grpc_service(tmp_path, "get")])
    async with greeter(up, "get") as stub:
        assert await say_hello(stub, "warm-up") == greeting("warm-up")
        status, _ = await up.get("get", timeout=aiohttp.ClientTimeout(total=10))
        assert 200 <= status <= 599
        assert await say_hello(stub, "after") == greeting("after")
