"""A real single-node Kafka for tests: one JVM that is both KRaft controller and broker, on loopback ports,
from the jars `prepare.sh` gathers; it can be stopped, killed and started again on the same data and ports.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Final

from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]  # aiokafka ships no py.typed

from tests.fakes.process import free_ports

log = logging.getLogger(__name__)

PREPARE_SCRIPT: Final = Path(__file__).with_name("prepare.sh")
KAFKA_VERSION: Final = os.environ.get("KAFKA_VERSION", "4.4.0")
"""The Kafka the tests run against (`KAFKA_VERSION` may name another 4.x); `prepare.sh` gathers it."""
PREPARE_TIMEOUT: Final = 900.0
"""Seconds a cold `prepare.sh` may take (about 10 s with a good link); a warm one returns at once."""
START_TIMEOUT: Final = 60.0
"""Seconds from `java` started to a broker that answers clients (about 3 s here; generous for a loaded CI)."""
STOP_TIMEOUT: Final = 30.0
"""Seconds between SIGTERM and SIGKILL: a controlled shutdown of one node takes a few seconds."""
HEAP: Final = "512m"
"""The JVM's maximum heap: ample for a test broker, and small beside the other processes of the suite."""

JVM_OPTIONS: Final = (
    f"-Xmx{HEAP}",
    "-Xms64m",
    # One GC thread and no C2 compiler: a test broker moves little data, and on two cores a quick start
    # matters more than peak throughput.
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
    "-Dlog4j2.disable.jmx=true",
)

SERVER_SETTINGS: Final = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
    # Topics are created by whoever uses them (the Kafka backend does it with the admin API), as in a Knative
    # installation; a typo in a test then fails rather than creating a topic.
    "auto.create.topics.enable": "false",
    "num.partitions": "1",
    "default.replication.factor": "1",
    # One node: every internal topic has one replica, and few partitions, which it creates quickly.
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    # A consumer group's first member gets its partitions at once rather than after 3 s.
    "group.initial.rebalance.delay.ms": "0",
    # Two cores: a thread or two per pool instead of the defaults sized for a server.
    "num.network.threads": "2",
    "num.io.threads": "2",
    "background.threads": "2",
    "num.recovery.threads.per.data.dir": "1",
    "num.replica.fetchers": "1",
    # After a crash the controller (restarted with the broker) still holds the dead incarnation's registration
    # and accepts the new one only once that session expires: 3 s instead of 9 s, with heartbeats to match.
    "broker.session.timeout.ms": "3000",
    "broker.heartbeat.interval.ms": "500",
    # The log cleaner (for __consumer_offsets) takes 128 MiB for its buffer by default; 8 MiB fits the heap.
    "log.cleaner.dedupe.buffer.size": "8388608",
}
"""server.properties beyond the ports and directories, each value a Kafka default changed for one node."""

LOG4J2_PROPERTIES: Final = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.request.name = kafka.request.logger
logger.request.level = warn
"""
"""Kafka's own console layout; output goes to `kafka.log` in the data directory."""


class KafkaBrokerError(RuntimeError):
    """The broker could not be prepared, formatted, started or stopped; the message carries its log's tail."""


def prepare_libs(timeout: float = PREPARE_TIMEOUT) -> Path:
    """The directory of the broker's jars, from `prepare.sh`'s cache (filled first when empty; a file lock
    keeps two test sessions from filling it at once)."""
    cache = Path(os.environ.get("SERVING_CACHE", Path.home() / ".cache/serving")) / "kafka"
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".prepare.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            done = subprocess.run(
                ["bash", str(PREPARE_SCRIPT)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                env={**os.environ, "KAFKA_VERSION": KAFKA_VERSION},
            )
        except subprocess.TimeoutExpired as exc:
            raise KafkaBrokerError(f"{PREPARE_SCRIPT.name} did not finish within {timeout:g}s") from exc
        except OSError as exc:
            raise KafkaBrokerError(f"{PREPARE_SCRIPT.name} could not run: {exc}") from exc
    if done.returncode != 0:
        raise KafkaBrokerError(
            f"{PREPARE_SCRIPT.name} exited with {done.returncode}:\n{_last(done.stderr, 40)}"
        )
    lines = done.stdout.strip().splitlines()
    libs = Path(lines[-1]) if lines else None
    if libs is None or not any(libs.glob("kafka_2.13-*.jar")):
        raise KafkaBrokerError(f"{PREPARE_SCRIPT.name} gave no jars ({libs}):\n{_last(done.stderr, 40)}")
    return libs


def _last(text: str, count: int) -> str:
    return "\n".join(text.splitlines()[-count:])


def _outside_event_loop(method: str) -> None:
    """Refuse to block a running event loop (its clients would stall, and the readiness probe needs a loop
    of its own)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise KafkaBrokerError(
        f"KafkaBroker.{method} blocks: from async code, use asyncio.to_thread(broker.{method})"
    )


def _cluster_id() -> str:
    """A random cluster id as Kafka writes one: a UUID in URL-safe base64 without padding, never starting
    with `-` (Kafka's own `Uuid.randomUuid` draws again then: the storage tool's argument parser would read
    such an id as an option, one format in 64)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaBroker:
    """One combined controller and broker process. Its ports are chosen once, so that a restart comes back
    where clients expect it; its data directory is formatted once, so that a restart keeps every record.

    `start`, `stop` and `kill` block (seconds, not milliseconds): from async code call them through
    `asyncio.to_thread`, which also lets the test's clients go on running meanwhile.
    """

    def __init__(self, libs: Path, data: Path, *, java: str = "java") -> None:
        self.libs = libs
        self.data = data
        self.java = java
        self.port, self.controller_port = free_ports(2)
        self.cluster_id = _cluster_id()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """`127.0.0.1:<port>`, the clients' bootstrap servers."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """Everything the JVM printed, across restarts (the storage format included)."""
        return self.data / "kafka.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log yet)"
        return _last(self.log_path.read_text(errors="replace"), lines)

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Format the storage on first use, start the JVM, and return once a client gets cluster metadata."""
        _outside_event_loop("start")
        if self.running:
            raise KafkaBrokerError("the broker is already running")
        self.data.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        if not (self.data / "logs" / "meta.properties").exists():
            self._format(config)
        with self.log_path.open("ab") as out:
            self._process = subprocess.Popen(
                [
                    self.java,
                    *JVM_OPTIONS,
                    *self._logging(),
                    "-cp",
                    f"{self.libs}/*",
                    "kafka.Kafka",
                    str(config),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data,
            )
        log.info("kafka started (pid %d) on %s", self._process.pid, self.bootstrap)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM (a controlled shutdown that flushes and closes every log) and wait; SIGKILL past
        `timeout`, then raise: a broker that does not stop on SIGTERM is a finding."""
        _outside_event_loop("stop")
        process = self._process
        if process is None or process.poll() is not None:
            self._process = None
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise KafkaBrokerError(
                f"the broker ignored SIGTERM for {timeout:g}s and was killed:\n{self.log_tail()}"
            ) from None
        self._process = None

    def kill(self) -> None:
        """SIGKILL, as a crash: no flush beyond what the OS already holds."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        self._process = None

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- internals ------------------------------------------------------------------------------------------

    def _logging(self) -> list[str]:
        path = self.data / "log4j2.properties"
        if not path.exists():
            path.write_text(LOG4J2_PROPERTIES)
        return [f"-Dlog4j2.configurationFile={path}"]

    def _write_config(self) -> Path:
        settings = {
            **SERVER_SETTINGS,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "log.dirs": str(self.data / "logs"),
        }
        path = self.data / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        return path

    def _format(self, config: Path) -> None:
        """Write the cluster id and a one-voter quorum (`--standalone`: this node is the whole controller
        quorum) into the empty log directory, as `kafka-storage.sh format` does."""
        command = [
            self.java,
            *JVM_OPTIONS,
            *self._logging(),
            "-cp",
            f"{self.libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "--config",
            str(config),
            f"--cluster-id={self.cluster_id}",
            "--standalone",
        ]
        with self.log_path.open("ab") as out:
            try:
                done = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=60,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise KafkaBrokerError(
                    f"the storage format did not finish in 60s:\n{self.log_tail()}"
                ) from exc
        if done.returncode != 0:
            raise KafkaBrokerError(f"the storage format exited with {done.returncode}:\n{self.log_tail()}")

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            process = self._process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise KafkaBrokerError(f"the broker exited with {code} while starting:\n{self.log_tail()}")
            try:
                # A plain connect first: aiokafka logs an error for every refused connection.
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                asyncio.run(_probe(self.bootstrap))
            except Exception as exc:  # every failed probe is retried until the deadline; the last is reported
                last = exc
                time.sleep(0.2)
            else:
                log.info("kafka on %s is ready", self.bootstrap)
                return
        raise KafkaBrokerError(
            f"the broker did not answer on {self.bootstrap} within {timeout:g}s (last probe: {last!r}):\n"
            + self.log_tail()
        )


async def _probe(bootstrap: str) -> None:
    """One bounded attempt: cluster metadata that names this node, from a fresh admin client."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    try:
        async with asyncio.timeout(3):
            await admin.start()
            cluster = await admin.describe_cluster()
        if not cluster.get("brokers"):
            raise KafkaBrokerError(f"cluster metadata names no broker: {cluster}")
    finally:
        await admin.close()
