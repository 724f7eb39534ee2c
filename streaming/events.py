"""Decoding raw record values into :class:`Event` objects.

Runners hand the decoder raw bytes: a deserializer inside the Kafka client that raises would wedge
the consumer on the bad record. Every way a record can be wrong ends in one
:class:`~anomrec.streaming.exceptions.BadRecord` whose message names the field and the value, and
whose ``reason`` labels it on the dead-letter topic (see :mod:`anomrec.streaming.deadletter`).

The checks, in the order they run: the key (``"null-key"``, only with ``require_key``), the value
(``"null-value"``, ``"oversized"``), its parse (``"json"``, ``"not-finite"``, ``"not-object"``), the
schema version (``"unknown-schema-version"``), then the fields, ending with the event time
(``"bad-time"``, ``"future-time"``). Every check depends only on the record and the config, never on
the wall clock: an event time is too far ahead when it is ahead of the record's own Kafka timestamp.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from .config import ProcessorConfig
from .exceptions import BadRecord
from .features import build_profile


@dataclass(frozen=True, slots=True)
class Interaction:
    """What a recommender learns from an event: ``user`` interacted with ``item``.

    ``weight`` is the weight of the event's kind (1 when it names none); ``rating`` is its rating,
    when it has one.
    """

    user: str
    item: str
    weight: float = 1.0
    rating: float | None = None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One decoded event.

    Attributes
    ----------
    event_id
        The event's id, as a string.
    entity
        The card, account, host or device the event belongs to.
    event_time
        Event time in epoch seconds (UTC). Models and outputs use this, never the wall clock.
    values
        The feature profile's inputs, validated and extracted by its ``parse``; the profile turns
        them into the feature vector.
    label
        1 for a known anomaly, 0 for a known normal event, ``None`` when unlabelled.
    interaction
        The user-item interaction the event records, when recommendations are on and the event
        names both a user and an item; ``None`` otherwise.
    """

    event_id: str
    entity: str
    event_time: float
    values: tuple[Any, ...]
    label: int | None = None
    interaction: Interaction | None = None


class EventDecoder:
    """Turns a JSON record value into an :class:`Event`, or raises :class:`BadRecord`.

    Parameters
    ----------
    config
        Names the id, entity, time and label fields.
    parse
        Validates and extracts the profile's inputs; by default that of the profile ``config``
        names. It must not touch any state, so that a bad record never reaches a model.

    Examples
    --------
    >>> decoder = EventDecoder(ProcessorConfig(profile="generic", features=("amount",)))
    >>> decoder.decode(b'{"event_id": 7, "card_id": "c1", "ts": "2026-01-01T00:00:00Z", "amount": 12.5}')
    Event(event_id='7', entity='c1', event_time=1767225600.0, values=(12.5,), label=None, interaction=None)
    >>> decoder.decode(b'{"event_id": 8, "card_id": "c1", "ts": 0, "amount": "12"}')
    Traceback (most recent call last):
    ...
    anomrec.streaming.exceptions.BadRecord: field 'amount' is '12', a str: expected a number
    >>> decoder.decode(b'{"schema_version": 2, "event_id": 9, "card_id": "c1", "ts": 0, "amount": 1}')
    Traceback (most recent call last):
    ...
    anomrec.streaming.exceptions.BadRecord: field 'schema_version' is 2: expected one of the schema
    versions 1 (schema_versions names those this processor reads)
    """

    def __init__(
        self, config: ProcessorConfig, parse: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None = None
    ) -> None:
        self.config = config
        if parse is None:
            parse = build_profile(config).parse
        self.parse = parse
        self._kind_weights = config.interaction_weight_map()
        self._versions = frozenset(config.schema_versions)

    def decode(
        self,
        value: bytes | None,
        *,
        key: bytes | None = None,
        timestamp_ms: int | None = None,
        fallback_id: str | None = None,
    ) -> Event:
        """Decode one record.

        Parameters
        ----------
        value
            The raw record value.
        key
            The raw record key; checked only when ``require_key`` is on, so a runner that turns it
            on must pass it.
        timestamp_ms
            The record's own timestamp: the event time when the event has no time field, and the
            reference an event time may be at most ``max_future_seconds`` ahead of. None or
            negative (Kafka's "no timestamp") skips both.
        fallback_id
            Used as the event id when the event has none (Kafka runners pass
            ``topic-partition-offset``, which is stable across replays).

        Raises
        ------
        BadRecord
            When the record cannot be processed; its ``reason`` says why.

        Examples
        --------
        >>> cfg = ProcessorConfig(profile="generic", features=("amount",), require_key=True)
        >>> EventDecoder(cfg).decode(b'{"card_id": "c1", "amount": 1}', key=None)
        Traceback (most recent call last):
        ...
        anomrec.streaming.exceptions.BadRecord: record has a null key: expected a key, since
        require_key is on; have the producer key its records, or turn require_key off
        >>> doc = b'{"event_id": 1, "card_id": "c1", "ts": "2026-01-03T00:00:00Z", "amount": 1}'
        >>> EventDecoder(cfg).decode(doc, key=b"c1", timestamp_ms=1767225600000)
        Traceback (most recent call last):
        ...
        anomrec.streaming.exceptions.BadRecord: field 'ts' is '2026-01-03T00:00:00Z', 172,800 s
        after the record's timestamp 2026-01-01T00:00:00.000Z: expected at most
        max_future_seconds=86400 s ahead; fix the producer's clock, or raise max_future_seconds
        (0 turns the check off)
        """
        cfg = self.config
        if key is None and cfg.require_key:
            raise BadRecord(
                "null-key",
                "record has a null key: expected a key, since require_key is on; have the producer "
                "key its records, or turn require_key off",
            )
        if value is None:
            raise BadRecord("null-value", "record has a null value (a tombstone): expected a JSON object")
        if 0 < cfg.max_record_bytes < len(value):
            raise BadRecord(
                "oversized",
                f"value is {len(value):,} bytes, more than max_record_bytes={cfg.max_record_bytes:,}: "
                f"expected a smaller record, or raise max_record_bytes (0 = no limit): {_preview(value)}",
            )
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise _json_error(value, exc) from None
        if not isinstance(doc, dict):
            raise BadRecord(
                "not-object", f"value is a JSON {type(doc).__name__}, expected an object: {_preview(value)}"
            )
        return self.from_dict(doc, timestamp_ms=timestamp_ms, fallback_id=fallback_id)

    def from_dict(
        self, doc: dict[str, Any], *, timestamp_ms: int | None = None, fallback_id: str | None = None
    ) -> Event:
        """Build an :class:`Event` from an already parsed JSON object.

        Runs every check of :meth:`decode` that looks at the object rather than the bytes.
        """
        cfg = self.config
        self._check_schema_version(doc)
        event_id = doc.get(cfg.id_field, fallback_id)
        if event_id is None:
            raise BadRecord(
                "missing-field", f"missing field {cfg.id_field!r}: expected the event id (id_field names it)"
            )
        entity = doc.get(cfg.entity_field)
        if entity is None:
            raise BadRecord(
                "missing-field",
                f"missing field {cfg.entity_field!r}: expected the entity, such as a card, host or device id "
                "(entity_field names it)",
            )
        event_time = _event_time(doc, cfg.time_field, timestamp_ms)
        if cfg.max_future_seconds > 0 and timestamp_ms is not None and timestamp_ms >= 0:
            ahead = event_time - timestamp_ms / 1000.0
            if ahead > cfg.max_future_seconds:
                raise BadRecord(
                    "future-time",
                    f"field {cfg.time_field!r} is {doc.get(cfg.time_field)!r}, {_seconds(ahead)} s after the "
                    f"record's timestamp {_describe_ms(timestamp_ms)}: expected at most "
                    f"max_future_seconds={cfg.max_future_seconds:g} s ahead; fix the producer's clock, "
                    "or raise max_future_seconds (0 turns the check off)",
                )
        values = self.parse(doc)
        label = doc.get(cfg.label_field)
        return Event(
            event_id=str(event_id),
            entity=str(entity),
            event_time=event_time,
            values=values,
            label=int(label) if isinstance(label, bool | int) and label in (0, 1) else None,
            interaction=self._interaction(doc) if cfg.recommend else None,
        )

    def _check_schema_version(self, doc: dict[str, Any]) -> None:
        """Raise unless the event's schema version is one ``schema_versions`` names.

        No field (or null) means version 1; a string or an integer is compared as a string.
        """
        name = self.config.schema_version_field
        raw = doc.get(name)
        if raw is None:
            version: str | None = "1"
        elif isinstance(raw, str):
            version = raw
        elif isinstance(raw, int) and not isinstance(raw, bool):
            version = str(raw)
        else:
            version = None
        if version in self._versions:
            return
        raise BadRecord(
            "unknown-schema-version",
            f"field {name!r} is {'missing, which means version 1' if raw is None else repr(raw)}: "
            "expected one of the schema versions "
            f"{', '.join(self.config.schema_versions)} (schema_versions names those this processor reads)",
        )

    def _interaction(self, doc: dict[str, Any]) -> Interaction | None:
        """The event's interaction; None when it names no user or no item (it is still scored)."""
        cfg = self.config
        user = _id_field(doc, cfg.user_field)
        item = _id_field(doc, cfg.item_field)
        if user is None or item is None:
            return None
        kind = doc.get(cfg.kind_field)
        weight = 1.0
        if kind is not None:
            weight = self._kind_weights.get(kind) if isinstance(kind, str) else None  # type: ignore[assignment]
            if weight is None:
                raise BadRecord(
                    "bad-kind",
                    f"field {cfg.kind_field!r} is {kind!r}: expected one of "
                    f"{', '.join(self._kind_weights)} (interaction_weights names the kinds)",
                )
        rating = doc.get(cfg.rating_field)
        if rating is not None and (
            not isinstance(rating, int | float) or isinstance(rating, bool) or not math.isfinite(rating)
        ):
            raise BadRecord(
                "wrong-type", f"field {cfg.rating_field!r} is {rating!r}: expected a finite number"
            )
        return Interaction(
            user=user,
            item=item,
            weight=weight,
            rating=None if rating is None else float(rating),
            kind=kind,
        )


def _id_field(doc: dict[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadRecord(
        "wrong-type", f"field {name!r} is {value!r}: expected a non-empty string or an integer id"
    )


def _event_time(doc: dict[str, Any], name: str, timestamp_ms: int | None) -> float:
    raw = doc.get(name)
    if raw is None:
        if timestamp_ms is not None and timestamp_ms >= 0:
            return timestamp_ms / 1000.0
        raise BadRecord("bad-time", f"missing field {name!r} (the event time) and no record timestamp")
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        if not math.isfinite(raw):
            raise BadRecord("bad-time", f"field {name!r} is {raw!r}: expected finite epoch seconds")
        return float(raw)
    if isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise BadRecord(
                "bad-time", f"field {name!r} is {raw!r}: expected ISO 8601 such as 2026-01-31T12:00:00Z"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.timestamp()
    raise BadRecord("bad-time", f"field {name!r} is {raw!r}: expected an ISO 8601 string or epoch seconds")


def format_time(epoch_seconds: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds, e.g. ``2026-01-01T00:00:00.000Z``."""
    return (
        datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _json_error(value: bytes, exc: orjson.JSONDecodeError) -> BadRecord:
    """The :class:`BadRecord` for a value orjson refused, saying which rule it broke."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as bad:
        return BadRecord(
            "json",
            f"value is not valid UTF-8 (byte 0x{value[bad.start]:02x} at offset {bad.start}): "
            f"expected UTF-8 encoded JSON: {_preview(value)}",
        )
    pos = exc.pos
    if "infinity" in str(exc):  # orjson: "number is infinity when parsed as double"
        return BadRecord(
            "not-finite",
            f"value holds a number at character {pos} too large for a double (it parses as "
            f"infinity): expected finite numbers: {_preview(value)}",
        )
    for literal in _NON_FINITE:
        start = pos - 1 if literal.startswith("-") else pos
        if start >= 0 and text.startswith(literal, start):
            return BadRecord(
                "not-finite",
                f"value holds {literal} at character {start}, which is not JSON: expected finite "
                f"numbers (Python's json.dumps writes NaN unless allow_nan=False): {_preview(value)}",
            )
    return BadRecord("json", f"value is not valid JSON ({exc}): expected a JSON object: {_preview(value)}")


# The non-finite literals some encoders write (Python's json, JavaScript's String(x)); not JSON.
_NON_FINITE = ("-Infinity", "Infinity", "NaN")  # -Infinity first: orjson points past its sign


def _seconds(value: float) -> str:
    """Seconds with thousands separators and at most millisecond digits: ``3,600.5``."""
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def _describe_ms(timestamp_ms: int) -> str:
    """A record timestamp as ISO 8601, or as milliseconds when it is beyond datetime's range."""
    try:
        return format_time(timestamp_ms / 1000.0)
    except (OverflowError, ValueError, OSError):
        return f"{timestamp_ms} ms"


def _preview(value: bytes, limit: int = 80) -> str:
    text = repr(value[:limit])
    return text + ("..." if len(value) > limit else "")
