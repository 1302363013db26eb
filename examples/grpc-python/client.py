"""A command-line client of the greeter, through the local ingress:
`python client.py --target helloworld-grpc.default.localhost:8080 NAME`.

The local ingress routes by `:authority` (`{service}.{namespace}.localhost`), but gRPC does not resolve
`*.localhost` names as curl and browsers do: for such a target the client connects to 127.0.0.1 on the
target's port and sends the target as `:authority` (`grpc.default_authority`). `--address` picks another
address to connect to, with the same authority.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

import grpc
import helloworld_pb2
import helloworld_pb2_grpc

CALLS = ("unary", "server-stream", "client-stream", "bidi")


def address_for(target: str) -> str:
    """Where to connect for `target`: loopback for `*.localhost` names, the target itself otherwise."""
    host, _, port = target.rpartition(":")
    if host == "localhost" or host.endswith(".localhost"):
        return f"127.0.0.1:{port}"
    return target


def requests(names: list[str], delay_ms: int) -> Iterator[helloworld_pb2.HelloRequest]:
    for name in names:
        yield helloworld_pb2.HelloRequest(name=name, delay_ms=delay_ms)


def run(args: argparse.Namespace) -> None:
    options = [("grpc.default_authority", args.target)]
    with grpc.insecure_channel(args.address or address_for(args.target), options=options) as channel:
        stub = helloworld_pb2_grpc.GreeterStub(channel)
        timeout = args.timeout
        if args.call == "unary":
            reply = stub.SayHello(
                helloworld_pb2.HelloRequest(name=args.names[0], delay_ms=args.delay_ms), timeout=timeout
            )
            print(reply.message)
        elif args.call == "server-stream":
            request = helloworld_pb2.HelloStreamRequest(
                name=args.names[0], count=args.count, interval_ms=args.delay_ms
            )
            for reply in stub.SayHelloStream(request, timeout=timeout):
                print(reply.message)
        elif args.call == "client-stream":
            print(stub.SayHelloClientStream(requests(args.names, args.delay_ms), timeout=timeout).message)
        else:
            for reply in stub.SayHelloBidi(requests(args.names, args.delay_ms), timeout=timeout):
                print(reply.message)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Call the greeter through the local ingress.")
    parser.add_argument(
        "--target",
        default="helloworld-grpc.default.localhost:8080",
        help="the Service's host and port, sent as :authority (default %(default)s)",
    )
    parser.add_argument("--address", help="HOST:PORT to connect to (default: 127.0.0.1 for *.localhost)")
    parser.add_argument("--call", choices=CALLS, default="unary", help="which method (default %(default)s)")
    parser.add_argument("--count", type=int, default=3, help="replies to a server-stream call (default 3)")
    parser.add_argument(
        "--delay-ms", type=int, default=0, help="server wait per request, or between streamed replies"
    )
    parser.add_argument("--timeout", type=float, help="deadline of the call in seconds (default: none)")
    parser.add_argument("names", nargs="*", default=["World"], metavar="NAME")
    args = parser.parse_args(argv)
    try:
        run(args)
    except grpc.RpcError as err:
        print(f"{err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
