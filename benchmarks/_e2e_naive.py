"""The naive reference loop of ``benchmarks/e2e.py``: what a user would write from the public examples.

One event at a time, with each library's documented per-event calls:

- ``json.loads`` of the record value (kafka-python's consumer with its defaults: auto-commit);
- River's ``preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42)`` (its defaults: 10 trees
  of height 8, window 250), ``score_one`` then ``learn_one`` on amount, latitude, longitude and hour;
- scikit-learn's ``IsolationForest`` and ``LocalOutlierFactor(novelty=True)``, fitted once on the
  first ``fit_after`` events, then ``score_samples`` on a one-row array per event;
- River's ``reco.BiasedMF`` (seed 42): ``predict_one`` then ``learn_one(user, item, 1.0)`` on the
  event's (user_id, item_id);
- an alert when at least two of the three detectors score above their threshold (the 99th
  percentile of their scores over the fitting events), sent as JSON with ``KafkaProducer.send``
  (kafka-python's defaults).

Nothing is batched and nothing is compiled: it is a fair, working version of the examples, not a
strawman (no sleeps, no per-event flushes, no refitting).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
from kafka import KafkaConsumer, KafkaProducer
from river import anomaly, preprocessing, reco
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor

FEATURES = ("amount", "lat", "lon", "hour")
FIT_AFTER = 1000
HST_WINDOW = 250  # River's default window: HalfSpaceTrees scores 0 until its first window is full
PERCENTILE = 99.0


class NaiveLoop:
    """The per-event detectors and recommender; ``process(doc)`` returns an alert dict or None.

    Parameters
    ----------
    fit_after
        Events buffered before IsolationForest and LOF are fitted (once).
    seed
        Seed of River's HalfSpaceTrees and BiasedMF and of the IsolationForest.
    """

    def __init__(self, *, fit_after: int = FIT_AFTER, seed: int = 42) -> None:
        self.fit_after = fit_after
        self.seed = seed
        self.hst = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=seed)
        self.mf = reco.BiasedMF(seed=seed)
        self.iforest: IsolationForest | None = None
        self.lof: LocalOutlierFactor | None = None
        self.rows: list[list[float]] = []
        self.hst_scores: list[float] = []
        self.thresholds: dict[str, float] = {}
        self.seen = 0

    @staticmethod
    def features(doc: dict[str, Any]) -> dict[str, float]:
        ts = doc["ts"]
        when = datetime.fromisoformat(ts) if isinstance(ts, str) else datetime.fromtimestamp(float(ts), UTC)
        return {
            "amount": float(doc["amount"]),
            "lat": float(doc["lat"]),
            "lon": float(doc["lon"]),
            "hour": when.hour + when.minute / 60.0,
        }

    def fit(self) -> None:
        X = np.array(self.rows)
        self.iforest = IsolationForest(random_state=self.seed).fit(X)
        self.lof = LocalOutlierFactor(novelty=True).fit(X)
        self.thresholds = {
            "hst": float(np.percentile(self.hst_scores[HST_WINDOW:], PERCENTILE)),
            "iforest": float(np.percentile(-self.iforest.score_samples(X), PERCENTILE)),
            "lof": float(np.percentile(-self.lof.negative_outlier_factor_, PERCENTILE)),
        }
        self.rows = []

    def process(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        x = self.features(doc)
        scores = {"hst": self.hst.score_one(x)}
        self.hst.learn_one(x)
        affinity = self.mf.predict_one(doc["user_id"], doc["item_id"])
        self.mf.learn_one(doc["user_id"], doc["item_id"], 1.0)
        self.seen += 1
        if self.iforest is None or self.lof is None:
            self.rows.append([x[name] for name in FEATURES])
            self.hst_scores.append(scores["hst"])
            if self.seen == self.fit_after:
                self.fit()
            return None
        row = np.array([[x[name] for name in FEATURES]])
        scores["iforest"] = float(-self.iforest.score_samples(row)[0])
        scores["lof"] = float(-self.lof.score_samples(row)[0])
        votes = [name for name, score in scores.items() if score > self.thresholds[name]]
        if len(votes) < 2:
            return None
        return {
            "event_id": doc["event_id"],
            "card_id": doc["card_id"],
            "ts": doc["ts"],
            "scores": scores,
            "flagged_by": votes,
            "affinity": affinity,
        }


def run(
    bootstrap_servers: str,
    topic: str,
    alerts_topic: str,
    group_id: str,
    *,
    max_events: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    fit_after: int = FIT_AFTER,
) -> dict[str, Any]:
    """Consume ``topic`` through :class:`NaiveLoop` until ``max_events`` or ``should_stop()``.

    Returns the counters and timings ``benchmarks/e2e.py`` reports: ``events``, ``alerts``, the wall
    time (``time.time()``) and process CPU time (``time.process_time()``) when the first poll with
    records returned (``first``, ``cpu_first``), after the last event's alert was flushed
    (``last``, ``cpu_last``), and when the detectors were fitted (``fitted``, ``cpu_fitted``).
    """
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap_servers, group_id=group_id, auto_offset_reset="earliest"
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers)
    loop = NaiveLoop(fit_after=fit_after)
    out: dict[str, Any] = {"events": 0, "alerts": 0, "first": None, "fitted": None}
    try:
        while not should_stop() and (max_events is None or out["events"] < max_events):
            polled = consumer.poll(timeout_ms=200)
            if not polled:
                continue
            if out["first"] is None:
                out["first"], out["cpu_first"] = time.time(), time.process_time()
            for records in polled.values():
                for record in records:
                    if max_events is not None and out["events"] >= max_events:
                        break
                    alert = loop.process(json.loads(record.value))
                    out["events"] += 1
                    if out["events"] == fit_after:
                        out["fitted"], out["cpu_fitted"] = time.time(), time.process_time()
                    if alert is not None:
                        producer.send(alerts_topic, json.dumps(alert).encode())
                        out["alerts"] += 1
        producer.flush()
        out["last"], out["cpu_last"] = time.time(), time.process_time()
    finally:
        producer.close()
        consumer.close()
    out["thresholds"] = loop.thresholds
    return out
