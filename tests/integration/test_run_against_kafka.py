"""``anomrec run`` as a user runs it: a subprocess reading a real broker's topic, alerts out."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.sample import generate_transactions
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

pytestmark = pytest.mark.kafka

N_EVENTS = 3000
N_PLANTED = 20
BAD_VALUES = [b"{truncated", b"[1, 2, 3]", b'{"event_id": "b1", "card_id": "c", "ts": 0, "amount": "12,50"}']
# Short warm-up so that a 3,000-event stream is mostly live: HalfSpaceTrees' first window is 250
# events, IsolationForest and LOF are first fitted at 500 and take over at 700, and no event
# before 1,000 alerts.
FLAGS = {
    "window-size": 250,
    "first-fit-after": 500,
    "refit-every": 1000,
    "swap-delay": 200,
    "calibration-window": 5000,
    "warmup-events": 1000,
}
SAO_PAULO = (-23.5505, -46.6333)


def planted_stream(seed: int = 2026) -> tuple[list[dict[str, object]], set[str]]:
    """Honest card transactions with obvious frauds planted after the warm-up: a purchase 40 times
    the card's amount, on another continent, minutes after the card's previous purchase."""
    docs = generate_transactions(N_EVENTS, fraud_rate=0.0, n_users=60, seed=seed)
    rng = np.random.default_rng(seed)
    planted = set()
    for i in rng.choice(np.arange(1500, N_EVENTS), N_PLANTED, replace=False):
        doc = docs[int(i)]
        doc["amount"] = round(float(doc["amount"]) * 40, 2)  # type: ignore[arg-type]
        doc["lat"], doc["lon"] = SAO_PAULO
        doc["country"] = "BR"
        doc["merchant"] = f"planted-{i}"
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


def test_run_alerts_planted_fraud_and_stops_cleanly_on_sigterm(
    kafka_bootstrap: str, fresh_topic: Callable[..., str], anomrec_command: list[str], tmp_path: Path
) -> None:
    events_topic, alerts_topic = fresh_topic("events"), fresh_topic("alerts")
    group = f"anomrec-it-{events_topic}"
    docs, planted = planted_stream()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    n_bad = 0
    for i, doc in enumerate(docs):
        producer.send(events_topic, key=str(doc["card_id"]).encode(), value=orjson.dumps(doc))
        if i % 700 == 350:  # malformed records among the good ones
            producer.send(events_topic, value=BAD_VALUES[(i // 700) % len(BAD_VALUES)])
            n_bad += 1
    producer.flush()
    producer.close()
    total = N_EVENTS + n_bad

    proc = subprocess.Popen(
        [
            *anomrec_command,
            "run",
            "--bootstrap-servers",
            kafka_bootstrap,
            "--state-dir",
            str(tmp_path / "state"),
            "--input-topic",
            events_topic,
            "--alerts-topic",
            alerts_topic,
            "--recommendations-topic",
            fresh_topic("recommendations"),
            "--similar-items-topic",
            fresh_topic("similar"),
            "--group-id",
            group,
            *[arg for name, value in FLAGS.items() for arg in (f"--{name}", str(value))],
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
    assert all(int(str(a).removeprefix("tx-")) > FLAGS["warmup-events"] for a in alerted)

    by_id = {str(d["event_id"]): d for d in docs}
    for alert in alerts:
        source = by_id[str(alert["event_id"])]
        assert alert["entity"] == source["card_id"]
        assert alert["event_time"] == source["ts"]
        assert alert["score"] >= alert["threshold"] == ProcessorConfig().threshold  # type: ignore[operator]

    # One planted alert, field by field.
    alert = next(a for a in alerts if a["event_id"] in planted)
    source = by_id[str(alert["event_id"])]
    assert set(alert) == {
        "event_id", "entity", "event_time", "score", "threshold", "threshold_mode", "rule",
        "model_versions", "detectors", "reasons", "profile", "features",
    }  # fmt: skip
    assert (alert["entity"], alert["event_time"]) == (source["card_id"], source["ts"])
    assert alert["threshold_mode"] == "fixed" and alert["rule"] == "fisher"
    assert alert["profile"] == "transactions"
    versions = alert["model_versions"]
    assert versions["hst"] == f"hst-{ProcessorConfig().n_trees}x{ProcessorConfig().height}-w250-s42"
    # Refits begin at 500, 1500 and 2500 and take over 200 events later.
    position = int(str(alert["event_id"]).removeprefix("tx-")) - 1
    expected_model = 1 + (position >= 1700) + (position >= 2700)
    assert versions["iforest"] == f"iforest-{expected_model}"
    assert versions["lof"] == f"lof-{expected_model}"
    for name, view in alert["detectors"].items():
        assert view["version"] == versions[name]
        assert isinstance(view["raw"], float) and 0.0 <= view["calibrated"] < 1.0
        assert 0.0 <= view["weight"] <= 1.0
    assert sum(v["weight"] for v in alert["detectors"].values()) == pytest.approx(1.0, abs=1e-3)
    features = alert["features"]
    assert list(features)[:2] == ["log_amount", "amount_z"]
    assert features["log_amount"] == pytest.approx(np.log1p(source["amount"]))
    assert features["new_country"] == 1.0 and features["new_merchant"] == 1.0
    reasons = alert["reasons"]
    assert len(reasons) == 3
    for reason in reasons:
        assert reason["value"] == pytest.approx(features[reason["feature"]], rel=1e-5)
        low, high = reason["typical"]
        assert low <= high and not low <= reason["value"] <= high
    assert {r["feature"] for r in reasons} & {"log_km_beyond_reach", "log_kmh_from_prev", "new_country"}

    summary = out.decode()
    assert f"events      {N_EVENTS:>9,}" in summary
    assert f"bad records {n_bad:>9,}" in summary
    assert "dead-lettered" in err.decode()
