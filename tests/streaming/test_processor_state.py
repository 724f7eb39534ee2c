"""A processor restored from its state continues exactly as an uninterrupted one would.

Three set-ups (card transactions with the default detectors; interactions with recommendations;
generic fields with a percentile threshold), each cut at points chosen to catch every kind of
state: while a refit is in progress, at a swap point before the swap, right after it, as a refit
begins and between two refresh points. Every piece of the state is shown to matter by restoring a
state with that piece taken from a new processor instead, which must change the outputs.

Every run here cuts the stream into the same batches (every 250 events, and at the cut points):
scikit-learn's LOF scores a row a last bit differently depending on the batch it comes in (its
distances go through BLAS, whose blocking follows the batch), so only runs batched alike can be
compared bit for bit.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache, partial
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from anomrec.streaming.checkpoint import load_checkpoint, write_checkpoint
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.core import RUNTIME_SETTINGS, Processor, Step
from anomrec.streaming.detectors import SklearnDetector, isolation_forest, local_outlier_factor
from anomrec.streaming.events import Event, EventDecoder
from anomrec.streaming.exceptions import CheckpointError
from anomrec.streaming.iforest import CompiledIsolationForest
from anomrec.streaming.sample import generate_interactions, generate_transactions

N_EVENTS = 3000
# Refits begin at 500, 1500 and 2500; each new model takes over 100 events later.
SCHEDULE: dict[str, Any] = {
    "first_fit_after": 500,
    "refit_every": 1000,
    "swap_delay": 100,
    "warmup_events": 500,
    "refresh_every": 250,
    "calibration_window": 2000,
    "n_trees": 10,
    "height": 8,
    "window_size": 250,
    "debounce_seconds": 60.0,
    "similar_every": 700,
}
CUTS = (550, 600, 601, 1500, 2237)
FIELDS = ("a", "b", "c", "d")
CASES = ("transactions", "interactions", "generic")
State = tuple[dict[str, Any], dict[str, np.ndarray]]
T = TypeVar("T")


def _generic_events(n: int, seed: int = 0) -> list[Event]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(FIELDS)))
    y = (rng.random(n) < 0.02).astype(int)
    X[y == 1, 0] += 8.0
    return [
        Event(f"e{i}", f"u{i % 7}", 1_767_225_600.0 + i, tuple(X[i].tolist()), int(y[i])) for i in range(n)
    ]


@cache
def case(name: str) -> tuple[ProcessorConfig, list[Event]]:
    """The configuration and events of a set-up."""
    if name == "transactions":
        cfg = ProcessorConfig(**SCHEDULE)
        docs = generate_transactions(N_EVENTS, seed=3)
    elif name == "interactions":
        cfg = ProcessorConfig(
            profile="interactions",
            entity_field="user_id",
            combine="mean",
            weights="hst=1,iforest=2,lof=1",
            **SCHEDULE,
        )
        docs = generate_interactions(N_EVENTS, seed=3, n_users=100, n_items=300)
    else:
        cfg = ProcessorConfig(
            profile="generic",
            features=FIELDS,
            detectors=("hst", "iforest", "lof"),
            threshold_mode="percentile",
            threshold=0.99,
            **SCHEDULE,
        )
        return cfg, _generic_events(N_EVENTS)
    decoder = EventDecoder(cfg)
    return cfg, [decoder.from_dict(d) for d in docs]


def drive(
    proc: Processor, events: list[Event], start: int, stop: int, cuts: tuple[int, ...] = CUTS
) -> list[Step]:
    """Process ``events[start:stop]`` in batches that end at every 250th event and at ``cuts``."""
    ends = {stop} | {p for p in (*range(0, stop, 250), *cuts) if start < p < stop}
    points = [start, *sorted(ends)]
    return [proc.process(events[a:b]) for a, b in pairwise(points)]


def outputs(steps: list[Step]) -> dict[str, Any]:
    """Everything a processor publishes or reports, per event, for comparison."""
    return {
        "scores": np.concatenate([s.scores for s in steps]),
        "raw": {k: np.concatenate([s.raw[k] for s in steps]) for k in steps[0].raw},
        "calibrated": {k: np.concatenate([s.calibrated[k] for s in steps]) for k in steps[0].calibrated},
        "alerted": np.concatenate([s.alerted for s in steps]),
        "alerts": [a.to_json() for s in steps for a in s.alerts],
        "updates": [u.to_json() for s in steps for u in s.reco.updates],
        "neighbours": [n.to_json() for s in steps for n in s.reco.neighbours],
    }


def differences(got: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """What differs between two :func:`outputs`; empty when they are identical."""
    out = []
    if not np.array_equal(got["scores"], expected["scores"], equal_nan=True):
        out.append("scores")
    for part in ("raw", "calibrated"):
        for name, values in expected[part].items():
            if not np.array_equal(got[part][name], values, equal_nan=True):
                out.append(f"{part} {name}")
    if not np.array_equal(got["alerted"], expected["alerted"]):
        out.append("alerted")
    out += [k for k in ("alerts", "updates", "neighbours") if got[k] != expected[k]]
    return out


@cache
def uninterrupted(name: str, cuts: tuple[int, ...] = CUTS) -> dict[str, Any]:
    cfg, events = case(name)
    with Processor(cfg) as proc:
        return outputs(drive(proc, events, 0, len(events), cuts))


@pytest.mark.parametrize("name", CASES)
def test_a_restored_processor_continues_exactly_as_an_uninterrupted_one(name: str, tmp_path: Path) -> None:
    cfg, events = case(name)
    expected = uninterrupted(name)
    assert expected["alerts"], "the set-up must raise alerts, or alert state goes untested"
    if cfg.recommend and name != "generic":
        assert expected["updates"] and expected["neighbours"]
    head: list[Step] = []
    position = 0
    with Processor(cfg) as first:
        for k, cut in enumerate(CUTS):
            head += drive(first, events, position, cut)
            position = cut
            # The cuts cover a refit in progress, a swap point reached but not passed, the event
            # after a swap, and a refit just begun.
            in_progress = {550: True, 600: True, 601: False, 1500: True}.get(cut)
            if in_progress is not None:
                assert (first.swap_at_ is not None) is in_progress, cut
            assert not first.has_pending
            state = first.state()
            if k % 2:
                # Through a checkpoint file, as the runner does ...
                write_checkpoint(tmp_path, name, cut, state, first.model_versions())
                checkpoint = load_checkpoint(tmp_path, name)
                assert checkpoint is not None and checkpoint.offset == cut
                second = Processor(cfg)
                second.restore(checkpoint.meta, checkpoint.arrays)
            else:
                # ... and straight from memory.
                second = Processor.from_state(cfg, *state)
            with second:
                assert second.model_versions() == first.model_versions()
                tail = drive(second, events, cut, len(events))
            assert differences(outputs(head + tail), expected) == [], f"cut at {cut}"
        head += drive(first, events, position, len(events))
    assert differences(outputs(head), expected) == [], "taking the state changed the processor"


def test_the_meta_is_json_and_the_arrays_hold_no_python_objects() -> None:
    cfg, events = case("transactions")
    with Processor(cfg) as proc:
        proc.process(events[:1200])
        meta, arrays = proc.state()
        versions = proc.model_versions()
    assert json.loads(json.dumps(meta)) == meta
    assert all(isinstance(a, np.ndarray) and not a.dtype.hasobject for a in arrays.values())
    assert versions == {
        "hst": "hst-10x8-w250-s42",
        "iforest": "iforest-1",
        "lof": "lof-1",
        "reco": versions["reco"],
    }
    assert versions["reco"].startswith("hybrid-")


def _fresh(component: str, state: State, fresh: State) -> State:
    """``state`` with one component (``"weights"``, ``"detectors.lof"``...) taken from ``fresh``."""
    meta, arrays = copy.deepcopy(state[0]), dict(state[1])
    fresh_meta, fresh_arrays = fresh
    top, _, detector = component.partition(".")
    if detector:
        meta["detectors"] = [
            next(e for e in fresh_meta["detectors"] if e["name"] == detector) if e["name"] == detector else e
            for e in meta["detectors"]
        ]
    elif top in meta:
        meta[top] = copy.deepcopy(fresh_meta[top])
    prefix = component + "."
    arrays = {k: v for k, v in arrays.items() if not k.startswith(prefix)}
    arrays.update({k: v for k, v in fresh_arrays.items() if k.startswith(prefix)})
    return meta, arrays


COMPONENTS = [
    ("generic", "schedule"),
    ("generic", "detectors.hst"),
    ("generic", "detectors.iforest"),
    ("generic", "detectors.lof"),
    ("generic", "calibrators"),
    ("generic", "combined"),
    ("generic", "weights"),
    ("generic", "clean"),
    ("generic", "reference"),
    ("transactions", "profile"),
    ("interactions", "profile"),
    ("interactions", "recommender"),
]


@cache
def _cut_state(name: str) -> tuple[int, list[Step], State, State]:
    """A cut point of the set-up, the steps before it, the state there, and a new processor's."""
    cfg, events = case(name)
    # Before the refit at 1500, so that the refit window matters. For the generic set-up (the one
    # whose typical ranges are tested) just after an alert that is followed by another before the
    # next refresh point, so that the ranges worked out for the first explain the second.
    alerted = np.flatnonzero(uninterrupted(name)["alerted"])
    after_alert = (
        int(p) + 1
        for p, q in pairwise(alerted)
        if 700 <= p < 1400 and q < (p // cfg.refresh_every + 1) * cfg.refresh_every
    )
    cut = next(after_alert, None) if name == "generic" else 1111
    assert cut is not None, "no alert followed by another before the next refresh point"
    with Processor(cfg) as first, Processor(cfg) as new:
        head = drive(first, events, 0, cut, (cut,))
        state, fresh = first.state(), new.state()
    with Processor.from_state(cfg, *state) as whole:
        tail = drive(whole, events, cut, len(events), (cut,))
    assert differences(outputs(head + tail), uninterrupted(name, (cut,))) == []
    return cut, head, state, fresh


@pytest.mark.parametrize(("name", "component"), COMPONENTS)
def test_every_piece_of_the_state_matters(name: str, component: str) -> None:
    cfg, events = case(name)
    cut, head, state, fresh = _cut_state(name)
    with Processor.from_state(cfg, *_fresh(component, state, fresh)) as proc:
        got = outputs(head + drive(proc, events, cut, len(events), (cut,)))
    assert differences(got, uninterrupted(name, (cut,))), f"the outputs do not depend on {component}"


def test_the_components_cover_the_whole_state() -> None:
    cfg, events = case("interactions")
    with Processor(cfg) as proc:
        proc.process(events[:700])
        meta, arrays = proc.state()
    covered = {c.partition(".")[0] for _, c in COMPONENTS}
    assert {k.split(".")[0] for k in arrays} <= covered
    # Identification, not state: the layout version, the settings and library versions it was
    # taken under, the feature names and the model versions for people.
    assert set(meta) - covered == {"format", "settings", "libraries", "feature_names", "model_versions"}


# -- refused states --------------------------------------------------------------------------------


@cache
def _early_state() -> State:
    cfg, events = case("transactions")
    with Processor(cfg) as proc:
        proc.process(events[:650])
        return proc.state()


def test_state_taken_under_other_settings_is_refused_naming_each_one() -> None:
    cfg, _ = case("transactions")
    other = dataclasses.replace(cfg, threshold=0.9, seed=7)
    proc = Processor(other)
    with proc, pytest.raises(CheckpointError) as info:
        proc.restore(*_early_state())
    message = str(info.value)
    assert f"threshold=0.9 (the state's: {cfg.threshold})" in message
    assert "seed=7 (the state's: 42)" in message
    assert "reset the state" in message and "state's settings" in message
    assert proc.n_seen_ == 0  # left as it was


def test_runtime_settings_may_change_between_runs() -> None:
    cfg, _ = case("transactions")
    assert {"group_id", "max_poll_records", "n_reasons", "bootstrap_servers"} <= RUNTIME_SETTINGS
    other = dataclasses.replace(cfg, group_id="elsewhere", max_poll_records=17, n_reasons=1)
    with Processor.from_state(other, *_early_state()) as proc:
        assert proc.n_seen_ == 650


def test_another_scikit_learn_version_is_refused() -> None:
    cfg, _ = case("transactions")
    meta, arrays = _early_state()
    meta = {**meta, "libraries": {"scikit-learn": "0.1"}}
    with Processor(cfg) as proc, pytest.raises(CheckpointError, match=r"scikit-learn 0\.1"):
        proc.restore(meta, arrays)


@pytest.mark.parametrize("damage", ["missing-array", "wrong-shape", "unknown-format"])
def test_damaged_state_is_refused_and_leaves_the_processor_as_it_was(damage: str) -> None:
    cfg, events = case("transactions")
    meta, arrays = copy.deepcopy(_early_state()[0]), dict(_early_state()[1])
    if damage == "missing-array":
        del arrays["clean.rows"]
    elif damage == "wrong-shape":
        arrays["weights.weights"] = np.ones(5)
    else:
        meta["format"] = 99
    with Processor(cfg) as proc:
        before = proc.process(events[:300]).scores
        with pytest.raises(CheckpointError):
            proc.restore(meta, arrays)
        assert proc.n_seen_ == 300
        proc.process(events[300:400])
    with Processor(cfg) as twin:
        assert np.array_equal(twin.process(events[:300]).scores, before, equal_nan=True)


def test_river_half_space_trees_cannot_be_saved() -> None:
    cfg = dataclasses.replace(case("generic")[0], hst_implementation="river")
    with Processor(cfg) as proc, pytest.raises(CheckpointError, match="hst_implementation='numpy'"):
        proc.state()


class _GatedExecutor(ThreadPoolExecutor):
    """Fits that only finish when the test opens the gate."""

    def __init__(self) -> None:
        super().__init__(1)
        self.gate = threading.Event()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        def gated() -> T:
            self.gate.wait(30)
            return fn(*args, **kwargs)

        return super().submit(gated)


def test_no_state_while_events_are_held_back_at_a_swap_point() -> None:
    cfg, events = case("generic")
    executor = _GatedExecutor()
    try:
        with Processor(cfg, executor=executor) as proc:
            step = proc.process(events[:800], wait=0.01)
            assert step.pending and proc.has_pending
            with pytest.raises(RuntimeError, match="held back at a model swap point"):
                proc.state()
            executor.gate.set()
            proc.process([])
            assert not proc.has_pending
            assert proc.state()[0]["schedule"]["n_seen"] == 800
    finally:
        executor.gate.set()
        executor.shutdown()


# -- refit detectors -------------------------------------------------------------------------------

REFIT = {
    "iforest": partial(SklearnDetector, "iforest", isolation_forest, compile=CompiledIsolationForest),
    "lof": partial(SklearnDetector, "lof", local_outlier_factor),
}


@pytest.mark.parametrize("kind", sorted(REFIT))
def test_a_model_refit_from_its_saved_rows_and_seed_scores_identically(kind: str) -> None:
    rng = np.random.default_rng(5)
    X = rng.lognormal(size=(3000, 13))
    det = REFIT[kind]()
    det.begin_fit(X[:2000], seed=11)
    assert det.finish_fit()
    det.begin_fit(X[1000:], seed=12)  # pending: saved as rows and seed, begun again on restore
    meta, arrays = det.fit_state()
    assert json.loads(json.dumps(meta)) == meta and set(arrays) == {"train", "pending"}
    twin = REFIT[kind]()
    twin.load_fit_state(meta, arrays)
    Y = rng.lognormal(size=(1000, 13)) * rng.choice([1.0, 3.0], size=(1000, 1))
    assert twin.version == det.version == f"{kind}-1"
    assert np.array_equal(twin.score_learn_many(Y), det.score_learn_many(Y))
    assert twin.finish_fit() and det.finish_fit()
    assert twin.version == det.version == f"{kind}-2"
    assert np.array_equal(twin.score_learn_many(Y), det.score_learn_many(Y))
    # A model from other rows or another seed would not score the same: the test can fail.
    other = REFIT[kind]()
    other.load_fit_state({**twin.fit_state()[0], "seed": 13}, {"train": X[1001:]})
    assert not np.array_equal(other.score_learn_many(Y), det.score_learn_many(Y))
