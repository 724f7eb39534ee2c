"""The in-process edge around the pure core, and the counters every runner keeps.

:func:`run_embedded` feeds an in-memory stream (the bundled sample, or a recording) through the
core and writes alerts to a JSONL file. It decodes raw bytes itself, so a malformed record is
logged, counted by reason and skipped, and never stops the stream. The Kafka edge, with its
dead-letter topic, is :mod:`.kafka_runner`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from .artifacts import new_processor, warm_start_models
from .config import ProcessorConfig
from .core import Alert
from .events import Event, EventDecoder
from .exceptions import BadRecord, DeliveryError
from .recommender import RecoStep

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunStats:
    """Counters of one run; ``tp`` and ``labelled`` only count events that carry a label."""

    events: int = 0
    alerts: int = 0
    bad_records: Counter[str] = field(default_factory=Counter)
    labelled_anomalies: int = 0
    true_alerts: int = 0
    assignments: int = 0
    interactions_learned: int = 0
    interactions_gated: int = 0
    below_min_rating: int = 0
    not_interactions: int = 0
    recommendations: int = 0
    neighbour_lists: int = 0
    dead_letters: int = 0
    replayed: int = 0
    restored: int = 0
    checkpoints: int = 0
    aborted: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    def add_reco(self, reco: RecoStep) -> None:
        self.interactions_learned += reco.learned
        self.interactions_gated += reco.gated
        self.below_min_rating += reco.below_min_rating
        self.not_interactions += reco.not_interactions
        self.recommendations += len(reco.updates)
        self.neighbour_lists += len(reco.neighbours)

    def add(self, events: list[Event], alerts: list[Alert]) -> None:
        self.events += len(events)
        self.alerts += len(alerts)
        self.labelled_anomalies += sum(1 for e in events if e.label == 1)
        flagged = {a.event_id for a in alerts}
        self.true_alerts += sum(1 for e in events if e.label == 1 and e.event_id in flagged)

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def precision(self) -> float | None:
        return self.true_alerts / self.alerts if self.alerts and self.labelled_anomalies else None

    @property
    def recall(self) -> float | None:
        return self.true_alerts / self.labelled_anomalies if self.labelled_anomalies else None

    def summary(self) -> str:
        """A few aligned lines for the end of a run."""
        bad = sum(self.bad_records.values())
        by_reason = ", ".join(f"{k}: {v}" for k, v in sorted(self.bad_records.items()))
        rate = self.events / self.elapsed if self.elapsed > 0 else 0.0
        lines = [
            f"events      {self.events:>9,}",
            f"bad records {bad:>9,}" + (f"   ({by_reason})" if bad else ""),
            f"alerts      {self.alerts:>9,}",
        ]
        if self.labelled_anomalies:
            lines += [
                f"labelled    {self.labelled_anomalies:>9,}   anomalies in the input",
                f"precision   {self.precision or 0.0:>9.3f}   "
                f"({self.true_alerts:,} of {self.alerts:,} alerts are labelled anomalies)",
                f"recall      {self.recall or 0.0:>9.3f}   "
                f"({self.true_alerts:,} of {self.labelled_anomalies:,} labelled anomalies alerted)",
            ]
        if (
            self.interactions_learned
            or self.interactions_gated
            or self.below_min_rating
            or self.not_interactions
        ):
            lines += [
                f"learned     {self.interactions_learned:>9,}   interactions",
                f"gated       {self.interactions_gated:>9,}   interactions not learned: the event alerted",
            ]
            if self.below_min_rating:
                lines.append(f"low ratings {self.below_min_rating:>9,}   below min_rating, not learned")
            if self.not_interactions:
                lines.append(
                    f"no item     {self.not_interactions:>9,}   events without a user or an item, not learned"
                )
            lines.append(
                f"lists       {self.recommendations:>9,}   recommendation updates, "
                f"{self.neighbour_lists:,} neighbour lists"
            )
        if self.dead_letters:
            lines.append(f"dead letters{self.dead_letters:>9,}   bad records sent to the dead-letter topic")
        if self.restored or self.replayed:
            lines.append(
                f"replayed    {self.replayed:>9,}   records reprocessed to rebuild state "
                f"({self.restored:,} checkpoints restored)"
            )
        if self.checkpoints:
            lines.append(f"checkpoints {self.checkpoints:>9,}   written")
        if self.aborted:
            lines.append(f"aborted     {self.aborted:>9,}   transactions, state rebuilt after each")
        lines.append(f"time        {self.elapsed:>9.1f} s ({rate:,.0f} events/s)")
        return "\n".join(lines)


def decode_batch(
    decoder: EventDecoder,
    records: Iterable[tuple[bytes | None, int | None, str]],
    stats: RunStats,
) -> list[Event]:
    """Decode ``(value, timestamp_ms, where)`` triples; log and count the bad ones.

    ``where`` names the record in log lines, e.g. ``events-0@1234`` or ``line 17``.
    """
    events = []
    for value, timestamp_ms, where in records:
        event = decode_one(decoder, value, timestamp_ms, where, stats)
        if event is not None:
            events.append(event)
    return events


def decode_one(
    decoder: EventDecoder, value: bytes | None, timestamp_ms: int | None, where: str, stats: RunStats
) -> Event | None:
    """Decode one record, or log and count it as bad and return None."""
    try:
        return decoder.decode(value, timestamp_ms=timestamp_ms, fallback_id=where)
    except BadRecord as exc:
        stats.bad_records[exc.reason] += 1
        log.warning("skipped bad record %s (%s): %s", where, exc.reason, exc)
        return None


def run_embedded(
    config: ProcessorConfig,
    values: Iterable[bytes | None],
    alerts_out: IO[bytes],
    *,
    batch_size: int = 500,
    on_batch: Callable[[RunStats, int], None] | None = None,
    recommendations_out: IO[bytes] | None = None,
) -> RunStats:
    """Run the core over ``values`` in process, writing one JSON alert per line to ``alerts_out``.

    A None value (a tombstone) is counted as a bad record, as the Kafka runner counts it.

    ``on_batch(stats, n)`` is called after each batch of ``n`` records (progress display).
    Recommendation updates go, one JSON object per line, to ``recommendations_out`` if given.
    """
    decoder = EventDecoder(config)
    stats = RunStats()
    batch: list[tuple[bytes | None, int | None, str]] = []

    with new_processor(config, warm_start_models(config)) as processor:

        def flush() -> None:
            events = decode_batch(decoder, batch, stats)
            step = processor.process(events)
            for alert in step.alerts:
                alerts_out.write(alert.to_json() + b"\n")
            if recommendations_out is not None:
                for update in step.reco.updates:
                    recommendations_out.write(update.to_json() + b"\n")
            stats.add(step.events, step.alerts)
            stats.add_reco(step.reco)
            if on_batch is not None:
                on_batch(stats, len(batch))
            batch.clear()

        for i, value in enumerate(values):
            batch.append((value, None, f"record {i}"))
            if len(batch) >= batch_size:
                flush()
        flush()
    stats.finished = time.monotonic()
    return stats


def write_alerts_path(path: Path, what: str = "alerts", flag: str = "--alerts-out") -> IO[bytes]:
    """Open ``path`` for output, creating its folder; a clear error if it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("wb")
    except OSError as exc:
        raise DeliveryError(
            f"cannot write {what} to {str(path)!r}: {exc.strerror}; pass another {flag}"
        ) from None
