"""`serving up` end to end: Host routing, unknown hosts, invalid files, status, logs and a clean Ctrl-C."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from tests.integration.conftest import SERVING, ServingUp, eventually, marked_processes, write_app_service
from tests.unit.serving.http.rawh2 import H2Peer

Start = Callable[..., Awaitable[ServingUp]]


async def run_cli(*args: str, cwd: Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *SERVING,
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_routes_by_host_and_unknown_host_lists_known_ones(serving_up: Start, tmp_path: Path) -> None:
    hello = write_app_service(tmp_path, "hello", target="hi")
    world = write_app_service(tmp_path, "world", target="earth")
    up = await serving_up([hello, world])

    status, body = await up.get("hello")
    assert status == 200
    assert body.startswith("hi hello-00001 ")
    status, body = await up.get("world", host=f"WORLD.default.localhost:{up.port}")
    assert (status, body.split()[:2]) == (200, ["earth", "world-00001"])

    status, body = await up.get("hello", host=f"nobody.default.localhost:{up.port}")
    assert status == 404
    assert f"http://hello.default.localhost:{up.port}" in body
    assert f"http://world.default.localhost:{up.port}" in body
    assert "nobody.default.localhost" in body
    assert await up.stop() == 0


async def test_http2_clients_of_an_http11_service(serving_up: Start, tmp_path: Path) -> None:
    """curl with `Upgrade: h2c` and with prior knowledge, then 200 multiplexed streams from one connection:
    HTTP/2 at the ingress, translated to the HTTP/1.1 app (over kept-alive connections)."""
    up = await serving_up([write_app_service(tmp_path, "hello", target="hi")])
    for mode in ("--http2", "--http2-prior-knowledge"):
        proc = await asyncio.create_subprocess_exec(
            *("curl", "-sS", mode, "-H", f"Host: {up.host('hello')}", "-w", "\n%{http_version}"),
            f"http://127.0.0.1:{up.port}/",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err
        body, version = out.decode().rsplit("\n", 1)
        assert (version, body.split()[:2]) == ("2", ["hi", "hello-00001"]), (mode, out)

    client = await H2Peer.connect(up.port)
    try:
        ids = [client.request("/", authority=up.host("hello")) for _ in range(200)]
        for stream_id in ids:
            stream = await client.response(stream_id, timeout=30)
            assert (stream.ended, stream.status) == (True, 200), stream
            assert bytes(stream.data).startswith(b"hi hello-00001 ")
    finally:
        await client.close()


HOSTILE = {
    "User-Agent": "kube-probe/1.30",
    "K-Original-Host": "evil.example",
    "K-Proxy-Request": "activator",
    "K-Kubelet-Probe": "queue",
    "Knative-Serving-Revision": "other-00001",
    "X-Forwarded-Host": "evil.example",
}


async def test_the_app_sees_a_client_as_it_is_never_as_the_platform(
    serving_up: Start, tmp_path: Path
) -> None:
    """Through the activator (cold) and straight to the pod (warm): a client posing as a kubelet probe reaches
    the app with its User-Agent, and nothing only the platform may say reaches it."""
    up = await serving_up([write_app_service(tmp_path, "hello")])
    for attempt in ("cold, through the activator", "warm, straight to the pod"):
        status, body = await up.get("hello", "/headers", headers=HOSTILE)
        assert status == 200, (attempt, body)
        seen = dict(json.loads(body))
        assert seen["user-agent"] == "kube-probe/1.30", attempt
        assert seen["host"] == f"hello.default.localhost:{up.port}", attempt
        leaked = {n for n in seen if n.startswith(("k-", "knative-")) or n == "x-forwarded-host"}
        assert not leaked, (attempt, leaked)
    # The platform's own endpoints live on other ports: through the data path these are the app's paths (a
    # client cannot start a pod's drain or read its stats).
    for path in ("/wait-for-drain", "/metrics", "/healthz", "/readyz"):
        status, body = await up.get("hello", path)
        assert (status, body.split()[:2]) == (200, ["v1", "hello-00001"]), path
    status, _ = await up.get("hello")
    assert status == 200
    assert await up.stop() == 0


async def test_a_probe_straight_to_a_pod_without_its_token_is_the_apps_request(
    serving_up: Start, tmp_path: Path
) -> None:
    """Past the ingress (another process on the machine, another pod in a cluster), a request to a pod's
    queue-proxy that looks like the kubelet's or the activator's probe is not answered by the queue-proxy: it
    reaches the app, while the platform's own probes, which carry the revision's token, keep the pod ready."""
    up = await serving_up([write_app_service(tmp_path, "hello")])
    assert (await up.get("hello"))[0] == 200
    async with aiohttp.ClientSession() as session:
        platform = json.loads((up.state_dir / "up.json").read_text())["platform_url"]
        async with session.get(f"{platform}/v1/revisions") as resp:
            snapshot = await resp.json()
    pods = [pod for revision in snapshot["revisions"] for pod in revision["pods"]]
    assert len(pods) == 1
    url = f"http://127.0.0.1:{pods[0]['port']}/headers"
    posing = [
        {"User-Agent": "kube-probe/1.30", "K-Network-Probe": "queue"},
        {"User-Agent": "Knative-Activator-Probe", "K-Network-Probe": "queue"},
        {"K-Kubelet-Probe": "queue"},
        {"K-Network-Probe": "probe", "K-Network-Hash": "h"},
        {"User-Agent": "kube-probe/1.30", "K-Network-Probe-Token": "a-guess"},
    ]
    async with aiohttp.ClientSession() as session:
        for headers in posing:
            async with session.get(url, headers=headers) as response:
                body = await response.text()
            assert response.status == 200, (headers, body)
            seen = dict(json.loads(body))
            assert "k-network-probe-token" not in seen, headers
            for name, value in headers.items():
                if name != "K-Network-Probe-Token":
                    assert seen[name.lower()] == value, (headers, seen)
    revision = await up.revision("hello-00001")
    assert revision is not None
    assert revision["ready_pods"] >= 1
    assert await up.stop() == 0


async def test_invalid_file_exits_2_naming_file_and_field_and_starts_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: bad\nspec:\n  template:\n"
        "    spec:\n      containerConcurrency: 5000\n      containers:\n        - image: x\n"
    )
    ok = write_app_service(tmp_path, "fine")
    code, _, err = await run_cli("up", str(ok), str(bad), "--port", "0", cwd=tmp_path)
    assert code == 2
    assert str(bad) in err
    assert "spec.template.spec.containerConcurrency" in err
    assert "nothing was started" in err
    assert not (tmp_path / ".serving").exists()


async def test_status_and_logs_of_a_running_up(serving_up: Start, tmp_path: Path) -> None:
    code, _, err = await run_cli("status", cwd=tmp_path)
    assert code == 1
    assert "no `serving up` is running" in err

    up = await serving_up([write_app_service(tmp_path, "hello")])
    assert (await up.get("hello"))[0] == 200
    await up.wait_revision("hello-00001", lambda r: r["ready_pods"] >= 1, 30, "hello never ready")

    code, out, _ = await run_cli("status", "--json", cwd=tmp_path)
    assert code == 0
    report = json.loads(out)
    [service] = report["services"]
    assert service["url"] == f"http://hello.default.localhost:{up.port}"
    [rev] = service["revisions"]
    expected_keys = {
        "name",
        "traffic_percent",
        "desired_pods",
        "actual_pods",
        "ready_pods",
        "mode",
        "stable_concurrency",
        "panic_concurrency",
        "reasons",
    }
    assert expected_keys <= set(rev)
    assert rev["name"] == "hello-00001"
    assert rev["traffic_percent"] == 100
    assert rev["mode"] in ("Serve", "Proxy")
    assert rev["ready_pods"] >= 1
    assert rev["requests_total"] >= 1

    code, out, _ = await run_cli("status", cwd=tmp_path)
    assert code == 0
    assert "hello-00001" in out
    assert "100%" in out

    code, out, _ = await run_cli("logs", "hello", cwd=tmp_path)
    assert code == 0
    assert "user-container | app listening on" in out
    code, out, _ = await run_cli("logs", "hello", "-c", "queue-proxy", cwd=tmp_path)
    assert code == 0
    assert "queue-proxy |" in out


async def test_sigint_stops_everything_and_sigterm_too(serving_up: Start, tmp_path: Path) -> None:
    up = await serving_up([write_app_service(tmp_path, "hello")])
    assert (await up.get("hello"))[0] == 200
    assert len(marked_processes(up.marker)) >= 5  # up, activator, autoscaler, queue-proxy, app
    assert await up.stop(signal.SIGINT) == 0
    assert not (up.state_dir / "up.json").exists()
    assert "stopped" in up.output()

    again = await serving_up([write_app_service(tmp_path, "hello")])
    assert (await again.get("hello"))[0] == 200
    assert await again.stop(signal.SIGTERM) == 0


async def test_sigint_while_starting_leaves_nothing_behind(tmp_path: Path) -> None:
    up = ServingUp(tmp_path, [write_app_service(tmp_path, "hello")])
    await up.start(wait=False)

    async def components_spawned() -> bool:
        return len(marked_processes(up.marker)) >= 2

    await eventually(components_spawned, 30, "serving up started no child process")
    assert await up.stop(signal.SIGINT) in (0, 130)
    assert not (up.state_dir / "up.json").exists()
