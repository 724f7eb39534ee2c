"""Tests of anomrec.localkafka against a real Kafka broker started from Maven Central jars.

The first run on a machine resolves the jars with Maven (about 20 s); later runs reuse the cache.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from anomrec.localkafka import KAFKA_VERSION, BrokerStartError, BrokerUnavailable, LocalKafka, resolve_jars

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalKafka]:
    with LocalKafka() as kafka:
        yield kafka


def _new_topic(broker: LocalKafka, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])
        admin.wait_for_topics([name], timeout_ms=30_000)
    finally:
        admin.close()
    return name


def _consume(
    broker: LocalKafka, topic: str, count: int, **config: object
) -> list[tuple[bytes | None, bytes]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=30_000,
        **config,
    )
    try:
        records = []
        for record in consumer:  # stops after consumer_timeout_ms without records
            records.append((record.key, record.value))
            if len(records) == count:
                break
        if config.get("group_id"):
            consumer.commit()
            assert consumer.committed(TopicPartition(topic, 0)) == len(records)
    finally:
        consumer.close()
    return records


def test_message_round_trip(broker: LocalKafka) -> None:
    assert broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
    topic = _new_topic(broker, "round-trip")

    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    try:
        metadata = producer.send(topic, key=b"sensor-1", value=b"42.0").get(timeout=30)
    finally:
        producer.close()
    assert (metadata.topic, metadata.partition, metadata.offset) == (topic, 0, 0)

    # A consumer group commits its offset: __consumer_offsets works.
    assert _consume(broker, topic, 1, group_id=f"g-{topic}") == [(b"sensor-1", b"42.0")]


def test_transactions_commit_and_abort(broker: LocalKafka) -> None:
    topic = _new_topic(broker, "transactions")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, transactional_id=f"tx-{topic}")
    try:
        producer.init_transactions()
        for value, commit in ((b"first", True), (b"rolled back", False), (b"second", True)):
            producer.begin_transaction()
            producer.send(topic, value=value)
            if commit:
                producer.commit_transaction()
            else:
                producer.flush()  # the record really reaches the log before the abort
                producer.abort_transaction()
    finally:
        producer.close()

    committed = _consume(broker, topic, 2, isolation_level="read_committed")
    assert [value for _key, value in committed] == [b"first", b"second"]


def test_stop_ends_the_jvm_and_deletes_the_data_dir() -> None:
    kafka = LocalKafka(heap="256m")
    kafka.start()
    pid, data_dir = kafka.pid, kafka.data_dir
    try:
        assert pid is not None and data_dir is not None
        assert kafka.is_running
        assert (data_dir / "kraft" / "meta.properties").is_file()
        assert kafka.log_file is not None and "Kafka Server started" in kafka.log_file.read_text()
    finally:
        kafka.stop()

    assert not kafka.is_running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # nothing is left in the JVM's process group either
    assert not data_dir.exists()
    kafka.stop()  # idempotent


def test_port_in_use_fails_before_launching(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        kafka = LocalKafka(port=port, data_dir=tmp_path / "kafka")
        with pytest.raises(BrokerStartError, match=f"127.0.0.1:{port} is already in use"):
            kafka.start()
    assert kafka.pid is None and not kafka.is_running
    assert (tmp_path / "kafka").is_dir()  # a directory we were given is never deleted


def _path_with_only(tmp_path: Path, *tools: str) -> str:
    """A PATH directory that holds only *tools*, linked to the real executables."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        real = shutil.which(tool)
        if real is None:
            pytest.skip(f"{tool} is not installed")
        (bin_dir / tool).symlink_to(os.path.realpath(real))
    return str(bin_dir)


def test_missing_java_names_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", _path_with_only(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(BrokerUnavailable, match=r"JDK >= 17 .*apt-get install openjdk-17-jre-headless"):
        resolve_jars(cache_dir=tmp_path / "cache")


def test_missing_maven_names_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", _path_with_only(tmp_path, "java"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("ANOMREC_CACHE_DIR", str(tmp_path / "empty-cache"))  # forces a resolution
    kafka = LocalKafka()
    with pytest.raises(
        BrokerUnavailable, match=r"`mvn` is not on PATH: install Maven \(.*apt-get install maven\)"
    ):
        kafka.start()
    assert kafka.data_dir is None and kafka.pid is None
    assert not (tmp_path / "empty-cache" / f"kafka-{KAFKA_VERSION}" / "libs").exists()


def test_sasl_users_are_checked_before_anything_starts() -> None:
    with pytest.raises(ValueError, match=r"SASL user name 'bad name': use letters, digits"):
        LocalKafka(sasl_users={"bad name": "pw"})
    with pytest.raises(ValueError, match=r"the password of SASL user 'alice' must be") as info:
        LocalKafka(sasl_users={"alice": 'say "hi"'})
    assert "say" not in str(info.value)  # it could be a real password
    with pytest.raises(RuntimeError, match="no SASL listener"):
        _ = LocalKafka().sasl_bootstrap_servers


def test_a_sasl_listener_is_written_into_server_properties(tmp_path: Path) -> None:
    kafka = LocalKafka(data_dir=tmp_path / "kafka", sasl_users={"alice": "a-pw", "bob": "b-pw"})
    kafka._prepare_data_dir()
    kafka._choose_ports()
    kafka._write_config()
    text = (tmp_path / "kafka" / "server.properties").read_text()
    assert f"SASL://127.0.0.1:{kafka.sasl_port}" in text and kafka.sasl_port not in (kafka.port, None)
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL:SASL_PLAINTEXT"
    assert f"listener.security.protocol.map={protocols}" in text
    assert "inter.broker.listener.name=PLAINTEXT" in text  # the broker's own traffic needs no login
    assert (
        "listener.name.sasl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule "
        'required user_alice="a-pw" user_bob="b-pw";'
    ) in text
