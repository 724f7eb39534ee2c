"""A Kafka run with ``warm_start`` begins each new partition from the fitted models, not from nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from anomrec.batch.fit import fit
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.events import EventDecoder
from anomrec.streaming.kafka_runner import KafkaRunner
from anomrec.streaming.sample import generate_transactions
from kafka import KafkaConsumer, KafkaProducer

pytestmark = pytest.mark.kafka

SETTINGS = ProcessorConfig(
    first_fit_after=300, refit_every=600, swap_delay=50, warmup_events=150, window_size=250, n_trees=10,
    height=8, iforest_trees=30, calibration_window=1000, refresh_every=100, similar_every=100,
)  # fmt: skip


def test_a_warm_started_partition_alerts_as_the_fitted_processor_would(
    kafka_bootstrap: str,
    fresh_topic: Callable[..., str],
    kafka_config: Callable[..., ProcessorConfig],
    tmp_path: Path,
) -> None:
    stream = generate_transactions(4000, seed=5)
    history, later = stream[:3000], stream[3000:]
    decoder = EventDecoder(SETTINGS)
    fitted = fit(SETTINGS, [[decoder.from_dict(d) for d in history]], source="history")
    folder = fitted.save(tmp_path / "models")
    with fitted.processor as proc:  # the reference: the fitted processor carries on in memory
        expected = [
            orjson.loads(a.to_json()) for a in proc.process([decoder.from_dict(d) for d in later]).alerts
        ]
    assert expected

    events = fresh_topic("events")
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for doc in later:
        producer.send(events, key=str(doc["card_id"]).encode(), value=orjson.dumps(doc))
    producer.flush()
    producer.close()
    config = kafka_config(events, SETTINGS, warm_start=str(tmp_path / "models"))
    stats = KafkaRunner(config).run(max_events=len(later), idle_timeout=30)
    assert stats.events == len(later) and stats.restored == 0

    consumer = KafkaConsumer(
        config.alerts_topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        consumer_timeout_ms=3000,
    )
    try:
        alerts = [orjson.loads(r.value) for r in consumer]
    finally:
        consumer.close()
    assert alerts == expected
    versions = {a["detectors"]["iforest"]["version"] for a in alerts}
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    assert manifest["models"]["iforest"] in versions
