from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import pytest
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.core import Processor, Step
from anomrec.streaming.events import Event
from river import anomaly, compose, preprocessing

FIELDS = ("a", "b", "c", "d")
CFG = ProcessorConfig(
    profile="generic",
    features=FIELDS,
    n_trees=10,
    height=8,
    window_size=100,
    first_fit_after=400,
    refit_every=500,
    swap_delay=150,
    refresh_every=100,
    calibration_window=1000,
    warmup_events=500,
    threshold=0.99,
    seed=3,
)


def make_events(n: int = 1600, seed: int = 0, anomaly_rate: float = 0.02) -> list[Event]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FIELDS)))
    y = (rng.random(n) < anomaly_rate).astype(int)
    X[y == 1, 0] += 8.0  # anomalies stand out in field "a" only
    return [
        Event(f"e{i}", f"u{i % 7}", 1_767_225_600.0 + i, tuple(X[i].tolist()), int(y[i])) for i in range(n)
    ]


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return make_events()


def run(cfg: ProcessorConfig, events: list[Event], batch: int = 10_000, **kw: object) -> Step:
    with Processor(cfg, **kw) as proc:  # type: ignore[arg-type]
        steps = [proc.process(events[i : i + batch]) for i in range(0, len(events), batch)]
    return Step(
        events=[e for s in steps for e in s.events],
        scores=np.concatenate([s.scores for s in steps]),
        raw={k: np.concatenate([s.raw[k] for s in steps]) for k in steps[0].raw},
        calibrated={k: np.concatenate([s.calibrated[k] for s in steps]) for k in steps[0].calibrated},
        alerted=np.concatenate([s.alerted for s in steps]),
        alerts=[a for s in steps for a in s.alerts],
    )


def test_hst_scores_each_event_before_learning_it_like_river(events: list[Event]) -> None:
    cfg = ProcessorConfig(
        profile="generic", features=FIELDS, detectors=("hst",), n_trees=10, height=8, window_size=100, seed=3
    )
    got = run(cfg, events).raw["hst"]
    model = compose.Pipeline(
        preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=100, seed=3)
    )
    expected, learn_first = [], []
    twin = compose.Pipeline(
        preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=100, seed=3)
    )
    for e in events:
        x = dict(zip(FIELDS, e.values, strict=True))
        expected.append(model.score_one(x))
        model.learn_one(x)
        twin.learn_one(x)
        learn_first.append(twin.score_one(x))
    expected_arr = np.array(expected)
    expected_arr[:100] = np.nan  # the first window is reported as warming up
    assert np.array_equal(got, expected_arr, equal_nan=True)
    assert not np.array_equal(got[100:], np.array(learn_first)[100:])


@pytest.mark.parametrize("batch", [1, 37, 500])
def test_outputs_do_not_depend_on_batch_boundaries(events: list[Event], batch: int) -> None:
    few = events[:700] if batch == 1 else events
    whole, pieces = run(CFG, few), run(CFG, few, batch=batch)
    assert np.array_equal(whole.scores, pieces.scores, equal_nan=True)
    assert [a.to_json() for a in whole.alerts] == [a.to_json() for a in pieces.alerts]


def test_same_seed_same_alerts_other_seed_other_scores(events: list[Event]) -> None:
    a, b = run(CFG, events), run(CFG, events)
    assert [x.to_json() for x in a.alerts] == [x.to_json() for x in b.alerts]
    other = run(ProcessorConfig(**{**_fields(CFG), "seed": 4}), events)
    assert not np.array_equal(other.raw["hst"], a.raw["hst"], equal_nan=True)


def _fields(cfg: ProcessorConfig) -> dict[str, object]:
    return {name: getattr(cfg, name) for name in cfg.__dataclass_fields__}


def test_models_swap_exactly_swap_delay_events_after_the_fit_began(events: list[Event]) -> None:
    step = run(CFG, events)
    iforest = step.raw["iforest"]
    first = CFG.first_fit_after + CFG.swap_delay
    assert np.isnan(iforest[:first]).all() and not np.isnan(iforest[first:]).any()
    # The second model takes over at first_fit_after + refit_every + swap_delay: scores of the same
    # row differ before and after, which they would not if the swap happened elsewhere.
    versions = {a.model_versions["iforest"] for a in step.alerts}
    assert versions >= {"iforest-1", "iforest-2"}
    swaps = [CFG.first_fit_after + k * CFG.refit_every + CFG.swap_delay for k in range(4)]
    for a in step.alerts:
        position = int(a.event_id[1:])
        expected = sum(position >= s for s in swaps)
        assert a.model_versions["iforest"] == f"iforest-{expected}", position


class SlowExecutor(ThreadPoolExecutor):
    """Fits that only finish when the test says so."""

    def __init__(self) -> None:
        super().__init__(1)
        self.gate = threading.Event()

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        def slow():  # type: ignore[no-untyped-def]
            self.gate.wait(30)
            return fn(*args, **kwargs)

        return super().submit(slow)


def test_a_slow_fit_holds_back_events_instead_of_blocking_and_changes_nothing(events: list[Event]) -> None:
    expected = run(CFG, events)
    slow = SlowExecutor()
    with Processor(CFG, executor=slow) as proc:
        first = proc.process(events, wait=0.05)
        # Stopped at the first swap point; nothing after it was scored.
        assert len(first.events) == CFG.first_fit_after + CFG.swap_delay
        assert first.pending == len(events) - len(first.events)
        again = proc.process([], wait=0.05)
        assert again.events == [] and again.pending == first.pending
        slow.gate.set()
        rest = proc.process([], wait=None)
    slow.shutdown()
    assert first.events + rest.events == events
    got = np.concatenate([first.scores, again.scores, rest.scores])
    assert np.array_equal(got, expected.scores, equal_nan=True)
    assert [a.to_json() for a in first.alerts + rest.alerts] == [a.to_json() for a in expected.alerts]


def test_no_alert_before_warm_up_and_none_until_every_detector_is_ready(events: list[Event]) -> None:
    step = run(CFG, events)
    positions = [int(a.event_id[1:]) for a in step.alerts]
    assert positions and min(positions) >= CFG.warmup_events
    # IsolationForest and LOF score from event 550 on; their calibration needs 200 scores, which it
    # takes in at the next refresh point, 800. Only then does the ensemble speak.
    ready = 800
    assert np.isnan(step.scores[:ready]).all()
    assert not np.isnan(step.scores[ready:]).any()
    assert not np.isnan(step.raw["iforest"][CFG.first_fit_after + CFG.swap_delay :]).any()


def test_alerts_are_exactly_the_combined_scores_at_or_above_threshold(events: list[Event]) -> None:
    step = run(CFG, events)
    expected = [
        e.event_id
        for i, (e, s) in enumerate(zip(events, step.scores, strict=True))
        if i >= CFG.warmup_events and s >= CFG.threshold
    ]
    assert expected
    assert [a.event_id for a in step.alerts] == expected
    labels = {e.event_id: e.label for e in events}
    assert sum(labels[i] for i in expected) / len(expected) > 0.5  # 2 % of events are anomalies


def test_an_alert_carries_scores_versions_and_reasons(events: list[Event]) -> None:
    with Processor(CFG) as proc:
        proc.process(events)
        planted = Event("boom", "u1", 1_767_225_600.0, (30.0, 0.1, -0.2, 0.0))
        (alert,) = proc.process([planted]).alerts
    doc = orjson.loads(alert.to_json())
    assert set(doc) == {
        "event_id", "entity", "event_time", "score", "threshold", "threshold_mode", "rule",
        "model_versions", "detectors", "reasons", "profile", "features",
    }  # fmt: skip
    assert (doc["event_id"], doc["entity"], doc["event_time"]) == ("boom", "u1", "2026-01-01T00:00:00.000Z")
    assert doc["score"] >= doc["threshold"] == 0.99
    # Swaps at 550, 1050 and 1550: the third model scores event 1600.
    assert doc["model_versions"] == {"hst": "hst-10x8-w100-s3", "iforest": "iforest-3", "lof": "lof-3"}
    for name, view in doc["detectors"].items():
        assert view["version"] == doc["model_versions"][name]
        assert view["raw"] is not None and 0 <= view["calibrated"] < 1
    assert doc["reasons"][0]["feature"] == "a"
    assert doc["reasons"][0]["value"] == 30.0
    low, high = doc["reasons"][0]["typical"]
    assert -3 < low < 0 < high < 3
    assert doc["features"] == {"a": 30.0, "b": 0.1, "c": -0.2, "d": 0.0}


def test_alerted_events_are_kept_out_of_the_refit_window(events: list[Event]) -> None:
    with Processor(CFG) as proc:
        step = proc.process(events)
        window = proc.clean_.values()
    alerted_rows = step.vectors[step.alerted]
    assert len(alerted_rows)
    held = {tuple(r) for r in window.tolist()}
    assert not any(tuple(r) in held for r in alerted_rows.tolist())
    assert len(window) == min(CFG.refit_window, len(events) - int(step.alerted.sum()))


def test_percentile_threshold_mode_alerts_at_roughly_the_requested_rate(events: list[Event]) -> None:
    cfg = ProcessorConfig(**{**_fields(CFG), "threshold_mode": "percentile", "threshold": 0.95})
    step = run(cfg, events)
    live = len(events) - CFG.warmup_events
    assert 0.02 * live < len(step.alerts) < 0.09 * live


def test_a_feature_that_is_mostly_zero_is_explained_in_its_own_spread() -> None:
    from anomrec.streaming.ensemble import FeatureReference

    # Zero in 97 % of the rows: its 5th-95th percentile range is 0 to 0, its std is not.
    rows = np.zeros((1000, 2))
    rows[:30, 0] = 8.0
    rows[:, 1] = np.linspace(-1.0, 1.0, 1000)
    ref = FeatureReference(("km_beyond_reach", "other"))
    ref.refresh(rows)
    (reason,) = ref.explain(np.array([8.0, 0.0]), 1)
    assert (reason.typical_low, reason.typical_high) == (0.0, 0.0)
    assert reason.deviation == pytest.approx(8.0 / rows[:, 0].std())  # about 6, not 8,000
