"""The edges around the pure core: where records come from and where alerts go.

:func:`run_embedded` feeds an in-memory stream (the bundled sample by default) through the core
and writes alerts to a JSONL file. :class:`KafkaRunner` consumes an input topic and publishes
alerts, committing input offsets only after the alerts they caused are acknowledged by the
broker (at-least-once; the reliability work adds transactions).

Both decode raw bytes themselves, so a malformed record is logged, counted by reason and skipped,
and never stops the stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .config import ProcessorConfig
from .core import Alert, Processor
from .events import Event, EventDecoder
from .exceptions import BadRecord, ConfigError, DeliveryError
from .recommender import NeighbourUpdate, RecommendationUpdate, RecoStep

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

    with Processor(config) as processor:

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


class KafkaRunner:
    """Consume ``config.input_topic``, publish alerts to ``config.alerts_topic``.

    Each input partition has its own :class:`Processor`, so a partition's alerts depend on its
    own records only, whatever order the consumer interleaves partitions in.

    Parameters
    ----------
    config
        Topics, group and model settings; ``config.bootstrap_servers`` must be set.
    client_options
        Extra keyword arguments for both kafka-python clients (security settings, client id).
    consumer_options
        Extra keyword arguments for the consumer only (``max_poll_interval_ms``, ...).
    executor
        Runs the IsolationForest and LOF fits of every partition's processor; by default one worker
        thread. A fit never blocks the poll loop: at a model swap point whose fit is not done, the
        partition's remaining events are held back and the partition paused, and polling goes on,
        so the consumer stays in its group however long a fit takes.
    """

    def __init__(
        self,
        config: ProcessorConfig,
        client_options: Mapping[str, Any] | None = None,
        *,
        consumer_options: Mapping[str, Any] | None = None,
        executor: Executor | None = None,
    ) -> None:
        if not config.bootstrap_servers:
            raise ValueError("KafkaRunner needs config.bootstrap_servers")
        self.config = config
        self.client_options = dict(client_options or {})
        self.consumer_options = dict(consumer_options or {})
        self.stats = RunStats()
        self._stop = threading.Event()
        self._swap_wait = 0.5
        self._decoder = EventDecoder(config)
        self._processors: dict[int, Processor] = {}
        # Offsets of the events each partition's processor holds back at a model swap point.
        self._held: dict[int, deque[int]] = {}
        self._next_offset: dict[Any, int] = {}
        self._own_executor = executor is None
        self._fits: Executor = executor or ThreadPoolExecutor(1, thread_name_prefix="anomrec-fit")

    def stop(self) -> None:
        """Ask :meth:`run` to finish its current batch, commit and return; safe from a signal handler."""
        self._stop.set()

    def run(self, *, max_events: int | None = None, idle_timeout: float | None = None) -> RunStats:
        """Process until :meth:`stop` is called, or after ``max_events`` or ``idle_timeout`` seconds idle."""
        from kafka import KafkaConsumer, KafkaProducer  # noqa: PLC0415 - kept off the embedded path
        from kafka.errors import KafkaTimeoutError  # noqa: PLC0415

        cfg = self.config
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=cfg.bootstrap_servers,
                group_id=cfg.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=cfg.max_poll_records,
                **{**self.client_options, **self.consumer_options},
            )
        except KafkaTimeoutError:  # kafka-python 3 gives up bootstrapping after 30 s
            raise ConfigError(
                f"no Kafka broker answered at bootstrap_servers={cfg.bootstrap_servers!r}: check the "
                "address and that the broker is up, or unset it to run embedded"
            ) from None
        producer = KafkaProducer(
            bootstrap_servers=cfg.bootstrap_servers, acks="all", linger_ms=5, **self.client_options
        )
        ensure_output_topics(cfg, self.client_options)
        consumer.subscribe([cfg.input_topic], listener=_count_rebalances(self.stats))
        log.info("consuming %s as group %s from %s", cfg.input_topic, cfg.group_id, cfg.bootstrap_servers)
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                polled = consumer.poll(timeout_ms=200)
                held_before = self._held_partitions()
                if not polled and not held_before:
                    if idle_timeout is not None and time.monotonic() - idle_since > idle_timeout:
                        break
                    continue
                idle_since = time.monotonic()
                self._handle(polled, producer)
                self._commit(consumer)
                self._pause_held(consumer)
                if max_events is not None and self.stats.events >= max_events:
                    break
        finally:
            self.stats.finished = time.monotonic()
            producer.close(timeout=10)
            consumer.close(autocommit=False)
            for processor in self._processors.values():
                processor.close()
            if self._own_executor:
                self._fits.shutdown(wait=True, cancel_futures=True)
        log.info("stopped after %d events, %d alerts", self.stats.events, self.stats.alerts)
        return self.stats

    def _held_partitions(self) -> list[int]:
        return [p for p, offsets in self._held.items() if offsets]

    def _handle(self, polled: Mapping[Any, list[Any]], producer: Any) -> None:
        futures = []
        topic = self.config.input_topic
        work: dict[int, tuple[list[Event], list[int]]] = {p: ([], []) for p in self._held_partitions()}
        for tp in polled:
            events, offsets = work.setdefault(tp.partition, ([], []))
            for r in polled[tp]:
                event = decode_one(
                    self._decoder, r.value, r.timestamp, f"{topic}-{tp.partition}@{r.offset}", self.stats
                )
                if event is not None:
                    events.append(event)
                    offsets.append(r.offset)
                self._next_offset[tp] = r.offset + 1
        for partition in sorted(work):
            events, offsets = work[partition]
            processor = self._processors.get(partition)
            if processor is None:
                processor = self._processors[partition] = Processor(self.config, executor=self._fits)
            held = self._held.setdefault(partition, deque())
            held.extend(offsets)
            # A model swap point whose fit is not done yet holds back the rest of the batch rather
            # than blocking the poll loop past max.poll.interval.ms; the next poll finishes it.
            step = processor.process(events, wait=self._swap_wait)
            for _ in range(len(step.events)):
                held.popleft()
            cfg = self.config
            outputs: list[tuple[str, str, Alert | RecommendationUpdate | NeighbourUpdate]]
            outputs = [(cfg.alerts_topic, a.entity, a) for a in step.alerts]
            outputs += [(cfg.recommendations_topic, u.user, u) for u in step.reco.updates]
            outputs += [(cfg.similar_items_topic, n.item, n) for n in step.reco.neighbours]
            for topic, key, record in outputs:
                futures.append(
                    producer.send(
                        topic,
                        key=key.encode(),
                        value=record.to_json(),
                        timestamp_ms=int(record.event_time * 1000),
                    )
                )
            self.stats.add(step.events, step.alerts)
            self.stats.add_reco(step.reco)
        producer.flush(timeout=30)
        failed = [f.exception for f in futures if not f.succeeded()]
        if failed:
            raise DeliveryError(
                f"{len(failed)} of {len(futures)} output records were not acknowledged by the broker "
                f"(first error: {failed[0]!r}); input offsets were not committed"
            )

    def _commit(self, consumer: Any) -> None:
        """Commit, per partition, up to the first event a processor still holds back."""
        from kafka.structs import OffsetAndMetadata  # noqa: PLC0415

        offsets = {}
        for tp, next_offset in self._next_offset.items():
            held = self._held.get(tp.partition)
            offsets[tp] = OffsetAndMetadata(held[0] if held else next_offset, "", -1)
        if offsets:
            consumer.commit(offsets=offsets)

    def _pause_held(self, consumer: Any) -> None:
        held = set(self._held_partitions())
        assigned = consumer.assignment()
        consumer.pause(*[tp for tp in assigned if tp.partition in held])
        consumer.resume(*[tp for tp in assigned if tp.partition not in held])


def ensure_output_topics(config: ProcessorConfig, client_options: Mapping[str, Any]) -> list[str]:
    """Create the output topics that do not exist yet; returns the ones created.

    Alerts and recommendation updates get as many partitions as the input topic (one if it does
    not exist either). The similar-items topic is keyed by item and only each item's latest list
    matters, so it is created compacted (``cleanup.policy=compact``). Topics that exist are left
    as they are. A broker that refuses to create one is a :class:`ConfigError` naming the topic.
    """
    from kafka.admin import KafkaAdminClient, NewTopic  # noqa: PLC0415 - kept off the embedded path
    from kafka.errors import KafkaError, TopicAlreadyExistsError  # noqa: PLC0415

    wanted: dict[str, dict[str, str]] = {config.alerts_topic: {}}
    if config.recommend:
        wanted[config.recommendations_topic] = {}
        wanted[config.similar_items_topic] = {"cleanup.policy": "compact"}
    admin = KafkaAdminClient(bootstrap_servers=config.bootstrap_servers, **client_options)
    created = []
    try:
        existing = set(admin.list_topics())
        partitions = 1
        if config.input_topic in existing:
            (described,) = admin.describe_topics([config.input_topic])
            partitions = max(1, len(described.get("partitions", [])))
        for topic, settings in wanted.items():
            if topic in existing:
                continue
            count = 1 if settings else partitions
            try:
                admin.create_topics([NewTopic(topic, count, -1, topic_configs=settings)])
            except TopicAlreadyExistsError:
                continue
            except KafkaError as exc:
                raise ConfigError(
                    f"output topic {topic!r} does not exist and the broker refused to create it ({exc!r}): "
                    "create it, or let this client create topics"
                ) from None
            created.append(topic)
            log.info(
                "created output topic %s (%d partitions%s)", topic, count, ", compacted" if settings else ""
            )
    finally:
        admin.close()
    return created


def _count_rebalances(stats: RunStats) -> Any:
    """A rebalance listener that counts the assignments that give this consumer partitions."""
    from kafka import ConsumerRebalanceListener  # noqa: PLC0415 - kept off the embedded path

    class CountRebalances(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: Any) -> None:
            if revoked:
                log.info("partitions revoked: %s", sorted(str(tp) for tp in revoked))

        def on_partitions_assigned(self, assigned: Any) -> None:
            # An empty assignment (the topic's metadata not seen yet) is followed by a real one.
            if assigned:
                stats.assignments += 1
            log.info("partitions assigned: %s", sorted(str(tp) for tp in assigned))

    return CountRebalances()


def write_alerts_path(path: Path, what: str = "alerts", flag: str = "--alerts-out") -> IO[bytes]:
    """Open ``path`` for output, creating its folder; a clear error if it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("wb")
    except OSError as exc:
        raise DeliveryError(
            f"cannot write {what} to {str(path)!r}: {exc.strerror}; pass another {flag}"
        ) from None
