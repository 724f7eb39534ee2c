"""The processor's settings: one frozen, validated object.

Every field names the environment variable that sets it (``ANOMREC_<FIELD>``); command-line flags
override the environment, which overrides the defaults. Validation happens once, at construction,
and a bad value raises :class:`~anomrec.streaming.exceptions.ConfigError` that names the setting,
the value and what is expected.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .exceptions import ConfigError

ENV_PREFIX = "ANOMREC_"

# Kafka's own rule for legal topic names.
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def _help(help_text: str) -> dict[str, str]:
    return {"help": help_text}


@dataclass(frozen=True, slots=True)
class ProcessorConfig:
    """Settings of one anomrec processor.

    Defaults describe the bundled card-transaction sample, so ``anomrec run`` works with no
    configuration at all.

    Examples
    --------
    >>> cfg = ProcessorConfig(features=("amount",), threshold=0.8)
    >>> cfg.threshold
    0.8
    >>> ProcessorConfig(threshold=1.5)
    Traceback (most recent call last):
    ...
    anomrec.streaming.exceptions.ConfigError: threshold=1.5 is out of range: expected a number in (0, 1) ...
    >>> ProcessorConfig.env_var("input_topic")
    'ANOMREC_INPUT_TOPIC'
    """

    bootstrap_servers: str | None = field(
        default=None,
        metadata=_help("Kafka bootstrap servers, HOST:PORT[,HOST:PORT]; unset runs the embedded sample"),
    )
    input_topic: str = field(default="events", metadata=_help("topic the JSON events are read from"))
    alerts_topic: str = field(default="alerts", metadata=_help("topic the JSON alerts are written to"))
    group_id: str = field(default="anomrec", metadata=_help("Kafka consumer group id"))
    id_field: str = field(default="event_id", metadata=_help("event field holding the event id"))
    entity_field: str = field(
        default="card_id", metadata=_help("event field holding the entity (card, host, device, user)")
    )
    time_field: str = field(
        default="ts",
        metadata=_help("event field holding the event time: ISO 8601, or epoch seconds as a number"),
    )
    label_field: str = field(
        default="label", metadata=_help("optional 0/1 field used only to score the alerts in summaries")
    )
    features: tuple[str, ...] = field(
        default=("amount", "distance_from_home_km", "ratio_to_median_amount"),
        metadata=_help("comma-separated numeric event fields the detector scores"),
    )
    threshold: float = field(
        default=0.95, metadata=_help("alert when the anomaly score (0..1, higher = worse) is at least this")
    )
    n_trees: int = field(default=10, metadata=_help("HalfSpaceTrees: number of trees"))
    height: int = field(default=8, metadata=_help("HalfSpaceTrees: height of each tree"))
    window_size: int = field(
        default=250,
        metadata=_help("HalfSpaceTrees: events per reference window; no alerts before the first is full"),
    )
    seed: int = field(default=42, metadata=_help("seed of every random choice the models make"))
    max_poll_records: int = field(default=500, metadata=_help("largest batch taken from Kafka per poll"))

    def __post_init__(self) -> None:
        if self.bootstrap_servers is not None and not self.bootstrap_servers.strip():
            object.__setattr__(self, "bootstrap_servers", None)
        for name in ("input_topic", "alerts_topic"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _TOPIC.match(value):
                raise ConfigError(
                    f"{name}={value!r} is not a legal Kafka topic name: use 1-249 characters "
                    "from letters, digits, '.', '_' and '-'"
                )
        if self.input_topic == self.alerts_topic:
            raise ConfigError(
                f"input_topic and alerts_topic are both {self.input_topic!r}: the processor would "
                "read its own alerts; give the alerts their own topic"
            )
        for name in ("group_id", "id_field", "entity_field", "time_field", "label_field"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name}={value!r} is empty: expected a non-empty string")
        if isinstance(self.features, str):
            object.__setattr__(self, "features", _split_list(self.features))
        else:
            object.__setattr__(self, "features", tuple(self.features))
        if not self.features or not all(isinstance(f, str) and f for f in self.features):
            raise ConfigError(
                f"features={self.features!r}: expected one or more field names, e.g. 'amount,fee'"
            )
        if len(set(self.features)) != len(self.features):
            raise ConfigError(f"features={self.features!r} names a field twice")
        if not (isinstance(self.threshold, int | float) and 0 < self.threshold < 1):
            raise ConfigError(
                f"threshold={self.threshold!r} is out of range: expected a number in (0, 1) "
                "(HalfSpaceTrees scores lie between 0 and 1)"
            )
        for name, low, high in (
            ("n_trees", 1, 1000),
            ("height", 1, 30),
            ("window_size", 2, 10_000_000),
            ("max_poll_records", 1, 1_000_000),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"{name}={value!r} is out of range: expected an integer in [{low}, {high}]")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed={self.seed!r}: expected an integer")

    @staticmethod
    def env_var(name: str) -> str:
        """The environment variable that sets field ``name``."""
        return ENV_PREFIX + name.upper()

    @classmethod
    def from_sources(
        cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
    ) -> ProcessorConfig:
        """Build the config from the environment, then ``overrides`` (e.g. CLI flags) on top.

        ``None`` values in ``overrides`` mean "not given" and leave the lower layer in force.
        """
        values: dict[str, Any] = {}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, f in fields.items():
            raw = (environ or {}).get(cls.env_var(name))
            if raw is not None:
                values[name] = _parse_help(name, raw, f)
        for name, value in (overrides or {}).items():
            if name not in fields:
                raise ConfigError(f"unknown setting {name!r}: expected one of {', '.join(fields)}")
            if value is not None:
                values[name] = value
        return cls(**values)


def _split_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_help(name: str, raw: str, f: dataclasses.Field[Any]) -> Any:
    kind = type(f.default)
    var = ProcessorConfig.env_var(name)
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
    except ValueError:
        raise ConfigError(f"{var}={raw!r} is not a valid {kind.__name__}") from None
    if kind is tuple:
        return _split_list(raw)
    return raw
