"""The one Kafka fixture every broker test uses, and helpers for talking to that broker.

``kafka_bootstrap`` takes the first broker that is available:

1. ``KAFKA_BOOTSTRAP_SERVERS``, if set;
2. the official ``apache/kafka`` image through testcontainers, if a Docker engine answers;
3. otherwise a local single-node Apache Kafka (KRaft) run as a JVM from jars resolved from Maven
   Central (:class:`anomrec.localkafka.LocalKafka`). Missing Java or Maven fails the session with
   what to install; it never skips.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from anomrec.localkafka import KAFKA_VERSION, BrokerUnavailable, LocalKafka

# Property tests draw the same examples on every run (a failure reproduces), and a machine busy with
# a broker start must not fail them on time: they assert properties, never speed.
settings.register_profile(
    "anomrec", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("anomrec")


def _docker_reachable() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        client.close()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine here"
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _apache_kafka_container() -> Iterator[str]:
    """The official apache/kafka image in KRaft mode, published on 127.0.0.1 only.

    testcontainers' KafkaContainer drives Confluent's image layout, so the official image runs
    through its generic container with the broker advertising the published host port.
    """
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    port = _free_port()
    env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://127.0.0.1:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    }
    container = DockerContainer(f"apache/kafka:{KAFKA_VERSION}").with_bind_ports(9092, ("127.0.0.1", port))
    for key, value in env.items():
        container = container.with_env(key, value)
    with container:
        wait_for_logs(container, "Kafka Server started", timeout=120)
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    """Bootstrap servers of a real Apache Kafka broker for the whole session."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")

    def say(text: str) -> None:
        """One line on the terminal, past pytest's capture: which broker, and how long it took."""
        if reporter is None or capture is None:
            return
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"[kafka] {text}")

    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if configured:
        say(f"using KAFKA_BOOTSTRAP_SERVERS={configured}")
        yield configured
        return
    if _docker_reachable():
        started = time.monotonic()
        with _apache_kafka_container() as servers:
            say(f"apache/kafka:{KAFKA_VERSION} container at {servers} in {time.monotonic() - started:.1f} s")
            yield servers
        return
    broker = LocalKafka()
    try:
        broker.start()
    except BrokerUnavailable as exc:
        pytest.fail(f"no Kafka broker for the tests: {exc}", pytrace=False)
    try:
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in broker.timings.items())
        say(f"local Apache Kafka {broker.version} (KRaft, JVM) at {broker.bootstrap_servers}: {phases}")
        yield broker.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
def fresh_topic(kafka_bootstrap: str) -> Iterator[object]:
    """Factory: ``fresh_topic(prefix, partitions=1)`` makes a uniquely named topic, deleted after."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="anomrec-tests")
    created: list[str] = []

    def make(prefix: str, partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
        created.append(name)
        return name

    yield make
    try:
        if created:
            admin.delete_topics(created)
    finally:
        admin.close()


@pytest.fixture
def kafka_config(kafka_bootstrap: str, fresh_topic: Any, tmp_path: Path) -> Any:
    """Factory: ``kafka_config(input_topic, base, **settings)`` is ``base`` (a ProcessorConfig) reading
    ``input_topic`` on the test broker, with fresh output topics, its own group and state folder."""

    def make(input_topic: str, base: Any, **settings: Any) -> Any:
        return dataclasses.replace(
            base,
            bootstrap_servers=kafka_bootstrap,
            input_topic=input_topic,
            alerts_topic=fresh_topic("alerts"),
            dead_letter_topic=fresh_topic("dead"),
            recommendations_topic=fresh_topic("recommendations"),
            similar_items_topic=fresh_topic("similar"),
            group_id=f"group-{input_topic}",
            state_dir=str(tmp_path / "state"),
            **settings,
        )

    return make


@pytest.fixture
def anomrec_command() -> list[str]:
    """The ``anomrec`` command as a user runs it: the installed script, or ``python -m anomrec``."""
    script = Path(sys.executable).with_name("anomrec")
    return [str(script)] if script.exists() else [sys.executable, "-m", "anomrec"]
