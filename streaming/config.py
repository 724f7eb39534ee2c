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

from .ensemble import RULES
from .exceptions import ConfigError

ENV_PREFIX = "ANOMREC_"
PROFILES = ("transactions", "network", "sensor", "generic", "interactions")
DETECTORS = ("hst", "iforest", "lof")
DELIVERY_MODES = ("exactly-once", "at-least-once")
RECO_MODELS = ("hybrid", "itemitem", "bpr", "isgd", "biased-mf", "popularity")

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
    >>> cfg = ProcessorConfig(profile="generic", features=("amount",), threshold=0.8)
    >>> cfg.threshold
    0.8
    >>> ProcessorConfig(threshold=1.5)
    Traceback (most recent call last):
    ...
    anomrec.streaming.exceptions.ConfigError: threshold=1.5 is out of range: ...
    >>> ProcessorConfig.env_var("input_topic")
    'ANOMREC_INPUT_TOPIC'
    """

    bootstrap_servers: str | None = field(
        default=None,
        metadata=_help("Kafka bootstrap servers, HOST:PORT[,HOST:PORT]; unset runs the embedded sample"),
    )
    input_topic: str = field(default="events", metadata=_help("topic the JSON events are read from"))
    alerts_topic: str = field(default="alerts", metadata=_help("topic the JSON alerts are written to"))
    dead_letter_topic: str = field(
        default="anomrec-dead-letter",
        metadata=_help("topic each record that cannot be processed is written to, raw, with error headers"),
    )
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
    schema_version_field: str = field(
        default="schema_version",
        metadata=_help("event field holding its schema version; an event without it is version 1"),
    )
    schema_versions: tuple[str, ...] = field(
        default=("1",),
        metadata=_help("comma-separated schema versions read; events of other versions are bad records"),
    )
    require_key: bool = field(default=False, metadata=_help("treat a record with a null key as bad"))
    max_record_bytes: int = field(
        default=1_048_576, metadata=_help("larger record values are bad records; 0 = no limit")
    )
    max_future_seconds: float = field(
        default=86400.0,
        metadata=_help(
            "an event time more than this many seconds after its Kafka record timestamp is bad; 0 = no check"
        ),
    )
    max_bad_ratio: float = field(
        default=0.5,
        metadata=_help("stop when more than this share of the last bad_ratio_window is bad; 1 = never"),
    )
    bad_ratio_window: int = field(
        default=1000,
        metadata=_help("records the bad share is measured over; no stop before this many are seen"),
    )
    profile: str = field(
        default="transactions",
        metadata=_help("feature profile: transactions, network, sensor, generic or interactions"),
    )
    features: tuple[str, ...] = field(
        default=(),
        metadata=_help("comma-separated numeric fields: the readings (sensor) or the fields (generic)"),
    )
    max_entities: int = field(
        default=100_000, metadata=_help("entities held in feature state; the least recently seen go first")
    )
    entity_ttl_seconds: float = field(
        default=30 * 86400.0,
        metadata=_help("event-time seconds after which an idle entity's feature state starts afresh"),
    )
    detectors: tuple[str, ...] = field(
        default=("hst", "iforest", "lof"), metadata=_help("comma-separated detectors: hst, iforest, lof")
    )
    hst_implementation: str = field(
        default="numpy", metadata=_help("HalfSpaceTrees code: numpy (batched) or river (the reference)")
    )
    n_trees: int = field(default=50, metadata=_help("HalfSpaceTrees: number of trees"))
    height: int = field(default=15, metadata=_help("HalfSpaceTrees: height of each tree"))
    window_size: int = field(
        default=1000, metadata=_help("HalfSpaceTrees: events per reference window (its warm-up)")
    )
    iforest_trees: int = field(default=100, metadata=_help("IsolationForest: number of trees"))
    lof_neighbors: int = field(default=10, metadata=_help("LocalOutlierFactor: number of neighbours"))
    lof_window: int = field(
        default=2000,
        metadata=_help(
            "LOF trains on this many of the refit window's latest events (its cost grows with it)"
        ),
    )
    first_fit_after: int = field(
        default=1000, metadata=_help("events before IsolationForest and LOF are first fitted")
    )
    refit_every: int = field(
        default=5000, metadata=_help("events between IsolationForest/LOF refits after the first fit")
    )
    refit_window: int = field(
        default=5000, metadata=_help("most recent non-alerted events the refits are trained on")
    )
    swap_delay: int = field(
        default=2000,
        metadata=_help("a refit model takes over exactly this many events after its fit began"),
    )
    calibration_window: int = field(
        default=20_000, metadata=_help("recent scores each detector's percentile is measured against")
    )
    refresh_every: int = field(
        default=1000, metadata=_help("events between updates of the calibration, weights and ranges")
    )
    combine: str = field(
        default="fisher", metadata=_help("how detector percentiles combine: fisher, mean, weighted or max")
    )
    weights: str = field(
        default="auto",
        metadata=_help("detector weights: auto (by agreement) or e.g. 'hst=1,iforest=2,lof=0.5'"),
    )
    warmup_events: int = field(default=1000, metadata=_help("events at the start that never alert"))
    threshold: float = field(
        default=0.977,
        metadata=_help("alert when the combined score (0..1, higher = worse) is at least this"),
    )
    threshold_mode: str = field(
        default="fixed",
        metadata=_help(
            "fixed: compare the combined score; percentile: compare its percentile among recent ones"
        ),
    )
    n_reasons: int = field(default=3, metadata=_help("features named as reasons in each alert"))
    seed: int = field(default=42, metadata=_help("seed of every random choice the models make"))
    max_poll_records: int = field(default=500, metadata=_help("largest batch taken from Kafka per poll"))
    delivery: str = field(
        default="exactly-once",
        metadata=_help(
            "exactly-once (outputs and input offsets in one Kafka transaction) or at-least-once "
            "(outputs flushed, then offsets committed)"
        ),
    )
    state_dir: str = field(
        default="anomrec-state",
        metadata=_help("folder of the per-partition checkpoints; delete it to rebuild state from the input"),
    )
    checkpoint_every_events: int = field(
        default=20_000, metadata=_help("events of a partition between two of its checkpoints (0: never)")
    )
    checkpoint_every_seconds: float = field(
        default=60.0, metadata=_help("seconds between two checkpoints of a busy partition (0: never)")
    )
    instance_id: str = field(
        default="",
        metadata=_help(
            "this processor's stable name in its group (default: the host name); it names the "
            "transactional id, so a restarted processor fences its earlier self"
        ),
    )
    auto_offset_reset: str = field(
        default="earliest",
        metadata=_help("where a partition with no committed offset starts: earliest or latest"),
    )
    commit_timeout_seconds: float = field(
        default=30.0,
        metadata=_help("longest wait for a transactional call before the processor exits for a restart"),
    )
    session_timeout_ms: int = field(
        default=45_000, metadata=_help("consumer group session timeout (missed heartbeats before eviction)")
    )
    recommend: bool = field(
        default=True,
        metadata=_help("learn recommendations from events that name a user and an item, and publish them"),
    )
    user_field: str = field(default="user_id", metadata=_help("event field holding the interacting user"))
    item_field: str = field(default="item_id", metadata=_help("event field holding the item interacted with"))
    kind_field: str = field(
        default="kind", metadata=_help("optional event field naming the interaction (view, purchase, ...)")
    )
    rating_field: str = field(default="rating", metadata=_help("optional event field holding a rating"))
    interaction_weights: str = field(
        default="view=1,click=2,add_to_cart=3,purchase=5,rating=1",
        metadata=_help("weight of each interaction kind; an event with no kind weighs 1"),
    )
    min_rating: float = field(
        default=4.0,
        metadata=_help("implicit models learn a rated event only when its rating is at least this"),
    )
    reco_model: str = field(
        default="hybrid",
        metadata=_help("recommender: hybrid, itemitem, bpr, isgd, biased-mf (ratings) or popularity"),
    )
    reco_factors: int = field(default=10, metadata=_help("factor models: latent factors per user and item"))
    reco_half_life_seconds: float = field(
        default=0.0,
        metadata=_help("event-time half-life of co-occurrence and popularity counts; 0 never decays"),
    )
    reco_gating: bool = field(
        default=True, metadata=_help("do not learn the interactions of events the anomaly engine alerts on")
    )
    top_n: int = field(default=10, metadata=_help("items in each published recommendation list"))
    debounce_seconds: float = field(
        default=60.0,
        metadata=_help("event-time seconds between two recommendation updates of the same user"),
    )
    recommendations_topic: str = field(
        default="recommendations", metadata=_help("topic each user's refreshed top-N is written to")
    )
    similar_items_topic: str = field(
        default="similar-items",
        metadata=_help("compacted topic of item neighbour lists, keyed by item id"),
    )
    similar_every: int = field(
        default=10_000, metadata=_help("events between publications of the changed items' neighbour lists")
    )
    max_users: int = field(
        default=100_000,
        metadata=_help(
            "users held in recommender state; the least recently active are forgotten and count as new again"
        ),
    )

    def __post_init__(self) -> None:
        if self.bootstrap_servers is not None and not self.bootstrap_servers.strip():
            object.__setattr__(self, "bootstrap_servers", None)
        for name in (
            "input_topic",
            "alerts_topic",
            "recommendations_topic",
            "similar_items_topic",
            "dead_letter_topic",
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or not _TOPIC.match(value):
                raise ConfigError(
                    f"{name}={value!r} is not a legal Kafka topic name: use 1-249 characters "
                    "from letters, digits, '.', '_' and '-'"
                )
        outputs = ("alerts_topic", "recommendations_topic", "similar_items_topic")
        for name in outputs:
            if getattr(self, name) == self.input_topic:
                raise ConfigError(
                    f"input_topic and {name} are both {self.input_topic!r}: the processor would "
                    "read its own output; give each output its own topic"
                )
        if len({getattr(self, name) for name in outputs}) < len(outputs):
            raise ConfigError(
                "alerts_topic, recommendations_topic and similar_items_topic must differ: got "
                + ", ".join(f"{name}={getattr(self, name)!r}" for name in outputs)
            )
        for name in ("input_topic", *outputs):
            if getattr(self, name) == self.dead_letter_topic:
                raise ConfigError(
                    f"dead_letter_topic and {name} are both {self.dead_letter_topic!r}: bad records "
                    "would be read back or mixed with outputs; give the dead-letter topic its own name"
                )
        for name in ("recommend", "reco_gating", "require_key"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r}: expected true or false")
        _choice("reco_model", self.reco_model, RECO_MODELS)
        _choice("delivery", self.delivery, DELIVERY_MODES)
        _choice("auto_offset_reset", self.auto_offset_reset, ("earliest", "latest"))
        if not isinstance(self.state_dir, str) or not self.state_dir.strip():
            raise ConfigError(f"state_dir={self.state_dir!r} is empty: expected a folder path")
        if not isinstance(self.instance_id, str) or not re.fullmatch(
            r"[A-Za-z0-9._-]{0,200}", self.instance_id
        ):
            raise ConfigError(
                f"instance_id={self.instance_id!r}: expected up to 200 letters, digits, '.', '_' or '-'"
            )
        for name in ("checkpoint_every_seconds", "commit_timeout_seconds"):
            value = getattr(self, name)
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ConfigError(f"{name}={value!r}: expected a finite number of seconds >= 0")
        if self.commit_timeout_seconds <= 0:
            raise ConfigError(
                f"commit_timeout_seconds={self.commit_timeout_seconds!r}: expected seconds > 0 "
                "(a commit must never wait forever)"
            )
        self.interaction_weight_map()
        for name in ("min_rating", "reco_half_life_seconds", "debounce_seconds", "max_future_seconds"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
                raise ConfigError(f"{name}={value!r}: expected a finite number")
            if name != "min_rating" and value < 0:
                raise ConfigError(f"{name}={value!r} is negative: expected seconds >= 0")
        for name in (
            "group_id",
            "id_field",
            "entity_field",
            "time_field",
            "label_field",
            "schema_version_field",
            "user_field",
            "item_field",
            "kind_field",
            "rating_field",
        ):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{name}={value!r} is empty: expected a non-empty string")
        for name in ("features", "detectors"):
            value = getattr(self, name)
            items = _split_list(value) if isinstance(value, str) else tuple(value)
            object.__setattr__(self, name, items)
            if not all(isinstance(f, str) and f for f in items) or len(set(items)) != len(items):
                raise ConfigError(f"{name}={value!r}: expected distinct non-empty names, e.g. 'a,b'")
        versions = self.schema_versions
        items = _split_list(versions) if isinstance(versions, str) else tuple(versions)
        object.__setattr__(self, "schema_versions", items)
        if not items or not all(isinstance(v, str) and v for v in items) or len(set(items)) != len(items):
            raise ConfigError(
                f"schema_versions={versions!r}: expected one or more distinct versions, e.g. '1,2'"
            )
        ratio = self.max_bad_ratio
        if not isinstance(ratio, int | float) or isinstance(ratio, bool) or not 0 <= ratio <= 1:
            raise ConfigError(
                f"max_bad_ratio={ratio!r} is out of range: expected a share in [0, 1] (1 never stops)"
            )
        _choice("profile", self.profile, PROFILES)
        if self.profile in ("sensor", "generic") and not self.features:
            raise ConfigError(
                f"profile={self.profile!r} needs features: name the numeric fields to score, "
                "e.g. features=temperature,vibration"
            )
        if not self.detectors:
            raise ConfigError("detectors is empty: expected one or more of hst, iforest, lof")
        for name in self.detectors:
            _choice("detectors", name, DETECTORS)
        _choice("hst_implementation", self.hst_implementation, ("numpy", "river"))
        _choice("combine", self.combine, RULES)
        _choice("threshold_mode", self.threshold_mode, ("fixed", "percentile"))
        self.detector_weights()
        if not (isinstance(self.threshold, int | float) and 0 < self.threshold < 1):
            raise ConfigError(
                f"threshold={self.threshold!r} is out of range: expected a number in (0, 1) "
                "(combined scores are percentiles between 0 and 1)"
            )
        if not (isinstance(self.entity_ttl_seconds, int | float) and self.entity_ttl_seconds > 0):
            raise ConfigError(f"entity_ttl_seconds={self.entity_ttl_seconds!r}: expected a positive number")
        for name, low, high in (
            ("n_trees", 1, 1000),
            ("height", 1, 30),
            ("window_size", 2, 10_000_000),
            ("max_poll_records", 1, 1_000_000),
            ("checkpoint_every_events", 0, 1_000_000_000),
            ("session_timeout_ms", 1000, 3_600_000),
            ("max_entities", 1, 100_000_000),
            ("iforest_trees", 1, 10_000),
            ("lof_neighbors", 1, 1000),
            ("lof_window", 50, 10_000_000),
            ("first_fit_after", 50, 100_000_000),
            ("refit_every", 1, 100_000_000),
            ("refit_window", 50, 10_000_000),
            ("swap_delay", 0, 100_000_000),
            ("calibration_window", 10, 10_000_000),
            ("refresh_every", 1, 10_000_000),
            ("warmup_events", 0, 100_000_000),
            ("n_reasons", 0, 100),
            ("reco_factors", 1, 1000),
            ("top_n", 1, 1000),
            ("similar_every", 1, 100_000_000),
            ("max_users", 1, 100_000_000),
            ("max_record_bytes", 0, 2**31 - 1),
            ("bad_ratio_window", 1, 10_000_000),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"{name}={value!r} is out of range: expected an integer in [{low}, {high}]")
        if self.swap_delay >= self.refit_every:
            raise ConfigError(
                f"swap_delay={self.swap_delay} is not below refit_every={self.refit_every}: a refit "
                "would begin before the previous model took over; lower swap_delay or raise refit_every"
            )
        if "lof" in self.detectors and self.lof_neighbors >= self.first_fit_after:
            raise ConfigError(
                f"lof_neighbors={self.lof_neighbors} needs more than first_fit_after="
                f"{self.first_fit_after} training events: raise first_fit_after"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed={self.seed!r}: expected an integer")

    def detector_weights(self) -> dict[str, float] | None:
        """The fixed weight of each configured detector, or None when weights are ``auto``.

        Examples
        --------
        >>> ProcessorConfig(weights="hst=1,iforest=2").detector_weights()
        {'hst': 1.0, 'iforest': 2.0, 'lof': 0.0}
        """
        raw = self.weights.strip()
        if raw == "auto":
            return None
        weights = dict.fromkeys(self.detectors, 0.0)
        for part in _split_list(raw):
            name, sep, value = part.partition("=")
            name = name.strip()
            try:
                weight = float(value) if sep else math.nan
            except ValueError:
                weight = math.nan
            if name not in weights or not math.isfinite(weight) or weight < 0:
                raise ConfigError(
                    f"weights={self.weights!r}: {part!r} is not NAME=WEIGHT with NAME one of "
                    f"{', '.join(self.detectors)} and WEIGHT a number >= 0; or use weights=auto"
                )
            weights[name] = weight
        if sum(weights.values()) <= 0:
            raise ConfigError(f"weights={self.weights!r}: at least one weight must be above 0")
        return weights

    def interaction_weight_map(self) -> dict[str, float]:
        """The weight of each interaction kind.

        Examples
        --------
        >>> ProcessorConfig(interaction_weights="view=1,purchase=4").interaction_weight_map()
        {'view': 1.0, 'purchase': 4.0}
        """
        weights: dict[str, float] = {}
        for part in _split_list(self.interaction_weights):
            name, sep, value = part.partition("=")
            try:
                weight = float(value) if sep else math.nan
            except ValueError:
                weight = math.nan
            if not name.strip() or not math.isfinite(weight) or weight <= 0:
                raise ConfigError(
                    f"interaction_weights={self.interaction_weights!r}: {part!r} is not KIND=WEIGHT "
                    "with WEIGHT a number > 0, e.g. 'view=1,purchase=5'"
                )
            weights[name.strip()] = weight
        if not weights:
            raise ConfigError("interaction_weights is empty: expected e.g. 'view=1,purchase=5'")
        return weights

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


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of: {', '.join(choices)}")


def _split_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def parse_bool(raw: str) -> bool:
    """``true``/``false`` and their usual spellings (1/0, yes/no, on/off), case-insensitive."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{raw!r} is not true or false")


def _parse_help(name: str, raw: str, f: dataclasses.Field[Any]) -> Any:
    kind = type(f.default)
    var = ProcessorConfig.env_var(name)
    if kind is bool:
        try:
            return parse_bool(raw)
        except ValueError:
            raise ConfigError(f"{var}={raw!r} is not true or false") from None
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
