from __future__ import annotations

import asyncio

from activator.backends import PROBE_PERIOD, Backends
from serving.clock import FakeClock
from serving.kube.platform import pods_of
from serving.platform import Pod


def pod(index: int, *, ready: bool = False) -> Pod:
    return Pod(
        name=f"hello-{index}",
        host="127.0.0.1",
        port=40000 + index,
        stats_port=41000 + index,
        admin_port=42000 + index,
        ready=ready,
        started_at=0.0,
    )


class FakeProbe:
    """Answers from a per-address script (True = pass); records when each probe happened."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.passing: set[str] = set()
        self.calls: list[tuple[str, float]] = []

    async def __call__(self, target: Pod) -> bool:
        self.calls.append((target.address, self.clock.now()))
        return target.address in self.passing


class FakeSleep:
    """Sleeps end only when the test moves time on with `advance`."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.pending: list[tuple[float, asyncio.Future[None]]] = []

    async def __call__(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((self.clock.now() + seconds, future))
        await future

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        due = [(t, f) for t, f in self.pending if t <= self.clock.now()]
        self.pending = [(t, f) for t, f in self.pending if t > self.clock.now()]
        for _, future in due:
            if not future.done():
                future.set_result(None)
        await settle()


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class Harness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.probe = FakeProbe(self.clock)
        self.sleep = FakeSleep(self.clock)
        self.changes: list[list[str]] = []
        self.backends = Backends(
            probe=self.probe, on_change=self.changes.append, clock=self.clock, sleep=self.sleep
        )


async def test_unready_pod_is_probed_every_200ms_until_it_passes_then_used() -> None:
    h = Harness()
    h.backends.update([pod(1)])
    await settle()
    assert h.probe.calls == [("127.0.0.1:40001", 0.0)]
    assert h.backends.healthy == []
    await h.sleep.advance(PROBE_PERIOD)
    await h.sleep.advance(PROBE_PERIOD)
    assert [t for _, t in h.probe.calls] == [0.0, PROBE_PERIOD, 2 * PROBE_PERIOD]
    h.probe.passing.add("127.0.0.1:40001")
    await h.sleep.advance(PROBE_PERIOD)
    assert h.backends.healthy == ["127.0.0.1:40001"]
    assert h.changes == [["127.0.0.1:40001"]]
    assert h.backends.probing == []
    calls = len(h.probe.calls)
    await h.sleep.advance(10 * PROBE_PERIOD)
    assert len(h.probe.calls) == calls  # a healthy pod is not probed again


async def test_pod_that_passes_is_used_before_the_platform_calls_it_ready() -> None:
    h = Harness()
    h.probe.passing.add("127.0.0.1:40002")
    h.backends.update([pod(2, ready=False)])
    await settle()
    assert h.backends.healthy == ["127.0.0.1:40002"]


async def test_platform_ready_pod_is_trusted_without_probing() -> None:
    h = Harness()
    h.backends.update([pod(3, ready=True)])
    await settle()
    assert h.backends.healthy == ["127.0.0.1:40003"]
    assert h.probe.calls == []


async def test_failed_request_drops_pod_at_once_and_reprobes_it_even_if_platform_says_ready() -> None:
    h = Harness()
    h.backends.update([pod(1, ready=True), pod(2, ready=True)])
    h.backends.request_failed("127.0.0.1:40001")
    assert h.backends.healthy == ["127.0.0.1:40002"]
    assert h.changes[-1] == ["127.0.0.1:40002"]
    await settle()
    assert [a for a, _ in h.probe.calls] == ["127.0.0.1:40001"]
    # A new snapshot still calling it ready does not bring it back before a probe passes.
    h.backends.update([pod(1, ready=True), pod(2, ready=True)])
    assert h.backends.healthy == ["127.0.0.1:40002"]
    h.probe.passing.add("127.0.0.1:40001")
    await h.sleep.advance(PROBE_PERIOD)
    assert h.backends.healthy == ["127.0.0.1:40001", "127.0.0.1:40002"]


async def test_pod_gone_from_platform_is_dropped_and_its_probing_stops() -> None:
    h = Harness()
    h.backends.update([pod(1, ready=True), pod(2)])
    await settle()
    assert h.backends.probing == ["127.0.0.1:40002"]
    h.backends.update([])
    assert h.backends.healthy == []
    assert h.changes[-1] == []
    await settle()
    assert h.backends.probing == []
    calls = len(h.probe.calls)
    await h.sleep.advance(5 * PROBE_PERIOD)
    assert len(h.probe.calls) == calls


async def test_failed_request_on_unlisted_pod_changes_nothing() -> None:
    h = Harness()
    h.backends.update([pod(1, ready=True)])
    h.backends.request_failed("127.0.0.1:49999")
    assert h.backends.healthy == ["127.0.0.1:40001"]
    assert len(h.changes) == 1


async def test_probe_that_raises_counts_as_failed_and_probing_goes_on() -> None:
    h = Harness()

    async def broken(target: Pod) -> bool:
        h.probe.calls.append((target.address, h.clock.now()))
        if len(h.probe.calls) == 1:
            raise RuntimeError("boom")
        return True

    backends = Backends(probe=broken, on_change=h.changes.append, clock=h.clock, sleep=h.sleep)
    backends.update([pod(4)])
    await settle()
    assert backends.healthy == []
    await h.sleep.advance(PROBE_PERIOD)
    assert backends.healthy == ["127.0.0.1:40004"]


async def test_close_cancels_probing() -> None:
    h = Harness()
    h.backends.update([pod(1), pod(2)])
    await settle()
    await h.backends.close()
    assert h.backends.probing == []


async def test_platform_turning_a_ready_pod_not_ready_drops_it_at_once_and_probes_it() -> None:
    """A pod whose app crashed: the platform's ready -> not ready is applied at once, even though its
    queue-proxy still accepts connections (so no refused connection would ever drop it)."""
    h = Harness()
    h.backends.update([pod(1, ready=True), pod(2, ready=True)])
    assert h.backends.healthy == ["127.0.0.1:40001", "127.0.0.1:40002"]
    h.backends.update([pod(1, ready=False), pod(2, ready=True)])
    assert h.backends.healthy == ["127.0.0.1:40002"]
    assert h.changes[-1] == ["127.0.0.1:40002"]
    await settle()
    assert h.backends.probing == ["127.0.0.1:40001"]
    await h.sleep.advance(PROBE_PERIOD)
    assert h.backends.healthy == ["127.0.0.1:40002"], "failing probes keep it out"
    h.probe.passing.add("127.0.0.1:40001")  # the app is back: our own probe lets it in first
    await h.sleep.advance(PROBE_PERIOD)
    assert h.backends.healthy == ["127.0.0.1:40001", "127.0.0.1:40002"]
    assert h.backends.probing == []


async def test_platform_turning_a_pod_ready_again_uses_it_at_once() -> None:
    h = Harness()
    h.backends.update([pod(1, ready=True)])
    h.backends.update([pod(1, ready=False)])
    assert h.backends.healthy == []
    h.backends.update([pod(1, ready=True)])
    assert h.backends.healthy == ["127.0.0.1:40001"]
    assert h.changes == [["127.0.0.1:40001"], [], ["127.0.0.1:40001"]]
    await settle()
    assert h.backends.probing == []


async def test_failed_pod_that_the_platform_sees_fail_and_recover_is_used_again() -> None:
    """After a refused connection the platform's word is trusted again once it reports the pod not ready
    and then ready: it probed the pod after the failure."""
    h = Harness()
    h.backends.update([pod(1, ready=True)])
    h.backends.request_failed("127.0.0.1:40001")
    h.backends.update([pod(1, ready=True)])
    assert h.backends.healthy == [], "a snapshot from before the failure is not trusted"
    h.backends.update([pod(1, ready=False)])
    assert h.backends.healthy == []
    h.backends.update([pod(1, ready=True)])
    assert h.backends.healthy == ["127.0.0.1:40001"]


async def test_pod_our_probe_let_in_before_the_platform_stays_while_the_platform_catches_up() -> None:
    h = Harness()
    h.probe.passing.add("127.0.0.1:40002")
    h.backends.update([pod(2, ready=False)])
    await settle()
    assert h.backends.healthy == ["127.0.0.1:40002"]
    h.backends.update([pod(2, ready=False)])  # no transition: nothing the platform learnt since
    assert h.backends.healthy == ["127.0.0.1:40002"]
    h.backends.update([pod(2, ready=True)])
    h.backends.update([pod(2, ready=False)])  # now it saw the pod fail
    assert h.backends.healthy == []


async def test_a_pod_let_in_by_probe_and_deleted_before_it_was_ever_ready_is_dropped() -> None:
    """On Kubernetes: the pod starts (listed, not ready), passes our probe (healthy), and is deleted before
    the platform ever calls it ready. Its endpoint turns terminating with no ready -> not ready transition; it
    must stop taking traffic at once, or its drain never ends while requests keep coming."""

    def slices(**conditions: bool) -> list[dict[str, object]]:
        address = {"addresses": ["10.0.0.7"], "targetRef": {"name": "hello-7"}, "conditions": conditions}
        return [{"metadata": {"namespace": "default"}, "endpoints": [address]}]

    h = Harness()
    h.probe.passing.add("10.0.0.7:8012")
    h.backends.update(pods_of(slices(ready=False, serving=False, terminating=False)))
    await settle()
    assert h.backends.healthy == ["10.0.0.7:8012"]
    h.backends.update(pods_of(slices(ready=False, serving=True, terminating=True)))
    await settle()
    assert (h.backends.healthy, h.backends.probing) == ([], [])
    assert h.changes[-1] == []
