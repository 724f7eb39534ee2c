from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.core import Processor
from anomrec.streaming.events import EventDecoder
from anomrec.streaming.metrics import CycleTally, MetricsServer, RunnerMetrics
from anomrec.streaming.sample import generate_transactions
from prometheus_client.parser import text_string_to_metric_families


def scrape(metrics: RunnerMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_committed_tally_is_counted_and_latency_runs_from_event_time() -> None:
    metrics = RunnerMetrics()
    tally = CycleTally(alerts=2, recommendations=5, event_times=[100.0, 99.5, 101.0])
    tally.records_in["events"] += 4
    tally.records_out["alerts"] += 2
    tally.dead_letters["json"] += 1
    metrics.commit(tally, now=100.2)
    values = scrape(metrics)
    assert values[("anomrec_events_in_total", (("topic", "events"),))] == 4
    assert values[("anomrec_dead_letters_total", (("reason", "json"),))] == 1
    assert values[("anomrec_alerts_total", ())] == 2
    assert values[("anomrec_recommendation_publishes_total", ())] == 5
    assert values[("anomrec_processing_latency_seconds_count", ())] == 3
    # 0.2 s and 0.7 s late; an event time ahead of the clock counts as 0.
    assert values[("anomrec_processing_latency_seconds_sum", ())] == pytest.approx(0.9)
    assert values[("anomrec_processing_latency_seconds_bucket", (("le", "0.25"),))] == 2


def test_refits_model_versions_and_forgotten_partitions() -> None:
    cfg = ProcessorConfig(
        first_fit_after=300, refit_every=600, swap_delay=50, window_size=250, recommend=False
    )
    decoder = EventDecoder(cfg)
    events = [decoder.from_dict(d) for d in generate_transactions(1000, seed=3)]
    metrics = RunnerMetrics()
    with Processor(cfg) as proc:
        proc.process(events[:200])
        metrics.observe_tasks("events", {3: proc}, {3: 1000}, {3: 200})
        proc.process(events[200:])
        metrics.observe_tasks("events", {3: proc}, {3: 1000}, {3: 1000})
        versions = proc.model_versions()
        fits = proc.detectors[1].fits_
    values = scrape(metrics)
    assert fits == 2 and values[("anomrec_refits_total", (("detector", "iforest"),))] == 2
    assert values[("anomrec_refit_duration_seconds_count", (("detector", "iforest"),))] == 2
    assert values[("anomrec_consumer_lag", (("partition", "3"), ("topic", "events")))] == 0
    models = {dict(labels)["version"] for name, labels in values if name == "anomrec_model_info"}
    assert models == set(versions.values())  # the warming-up versions were replaced, not kept
    metrics.forget("events", [3])
    assert not [key for key in scrape(metrics) if ("partition", "3") in key[1]]


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_healthz_is_503_until_ready_and_metrics_say_so() -> None:
    state: dict[str, Any] = {"ready": False}

    def health() -> tuple[bool, dict[str, Any]]:
        return (
            (True, {"partitions": [0]})
            if state["ready"]
            else (False, {"reason": "no partitions assigned yet"})
        )

    metrics = RunnerMetrics()
    server = MetricsServer(metrics, health, host="127.0.0.1", port=0)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        status, body = get(f"{base}/healthz")
        assert status == 503 and json.loads(body) == {
            "status": "starting",
            "reason": "no partitions assigned yet",
        }
        assert b"anomrec_ready 0.0" in get(f"{base}/metrics")[1]
        state["ready"] = True
        status, body = get(f"{base}/healthz")
        assert status == 200 and json.loads(body) == {"status": "ready", "partitions": [0]}
        assert b"anomrec_ready 1.0" in get(f"{base}/metrics")[1]
    finally:
        server.stop()
