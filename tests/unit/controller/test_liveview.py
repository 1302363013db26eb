from __future__ import annotations

import io
from typing import Any

from controller.local.queuegauge import parse_queued
from controller.local.view.liveview import LiveView, eventing_lines, render
from controller.local.view.report import RateMeter
from serving.platform import RevisionKey


def revision(name: str, **overrides: Any) -> dict[str, Any]:
    rev: dict[str, Any] = {
        "name": name,
        "traffic_percent": 100,
        "tags": [],
        "desired_pods": 2,
        "actual_pods": 2,
        "ready_pods": 1,
        "mode": "Proxy",
        "panic": False,
        "requests_per_second": 12.5,
        "queued": 3,
        "stable_concurrency": 1.25,
        "panic_concurrency": None,
        "pods": [{"name": f"{name}-abcde", "reason": None}],
    }
    rev.update(overrides)
    return rev


def report(*revisions: dict[str, Any]) -> dict[str, Any]:
    return {
        "services": [
            {
                "namespace": "default",
                "name": "hello",
                "url": "http://hello.default.localhost:8080",
                "revisions": list(revisions),
            }
        ]
    }


def test_render_shows_each_revision_and_crash_reasons() -> None:
    crashing = revision(
        "hello-00002",
        traffic_percent=0,
        tags=["next"],
        pods=[{"name": "hello-00002-xyz12", "reason": "CrashLoopBackOff: restarting in 2s (exit code 1)"}],
    )
    lines = render(report(revision("hello-00001", mode="Serve", panic=True), crashing))
    text = "\n".join(lines)
    assert lines[0] == "default/hello  http://hello.default.localhost:8080"
    assert lines[1].split() == [
        "REVISION",
        "TRAFFIC",
        "READY/PODS/WANT",
        "MODE",
        "REQ/S",
        "QUEUED",
        "STABLE",
        "PANIC",
    ]
    assert lines[2].split() == ["hello-00001", "100%", "1/2/2", "Serve", "panic", "12.5", "3", "1.2", "-"]
    assert lines[3].split()[:2] == ["hello-00002", "(next)"]
    assert "! hello-00002-xyz12: CrashLoopBackOff: restarting in 2s (exit code 1)" in text
    assert render({"services": []}) == ["no Services"]


def test_render_shows_why_pods_are_not_ready_and_restarted_components() -> None:
    listening = "user-container running for 42s but not listening on port 40123"
    held = "pod hello-00001-zzzzz ended: queue-proxy exit code 1; next pod in 4s"
    rev = revision(
        "hello-00001",
        ready_pods=0,
        pods=[{"name": "hello-00001-abcde", "reason": listening}],
        reasons=[listening, held],
    )
    text = report(rev)
    text["components"] = {
        "activator": {"pid": 7, "restarts": 2, "last_exit": "exit code 1", "log": "/x/activator.log"},
        "autoscaler": {"pid": 8, "restarts": 0, "last_exit": None, "log": "/x/autoscaler.log"},
    }
    lines = render(text)
    assert f"    ! hello-00001-abcde: {listening}" in lines
    assert f"    ! hello-00001: {held}" in lines
    assert sum(listening in line for line in lines) == 1, "a pod's reason is shown once"
    assert "! activator: restarted 2 time(s), last exit code 1; see /x/activator.log" in lines
    assert not any("autoscaler" in line for line in lines)


def test_log_mode_prints_a_revision_only_when_its_summary_changes() -> None:
    current = report(revision("hello-00001"))
    out = io.StringIO()
    view = LiveView(lambda: current, out=out, tty=False)
    view.refresh()
    view.refresh()
    current = report(revision("hello-00001", ready_pods=2))
    view.refresh()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("hello-00001: traffic 100%, 1/2 ready of 2 wanted, Proxy")
    assert lines[1].endswith("hello-00001: traffic 100%, 2/2 ready of 2 wanted, Proxy")


def test_terminal_mode_redraws_in_place_then_prints_plainly_once_closed() -> None:
    out = io.StringIO()
    view = LiveView(lambda: report(revision("hello-00001")), out=out, tty=True)
    view.event("Revision default/hello-00001 created")
    assert out.getvalue() == ""
    view.refresh()
    drawn = out.getvalue()
    assert drawn.startswith("\x1b[H\x1b[2J")
    view.refresh()
    assert out.getvalue()[len(drawn) :].startswith("\x1b[H\x1b[K\n")  # later frames overwrite in place
    drawn = out.getvalue()
    assert "hello-00001" in drawn
    assert "Revision default/hello-00001 created\x1b[K" in drawn
    view.close()
    view.event("stopped")
    view.refresh()
    assert out.getvalue()[len(drawn) :].endswith(" stopped\n")


def test_rate_meter_and_activator_queue_gauge() -> None:
    key = RevisionKey("default", "hello-00001")
    meter = RateMeter()
    meter.sample({key: 10}, now=100.0)
    assert meter.rates == {}
    meter.sample({key: 40}, now=102.0)
    assert meter.rates == {key: 15.0}
    text = (
        "# HELP activator_requests_queued Requests waiting.\n# TYPE activator_requests_queued gauge\n"
        'activator_requests_queued{namespace="default",revision="hello-00001"} 7.0\n'
        'activator_requests_in_flight{namespace="default",revision="hello-00001"} 2.0\n'
    )
    assert parse_queued(text) == {key: 7}


def test_eventing_lines_show_counts_and_reasons() -> None:
    eventing = {
        "brokers": [
            {
                "namespace": "default",
                "name": "default",
                "class": "MTChannelBasedBroker",
                "url": "http://b",
                "accepted": 3,
            }
        ],
        "triggers": [
            {
                "namespace": "default",
                "name": "t",
                "broker": "default",
                "subscriber": None,
                "delivered": None,
                "reason": "spec.subscriber: Service default/missing not found",
            }
        ],
        "sources": [
            {
                "namespace": "default",
                "name": "p",
                "kind": "PingSource",
                "sink": "http://b",
                "sent": None,
                "failed": None,
            }
        ],
    }
    text = "\n".join(eventing_lines(eventing))
    assert "default/default  MTChannelBasedBroker  http://b  3" in text
    assert "default/t  default  -           -          -" in text
    assert "default/p  PingSource  http://b  -     -" in text
    assert "! default/t: spec.subscriber: Service default/missing not found" in text
    assert "None" not in text
    assert eventing_lines({"brokers": [], "triggers": [], "sources": []}) == []
