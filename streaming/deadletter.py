"""Dead letters: the records the processor cannot process, kept raw, with where and why.

A bad record is data, not a crash. The runner writes it to ``dead_letter_topic`` in the same Kafka
transaction as the outputs and the input offsets, so each bad record lands there exactly once, and
the models never see it. The dead-letter record's key and value are the input's raw bytes, as read;
its headers say where it came from and what was wrong. Every header value is UTF-8 text (numbers in
decimal):

=================================  ========================================================================
``anomrec.dlq.source.topic``       topic the record was read from
``anomrec.dlq.source.partition``   its partition
``anomrec.dlq.source.offset``      its offset
``anomrec.dlq.source.timestamp``   its timestamp in epoch milliseconds; absent when it had none
``anomrec.dlq.error.class``        the error's class, e.g. ``anomrec.streaming.exceptions.BadRecord``
``anomrec.dlq.error.reason``       the :class:`~anomrec.streaming.exceptions.BadRecord` reason, e.g. ``json``
``anomrec.dlq.error.message``      what was wrong, at most :data:`MAX_MESSAGE_CHARS` characters
``anomrec.dlq.stage``              where it failed: one of :data:`ERROR_STAGES`
``anomrec.dlq.app.version``        version of the anomrec that wrote it
=================================  ========================================================================

A stream that is mostly bad is a misconfiguration, not bad luck: :class:`BadRecordGuard` stops the
processor with :class:`~anomrec.streaming.exceptions.TooManyBadRecords` when more than
``max_bad_ratio`` of the last ``bad_ratio_window`` records were bad. It counts records, never time,
so the same input stops at the same record.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from .config import ProcessorConfig
from .events import Event, EventDecoder
from .exceptions import BadRecord, ConfigError, TooManyBadRecords

ERROR_STAGES = ("decode", "features", "process")
"""Where a record failed: ``decode`` (bytes to event, including the profile's field checks),
``features`` (the feature profile's stateful step) or ``process`` (scoring, learning and
recommending)."""

MAX_MESSAGE_CHARS = 1000
"""Longest error message a dead letter carries; longer ones are cut and end with ``…``."""

HEADER_PREFIX = "anomrec.dlq."

HEADERS = {
    "source_topic": HEADER_PREFIX + "source.topic",
    "source_partition": HEADER_PREFIX + "source.partition",
    "source_offset": HEADER_PREFIX + "source.offset",
    "source_timestamp_ms": HEADER_PREFIX + "source.timestamp",
    "error_class": HEADER_PREFIX + "error.class",
    "reason": HEADER_PREFIX + "error.reason",
    "message": HEADER_PREFIX + "error.message",
    "stage": HEADER_PREFIX + "stage",
    "app_version": HEADER_PREFIX + "app.version",
}
"""The header name of each :class:`DeadLetter` field that travels as a header."""

_INT_FIELDS = ("source_partition", "source_offset", "source_timestamp_ms")
_OPTIONAL_FIELDS = ("source_timestamp_ms",)


def _app_version() -> str:
    try:
        return version("anomrec")
    except PackageNotFoundError:
        return "unknown"


APP_VERSION = _app_version()
"""The installed anomrec's version (``unknown`` when it is not installed), read once."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One record the processor could not process: its raw bytes, where it came from and why.

    Attributes
    ----------
    value
        The record's raw value; None for a tombstone.
    key
        The record's raw key; None when it had none.
    source_topic, source_partition, source_offset
        Where the record was read.
    source_timestamp_ms
        Its Kafka timestamp in epoch milliseconds; None when it had none.
    error_class
        Qualified class name of the error.
    reason
        The error's short machine-readable category, e.g. ``"json"``.
    message
        What was wrong; cut to :data:`MAX_MESSAGE_CHARS` characters.
    stage
        Where it failed, one of :data:`ERROR_STAGES`.
    app_version
        The anomrec version that failed on it.

    Examples
    --------
    >>> letter = DeadLetter.from_bad_record(
    ...     BadRecord("json", "value is not valid JSON"),
    ...     value=b"{oops", key=b"c1", topic="events", partition=2, offset=41,
    ...     timestamp_ms=1767225600000, stage="decode",
    ... )
    >>> letter.headers()[:4]
    [('anomrec.dlq.source.topic', b'events'), ('anomrec.dlq.source.partition', b'2'),
     ('anomrec.dlq.source.offset', b'41'), ('anomrec.dlq.source.timestamp', b'1767225600000')]
    >>> parse_headers(letter.headers())["error_class"]
    'anomrec.streaming.exceptions.BadRecord'
    >>> DeadLetter.from_record(letter.key, letter.value, letter.headers()) == letter
    True
    """

    value: bytes | None
    key: bytes | None
    source_topic: str
    source_partition: int
    source_offset: int
    source_timestamp_ms: int | None
    error_class: str
    reason: str
    message: str
    stage: str
    app_version: str = APP_VERSION

    def __post_init__(self) -> None:
        if self.stage not in ERROR_STAGES:
            raise ValueError(f"stage={self.stage!r} is not one of: {', '.join(ERROR_STAGES)}")
        if len(self.message) > MAX_MESSAGE_CHARS:
            object.__setattr__(self, "message", self.message[: MAX_MESSAGE_CHARS - 1] + "…")

    @classmethod
    def from_bad_record(
        cls,
        exc: Exception,
        *,
        value: bytes | None,
        key: bytes | None,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
        stage: str,
    ) -> DeadLetter:
        """The dead letter of the record that raised ``exc``.

        Parameters
        ----------
        exc
            Usually a :class:`BadRecord`, whose ``reason`` the letter carries; any other error
            gets the reason ``"error"``.
        value, key, topic, partition, offset
            The record, as read.
        timestamp_ms
            Its Kafka timestamp; None or negative (Kafka's "no timestamp") is stored as None.
        stage
            Where it failed, one of :data:`ERROR_STAGES`.
        """
        kind = type(exc)
        return cls(
            value=value,
            key=key,
            source_topic=topic,
            source_partition=partition,
            source_offset=offset,
            source_timestamp_ms=timestamp_ms if timestamp_ms is not None and timestamp_ms >= 0 else None,
            error_class=f"{kind.__module__}.{kind.__qualname__}",
            reason=exc.reason if isinstance(exc, BadRecord) else "error",
            message=str(exc),
            stage=stage,
        )

    @classmethod
    def from_record(
        cls, key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes | None]]
    ) -> DeadLetter:
        """Read back a dead letter from a record of the dead-letter topic."""
        return cls(value=value, key=key, **parse_headers(headers))

    def headers(self) -> list[tuple[str, bytes]]:
        """The record headers, in the order of :data:`HEADERS`; no timestamp header when it is None."""
        out = []
        for name, header in HEADERS.items():
            value = getattr(self, name)
            if value is not None:
                # backslashreplace: a lone surrogate in a message must not stop the letter.
                out.append((header, str(value).encode("utf-8", "backslashreplace")))
        return out


def parse_headers(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, Any]:
    """The :class:`DeadLetter` fields the headers of a dead-letter record hold.

    Headers outside the ``anomrec.dlq.`` set are ignored, so other tools may add their own.

    Parameters
    ----------
    headers
        ``(name, value)`` pairs, as Kafka clients give them.

    Returns
    -------
    dict
        The fields by :class:`DeadLetter` attribute name (the keys of :data:`HEADERS`):
        ``source_partition``, ``source_offset`` and ``source_timestamp_ms`` as integers
        (``source_timestamp_ms`` None when absent), the others as text.

    Raises
    ------
    ValueError
        When a header is missing, or a number is not one.

    Examples
    --------
    >>> parse_headers([("anomrec.dlq.source.offset", b"7"), ("trace-id", b"x")])
    Traceback (most recent call last):
    ...
    ValueError: dead-letter header 'anomrec.dlq.source.topic' is missing: expected every one of
    anomrec.dlq.source.topic, ...
    """
    by_header = {header: name for name, header in HEADERS.items()}
    raw: dict[str, bytes | None] = {}
    for header, value in headers:
        if header in by_header:
            raw[by_header[header]] = value
    fields: dict[str, Any] = {}
    for name, header in HEADERS.items():
        value = raw.get(name)
        if value is None:
            if name in _OPTIONAL_FIELDS:
                fields[name] = None
                continue
            raise ValueError(
                f"dead-letter header {header!r} is missing: expected every one of "
                f"{', '.join(h for n, h in HEADERS.items() if n not in _OPTIONAL_FIELDS)}"
            )
        text = value.decode("utf-8", "replace")
        if name in _INT_FIELDS:
            try:
                fields[name] = int(text)
            except ValueError:
                raise ValueError(f"dead-letter header {header!r} is {value!r}: expected an integer") from None
        else:
            fields[name] = text
    return fields


class BadRecordGuard:
    """Stops the processor when more than a set share of the latest records were bad.

    Feed it every input record, in order, good or bad. It counts records, never time, so a given
    input stream trips it at the same record every time.

    Parameters
    ----------
    max_bad_ratio
        Largest tolerated share of bad records among the last ``window``; above it
        :meth:`observe` raises. At 1 it never raises.
    window
        Records the share is measured over. Nothing is raised before that many were observed, so a
        few bad records at the start cannot stop the processor.
    dead_letter_topic
        Named in the error, as the place to look.

    Attributes
    ----------
    seen_
        Records observed so far.
    bad_
        Bad records among the last ``window`` observed.

    Examples
    --------
    >>> guard = BadRecordGuard(max_bad_ratio=0.5, window=4)
    >>> for bad in (True, False, True):
    ...     guard.observe(bad)
    >>> guard.observe(True)
    Traceback (most recent call last):
    ...
    anomrec.streaming.exceptions.TooManyBadRecords: 3 of the last 4 records were bad (75.0%), more
    than max_bad_ratio=0.5: ...
    """

    def __init__(
        self, max_bad_ratio: float = 0.5, window: int = 1000, dead_letter_topic: str = "anomrec-dead-letter"
    ) -> None:
        if not isinstance(window, int) or window < 1:
            raise ConfigError(f"bad_ratio_window={window!r}: expected an integer >= 1")
        self.max_bad_ratio = max_bad_ratio
        self.window = window
        self.dead_letter_topic = dead_letter_topic
        self.seen_ = 0
        self.bad_ = 0
        self._ring = bytearray()  # the last `window` verdicts, 1 = bad; filled as records come

    @classmethod
    def from_config(cls, config: ProcessorConfig) -> BadRecordGuard:
        """The guard ``max_bad_ratio``, ``bad_ratio_window`` and ``dead_letter_topic`` describe."""
        return cls(
            max_bad_ratio=config.max_bad_ratio,
            window=config.bad_ratio_window,
            dead_letter_topic=config.dead_letter_topic,
        )

    @property
    def ratio(self) -> float:
        """The share of bad records among the last ``window`` (fewer at the start); 0 before any."""
        return self.bad_ / len(self._ring) if self._ring else 0.0

    def observe(self, bad: bool) -> None:
        """Count one record; raise :class:`TooManyBadRecords` if the share of bad ones is too high."""
        if self.seen_ < self.window:
            self._ring.append(bad)
        else:
            slot = self.seen_ % self.window
            self.bad_ -= self._ring[slot]
            self._ring[slot] = bad
        self.bad_ += bad
        self.seen_ += 1
        if self.seen_ >= self.window and self.bad_ / self.window > self.max_bad_ratio:
            raise TooManyBadRecords(
                f"{self.bad_:,} of the last {self.window:,} records were bad ({self.ratio:.1%}), more "
                f"than max_bad_ratio={self.max_bad_ratio:g}: the processor stops rather than "
                f"dead-letter a stream it cannot read. Inspect the dead-letter topic "
                f"{self.dead_letter_topic!r} (the anomrec.dlq.error.* headers say what was wrong), "
                "then fix the producer or the settings that describe its records, or raise "
                "max_bad_ratio (1 never stops) or bad_ratio_window",
                bad=self.bad_,
                window=self.window,
            )


def decode_or_dead_letter(
    decoder: EventDecoder,
    guard: BadRecordGuard,
    *,
    value: bytes | None,
    key: bytes | None,
    timestamp_ms: int | None,
    topic: str,
    partition: int,
    offset: int,
) -> Event | DeadLetter:
    """Decode one input record, or return its dead letter; either way ``guard`` counts it.

    The one place the runners turn raw records into events, so the Kafka runner and the testing
    runner dead-letter alike. ``guard`` raises :class:`TooManyBadRecords` when bad records
    outweigh its limit.
    """
    try:
        event = decoder.decode(
            value, timestamp_ms=timestamp_ms, fallback_id=f"{topic}-{partition}@{offset}", key=key
        )
    except BadRecord as exc:
        guard.observe(True)
        return DeadLetter.from_bad_record(
            exc,
            value=value,
            key=key,
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp_ms=timestamp_ms,
            stage="decode",
        )
    guard.observe(False)
    return event
