"""Every detector goes through the same checks, the way River's ``checks`` and scikit-learn's
``parametrize_with_checks`` run every estimator through one suite."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import numpy as np
import pytest
from anomrec.streaming.detectors import (
    Detector,
    HalfSpaceTreesDetector,
    Refittable,
    SklearnDetector,
    isolation_forest,
    local_outlier_factor,
)
from anomrec.streaming.iforest import CompiledIsolationForest
from sklearn.metrics import roc_auc_score

NAMES = tuple(f"f{i}" for i in range(5))


def stream(seed: int = 0, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian rows with 3 % of rows shifted far out, and their labels."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, len(NAMES)))
    y = (rng.random(n) < 0.03).astype(int)
    X[y == 1] += rng.choice([-6.0, 6.0], size=(int(y.sum()), len(NAMES)))
    return X, y


FACTORIES: dict[str, Callable[[int], Detector]] = {
    "hst-numpy": lambda seed: HalfSpaceTreesDetector(NAMES, window_size=100, seed=seed),
    "hst-river": lambda seed: HalfSpaceTreesDetector(
        NAMES, window_size=100, seed=seed, implementation="river"
    ),
    "iforest": lambda seed: SklearnDetector("iforest", isolation_forest),
    "iforest-compiled": lambda seed: SklearnDetector(
        "iforest", isolation_forest, compile=CompiledIsolationForest
    ),
    "lof": lambda seed: SklearnDetector("lof", local_outlier_factor),
}
FIT_ROWS = 500


def drive(det: Detector, X: np.ndarray, seed: int, chunk: int = 250) -> np.ndarray:
    """Score ``X`` in chunks the way the core does: refit detectors are fitted on the first rows."""
    out = []
    for start in range(0, len(X), chunk):
        part = X[start : start + chunk]
        out.append(det.score_learn_many(part))
        if isinstance(det, Refittable) and start + chunk == FIT_ROWS:
            det.begin_fit(X[:FIT_ROWS], seed=seed)
            assert det.finish_fit()
    return np.concatenate(out)


@pytest.fixture(params=sorted(FACTORIES))
def make(request: pytest.FixtureRequest) -> Callable[[int], Detector]:
    return FACTORIES[request.param]


def test_follows_the_protocol(make: Callable[[int], Detector]) -> None:
    det = make(1)
    assert isinstance(det, Detector)
    assert isinstance(det.version, str) and det.version


def test_does_not_mutate_its_input(make: Callable[[int], Detector]) -> None:
    X, _ = stream()
    before = X.copy()
    drive(make(1), X, seed=1)
    assert np.array_equal(X, before)


def test_warms_up_with_nan_not_a_made_up_score(make: Callable[[int], Detector]) -> None:
    X, _ = stream()
    scores = drive(make(1), X, seed=1)
    assert np.isnan(scores[0])
    assert not np.isnan(scores[-500:]).any()


def test_same_seed_same_scores(make: Callable[[int], Detector]) -> None:
    X, _ = stream()
    a, b = drive(make(3), X, seed=3), drive(make(3), X, seed=3)
    assert np.array_equal(a, b, equal_nan=True)


def test_scores_do_not_depend_on_chunking(make: Callable[[int], Detector]) -> None:
    X, _ = stream()
    a, b = drive(make(3), X, seed=3, chunk=250), drive(make(3), X, seed=3, chunk=50)
    assert np.array_equal(a, b, equal_nan=True)


def test_snapshot_then_restore_gives_identical_scores(make: Callable[[int], Detector]) -> None:
    X, _ = stream()
    det = make(2)
    drive(det, X[:1000], seed=2)
    snap = pickle.loads(pickle.dumps(det.snapshot()))
    twin = make(2)
    twin.restore_state(snap)  # type: ignore[attr-defined]
    assert twin.version == det.version
    assert np.array_equal(det.score_learn_many(X[1000:]), twin.score_learn_many(X[1000:]))


def test_pickle_round_trip(make: Callable[[int], Detector]) -> None:
    X, _ = stream()
    det = make(2)
    drive(det, X[:1000], seed=2)
    clone = pickle.loads(pickle.dumps(det))
    assert np.array_equal(det.score_learn_many(X[1000:]), clone.score_learn_many(X[1000:]))


def test_higher_means_more_anomalous_auc_above_chance(make: Callable[[int], Detector]) -> None:
    X, y = stream(seed=5)
    scores = drive(make(1), X, seed=1)
    ok = ~np.isnan(scores)
    auc = roc_auc_score(y[ok], scores[ok])
    assert auc >= 0.5
    # On this easy stream every detector should be far above chance; a flipped sign would be far below.
    assert auc > 0.9, auc


def test_compiled_isolation_forest_scores_like_scikit_learn() -> None:
    X, _ = stream()
    plain = drive(FACTORIES["iforest"](1), X, seed=1)
    compiled = drive(FACTORIES["iforest-compiled"](1), X, seed=1)
    assert np.array_equal(plain, compiled, equal_nan=True)
