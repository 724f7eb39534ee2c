from __future__ import annotations

import orjson
import pytest
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.core import Processor
from anomrec.streaming.events import Event, EventDecoder
from anomrec.streaming.sample import generate_transactions
from river import anomaly, compose, preprocessing

CFG = ProcessorConfig(window_size=100, seed=3)


@pytest.fixture(scope="module")
def events() -> list[Event]:
    decoder = EventDecoder(CFG)
    return [decoder.from_dict(doc) for doc in generate_transactions(1500, seed=11)]


def reference_scores(events: list[Event], cfg: ProcessorConfig, *, learn_first: bool = False) -> list[float]:
    model = compose.Pipeline(
        preprocessing.MinMaxScaler(),
        anomaly.HalfSpaceTrees(
            n_trees=cfg.n_trees, height=cfg.height, window_size=cfg.window_size, seed=cfg.seed
        ),
    )
    scores = []
    for e in events:
        x = dict(zip(cfg.features, e.features, strict=True))
        if learn_first:
            model.learn_one(x)
        scores.append(model.score_one(x))
        if not learn_first:
            model.learn_one(x)
    return scores


def test_scores_each_event_before_learning_it(events: list[Event]) -> None:
    scores = Processor(CFG).process(events).scores
    assert scores == reference_scores(events, CFG)
    # The check can tell the two orders apart: learning first gives other scores.
    assert scores != reference_scores(events, CFG, learn_first=True)


@pytest.mark.parametrize("batch_size", [1, 7, 256])
def test_scores_do_not_depend_on_batch_boundaries(events: list[Event], batch_size: int) -> None:
    whole = Processor(CFG).process(events).scores
    proc = Processor(CFG)
    pieces: list[float] = []
    for i in range(0, len(events), batch_size):
        pieces += proc.process(events[i : i + batch_size]).scores
    assert pieces == whole


def test_same_seed_same_alerts_other_seed_other_scores(events: list[Event]) -> None:
    a, b = Processor(CFG).process(events), Processor(CFG).process(events)
    assert [x.to_json() for x in a.alerts] == [x.to_json() for x in b.alerts]
    other = ProcessorConfig(window_size=100, seed=4)
    assert Processor(other).process(events).scores != a.scores


def test_no_alert_during_the_first_window(events: list[Event]) -> None:
    extreme = Event("boom", "c", 0.0, (1e9, 1e5, 1e4))
    step = Processor(CFG).process([*events[:50], extreme])
    assert step.scores[-1] == 0.0
    assert step.alerts == []


def test_obvious_anomaly_alerts_with_its_fields(events: list[Event]) -> None:
    proc = Processor(CFG)
    proc.process(events)
    planted = Event("boom", "card-1", 1_767_225_600.0, (50_000.0, 9_000.0, 400.0))
    (alert,) = proc.process([planted]).alerts
    assert alert.score >= CFG.threshold
    doc = orjson.loads(alert.to_json())
    assert doc == {
        "event_id": "boom",
        "entity": "card-1",
        "event_time": "2026-01-01T00:00:00.000Z",
        "score": alert.score,
        "threshold": CFG.threshold,
        "detector": "hst",
        "features": {"amount": 50_000.0, "distance_from_home_km": 9_000.0, "ratio_to_median_amount": 400.0},
    }


def test_alerts_are_exactly_the_scores_at_or_above_threshold(events: list[Event]) -> None:
    step = Processor(CFG).process(events)
    expected = [e.event_id for e, s in zip(events, step.scores, strict=True) if s >= CFG.threshold]
    assert expected, "the sample should raise some alerts"
    assert [a.event_id for a in step.alerts] == expected
