"""gRPC's hello-world greeter as a Knative Service: every kind of call, greeting with `TARGET`.

Listens on `$PORT` (8080 when unset) with HTTP/2 cleartext; the Service names its port `h2c`, so the
queue-proxy speaks HTTP/2 to it. gRPC's standard health service answers the Service's `grpc` readiness
probe. SIGTERM stops taking calls and lets the running ones finish (a few seconds).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator

import grpc
import helloworld_pb2
import helloworld_pb2_grpc
from grpc_health.v1 import health as health_servicer
from grpc_health.v1 import health_pb2, health_pb2_grpc

log = logging.getLogger("greeter")

GRACE_SECONDS = 5.0
"""How long running calls may go on after SIGTERM; well inside Kubernetes' default 30 s termination grace."""


def greeting(name: str) -> str:
    return f"Hello {name or 'World'} from {os.environ.get('TARGET', 'World')}!"


class Greeter(helloworld_pb2_grpc.GreeterServicer):
    async def SayHello(
        self, request: helloworld_pb2.HelloRequest, context: grpc.aio.ServicerContext
    ) -> helloworld_pb2.HelloReply:
        # A cancelled or timed-out call cancels this task, so the sleep ends with it.
        await asyncio.sleep(request.delay_ms / 1000)
        return helloworld_pb2.HelloReply(message=greeting(request.name))

    async def SayHelloStream(
        self, request: helloworld_pb2.HelloStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[helloworld_pb2.HelloReply]:
        for i in range(1, request.count + 1):
            if i > 1:
                await asyncio.sleep(request.interval_ms / 1000)
            yield helloworld_pb2.HelloReply(message=f"{greeting(request.name)} ({i}/{request.count})")

    async def SayHelloClientStream(
        self, request_iterator: AsyncIterator[helloworld_pb2.HelloRequest], context: grpc.aio.ServicerContext
    ) -> helloworld_pb2.HelloReply:
        names = [request.name async for request in request_iterator]
        return helloworld_pb2.HelloReply(message=greeting(", ".join(names)))

    async def SayHelloBidi(
        self, request_iterator: AsyncIterator[helloworld_pb2.HelloRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[helloworld_pb2.HelloReply]:
        async for request in request_iterator:
            await asyncio.sleep(request.delay_ms / 1000)
            yield helloworld_pb2.HelloReply(message=greeting(request.name))


async def serve() -> None:
    port = int(os.environ.get("PORT", "8080"))
    # SO_REUSEPORT off: a second server on a port in use must fail, not share it.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    helloworld_pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)
    # gRPC's standard health service, which the Service's `readinessProbe: grpc` asks.
    health = health_servicer.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for name in ("", "helloworld.Greeter"):
        health.set(name, health_pb2.HealthCheckResponse.SERVING)
    # "[::]" takes IPv4 too; gRPC falls back to 0.0.0.0 where IPv6 is off.
    server.add_insecure_port(f"[::]:{port}")
    await server.start()
    log.info("greeter listening on :%d", port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping: running calls get %gs", GRACE_SECONDS)
    health.enter_graceful_shutdown()  # NOT_SERVING from now on
    await server.stop(GRACE_SECONDS)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(serve())
