"""Prometheus metrics and a health endpoint for the Kafka runner.

:class:`RunnerMetrics` holds the metrics in a registry of its own (several runners in one process,
as in tests, never share counters). :class:`MetricsServer` serves them over HTTP with
``/healthz``: set ``metrics_port`` (and ``metrics_host``, 127.0.0.1 by default; 0.0.0.0 in a
container) to turn it on.

Counters count what was committed: the runner tallies a cycle's records and outputs in a
:class:`CycleTally` and hands it over only once the cycle's transaction (or, at least once, its
offset commit) went through, so a failed and retried cycle is not counted twice.

=============================================  ==================================================
metric                                         meaning
=============================================  ==================================================
``anomrec_events_in_total{topic}``             input records consumed, good and bad
``anomrec_events_out_total{topic}``            output records published, per output topic
``anomrec_dead_letters_total{reason}``         bad records sent to the dead-letter topic
``anomrec_alerts_total``                       alerts published
``anomrec_recommendation_publishes_total``     recommendation lists published
``anomrec_processing_latency_seconds``         histogram: from an event's event time to the
                                               commit of its outputs (replayed history and a
                                               producer's clock skew show here too)
``anomrec_consumer_lag{topic,partition}``      records between the task's position and the
                                               partition's end, as the last fetch saw it
``anomrec_refits_total{detector}``             IsolationForest and LOF models swapped in
``anomrec_refit_duration_seconds{detector}``   histogram: how long those fits took
``anomrec_model_info{partition,detector,...}`` 1 for each partition's current model ``version``
``anomrec_entities{partition}``                entities held in the feature state
``anomrec_assigned_partitions``                partitions this instance holds
``anomrec_ready``                              1 when ``/healthz`` says ready
=============================================  ==================================================

``/healthz`` answers 200 with ``{"status": "ready", ...}`` once partitions are assigned and each
has its state restored (its checkpoint loaded and the records up to the committed offset
replayed), and 503 with ``{"status": "starting", "reason": ...}`` before that.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from .core import Processor
from .detectors import SklearnDetector

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
FIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(slots=True)
class CycleTally:
    """What one cycle read and published; counted only if the cycle commits."""

    records_in: Tally[str] = field(default_factory=Tally)
    records_out: Tally[str] = field(default_factory=Tally)
    dead_letters: Tally[str] = field(default_factory=Tally)
    alerts: int = 0
    recommendations: int = 0
    event_times: list[float] = field(default_factory=list)


class RunnerMetrics:
    """The runner's metrics (see the module docstring), in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.events_in = Counter("anomrec_events_in", "Input records consumed", ["topic"], registry=r)
        self.events_out = Counter("anomrec_events_out", "Output records published", ["topic"], registry=r)
        self.dead_letters = Counter(
            "anomrec_dead_letters", "Bad records sent to the dead-letter topic", ["reason"], registry=r
        )
        self.alerts = Counter("anomrec_alerts", "Alerts published", registry=r)
        self.recommendations = Counter(
            "anomrec_recommendation_publishes", "Recommendation lists published", registry=r
        )
        self.latency = Histogram(
            "anomrec_processing_latency_seconds",
            "From an event's event time to the commit of its outputs",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = Gauge(
            "anomrec_consumer_lag", "Records behind the partition's end", ["topic", "partition"], registry=r
        )
        self.refits = Counter("anomrec_refits", "Models swapped in after a refit", ["detector"], registry=r)
        self.refit_seconds = Histogram(
            "anomrec_refit_duration_seconds",
            "Duration of the refits",
            ["detector"],
            buckets=FIT_BUCKETS,
            registry=r,
        )
        self.model = Gauge(
            "anomrec_model_info",
            "The current model of each partition",
            ["partition", "detector", "version"],
            registry=r,
        )
        self.entities = Gauge("anomrec_entities", "Entities held in feature state", ["partition"], registry=r)
        self.assigned = Gauge("anomrec_assigned_partitions", "Partitions this instance holds", registry=r)
        self.ready = Gauge("anomrec_ready", "1 when /healthz says ready", registry=r)
        self._versions: dict[tuple[str, str], str] = {}
        self._fits_seen: dict[tuple[int, str], int] = {}

    def commit(self, tally: CycleTally, now: float) -> None:
        """Count a committed cycle; ``now`` is the wall clock (epoch seconds) at its commit."""
        for topic, n in tally.records_in.items():
            self.events_in.labels(topic).inc(n)
        for topic, n in tally.records_out.items():
            self.events_out.labels(topic).inc(n)
        for reason, n in tally.dead_letters.items():
            self.dead_letters.labels(reason).inc(n)
        if tally.alerts:
            self.alerts.inc(tally.alerts)
        if tally.recommendations:
            self.recommendations.inc(tally.recommendations)
        observe = self.latency.observe
        for t in tally.event_times:
            observe(max(0.0, now - t))

    def observe_tasks(
        self,
        topic: str,
        tasks: Mapping[int, Processor],
        ends: Mapping[int, int | None],
        positions: Mapping[int, int],
    ) -> None:
        """Per-partition gauges, refits and model versions, after a cycle (on the runner's thread)."""
        self.assigned.set(len(tasks))
        for partition, processor in tasks.items():
            label = str(partition)
            end = ends.get(partition)
            if end is not None:
                self.lag.labels(topic, label).set(max(0, end - positions[partition]))
            self.entities.labels(label).set(processor.profile.n_entities)
            for d in processor.detectors:
                key = (label, d.name)
                if self._versions.get(key) != d.version:
                    if key in self._versions:
                        self.model.remove(label, d.name, self._versions[key])
                    self._versions[key] = d.version
                    self.model.labels(label, d.name, d.version).set(1)
                if isinstance(d, SklearnDetector):
                    self._count_fits(processor, d)

    def forget(self, topic: str, partitions: Iterable[int]) -> None:
        """Drop the per-partition series of partitions this instance no longer holds."""
        for partition in partitions:
            label = str(partition)
            for series, labels in ((self.lag, (topic, label)), (self.entities, (label,))):
                with suppress(KeyError):  # never observed
                    series.remove(*labels)
            for key in [k for k in self._versions if k[0] == label]:
                self.model.remove(label, key[1], self._versions.pop(key))

    def _count_fits(self, processor: Processor, d: SklearnDetector) -> None:
        # Keyed by the processor: one restored from a checkpoint arrives with fits already done.
        key = (id(processor), d.name)
        seen = self._fits_seen.setdefault(key, d.fits_)
        new = d.fits_ - seen
        if new > 0:
            self.refits.labels(d.name).inc(new)
            for seconds in list(d.fit_seconds_)[-new:]:
                self.refit_seconds.labels(d.name).observe(seconds)
            self._fits_seen[key] = d.fits_


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics server: " + format, *args)


class MetricsServer:
    """``/metrics`` (Prometheus text format) and ``/healthz`` on ``host:port``, on daemon threads.

    ``health()`` returns ``(ready, details)``; details go into the JSON answer.
    """

    def __init__(
        self,
        metrics: RunnerMetrics,
        health: Callable[[], tuple[bool, dict[str, Any]]],
        *,
        host: str,
        port: int,
    ) -> None:
        self.metrics = metrics
        self.health = health
        exposition = make_wsgi_app(metrics.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/healthz":
                ready, details = self.health()
                metrics.ready.set(1 if ready else 0)
                body = json.dumps({"status": "ready" if ready else "starting", **details}).encode()
                start_response(
                    "200 OK" if ready else "503 Service Unavailable",
                    [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
                )
                return [body]
            if path in ("/metrics", "/"):
                metrics.ready.set(1 if self.health()[0] else 0)
                return exposition(environ, start_response)
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: try /metrics or /healthz\n"]

        self._server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="anomrec-metrics", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics, health on /healthz", self._server.server_name, self.port)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
