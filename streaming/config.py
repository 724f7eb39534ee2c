"""The processor's settings: one frozen, validated object.

Settings come from four layers, each overriding the one before: the defaults, a TOML file
(``--config FILE`` or ``ANOMREC_CONFIG=FILE``), the environment (``ANOMREC_<FIELD>``) and
command-line flags (``--<field-with-dashes>``). The file is flat: its keys are the field names,
with TOML's own types (``threshold = 0.95``, ``detectors = ["hst", "lof"]``, ``recommend = false``).
:meth:`ProcessorConfig.resolve` merges the layers, remembers where each value came from and
validates the result once, at construction. A bad value raises
:class:`~anomrec.streaming.exceptions.ConfigError` naming the setting, the value, where it came
from and what is expected; an unknown key in the file is refused with the closest setting name.

Secrets (``ssl_password``, ``sasl_password``) are held as :class:`Secret`, whose ``repr`` and
``str`` are ``***``; only :meth:`ProcessorConfig.kafka_security` reveals them, to the Kafka clients,
and it makes the ``kafka`` loggers mask them (kafka-python logs its configuration and the PLAIN
login request at DEBUG). They have no flag, as a command line is visible to every user of the
machine.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .ensemble import RULES
from .exceptions import ConfigError

log = logging.getLogger(__name__)

ENV_PREFIX = "ANOMREC_"
#: The environment variable naming the TOML file (``--config`` overrides it).
CONFIG_ENV = "ANOMREC_CONFIG"
#: What :meth:`ProcessorConfig.to_toml` prints for a secret; read back, it means "not set here".
MASK = "***"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: How the processor reaches Kafka, not what it computes: never part of a checkpoint's settings.
CONNECTION_SETTINGS = frozenset(
    {
        "security_protocol",
        "ssl_cafile",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
        "sasl_mechanism",
        "sasl_username",
        "sasl_password",
    }
)
PROFILES = ("transactions", "network", "sensor", "generic", "interactions")
DETECTORS = ("hst", "iforest", "lof")
DELIVERY_MODES = ("exactly-once", "at-least-once")
RECO_MODELS = ("hybrid", "itemitem", "bpr", "isgd", "biased-mf", "popularity")

# Kafka's own rule for legal topic names.
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def _help(help_text: str, *, secret: bool = False, shown_default: str | None = None) -> dict[str, Any]:
    """A field's metadata: its help, whether it is a secret (no flag, masked), its documented default."""
    return {"help": help_text, "secret": secret, "shown_default": shown_default}


class Secret:
    """A string that does not show itself: ``repr`` and ``str`` are ``***``.

    Examples
    --------
    >>> password = Secret("hunter2")
    >>> password, str(password), f"{password}"
    (Secret('***'), '***', '***')
    >>> password.reveal()
    'hunter2'
    >>> password == Secret("hunter2")
    True
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"a Secret holds a string, not {type(value).__name__}")
        self._value = value

    def reveal(self) -> str:
        """The secret itself: only for the Kafka client that needs it, never for printing."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))


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
        metadata=_help(
            "Kafka bootstrap servers, HOST:PORT[,HOST:PORT]; unset runs the embedded sample",
            shown_default="unset: embedded run",
        ),
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
        metadata=_help(
            "comma-separated numeric fields: the readings (sensor) or the fields (generic)",
            shown_default="(none)",
        ),
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
    metrics_port: int = field(
        default=0,
        metadata=_help("HTTP port of /metrics (Prometheus) and /healthz for a Kafka run; 0 turns them off"),
    )
    metrics_host: str = field(
        default="127.0.0.1",
        metadata=_help("address the metrics server listens on; 0.0.0.0 to be scraped from other hosts"),
    )
    warm_start: str = field(
        default="",
        metadata=_help(
            "folder of models written by `anomrec fit` (or its parent, for the latest version): a "
            "partition with no checkpoint starts from them instead of from nothing"
        ),
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
            "transactional id, so a restarted processor fences its earlier self",
            shown_default="(host name)",
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
    security_protocol: str = field(
        default="PLAINTEXT",
        metadata=_help(
            "how every Kafka client talks to the brokers: PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
        ),
    )
    ssl_cafile: str | None = field(
        default=None,
        metadata=_help(
            "SSL: PEM file of the authorities that signed the brokers' certificates (unset: the system's)"
        ),
    )
    ssl_certfile: str | None = field(
        default=None,
        metadata=_help("SSL: PEM file of this client's certificate, for brokers that authenticate clients"),
    )
    ssl_keyfile: str | None = field(
        default=None,
        metadata=_help("SSL: PEM file of the private key of ssl_certfile (unset: in ssl_certfile)"),
    )
    ssl_password: Secret | None = field(
        default=None,
        metadata=_help("SSL: password of the private key; a secret, masked when shown", secret=True),
    )
    ssl_check_hostname: bool = field(
        default=True, metadata=_help("SSL: check that the broker's certificate names the host connected to")
    )
    sasl_mechanism: str | None = field(
        default=None,
        metadata=_help("SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
    )
    sasl_username: str | None = field(default=None, metadata=_help("SASL user name"))
    sasl_password: Secret | None = field(
        default=None, metadata=_help("SASL password; a secret, masked when shown", secret=True)
    )

    def __post_init__(self) -> None:
        if self.bootstrap_servers is not None and not self.bootstrap_servers.strip():
            object.__setattr__(self, "bootstrap_servers", None)
        self._check_security()
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
        if (
            isinstance(self.metrics_port, bool)
            or not isinstance(self.metrics_port, int)
            or not 0 <= self.metrics_port <= 65535
        ):
            raise ConfigError(
                f"metrics_port={self.metrics_port!r}: expected a TCP port 1-65535, or 0 for no metrics server"
            )
        if not isinstance(self.metrics_host, str) or not self.metrics_host.strip():
            raise ConfigError(
                f"metrics_host={self.metrics_host!r} is empty: expected an address such as 127.0.0.1"
            )
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

    def _check_security(self) -> None:
        """Blank optional strings mean unset; secrets become :class:`Secret`; combinations must fit."""
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "sasl_mechanism", "sasl_username"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name}={value!r}: expected a string")
            if value is not None and not value.strip():
                object.__setattr__(self, name, None)
        for name in ("ssl_password", "sasl_password"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = Secret(value)
            elif value is not None and not isinstance(value, Secret):
                raise ConfigError(f"{name}: expected a string, got a {type(value).__name__}")
            object.__setattr__(self, name, value if value is not None and value.reveal() else None)
        if not isinstance(self.ssl_check_hostname, bool):
            raise ConfigError(f"ssl_check_hostname={self.ssl_check_hostname!r}: expected true or false")
        protocol = self.security_protocol
        _choice("security_protocol", protocol, SECURITY_PROTOCOLS)
        uses_ssl, uses_sasl = protocol in ("SSL", "SASL_SSL"), protocol.startswith("SASL_")
        if uses_sasl:
            for name in ("sasl_mechanism", "sasl_username", "sasl_password"):
                if getattr(self, name) is None:
                    how = "set ANOMREC_SASL_PASSWORD or sasl_password in the config file"
                    if name != "sasl_password":
                        how = f"set {name}" + (
                            f" to one of {', '.join(SASL_MECHANISMS)}" if name == "sasl_mechanism" else ""
                        )
                    raise ConfigError(f"security_protocol={protocol!r} needs {name}: {how}")
            _choice("sasl_mechanism", self.sasl_mechanism, SASL_MECHANISMS)
        else:
            given = [n for n in ("sasl_mechanism", "sasl_username", "sasl_password") if getattr(self, n)]
            if given:
                raise ConfigError(
                    f"{given[0]} is set but security_protocol={protocol!r} does not use SASL: set "
                    f"security_protocol to SASL_PLAINTEXT or SASL_SSL, or unset {given[0]}"
                )
        files = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
        if not uses_ssl:
            given = [n for n in (*files, "ssl_password") if getattr(self, n)]
            if given:
                raise ConfigError(
                    f"{given[0]} is set but security_protocol={protocol!r} does not use SSL: set "
                    f"security_protocol to SSL or SASL_SSL, or unset {given[0]}"
                )
        for name in files:
            path = getattr(self, name)
            if path is not None and not (os.path.isfile(path) and os.access(path, os.R_OK)):
                what = "does not exist" if not os.path.exists(path) else "is not a readable file"
                raise ConfigError(f"{name}={path!r} {what}: expected the path of a PEM file")
        for name in ("ssl_keyfile", "ssl_password"):
            if getattr(self, name) is not None and self.ssl_certfile is None:
                raise ConfigError(
                    f"{name} is set without ssl_certfile: it belongs to a client certificate; "
                    "set ssl_certfile too, or unset it"
                )

    def kafka_security(self) -> dict[str, Any]:
        """The security keyword arguments of every kafka-python client anomrec builds.

        The one place the settings map to kafka-python's names, and the one place secrets are
        revealed; the ``kafka`` loggers then mask them (see :func:`mask_in_logs`).

        Examples
        --------
        >>> ProcessorConfig().kafka_security()
        {'security_protocol': 'PLAINTEXT'}
        >>> cfg = ProcessorConfig(
        ...     security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
        ...     sasl_username="alice", sasl_password="alice-secret",
        ... )
        >>> sorted(cfg.kafka_security())
        ['sasl_mechanism', 'sasl_plain_password', 'sasl_plain_username', 'security_protocol']
        """
        options: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options |= {
                "ssl_cafile": self.ssl_cafile,
                "ssl_certfile": self.ssl_certfile,
                "ssl_keyfile": self.ssl_keyfile,
                "ssl_password": None if self.ssl_password is None else self.ssl_password.reveal(),
                "ssl_check_hostname": self.ssl_check_hostname,
            }
        if self.security_protocol.startswith("SASL_"):
            # kafka-python takes the "plain" user name and password for the SCRAM mechanisms too.
            assert self.sasl_password is not None  # checked at construction
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": self.sasl_username,
                "sasl_plain_password": self.sasl_password.reveal(),
            }
        mask_in_logs(*(s.reveal() for s in (self.ssl_password, self.sasl_password) if s is not None))
        return options

    def to_dict(self) -> dict[str, Any]:
        """Every setting as plain values (tuples stay tuples), secrets masked as ``***``."""
        return {
            f.name: MASK if isinstance(value := getattr(self, f.name), Secret) else value
            for f in dataclasses.fields(self)
        }

    def to_toml(self, sources: Mapping[str, str] | None = None) -> str:
        """The settings as a TOML config file, secrets masked; ``sources`` become trailing comments.

        Fed back with ``--config``, the file gives the same settings; a masked secret (``***``)
        read back means "not set here", so the environment or a flag must still provide it. An
        unset setting is written as ``""``, which reads back as unset.

        Examples
        --------
        >>> text = ProcessorConfig(threshold=0.9).to_toml({"threshold": "flag --threshold"})
        >>> [line for line in text.splitlines() if line.startswith(("threshold =", "seed ="))]
        ['threshold = 0.9  # from flag --threshold', 'seed = 42  # default']
        """
        lines = [
            "# anomrec settings: defaults < this file (--config / ANOMREC_CONFIG) < ANOMREC_* < flags.",
            f'# A secret shows as "{MASK}", which read back means "not set here": set it in ANOMREC_*.',
            '# "" means unset.',
        ]
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            source = (sources or {}).get(f.name, "default")
            comment = "default" if source == "default" else f"from {source}"
            lines.append(f"{f.name} = {_toml_value(value)}  # {comment}")
        return "\n".join(lines) + "\n"

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

    @staticmethod
    def flag(name: str) -> str | None:
        """The command-line flag that sets field ``name``; None for a secret, which has none."""
        f = _FIELDS[name]
        return None if f.metadata.get("secret") else "--" + name.replace("_", "-")

    @classmethod
    def from_sources(
        cls,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        config_file: str | os.PathLike[str] | None = None,
    ) -> ProcessorConfig:
        """The config from a TOML file, then the environment, then ``overrides`` (e.g. CLI flags).

        See :meth:`resolve`, which also says where each value came from.
        """
        return cls.resolve(environ, overrides, config_file).config

    @classmethod
    def resolve(
        cls,
        environ: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        config_file: str | os.PathLike[str] | None = None,
    ) -> Resolved:
        """Merge defaults < TOML file < environment < ``overrides``; validate; note each value's source.

        Parameters
        ----------
        environ
            The environment: ``ANOMREC_<FIELD>`` variables, and ``ANOMREC_CONFIG`` naming the file.
        overrides
            Values already typed, e.g. parsed flags; ``None`` means "not given" and leaves the
            lower layers in force. They are reported as flags.
        config_file
            The TOML file; overrides ``ANOMREC_CONFIG``.

        Examples
        --------
        >>> found = ProcessorConfig.resolve({"ANOMREC_GROUP_ID": "fraud"}, {"threshold": 0.9})
        >>> found.config.group_id, found.sources["group_id"], found.sources["threshold"]
        ('fraud', 'env ANOMREC_GROUP_ID', 'flag --threshold')
        >>> ProcessorConfig.resolve({"ANOMREC_THRESHOLD": "1.5"})
        Traceback (most recent call last):
        ...
        anomrec.streaming.exceptions.ConfigError: threshold=1.5 ... came from env ANOMREC_THRESHOLD
        """
        environ = environ or {}
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        masked: dict[str, str] = {}
        path = config_file if config_file is not None else environ.get(CONFIG_ENV) or None
        if path is not None:
            where = f"file {os.fspath(path)}"
            for name, value in _read_toml(path, named_by_env=config_file is None).items():
                if isinstance(value, Secret) and value.reveal() == MASK:
                    masked[name] = where
                    continue
                values[name], sources[name] = value, where
        for name, f in _FIELDS.items():
            var = cls.env_var(name)
            raw = environ.get(var)
            if raw is not None:
                values[name], sources[name] = _from_env(name, raw, f), f"env {var}"
                masked.pop(name, None)
        _warn_unknown_env(environ)
        for name, value in (overrides or {}).items():
            if name not in _FIELDS:
                raise ConfigError(
                    f"unknown setting {name!r}{_did_you_mean(name)}: expected one of {', '.join(_FIELDS)}"
                )
            if value is not None:
                values[name], sources[name] = value, f"flag {cls.flag(name) or name}"
                masked.pop(name, None)
        for name, where in masked.items():
            raise ConfigError(
                f"{name} in {where} is {MASK!r}, the mask config show prints in place of a secret, and "
                f"nothing else sets it: put the real value there, or set {cls.env_var(name)}"
            )
        try:
            config = cls(**values)
        except ConfigError as exc:
            raise ConfigError(_with_sources(str(exc), sources)) from None
        return Resolved(config, sources)


class Resolved(NamedTuple):
    """A config and where each value came from: ``"file PATH"``, ``"env VAR"`` or ``"flag --x"``.

    A setting left at its default is absent from ``sources``.
    """

    config: ProcessorConfig
    sources: Mapping[str, str]


_FIELDS: dict[str, dataclasses.Field[Any]] = {f.name: f for f in dataclasses.fields(ProcessorConfig)}

# The value each field's annotation calls for, and how TOML and the environment spell it.
_KINDS: dict[str, type] = {
    "str": str,
    "str | None": str,
    "int": int,
    "float": float,
    "bool": bool,
    "tuple[str, ...]": tuple,
    "Secret | None": Secret,
}
_EXPECTED = {
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    tuple: 'a list of strings, e.g. ["a", "b"], or one string "a,b"',
    Secret: "a string",
}
for _f in _FIELDS.values():  # a new field with another type must say how it is read
    assert _f.type in _KINDS, f"ProcessorConfig.{_f.name}: no reader for type {_f.type}"


def _kind(f: dataclasses.Field[Any]) -> type:
    return _KINDS[str(f.type)]


def _read_toml(path: str | os.PathLike[str], *, named_by_env: bool) -> dict[str, Any]:
    """The settings of a TOML file, each typed as its field; ConfigError naming the file otherwise."""
    shown = repr(os.fspath(path)) + (f" (named by {CONFIG_ENV})" if named_by_env else "")
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {shown}: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"the config file {shown} is not UTF-8 text: {exc.reason} at byte {exc.start}"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the config file {shown} is not valid TOML: {exc}") from None
    where = f"file {os.fspath(path)}"
    values = {}
    for key, value in doc.items():
        if key not in _FIELDS:
            table = (
                " (a table: the file is flat, every setting at the top level)"
                if isinstance(value, dict)
                else ""
            )
            raise ConfigError(
                f"unknown setting {key!r}{table} in config file {shown}{_did_you_mean(key)}: "
                "expected the name of a setting, as anomrec config show lists them"
            )
        values[key] = _from_toml(key, value, where)
    return values


def _from_toml(name: str, value: Any, where: str) -> Any:
    kind = _kind(_FIELDS[name])
    ok = {
        str: isinstance(value, str),
        Secret: isinstance(value, str),
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        tuple: isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)),
    }[kind]
    if name == "bootstrap_servers" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if not ok:
        raise ConfigError(f"{name}={_toml_value(value)} from {where}: expected {_EXPECTED[kind]}")
    if kind is float:
        return float(value)
    if kind is tuple:
        return _split_list(value) if isinstance(value, str) else tuple(value)
    if kind is Secret:
        return Secret(value)
    return value


def _from_env(name: str, raw: str, f: dataclasses.Field[Any]) -> Any:
    kind = _kind(f)
    var = ProcessorConfig.env_var(name)
    if kind is bool:
        try:
            return parse_bool(raw)
        except ValueError:
            raise ConfigError(f"{var}={raw!r} is not true or false (also 1/0, yes/no, on/off)") from None
    try:
        if kind is int:
            return int(raw)
        if kind is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
    except ValueError:
        raise ConfigError(
            f"{var}={raw!r} is not a valid {kind.__name__}: expected {_EXPECTED[kind]}"
        ) from None
    if kind is tuple:
        return _split_list(raw)
    if kind is Secret:
        return Secret(raw)
    return raw


# ANOMREC_* variables that are not settings: the file, logging, the local broker, fault injection.
_OTHER_ENV = frozenset(
    {"CONFIG", "LOG_LEVEL", "CACHE_DIR", "MAVEN_REPO", "CRASH_AT", "CRASH_AFTER", "CRASH_SIGNAL"}
)


def _warn_unknown_env(environ: Mapping[str, str]) -> None:
    """Warn about an ``ANOMREC_*`` variable that is no setting but looks like a misspelt one."""
    names = [n.upper() for n in _FIELDS]
    for var in environ:
        if not var.startswith(ENV_PREFIX):
            continue
        rest = var.removeprefix(ENV_PREFIX)
        if rest in _OTHER_ENV or rest.lower() in _FIELDS:
            continue
        close = difflib.get_close_matches(rest, names, n=1, cutoff=0.8)
        if close:
            log.warning("%s is not a setting and is ignored: did you mean %s%s?", var, ENV_PREFIX, close[0])


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, list(_FIELDS), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _with_sources(message: str, sources: Mapping[str, str]) -> str:
    """``message`` plus where each setting it names came from, when that is not the default."""
    unquoted = re.sub(r"'[^']*'|\"[^\"]*\"", "", message)
    named = [n for n in _FIELDS if re.search(rf"\b{n}\b", unquoted) and n in sources]
    if not named:
        return message
    return message + "; " + ", ".join(f"{n} came from {sources[n]}" for n in named)


def _toml_value(value: Any) -> str:
    """``value`` as TOML: JSON's string escapes are TOML's; None is written as an empty string."""
    if value is None:
        value = ""
    elif isinstance(value, Secret):
        value = MASK
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


class _Masker(logging.Filter):
    """Replaces the secrets it was given, as text, repr or bytes repr, in every record it sees."""

    def __init__(self) -> None:
        super().__init__("")
        self.forms: set[str] = set()

    def add(self, secret: str) -> None:
        if secret:
            self.forms |= {secret, repr(secret)[1:-1], repr(secret.encode())[2:-1]}

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.forms:
            return True
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is logging's problem to report
            return True
        masked = text
        for form in sorted(self.forms, key=len, reverse=True):
            masked = masked.replace(form, MASK)
        if masked != text:
            record.msg, record.args = masked, None
        return True


_MASKER = _Masker()


def mask_in_logs(*secrets: str) -> None:
    """Mask ``secrets`` in every record of the ``kafka`` loggers from now on.

    kafka-python logs its admin client's configuration and each request, the PLAIN login
    included, at DEBUG. A filter on a logger sees only that logger's own records, so it goes on
    every ``kafka`` logger that exists, which is all of them once a client class is imported.
    """
    for secret in secrets:
        _MASKER.add(secret)
    for name in list(logging.root.manager.loggerDict):
        if name == "kafka" or name.startswith("kafka."):
            logging.getLogger(name).addFilter(_MASKER)


def reference_table(names: list[str] | None = None) -> str:
    """The README's table of settings ``names`` (default all): key, flag, variable, default, meaning.

    The README's configuration tables are these rows; ``tests/test_readme.py`` keeps them so.
    """
    rows = [
        "| setting (TOML key) | flag | environment | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in names or list(_FIELDS):
        f = _FIELDS[name]
        flag = ProcessorConfig.flag(name)
        shown = f.metadata.get("shown_default")
        if shown is None:
            default = f.default
            if default is None:
                shown = "(unset)"
            elif isinstance(default, bool):
                shown = f"`{str(default).lower()}`"
            elif isinstance(default, tuple):
                shown = f"`{','.join(default)}`"
            else:
                shown = f"`{default}`" if default != "" else "(none)"
        rows.append(
            f"| `{name}` | {f'`{flag}`' if flag else '(none: a secret)'} | "
            f"`{ProcessorConfig.env_var(name)}` | {shown} | {f.metadata['help']} |"
        )
    return "\n".join(rows)


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
