"""``anomrec run`` on a real broker, end to end for recommendations.

Interactions go into a topic, the processor runs as a user runs it (a subprocess), and the
recommendations topic is read back: one message per refreshed list, keyed by user, at most one per
user per debounce interval of event time, never listing an item the user already had, in the
documented schema. The processor creates both output topics: recommendations with the input's
partition count, similar-items compacted and keyed by item.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson
import pytest
from anomrec.streaming.sample import generate_interactions
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

pytestmark = pytest.mark.kafka

N_EVENTS = 4000
DEBOUNCE = 300.0
RECOMMENDATION_KEYS = {"user", "items", "model_version", "event_time", "trigger_event_id"}
NEIGHBOUR_KEYS = {"item", "neighbours", "model_version", "event_time"}


def read_records(bootstrap: str, topic: str) -> list[tuple[str, dict]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    try:
        return [(r.key.decode(), orjson.loads(r.value)) for r in consumer]
    finally:
        consumer.close()


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_run_publishes_debounced_unseen_recommendations_and_compacted_neighbour_lists(
    kafka_bootstrap: str, fresh_topic: Callable[..., str], anomrec_command: list[str], tmp_path: Path
) -> None:
    events_topic = fresh_topic("interactions", partitions=2)
    alerts_topic = fresh_topic("alerts")
    # The processor creates these two itself; the test deletes them at the end.
    recommendations_topic = f"recommendations-{events_topic}"
    similar_topic = f"similar-{events_topic}"
    docs = generate_interactions(N_EVENTS, seed=11, n_users=80, n_items=400)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for doc in docs:
        producer.send(events_topic, key=str(doc["user_id"]).encode(), value=orjson.dumps(doc))
    producer.flush()
    producer.close()

    result = subprocess.run(
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
            recommendations_topic,
            "--similar-items-topic",
            similar_topic,
            "--group-id",
            f"anomrec-it-{events_topic}",
            "--profile",
            "interactions",
            "--entity-field",
            "user_id",
            "--debounce-seconds",
            str(DEBOUNCE),
            "--similar-every",
            "1000",
            "--max-events",
            str(N_EVENTS),
        ],
        capture_output=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("ANOMREC_")},
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    summary = result.stdout.decode()
    print(summary)
    assert "learned" in summary and "gated" in summary

    updates = read_records(kafka_bootstrap, recommendations_topic)
    assert len(updates) > 200
    by_id = {str(d["event_id"]): k for k, d in enumerate(docs)}
    last_time: dict[str, float] = {}
    for key, update in updates:
        # The documented schema, field by field.
        assert set(update) == RECOMMENDATION_KEYS
        assert key == update["user"]
        assert isinstance(update["model_version"], str) and update["model_version"].startswith("hybrid-")
        assert 0 < len(update["items"]) <= 10
        for entry in update["items"]:
            assert set(entry) == {"item", "score"}
            assert isinstance(entry["item"], str) and isinstance(entry["score"], float)
        scores = [entry["score"] for entry in update["items"]]
        assert scores == sorted(scores, reverse=True)
        # Debounced in event time: one update per user per interval at most.
        t = epoch(update["event_time"])
        if key in last_time:
            assert t >= last_time[key] + DEBOUNCE - 1e-3, (key, last_time[key], t)
        last_time[key] = t
        # Never an item the user had interacted with by the triggering event.
        trigger = by_id[update["trigger_event_id"]]
        assert docs[trigger]["user_id"] == key
        seen = {d["item_id"] for d in docs[: trigger + 1] if d["user_id"] == key}
        assert not seen & {entry["item"] for entry in update["items"]}
    assert len(last_time) == 80

    neighbours = read_records(kafka_bootstrap, similar_topic)
    assert neighbours
    for key, record in neighbours:
        assert set(record) == NEIGHBOUR_KEYS and key == record["item"]
        assert all(set(n) == {"item", "score"} and 0 < n["score"] <= 1 + 1e-9 for n in record["neighbours"])
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, similar_topic)])
        (created,) = admin.describe_topics([recommendations_topic])
        admin.delete_topics([similar_topic, recommendations_topic])
    finally:
        admin.close()
    assert len(created["partitions"]) == 2
    # {resource type: {name: {config key: {config data}}}}; Modified (non-default) keys only.
    (configs,) = (by_name[similar_topic] for by_name in described.values())
    assert "compact" in str(configs["cleanup.policy"]), configs
