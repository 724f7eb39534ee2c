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
