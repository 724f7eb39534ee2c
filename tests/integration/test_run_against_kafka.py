"""``anomrec run`` as a user runs it: a subprocess reading a real broker's topic, alerts out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
from anomrec.streaming.sample import generate_transactions
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

pytestmark = pytest.mark.kafka

N_EVENTS = 2000
N_PLANTED = 20
BAD_VALUES = [b"{truncated", b"[1, 2, 3]", b'{"event_id": "b1", "card_id": "c", "ts": 0, "amount": "12,50"}']


def planted_stream(seed: int = 2026) -> tuple[list[dict[str, object]], set[str]]:
    """Normal card transactions with obviously fraudulent ones planted after the warm-up window."""
    docs = list(generate_transactions(N_EVENTS, anomaly_rate=0.0, seed=seed))
    rng = np.random.default_rng(seed)
    planted = set()
    for i in rng.choice(np.arange(300, N_EVENTS), N_PLANTED, replace=False):
        doc = docs[int(i)]
        doc["amount"] = round(float(doc["amount"]) * 50, 2)  # type: ignore[arg-type]
        doc["ratio_to_median_amount"] = float(doc["ratio_to_median_amount"]) * 50  # type: ignore[arg-type]
        doc["distance_from_home_km"] = 8000.0  # and on another continent
        doc["label"] = 1
        planted.add(str(doc["event_id"]))
    return docs, planted


def committed(bootstrap: str, group: str, topic: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    meta = offsets.get(TopicPartition(topic, 0))
    return meta.offset if meta is not None else -1


def read_all(bootstrap: str, topic: str) -> list[dict[str, object]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
        isolation_level="read_committed",
    )
    try:
        return [orjson.loads(r.value) for r in consumer]
    finally:
        consumer.close()


def anomrec_command() -> list[str]:
    script = Path(sys.executable).with_name("anomrec")
    return [str(script)] if script.exists() else [sys.executable, "-m", "anomrec"]


def test_run_alerts_planted_fraud_and_stops_cleanly_on_sigterm(
    kafka_bootstrap: str, fresh_topic: Callable[..., str]
) -> None:
    events_topic, alerts_topic = fresh_topic("events"), fresh_topic("alerts")
    group = f"anomrec-it-{events_topic}"
    docs, planted = planted_stream()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i, doc in enumerate(docs):
        producer.send(events_topic, key=str(doc["card_id"]).encode(), value=orjson.dumps(doc))
        if i % 700 == 350:  # malformed records among the good ones
            producer.send(events_topic, value=BAD_VALUES[(i // 700) % len(BAD_VALUES)])
    producer.flush()
    producer.close()
    total = N_EVENTS + len(BAD_VALUES)

    proc = subprocess.Popen(
        [
            *anomrec_command(),
            "run",
            "--bootstrap-servers",
            kafka_bootstrap,
            "--input-topic",
            events_topic,
            "--alerts-topic",
            alerts_topic,
            "--group-id",
            group,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if not k.startswith("ANOMREC_")},
    )
    try:
        deadline = time.monotonic() + 120
        while committed(kafka_bootstrap, group, events_topic) < total:
            assert proc.poll() is None, f"the processor exited early:\n{proc.stderr.read().decode()[-3000:]}"  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the processor did not commit every input record in 120 s"
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()[-3000:]
    assert committed(kafka_bootstrap, group, events_topic) == total

    alerts = read_all(kafka_bootstrap, alerts_topic)
    alerted = {str(a["event_id"]) for a in alerts}
    caught = planted & alerted
    false_alarms = alerted - planted
    print(
        f"planted alerted: {len(caught)}/{N_PLANTED}; "
        f"normal events alerted: {len(false_alarms)}/{N_EVENTS - N_PLANTED}"
    )
    assert len(caught) >= 18, f"only {len(caught)} of {N_PLANTED} planted anomalies alerted"
    assert len(false_alarms) < 0.01 * (N_EVENTS - N_PLANTED), f"{len(false_alarms)} normal events alerted"

    by_id = {str(d["event_id"]): d for d in docs}
    for alert in alerts:
        source = by_id[str(alert["event_id"])]
        assert alert["entity"] == source["card_id"]
        assert alert["event_time"] == source["ts"]
        assert alert["score"] >= alert["threshold"] == 0.95  # type: ignore[operator]

    summary = out.decode()
    assert f"events      {N_EVENTS:>9,}" in summary
    assert f"bad records {len(BAD_VALUES):>9,}" in summary
    assert "skipped bad record" in err.decode()
