"""Decoding raw record values into :class:`Event` objects.

Runners hand the decoder raw bytes: a deserializer inside the Kafka client that raises would wedge
the consumer on the bad record. Every way a record can be wrong ends in one
:class:`~anomrec.streaming.exceptions.BadRecord` whose message names the field and the value.
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
    """

    def __init__(
        self, config: ProcessorConfig, parse: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None = None
    ) -> None:
        self.config = config
        if parse is None:
            parse = build_profile(config).parse
        self.parse = parse
        self._kind_weights = config.interaction_weight_map()

    def decode(
        self, value: bytes | None, *, timestamp_ms: int | None = None, fallback_id: str | None = None
    ) -> Event:
        """Decode one record value.

        Parameters
        ----------
        value
            The raw record value.
        timestamp_ms
            The record's own timestamp, used as event time when the event has no time field.
        fallback_id
            Used as the event id when the event has none (Kafka runners pass
            ``topic-partition-offset``, which is stable across replays).
        """
        if value is None:
            raise BadRecord("json", "record has no value (a tombstone): expected a JSON object")
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise BadRecord("json", f"value is not valid JSON ({exc}): {_preview(value)}") from None
        if not isinstance(doc, dict):
            raise BadRecord(
                "not-object", f"value is a JSON {type(doc).__name__}, expected an object: {_preview(value)}"
            )
        return self.from_dict(doc, timestamp_ms=timestamp_ms, fallback_id=fallback_id)

    def from_dict(
        self, doc: dict[str, Any], *, timestamp_ms: int | None = None, fallback_id: str | None = None
    ) -> Event:
        """Build an :class:`Event` from an already parsed JSON object."""
        cfg = self.config
        event_id = doc.get(cfg.id_field, fallback_id)
        if event_id is None:
            raise BadRecord("missing-field", f"missing field {cfg.id_field!r} (the event id)")
        entity = doc.get(cfg.entity_field)
        if entity is None:
            raise BadRecord("missing-field", f"missing field {cfg.entity_field!r} (the entity)")
        event_time = _event_time(doc, cfg.time_field, timestamp_ms)
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


def _preview(value: bytes, limit: int = 80) -> str:
    text = repr(value[:limit])
    return text + ("..." if len(value) > limit else "")
