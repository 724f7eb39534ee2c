"""Test your own configuration without a broker: a list source, a list sink and a fake clock.

:func:`run` does what :class:`~anomrec.streaming.kafka_runner.KafkaRunner` does for one partition,
in process: it decodes each record (a bad one becomes a
:class:`~anomrec.streaming.deadletter.DeadLetter`), processes the records in batches through one
:class:`~anomrec.streaming.core.Processor`, commits each batch (its outputs reach the sink, then the
input offset advances), checkpoints on the configured intervals and, when it starts, restores the
newest checkpoint at or before the committed offset and replays the records up to it silently. So a
test can check what a configuration does after a crash::

    source = ListSource([*records[:500], ABORT, *records[500:]])
    with pytest.raises(Aborted):
        run(config, source, sink, state_dir=tmp_path)  # "killed" at record 500
    run(config, source, sink, state_dir=tmp_path)      # restarted: recovers, carries on
    assert sink.by_kind() == reference.by_kind()       # as if it had never stopped

The pieces
----------
:class:`ListSource`
    The input partition: JSON-able dicts, raw bytes or ``(key, value, timestamp_ms)`` tuples, with
    markers between them: :data:`EOF` (stop here, cleanly), :data:`ABORT` (stop here as if the
    process were killed) and :class:`Tick` (time passes). Like a topic, it keeps every record and
    the committed offset of its one consumer group, so the next run on it resumes from that offset;
    each marker acts once.
:class:`ListSink`
    The output topics: ``add`` buffers, ``flush`` (called at each commit) makes the buffered
    records visible and ``abort`` drops them, the way a ``read_committed`` consumer sees a Kafka
    transaction. Only committed outputs are ever in :attr:`ListSink.records`.
:class:`FakeClock`
    The time :func:`run` reads instead of the wall clock (for ``checkpoint_every_seconds``). It
    moves only when a :class:`Tick` is read or a test calls :meth:`FakeClock.advance`.

The committed offset lives on the source (as Kafka keeps it for the group), checkpoints in the
``state_dir`` passed to :func:`run` (``config.state_dir`` is not used, so that a test never writes
into the working folder). Without a ``state_dir`` nothing is checkpointed and a restarted run
rebuilds its state from the start of the source, as a Kafka runner with no usable checkpoint does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, final

import orjson

from .artifacts import new_processor, warm_start_models
from .checkpoint import write_checkpoint
from .config import ProcessorConfig
from .core import Alert, Processor
from .deadletter import BadRecordGuard, DeadLetter, decode_or_dead_letter
from .events import Event, EventDecoder
from .exceptions import AnomrecError, ConfigError
from .kafka_runner import checkpoint_due, restore_newest
from .recommender import NeighbourUpdate, RecommendationUpdate
from .runners import RunStats

log = logging.getLogger(__name__)

__all__ = [
    "ABORT",
    "EOF",
    "KINDS",
    "Aborted",
    "FakeClock",
    "Item",
    "ListSink",
    "ListSource",
    "Marker",
    "SinkRecord",
    "SourceRecord",
    "Tick",
    "run",
]


@final
class Marker:
    """A point in a :class:`ListSource` where something happens instead of a record.

    There are two, :data:`EOF` and :data:`ABORT`; compare with ``is``. They survive pickling and
    copying as themselves.

    Examples
    --------
    >>> EOF, ABORT
    (EOF, ABORT)
    >>> import copy
    >>> copy.deepcopy([EOF])[0] is EOF
    True
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self) -> str:
        return self.name  # the module-level constant of that name


EOF: Final = Marker("EOF")
"""End of input for this run: the run commits what it read, checkpoints and returns. The items after
it are read by the next run on the same source."""

ABORT: Final = Marker("ABORT")
"""A crash at this point: the run stops at once and raises :class:`Aborted`. The records read
since the last commit are not committed (their outputs never reach the sink, the committed offset
stays) and no final checkpoint is written, as if the process had been killed. The next run on the
same source recovers and produces them."""


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passing: when a run reads it, the run's :class:`FakeClock` moves ``seconds`` ahead.

    A tick is not a record: it takes no offset and does not end the batch. Time-based checkpoints
    are due, as in the Kafka runner, when a batch commits at least ``checkpoint_every_seconds``
    after the last checkpoint (or the start of the run).

    Examples
    --------
    >>> Tick(11)
    Tick(seconds=11)
    >>> Tick(-1)
    Traceback (most recent call last):
    ...
    ValueError: Tick(seconds=-1): expected a finite number of seconds >= 0; a clock never goes back
    """

    seconds: float

    def __post_init__(self) -> None:
        if not (isinstance(self.seconds, int | float) and math.isfinite(self.seconds) and self.seconds >= 0):
            raise ValueError(
                f"Tick(seconds={self.seconds!r}): expected a finite number of seconds >= 0; "
                "a clock never goes back"
            )


class Aborted(AnomrecError):
    """A run reached an :data:`ABORT` marker and stopped as if its process had been killed.

    Only tests see it: it is raised by :func:`run` and nothing else.

    Parameters
    ----------
    message
        Where it stopped and what was not committed.
    offset
        The offset of the first record the run did not read.
    committed
        The source's committed offset: the outputs of the records from here to ``offset`` were
        dropped, and the next run produces them again.
    stats
        The aborted run's counters.
    """

    def __init__(self, message: str, *, offset: int, committed: int, stats: RunStats) -> None:
        super().__init__(message)
        self.offset = offset
        self.committed = committed
        self.stats = stats

    def __reduce__(self) -> tuple[Any, ...]:
        # The keyword-only arguments are not in ``args``: rebuild with them so pickling works.
        rebuild = partial(type(self), offset=self.offset, committed=self.committed, stats=self.stats)
        return rebuild, (str(self),)


class FakeClock:
    """A clock that moves only when told: the run's time, in seconds, for deterministic tests.

    Parameters
    ----------
    start
        The time it shows at first.

    Examples
    --------
    >>> clock = FakeClock()
    >>> clock(), clock.advance(12.5), clock.now()
    (0.0, 12.5, 12.5)
    >>> clock
    FakeClock(now=12.5)
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = float(start)

    def __call__(self) -> float:
        """The current time, like :func:`time.monotonic`."""
        return self._now

    def now(self) -> float:
        """The current time."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move ``seconds`` ahead (at least 0); returns the new time."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"advance({seconds!r}): expected a finite number of seconds >= 0")
        self._now += seconds
        return self._now

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now:g})"


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record of a :class:`ListSource`, as a consumer reads it."""

    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None


Item: TypeAlias = Mapping[str, Any] | bytes | tuple[Any, Any, int | None] | Marker | Tick | None
"""What a :class:`ListSource` takes: a record (dict, bytes, None or a tuple) or a marker."""


class ListSource:
    """A one-partition input topic held in a list, with markers between its records.

    Parameters
    ----------
    items
        The records, in offset order, and the markers between them. A record is a JSON-able dict
        (sent as its JSON bytes, with no key and no timestamp), raw value bytes (which may be bad:
        they become dead letters), None (a tombstone) or a ``(key, value, timestamp_ms)`` tuple
        whose key is bytes, text or None and whose value is any of the above. A marker is
        :data:`EOF`, :data:`ABORT` or a :class:`Tick`; markers take no offset.
    topic, partition
        Name the records in dead letters and fallback event ids (``events-0@17``), and the
        checkpoints (``<state_dir>/events-0/``).

    Attributes
    ----------
    records
        Every record, ``records[i].offset == i``. Its repr shows the markers not acted on yet, each
        with the offset it stands before.
    committed
        The offset the last committed batch ended at, as the consumer group would have it: the
        next run resumes its outputs from here. Starts at 0.

    Examples
    --------
    >>> source = ListSource([{"amount": 1}, b"{oops", EOF, (b"c1", b"{}", 1767225600000), Tick(5)])
    >>> [r.offset for r in source.records], source.records[0].value
    ([0, 1, 2], b'{"amount":1}')
    >>> source
    ListSource(topic='events', partition=0, records=3, committed=0, markers=[EOF@2, Tick(seconds=5)@3])
    """

    def __init__(self, items: Sequence[Item], *, topic: str = "events", partition: int = 0) -> None:
        self.topic = topic
        self.partition = partition
        records: list[SourceRecord] = []
        markers: list[tuple[int, Marker | Tick]] = []
        for i, item in enumerate(items):
            if isinstance(item, Marker | Tick):
                markers.append((len(records), item))
                continue
            key: Any = None
            value: Any = item
            timestamp_ms: int | None = None
            if isinstance(item, tuple):
                if len(item) != 3:
                    raise TypeError(
                        f"item {i} is a tuple of {len(item)}: expected (key, value, timestamp_ms)"
                    )
                key, value, timestamp_ms = item
            records.append(
                SourceRecord(len(records), _key_bytes(key, i), _value_bytes(value, i), timestamp_ms)
            )
        self.records: tuple[SourceRecord, ...] = tuple(records)
        self.committed = 0
        self._markers = markers
        self._next_marker = 0

    def __repr__(self) -> str:
        left = ", ".join(f"{m!r}@{at}" for at, m in self._markers[self._next_marker :])
        return (
            f"ListSource(topic={self.topic!r}, partition={self.partition}, records={len(self.records)}, "
            f"committed={self.committed}, markers=[{left}])"
        )

    @property
    def key(self) -> str:
        """The checkpoint key of this partition, ``<topic>-<partition>``."""
        return f"{self.topic}-{self.partition}"

    def read(self, start: int) -> Iterator[SourceRecord | Marker | Tick]:
        """The records from offset ``start`` on, with the markers not acted on yet where they stand.

        A marker counts as acted on once it has been yielded.
        """
        for offset in range(start, len(self.records) + 1):
            while self._next_marker < len(self._markers) and self._markers[self._next_marker][0] <= offset:
                marker = self._markers[self._next_marker][1]
                self._next_marker += 1
                yield marker
            if offset < len(self.records):
                yield self.records[offset]

    def commit(self, offset: int) -> None:
        """Record that every output of the records before ``offset`` is in the sink."""
        self.committed = offset


Kind = Literal["alert", "recommendation", "neighbours", "dead-letter"]

KINDS: Final[tuple[Kind, ...]] = ("alert", "recommendation", "neighbours", "dead-letter")
"""The kinds of :class:`SinkRecord`, one per output topic."""


@dataclass(frozen=True, slots=True)
class SinkRecord:
    """One output record, as the Kafka runner would produce it.

    Attributes
    ----------
    kind
        One of :data:`KINDS`.
    topic
        The configured topic it would go to (``alerts_topic``, ``recommendations_topic``,
        ``similar_items_topic`` or ``dead_letter_topic``).
    key, value
        Its bytes: the entity, user or item and the JSON document; for a dead letter, the input
        record's raw key and value.
    headers
        The dead letter's headers (see :mod:`.deadletter`); empty for the others.
    timestamp_ms
        The event time in epoch milliseconds; None for a dead letter (the broker stamps it).
    payload
        The object behind it: an :class:`~anomrec.streaming.core.Alert`, a
        :class:`~anomrec.streaming.recommender.RecommendationUpdate`, a
        :class:`~anomrec.streaming.recommender.NeighbourUpdate` or a
        :class:`~anomrec.streaming.deadletter.DeadLetter`. Records compare equal on everything
        but this: the bytes are what a consumer would see.
    """

    kind: Kind
    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None
    payload: Alert | RecommendationUpdate | NeighbourUpdate | DeadLetter | None = field(
        default=None, compare=False, repr=False
    )


class ListSink:
    """The output topics held in lists: it holds only what was committed.

    A runner calls :meth:`add` for each output of a batch, then :meth:`flush` when the batch
    commits, or :meth:`abort` when it fails; a record added but not flushed is never visible.

    Attributes
    ----------
    records
        The committed records, in the order they were committed. Records of different kinds have
        no order between them (on Kafka they are on different topics), and :func:`run` cuts batches
        where the input lets it; compare per kind, with :meth:`by_kind`.

    Examples
    --------
    >>> sink = ListSink()
    >>> sink.add(SinkRecord("alert", "alerts", b"card-1", b'{"score": 0.99}'))
    >>> sink.records, sink.pending
    ([], 1)
    >>> sink.flush()
    >>> [r.value for r in sink.records]
    [b'{"score": 0.99}']
    >>> sink.add(SinkRecord("alert", "alerts", b"card-2", b'{"score": 0.98}'))
    >>> sink.abort()
    >>> sink
    ListSink(alert=1, recommendation=0, neighbours=0, dead-letter=0, pending=0)
    """

    def __init__(self) -> None:
        self.records: list[SinkRecord] = []
        self._pending: list[SinkRecord] = []

    def add(self, record: SinkRecord) -> None:
        """Buffer one output of the batch being processed."""
        if record.kind not in KINDS:
            raise ValueError(f"record kind {record.kind!r}: expected one of {', '.join(KINDS)}")
        self._pending.append(record)

    def flush(self) -> None:
        """Commit the buffered records: from now on they are in :attr:`records`."""
        self.records.extend(self._pending)
        self._pending.clear()

    def abort(self) -> None:
        """Drop the buffered records, as an aborted transaction's records are never read."""
        self._pending.clear()

    @property
    def pending(self) -> int:
        """How many records are buffered, not committed yet."""
        return len(self._pending)

    def by_kind(self) -> dict[str, list[SinkRecord]]:
        """The committed records of each kind, in order: what a consumer of each topic reads."""
        out: dict[str, list[SinkRecord]] = {kind: [] for kind in KINDS}
        for record in self.records:
            out[record.kind].append(record)
        return out

    def _payloads(self, kind: Kind) -> list[Any]:
        return [r.payload for r in self.records if r.kind == kind]

    @property
    def alerts(self) -> list[Alert]:
        """The committed alerts."""
        return self._payloads("alert")

    @property
    def recommendations(self) -> list[RecommendationUpdate]:
        """The committed recommendation updates."""
        return self._payloads("recommendation")

    @property
    def neighbours(self) -> list[NeighbourUpdate]:
        """The committed similar-items lists."""
        return self._payloads("neighbours")

    @property
    def dead_letters(self) -> list[DeadLetter]:
        """The committed dead letters."""
        return self._payloads("dead-letter")

    def __repr__(self) -> str:
        counts = ", ".join(f"{kind}={len(records)}" for kind, records in self.by_kind().items())
        return f"ListSink({counts}, pending={self.pending})"


def run(
    config: ProcessorConfig,
    source: ListSource,
    sink: ListSink,
    *,
    state_dir: str | Path | None = None,
    clock: FakeClock | None = None,
    batch_size: int = 100,
) -> RunStats:
    """Process ``source`` into ``sink`` as the Kafka runner processes one partition.

    The run starts from the newest checkpoint in ``state_dir`` at or before ``source.committed``
    (or from offset 0) and reprocesses the records up to ``source.committed`` without emitting
    anything. From there it reads ``batch_size`` records at a time; a bad record becomes a dead
    letter and is counted by reason, the good ones are processed (waiting for any model fit at a
    swap point, so no event is ever held back). Each batch commits: its outputs are added to the
    sink and flushed, then ``source.commit`` moves the offset. After a commit a checkpoint is
    written when ``config.checkpoint_every_events`` events or ``config.checkpoint_every_seconds``
    seconds on ``clock`` have passed since the last one. The run ends at an :data:`EOF` marker or
    the end of the source, committing and checkpointing what it read.

    Parameters
    ----------
    config
        The settings under test. ``state_dir`` below takes the place of ``config.state_dir``.
    source
        The input; the run resumes where its last commit left off.
    sink
        Receives the committed outputs.
    state_dir
        Folder of the checkpoints; None writes none, and every run rebuilds its state from the
        start of the source.
    clock
        Read for time-based checkpoints and moved by :class:`Tick` markers; by default a new
        :class:`FakeClock` at 0, so time never passes unless a tick says so. ``stats.elapsed`` is
        measured on it too.
    batch_size
        Records per batch, the number of records a commit covers.

    Returns
    -------
    RunStats
        The run's counters; records replayed to rebuild state are counted in ``replayed`` only.

    Raises
    ------
    Aborted
        At an :data:`ABORT` marker, after dropping the current batch's outputs.
    TooManyBadRecords
        When too large a share of the records is bad (``max_bad_ratio``), as in the Kafka runner.

    Examples
    --------
    >>> from anomrec.streaming.sample import generate_transactions
    >>> cfg = ProcessorConfig(first_fit_after=200, refit_every=400, swap_delay=50, warmup_events=150,
    ...                       window_size=100, n_trees=10, height=8, iforest_trees=30,
    ...                       calibration_window=1000, refresh_every=100)
    >>> events = generate_transactions(600, seed=3)
    >>> source = ListSource([*events[:300], b"{oops", EOF, *events[300:]])
    >>> sink = ListSink()
    >>> first = run(cfg, source, sink)
    >>> first.events, dict(first.bad_records), source.committed
    (300, {'json': 1}, 301)
    >>> second = run(cfg, source, sink)   # no state_dir: rebuilds from offset 0, then carries on
    >>> second.replayed, second.events, len(sink.dead_letters), len(sink.alerts) > 0
    (301, 300, 1, True)
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r}: expected an integer >= 1")
    clock = clock if clock is not None else FakeClock()
    return _Run(config, source, sink, state_dir=state_dir, clock=clock, batch_size=batch_size)()


class _Run:
    """One call of :func:`run`: the partition's task and its bookkeeping."""

    def __init__(
        self,
        config: ProcessorConfig,
        source: ListSource,
        sink: ListSink,
        *,
        state_dir: str | Path | None,
        clock: FakeClock,
        batch_size: int,
    ) -> None:
        self.config = config
        self.source = source
        self.sink = sink
        self.state_dir = None if state_dir is None else Path(state_dir)
        self.clock = clock
        self.batch_size = batch_size
        self.stats = RunStats(started=clock())
        self.decoder = EventDecoder(config)
        self.guard = BadRecordGuard.from_config(config)
        self.position = 0  # the offset of the next record the processor has not seen
        self.replay_until = 0  # records below it rebuild state only
        self.since_checkpoint = 0
        self.checkpointed_at = clock()
        self.models = warm_start_models(config)

    def __call__(self) -> RunStats:
        processor = self._open()
        try:
            batch: list[SourceRecord] = []
            for item in self.source.read(self.position):
                if isinstance(item, SourceRecord):
                    batch.append(item)
                    if len(batch) >= self.batch_size:
                        self._cycle(processor, batch)
                        batch = []
                elif isinstance(item, Tick):
                    self.clock.advance(item.seconds)
                elif item is EOF:
                    break
                else:
                    offset = batch[-1].offset + 1 if batch else self.position
                    raise Aborted(
                        f"ABORT at offset {offset} of {self.source.key}: stopped as if killed; the "
                        f"outputs of offsets {self.source.committed} to {offset} were not committed, "
                        "and a run on the same source recovers and produces them",
                        offset=offset,
                        committed=self.source.committed,
                        stats=self.stats,
                    )
            if batch:
                self._cycle(processor, batch)
            if self.since_checkpoint:
                self._checkpoint(processor, "end of input")
        except BaseException:
            self.sink.abort()
            raise
        finally:
            processor.close()
            self.stats.finished = self.clock()
        return self.stats

    def _open(self) -> Processor:
        """The processor, restored from the newest usable checkpoint; sets where to read from."""
        committed = self.source.committed
        found = None
        if self.state_dir is not None:
            found = restore_newest(self.config, self.state_dir, self.source.key, max_offset=committed)
        if found is not None:
            processor, start = found[0], found[1].offset
            self.stats.restored += 1
        else:
            processor, start = new_processor(self.config, self.models), 0
        log.debug("%s: starting at offset %d, replaying up to %d", self.source.key, start, committed)
        self.position = start
        self.replay_until = committed if committed > start else 0
        return processor

    def _cycle(self, processor: Processor, batch: list[SourceRecord]) -> None:
        """Process one batch, commit its outputs and offset, and checkpoint if one is due."""
        cfg, source = self.config, self.source
        events: list[Event] = []
        offsets: list[int] = []
        for r in batch:
            outcome = decode_or_dead_letter(
                self.decoder,
                self.guard,
                value=r.value,
                key=r.key,
                timestamp_ms=r.timestamp_ms,
                topic=source.topic,
                partition=source.partition,
                offset=r.offset,
            )
            if isinstance(outcome, Event):
                events.append(outcome)
                offsets.append(r.offset)
            elif r.offset < self.replay_until:  # dead-lettered by the run that committed it
                self.stats.replayed += 1
            else:
                self.stats.bad_records[outcome.reason] += 1
                self.stats.dead_letters += 1
                headers = tuple(outcome.headers())
                self.sink.add(
                    SinkRecord("dead-letter", cfg.dead_letter_topic, r.key, r.value, headers, None, outcome)
                )
            self.position = r.offset + 1
        if self.replay_until:
            cut = sum(1 for o in offsets if o < self.replay_until)
            processor.process(events[:cut])
            self.since_checkpoint += cut
            self.stats.replayed += cut
            events = events[cut:]
            if self.position >= self.replay_until:
                self.replay_until = 0
        step = processor.process(events)  # waits for any fit at a swap point: nothing is held back
        self.since_checkpoint += len(step.events)
        for alert in step.alerts:
            self.sink.add(_output("alert", cfg.alerts_topic, alert.entity, alert))
        for update in step.reco.updates:
            self.sink.add(_output("recommendation", cfg.recommendations_topic, update.user, update))
        for lists in step.reco.neighbours:
            self.sink.add(_output("neighbours", cfg.similar_items_topic, lists.item, lists))
        self.stats.add(step.events, step.alerts)
        self.stats.add_reco(step.reco)
        if self.replay_until:
            return  # still rebuilding: the offset committed before is ahead of this batch
        self.sink.flush()
        source.commit(self.position)
        if checkpoint_due(cfg, self.since_checkpoint, self.clock() - self.checkpointed_at):
            self._checkpoint(processor, "interval")

    def _checkpoint(self, processor: Processor, why: str) -> None:
        if self.state_dir is None or self.replay_until:
            return
        write_checkpoint(
            self.state_dir,
            self.source.key,
            self.position,
            processor.state(),
            processor.model_versions(),
        )
        self.since_checkpoint = 0
        self.checkpointed_at = self.clock()
        self.stats.checkpoints += 1
        log.debug("%s: checkpoint at offset %d (%s)", self.source.key, self.position, why)


def _output(
    kind: Kind, topic: str, key: str, record: Alert | RecommendationUpdate | NeighbourUpdate
) -> SinkRecord:
    return SinkRecord(kind, topic, key.encode(), record.to_json(), (), int(record.event_time * 1000), record)


def _key_bytes(key: Any, index: int) -> bytes | None:
    if key is None or isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    raise TypeError(f"item {index} has the key {key!r}, a {type(key).__name__}: expected bytes, str or None")


def _value_bytes(value: Any, index: int) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, Mapping):
        return orjson.dumps(dict(value))
    raise TypeError(
        f"item {index} is {value!r}, a {type(value).__name__}: expected a dict, bytes, None, "
        "a (key, value, timestamp_ms) tuple, EOF, ABORT or a Tick"
    )
