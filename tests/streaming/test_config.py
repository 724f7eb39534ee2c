from __future__ import annotations

import pytest
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.exceptions import ConfigError


def test_environment_then_overrides() -> None:
    env = {"ANOMREC_INPUT_TOPIC": "tx", "ANOMREC_THRESHOLD": "0.9", "ANOMREC_FEATURES": "a, b"}
    cfg = ProcessorConfig.from_sources(env, {"threshold": 0.8, "input_topic": None})
    assert (cfg.input_topic, cfg.threshold, cfg.features) == ("tx", 0.8, ("a", "b"))


def test_blank_bootstrap_servers_means_embedded() -> None:
    assert ProcessorConfig.from_sources({"ANOMREC_BOOTSTRAP_SERVERS": "  "}).bootstrap_servers is None


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"threshold": 0.0}, "threshold=0.0 is out of range"),
        ({"input_topic": "bad topic"}, "input_topic='bad topic' is not a legal Kafka topic name"),
        ({"alerts_topic": "events"}, "read its own output"),
        ({"profile": "generic", "features": ""}, "profile='generic' needs features"),
        ({"features": ("a", "a")}, "features=('a', 'a'): expected distinct non-empty names"),
        ({"profile": "tx"}, "profile='tx' is not one of: transactions, network, sensor, generic"),
        ({"detectors": "hst,svm"}, "detectors='svm' is not one of: hst, iforest, lof"),
        ({"combine": "median"}, "combine='median' is not one of"),
        ({"weights": "hst=x"}, "'hst=x' is not NAME=WEIGHT"),
        ({"weights": "hst=0,iforest=0,lof=0"}, "at least one weight must be above 0"),
        ({"swap_delay": 5000, "refit_every": 5000}, "swap_delay=5000 is not below refit_every=5000"),
        ({"threshold_mode": "top"}, "threshold_mode='top' is not one of: fixed, percentile"),
        ({"n_trees": 0}, "n_trees=0 is out of range"),
        ({"window_size": 2.5}, "window_size=2.5"),
        (
            {"dead_letter_topic": "dead letters"},
            "dead_letter_topic='dead letters' is not a legal Kafka topic",
        ),
        ({"dead_letter_topic": "events"}, "dead_letter_topic and input_topic are both 'events'"),
        ({"dead_letter_topic": "alerts"}, "dead_letter_topic and alerts_topic are both 'alerts'"),
        ({"max_record_bytes": -1}, "max_record_bytes=-1 is out of range: expected an integer in [0, "),
        ({"require_key": "yes"}, "require_key='yes': expected true or false"),
        ({"schema_version_field": ""}, "schema_version_field='' is empty"),
        ({"schema_versions": ""}, "schema_versions='': expected one or more distinct versions"),
        ({"schema_versions": ("1", "1")}, "schema_versions=('1', '1'): expected one or more distinct"),
        ({"max_future_seconds": -1.0}, "max_future_seconds=-1.0 is negative"),
        ({"max_future_seconds": float("inf")}, "max_future_seconds=inf: expected a finite number"),
        ({"max_bad_ratio": 1.5}, "max_bad_ratio=1.5 is out of range: expected a share in [0, 1]"),
        ({"max_bad_ratio": float("nan")}, "max_bad_ratio=nan is out of range"),
        ({"bad_ratio_window": 0}, "bad_ratio_window=0 is out of range"),
    ],
)
def test_bad_values_name_the_setting_and_value(kwargs: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError) as info:
        ProcessorConfig(**kwargs)  # type: ignore[arg-type]
    assert says in str(info.value)


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="ANOMREC_SEED='x' is not a valid int"):
        ProcessorConfig.from_sources({"ANOMREC_SEED": "x"})


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'treshold'"):
        ProcessorConfig.from_sources({}, {"treshold": 0.5})


def test_dead_letter_settings_from_the_environment() -> None:
    env = {
        "ANOMREC_DEAD_LETTER_TOPIC": "events.dlq",
        "ANOMREC_SCHEMA_VERSIONS": "1, 2",
        "ANOMREC_REQUIRE_KEY": "yes",
        "ANOMREC_MAX_RECORD_BYTES": "0",
        "ANOMREC_MAX_FUTURE_SECONDS": "60",
        "ANOMREC_MAX_BAD_RATIO": "1",
        "ANOMREC_BAD_RATIO_WINDOW": "50",
    }
    cfg = ProcessorConfig.from_sources(env)
    assert cfg.dead_letter_topic == "events.dlq" and cfg.schema_versions == ("1", "2")
    assert (cfg.require_key, cfg.max_record_bytes, cfg.max_future_seconds) == (True, 0, 60.0)
    assert (cfg.max_bad_ratio, cfg.bad_ratio_window) == (1.0, 50)
    defaults = {
        "dead_letter_topic": "anomrec-dead-letter",
        "schema_version_field": "schema_version",
        "schema_versions": ("1",),
        "require_key": False,
        "max_record_bytes": 1_048_576,
        "max_future_seconds": 86400.0,
        "max_bad_ratio": 0.5,
        "bad_ratio_window": 1000,
    }
    assert {name: getattr(ProcessorConfig(), name) for name in defaults} == defaults
