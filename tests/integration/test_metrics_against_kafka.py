"""The runner's /metrics and /healthz, scraped and parsed while it runs against the real broker."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.kafka_runner import KafkaRunner
from anomrec.streaming.sample import generate_transactions
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.kafka

SETTINGS = {
    "first_fit_after": 300, "refit_every": 600, "swap_delay": 50, "warmup_events": 150, "window_size": 250,
    "n_trees": 10, "height": 8, "iforest_trees": 30, "calibration_window": 1000, "refresh_every": 100,
    "similar_every": 100, "max_poll_records": 200,
}  # fmt: skip
BAD = [b"{oops", b"[1, 2]", b'{"event_id": "x", "card_id": "c", "ts": 0, "amount": "NaN"}']


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and sorted labels (the parser checks the format)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def read_committed(bootstrap: str, topic: str) -> list[Any]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        consumer_timeout_ms=3000,
    )
    try:
        return list(consumer)
    finally:
        consumer.close()


def test_metrics_count_what_was_committed_and_healthz_turns_ready(
    kafka_bootstrap: str, fresh_topic: Callable[..., str], kafka_config: Callable[..., ProcessorConfig]
) -> None:
    docs = generate_transactions(1500, seed=4)
    events = fresh_topic("events", 2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i, doc in enumerate(docs):
        producer.send(events, key=str(doc["card_id"]).encode(), value=orjson.dumps(doc), partition=i % 2)
    for value in BAD:
        producer.send(events, key=b"bad", value=value, partition=0)
    producer.flush()
    producer.close()
    port = free_port()
    config = kafka_config(events, ProcessorConfig(**SETTINGS), metrics_port=port)  # type: ignore[arg-type]
    runner = KafkaRunner(config)
    assert runner.health() == (False, {"reason": "no partitions assigned yet"})
    thread = threading.Thread(target=runner.run, kwargs={"idle_timeout": 600}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # until every record has been committed
            status, text = 0, ""
            with contextlib.suppress(OSError):  # the server is not up yet
                status, text = get(f"{base}/metrics")
            values = samples(text) if status == 200 else {}
            if values.get(("anomrec_events_in_total", (("topic", events),)), 0) >= len(docs) + len(BAD):
                break
            assert time.monotonic() < deadline, f"not every record was counted: {text[-3000:]}"
            time.sleep(0.5)
        status, body = get(f"{base}/healthz")
        assert status == 200 and json.loads(body) == {"status": "ready", "partitions": [0, 1]}
        assert get(f"{base}/nowhere")[0] == 404
    finally:
        runner.stop()
        thread.join(60)
    assert not thread.is_alive()

    alerts = read_committed(kafka_bootstrap, config.alerts_topic)
    recommendations = read_committed(kafka_bootstrap, config.recommendations_topic)
    dead = read_committed(kafka_bootstrap, config.dead_letter_topic)
    assert alerts and recommendations and len(dead) == 3

    def value(name: str, **labels: str) -> float:
        return values[(name, tuple(sorted(labels.items())))]

    assert value("anomrec_events_in_total", topic=events) == len(docs) + len(BAD)
    assert value("anomrec_dead_letters_total", reason="json") == 1
    assert value("anomrec_dead_letters_total", reason="not-object") == 1
    assert value("anomrec_dead_letters_total", reason="not-numeric") == 1
    assert value("anomrec_alerts_total") == len(alerts)
    assert value("anomrec_events_out_total", topic=config.alerts_topic) == len(alerts)
    assert value("anomrec_events_out_total", topic=config.dead_letter_topic) == 3
    assert value("anomrec_recommendation_publishes_total") == len(recommendations)
    assert value("anomrec_processing_latency_seconds_count") == len(docs)
    for partition in ("0", "1"):
        assert value("anomrec_consumer_lag", topic=events, partition=partition) == 0
        assert value("anomrec_entities", partition=partition) > 0
    assert value("anomrec_assigned_partitions") == 2 and value("anomrec_ready") == 1
    # Each partition refits IsolationForest and LOF at 300 and 900 of its 750-odd events: once or twice.
    fits = value("anomrec_refits_total", detector="iforest")
    assert 2 <= fits <= 4
    assert value("anomrec_refit_duration_seconds_count", detector="iforest") == fits
    versions = {dict(labels)["version"] for (name, labels) in values if name == "anomrec_model_info"}
    assert {
        alert.value and orjson.loads(alert.value)["detectors"]["iforest"]["version"] for alert in alerts
    } <= versions
