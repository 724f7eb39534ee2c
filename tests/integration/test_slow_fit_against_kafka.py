"""A fit slower than ``max.poll.interval.ms`` must not cost the consumer its group membership, and
must not change a single alert."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.kafka_runner import KafkaRunner
from anomrec.streaming.runners import run_embedded
from anomrec.streaming.sample import generate_transactions
from kafka import KafkaConsumer, KafkaProducer

pytestmark = pytest.mark.kafka

MAX_POLL_INTERVAL_MS = 4000
FIT_DELAY_S = 9.0  # each fit takes over twice max.poll.interval.ms


class SlowFits(ThreadPoolExecutor):
    """Every fit sleeps first, as a big refit window on a busy machine would."""

    def __init__(self) -> None:
        super().__init__(1, thread_name_prefix="slow-fit")
        self.fits = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.fits += 1

        def slow() -> Any:
            time.sleep(FIT_DELAY_S)
            return fn(*args, **kwargs)

        return super().submit(slow)


def test_slow_fit_keeps_the_group_and_the_alerts(
    kafka_bootstrap: str, fresh_topic: Callable[..., str], tmp_path: Path
) -> None:
    events_topic, alerts_topic = fresh_topic("events"), fresh_topic("alerts")
    docs = generate_transactions(2500, fraud_rate=0.01, n_users=50, seed=11)
    values = [orjson.dumps(d) for d in docs]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for d, v in zip(docs, values, strict=True):
        producer.send(events_topic, key=str(d["card_id"]).encode(), value=v)
    producer.flush()
    producer.close()

    settings = {
        "window_size": 250,
        "first_fit_after": 500,
        "refit_every": 1000,
        "swap_delay": 100,
        "calibration_window": 2000,
        "warmup_events": 800,
    }
    config = ProcessorConfig(
        bootstrap_servers=kafka_bootstrap,
        input_topic=events_topic,
        alerts_topic=alerts_topic,
        recommendations_topic=fresh_topic("recommendations"),
        similar_items_topic=fresh_topic("similar"),
        group_id=f"slow-fit-{events_topic}",
        max_poll_records=100,
        state_dir=str(tmp_path / "state"),
        **settings,  # type: ignore[arg-type]
    )
    fits = SlowFits()
    runner = KafkaRunner(
        config,
        consumer_options={"max_poll_interval_ms": MAX_POLL_INTERVAL_MS},
        executor=fits,
    )
    done = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["stats"] = runner.run(max_events=len(docs), idle_timeout=60)
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            result["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert done.wait(300), "the runner did not finish in 300 s"
    fits.shutdown()
    # A poll loop that sat out a fit is thrown out of its group; its next commit then fails.
    assert "error" not in result, f"the runner failed: {result.get('error')!r}"
    stats = result["stats"]
    print(
        f"slow fits: {fits.fits} of {FIT_DELAY_S} s; {stats.events} events; {stats.assignments} assignment(s)"
    )
    assert fits.fits >= 4  # two detectors, two refits each: 8 s waits the poll loop must not sit out
    assert stats.events == len(docs)
    # One assignment at the start and no other: a poll loop stalled past max.poll.interval.ms would
    # have left the group and been assigned its partitions again.
    assert stats.assignments == 1, "the consumer rejoined its group: the poll loop stalled past the interval"

    # The alerts are exactly those of an in-process run of the same events with instant fits.
    expected = io.BytesIO()
    run_embedded(ProcessorConfig(**settings), values, expected)  # type: ignore[arg-type]
    consumer = KafkaConsumer(
        alerts_topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    try:
        got = [r.value for r in consumer]
    finally:
        consumer.close()
    assert got == expected.getvalue().splitlines()
    assert len(got) > 10
