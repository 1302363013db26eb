"""Fixtures for tests against a real Kafka: `kafka_broker` runs one KRaft node per test module, from the
jars `prepare.sh` gathers (once per machine, into a cache outside the checkout). A failing test gets the tail
of the broker's log in its report.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kafka.broker import KafkaBroker, KafkaBrokerError, prepare_libs

KAFKA_DIR = Path(__file__).resolve().parent

_libs: dict[str, Path | Exception] = {}
_running: list[KafkaBroker] = []


def _is_kafka(item: pytest.Item) -> bool:
    return KAFKA_DIR in Path(str(item.path)).resolve().parents


def pytest_collection_finish(session: pytest.Session) -> None:
    """Gather the jars now, outside any test's timeout, when a Kafka test will run: a cold run downloads
    about 45 MB from Maven Central, a warm one returns at once."""
    if session.config.option.collectonly or not any(_is_kafka(item) for item in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    started = time.monotonic()
    try:
        _libs["libs"] = prepare_libs()
    except KafkaBrokerError as exc:
        _libs["error"] = exc
        if reporter is not None:
            reporter.write_line(f"kafka: the jars could not be prepared; every Kafka test fails: {exc}")
        return
    if reporter is not None:
        reporter.write_line(f"kafka: jars in {_libs['libs']} ({time.monotonic() - started:.0f}s)")


@pytest.fixture(scope="session")
def kafka_libs() -> Path:
    """The broker's jars; a machine that cannot gather them fails every Kafka test with the reason (Java or
    Maven missing, Maven Central unreachable), never skips them."""
    error = _libs.get("error")
    if isinstance(error, Exception):
        pytest.fail(f"the Kafka jars could not be prepared: {error}", pytrace=False)
    libs = _libs.get("libs")
    if isinstance(libs, Path):
        return libs
    try:
        return prepare_libs()
    except KafkaBrokerError as exc:
        pytest.fail(f"the Kafka jars could not be prepared: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def kafka_broker(kafka_libs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A started single-node Kafka (`bootstrap` is `127.0.0.1:<port>`), one per test module: a module whose
    tests stop or kill the broker disturbs no other module, and a start costs about three seconds. A test that
    stops it starts it again before it ends; the fixture stops it for good after the module."""
    broker = KafkaBroker(kafka_libs, tmp_path_factory.mktemp("kafka"))
    broker.start()
    _running.append(broker)
    try:
        yield broker
    finally:
        _running.remove(broker)
        broker.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed and _is_kafka(item):
        for broker in _running:
            report.sections.append((f"kafka log ({broker.log_path})", broker.log_tail(60)))
