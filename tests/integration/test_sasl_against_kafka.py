"""``anomrec run`` against a broker that wants a SASL/PLAIN login: the right password works, a wrong
one is refused at once, with a message naming the user, and no password ever reaches the logs.

The broker is this module's own: a local Kafka with a SASL_PLAINTEXT listener and one user, so an
external ``KAFKA_BOOTSTRAP_SERVERS`` broker (whose listeners the test cannot choose) skips it.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from anomrec.streaming.kafka_clients import CLOSED_LOGINS
from anomrec.streaming.sample import generate_transactions
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from anomrec.cli import main
from anomrec.localkafka import BrokerUnavailable, LocalKafka

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

USER = "anomrec-app"
PASSWORD = "Pw-right-7f3c9a"  # distinctive: the tests look for it in every log line
WRONG = "Pw-wrong-51d2e8"
N_EVENTS = 600
# HalfSpaceTrees alone, warmed up quickly, so that 600 events give a few alerts.
FLAGS = [
    "--detectors", "hst", "--window-size", "100", "--refresh-every", "100",
    "--warmup-events", "300", "--threshold", "0.95",
]  # fmt: skip


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalKafka]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip():
        pytest.skip(
            "needs a broker with a SASL listener that it configures itself; KAFKA_BOOTSTRAP_SERVERS "
            "names an external one"
        )
    kafka = LocalKafka(sasl_users={USER: PASSWORD}, heap="384m")
    try:
        kafka.start()
    except BrokerUnavailable as exc:
        pytest.fail(f"no Kafka broker for the SASL test: {exc}", pytrace=False)
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture
def restore_signals() -> Iterator[None]:
    """``anomrec run`` in process installs its SIGINT/SIGTERM handlers; put pytest's back."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def _topics(broker: LocalKafka, *names: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)  # the PLAINTEXT listener
    try:
        admin.create_topics([NewTopic(n, num_partitions=1, replication_factor=1) for n in names])
    finally:
        admin.close()


def _read(servers: str, topic: str, **security: object) -> list[bytes]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1500,
        isolation_level="read_committed",
        **security,
    )
    try:
        return [r.value for r in consumer]
    finally:
        consumer.close()


def _run_argv(broker: LocalKafka, tag: str, tmp_path: Path) -> list[str]:
    return [
        "--log-level", "DEBUG", "run",
        "--bootstrap-servers", broker.sasl_bootstrap_servers,
        "--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "PLAIN", "--sasl-username", USER,
        "--input-topic", f"events-{tag}", "--alerts-topic", f"alerts-{tag}",
        "--recommendations-topic", f"reco-{tag}", "--similar-items-topic", f"similar-{tag}",
        "--dead-letter-topic", f"dead-{tag}", "--group-id", f"group-{tag}",
        "--state-dir", str(tmp_path / "state"), "--max-events", str(N_EVENTS), "--idle-timeout", "20",
        *FLAGS,
    ]  # fmt: skip


def _assert_no_secret(secret: str, caplog: pytest.LogCaptureFixture, *texts: str) -> None:
    assert caplog.records, "the run logged nothing: the check below would prove nothing"
    for record in caplog.records:
        assert secret not in record.getMessage(), f"{record.name} logged the password"
    assert secret not in caplog.text
    for text in texts:
        assert secret not in text


@pytest.mark.usefixtures("restore_signals")
def test_run_with_the_right_password_consumes_and_publishes(
    broker: LocalKafka,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tag = uuid.uuid4().hex[:8]
    _topics(broker, f"events-{tag}")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
    producer.send(f"events-{tag}", value=b"{not json")  # a bad record: a dead letter out
    for doc in generate_transactions(N_EVENTS, seed=7, fraud_rate=0.02, n_users=500):
        producer.send(f"events-{tag}", key=str(doc["card_id"]).encode(), value=orjson.dumps(doc))
    producer.flush()
    producer.close()

    monkeypatch.setenv("ANOMREC_SASL_PASSWORD", PASSWORD)
    caplog.set_level(logging.DEBUG)  # kafka-python logs its requests, the PLAIN login too
    assert main(_run_argv(broker, tag, tmp_path)) == 0
    out, err = capsys.readouterr()
    assert re.search(rf"events\s+{N_EVENTS}\n", out), out

    # Read back through the SASL listener as well.
    sasl = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": USER,
        "sasl_plain_password": PASSWORD,
    }
    alerts = [orjson.loads(v) for v in _read(broker.sasl_bootstrap_servers, f"alerts-{tag}", **sasl)]
    assert alerts and all(a["score"] >= 0.95 for a in alerts)
    assert _read(broker.bootstrap_servers, f"reco-{tag}")
    assert _read(broker.bootstrap_servers, f"dead-{tag}") == [b"{not json"]
    _assert_no_secret(PASSWORD, caplog, out, err)


@pytest.mark.usefixtures("restore_signals")
def test_a_wrong_password_is_refused_at_once_with_a_clear_error(
    broker: LocalKafka,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tag = uuid.uuid4().hex[:8]
    monkeypatch.setenv("ANOMREC_SASL_PASSWORD", WRONG)
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    assert main(_run_argv(broker, tag, tmp_path)) == 2
    took = time.monotonic() - started
    out, err = capsys.readouterr()
    # kafka-python loses the broker's answer to most refused logins (it drops the data read along
    # with the close); anomrec then goes by the connections the broker closed, and says so.
    prefix = (
        f"anomrec: error: authentication of SASL user {USER!r} failed at Kafka "
        f"{broker.sasl_bootstrap_servers} (mechanism PLAIN; "
    )
    reasons = (
        "the broker says: Authentication failed: Invalid username or password)",
        f"the broker closed the connection {CLOSED_LOGINS} times in a row without an answer",
    )
    assert err.startswith(prefix) and err[len(prefix) :].startswith(reasons), err
    assert "check sasl_username and sasl_password (ANOMREC_SASL_PASSWORD)" in err
    # kafka-python alone would retry for its 30 s bootstrap window, then report no broker at all.
    assert took < 25, f"the refusal took {took:.1f} s to surface"
    _assert_no_secret(WRONG, caplog, out, err)
