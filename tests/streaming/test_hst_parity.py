"""anomrec.streaming.hst.HalfSpaceTrees gives River's scores exactly, whatever the batch sizes.

The reference is River's ``MinMaxScaler | HalfSpaceTrees`` pipeline, scored then learnt one event at
a time. River per event is the slow part (and at 25 trees of height 15 its first ``learn_one``
alone builds 800,000 nodes in Python, about 30 s), so each reference stream is computed once per
module and shared by every batch size, and that slowest reference runs in a forked worker from the
start of the module, next to the other tests, on the second core.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from multiprocessing.pool import AsyncResult

import numpy as np
import pytest
from anomrec.streaming.hst import HalfSpaceTrees
from hypothesis import given, settings
from hypothesis import strategies as st
from river import anomaly, compose, datasets, preprocessing

# Not in sorted order, with case and digits that sort unlike their position: River draws split
# features in sorted-name order, so a model that used the column order would fail.
NAMES = ("zeta", "amount", "Bravo", "b10", "b2", "const", "_under", "late", "mid")
BATCH_SIZES = (1, 7, 100, 250, 1000, 4096)
WINDOW = 250
N_EVENTS = 20_000
DEEP = {"n_trees": 25, "height": 15}  # River's cost per event grows with both
N_EVENTS_DEEP = 2_400


def synthetic(n: int, seed: int = 7) -> np.ndarray:
    """Drift, rare outliers, repeated values, a constant column and bounds that keep moving."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / n
    X = np.empty((n, len(NAMES)))
    X[:, 0] = rng.normal(10.0 + 5.0 * t, 1.0)  # drifting mean
    X[:, 1] = rng.lognormal(3.0, 0.5, n)
    X[rng.random(n) < 0.003, 1] *= 50.0  # occasional outliers
    X[:, 2] = rng.integers(0, 4, n)  # four repeated values
    X[:, 3] = np.round(rng.normal(0.0, 2.0, n), 1)  # repeated, rounded values
    X[:, 4] = np.where(t < 0.5, rng.uniform(0.0, 1.0, n), rng.uniform(2.0, 3.0, n))  # regime shift
    X[:, 5] = 3.0  # constant: min == max, scales to 0.0
    X[:, 6] = np.where(np.arange(n) < n // 4, -1.0, rng.standard_t(2, n))  # constant, then heavy tails
    X[:, 7] = np.cumsum(rng.normal(0.0, 1.0, n))  # random walk: new bounds keep arriving
    X[:, 8] = 0.5 * X[:, 0] + rng.normal(0.0, 0.1, n)
    X[::1000] = X[1::1000]  # exact repeats of the next row
    return X


def shuttle(n: int) -> np.ndarray:
    """River's bundled Shuttle rows (integers), columns in reverse name order (f9 ... f1)."""
    rows = [x for x, _ in datasets.Shuttle().take(n)]
    return np.array([[row[f"f{j}"] for j in range(9, 0, -1)] for row in rows], dtype=np.float64)


SHUTTLE_NAMES = tuple(f"f{j}" for j in range(9, 0, -1))


def river_pipeline(n_trees: int, height: int, window_size: int = WINDOW, seed: int = 42) -> compose.Pipeline:
    return compose.Pipeline(
        preprocessing.MinMaxScaler(),
        anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed),
    )


def river_scores(X: np.ndarray, names: tuple[str, ...], **hst: int) -> np.ndarray:
    """River's pipeline on each row as a dict: score_one, then learn_one."""
    model = river_pipeline(**hst)
    scores = np.empty(len(X))
    for i, row in enumerate(X.tolist()):
        x = dict(zip(names, row, strict=True))
        scores[i] = model.score_one(x)
        model.learn_one(x)
    return scores


def batches(X: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(X), size):
        yield X[start : start + size]


def ours(X: np.ndarray, names: tuple[str, ...], batch_size: int, **hst: int) -> np.ndarray:
    model = HalfSpaceTrees(names, window_size=WINDOW, **hst)
    return np.concatenate([model.score_learn_many(b) for b in batches(X, batch_size)])


# -- streams and their River references, computed once ------------------------------------------


@pytest.fixture(scope="module")
def synthetic_stream() -> np.ndarray:
    return synthetic(N_EVENTS)


@pytest.fixture(scope="module")
def shuttle_stream() -> np.ndarray:
    return shuttle(N_EVENTS)


@pytest.fixture(scope="module")
def synthetic_reference(synthetic_stream: np.ndarray) -> np.ndarray:
    return river_scores(synthetic_stream, NAMES, n_trees=10, height=8)


@pytest.fixture(scope="module")
def shuttle_reference(shuttle_stream: np.ndarray) -> np.ndarray:
    return river_scores(shuttle_stream, SHUTTLE_NAMES, n_trees=10, height=8)


@pytest.fixture(scope="module")
def deep_stream(synthetic_stream: np.ndarray, shuttle_stream: np.ndarray) -> np.ndarray:
    """Synthetic rows, then Shuttle rows in the same columns: every bound jumps mid-stream."""
    half = N_EVENTS_DEEP // 2
    return np.concatenate([synthetic_stream[:half], shuttle_stream[:half]])


@pytest.fixture(scope="module", autouse=True)
def deep_reference_job(request: pytest.FixtureRequest) -> Iterator[AsyncResult[np.ndarray] | None]:
    """River's 25-tree reference, started in a forked worker when the module starts (if needed)."""
    if not any("deep_reference" in getattr(item, "fixturenames", ()) for item in request.session.items):
        yield None
        return
    stream = request.getfixturevalue("deep_stream")
    pool = multiprocessing.get_context("fork").Pool(1)
    try:
        yield pool.apply_async(river_scores, (stream, NAMES), DEEP)
    finally:
        pool.terminate()
        pool.join()


@pytest.fixture(scope="module")
def deep_reference(deep_reference_job: AsyncResult[np.ndarray] | None, deep_stream: np.ndarray) -> np.ndarray:
    if deep_reference_job is None:  # pragma: no cover - only when the fixture is used unlisted
        return river_scores(deep_stream, NAMES, **DEEP)
    return deep_reference_job.get(timeout=500)


def test_references_are_not_trivial(synthetic_reference: np.ndarray, shuttle_reference: np.ndarray) -> None:
    """The streams exercise the model: zeros only in the first window, then many distinct scores."""
    for reference in (synthetic_reference, shuttle_reference):
        assert np.all(reference[:WINDOW] == 0.0)
        assert np.all(reference[WINDOW:] > 0.0)
        assert np.unique(reference[WINDOW:]).size > 200


# -- exact parity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_synthetic_parity_10_trees_height_8(
    batch_size: int, synthetic_stream: np.ndarray, synthetic_reference: np.ndarray
) -> None:
    scores = ours(synthetic_stream, NAMES, batch_size, n_trees=10, height=8)
    assert scores.dtype == np.float64 and scores.shape == (N_EVENTS,)
    assert np.array_equal(scores, synthetic_reference), np.flatnonzero(scores != synthetic_reference)[:10]


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_shuttle_parity_10_trees_height_8(
    batch_size: int, shuttle_stream: np.ndarray, shuttle_reference: np.ndarray
) -> None:
    scores = ours(shuttle_stream, SHUTTLE_NAMES, batch_size, n_trees=10, height=8)
    assert np.array_equal(scores, shuttle_reference), np.flatnonzero(scores != shuttle_reference)[:10]


def test_uneven_batches_cross_windows(synthetic_stream: np.ndarray, synthetic_reference: np.ndarray) -> None:
    """Batches of changing sizes, some empty, some spanning several windows."""
    model = HalfSpaceTrees(NAMES, n_trees=10, height=8, window_size=WINDOW)
    sizes = [0, 1, 249, 250, 251, 0, 3, 997, 2, 1300, 5, 499]
    scores: list[np.ndarray] = []
    start = 0
    while start < N_EVENTS:
        size = sizes[len(scores) % len(sizes)]
        scores.append(model.score_learn_many(synthetic_stream[start : start + size]))
        start += size
    assert np.array_equal(np.concatenate(scores), synthetic_reference)


def test_edge_values_match_river() -> None:
    """inf, -inf, NaN, -0.0, a single all-constant feature and one-event windows, as River."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 3))
    X[40, 0], X[80, 1], X[120, 2] = np.inf, -np.inf, np.nan
    X[:25, 2] = np.nan  # no bound at all yet for this feature
    X[::7, 1] = -0.0
    names = ("c", "a", "B")
    for window in (1, 2, 20):
        reference = river_scores(X, names, n_trees=4, height=5, window_size=window, seed=9)
        for size in (1, 13, 300):
            model = HalfSpaceTrees(names, n_trees=4, height=5, window_size=window, seed=9)
            scores = np.concatenate([model.score_learn_many(b) for b in batches(X, size)])
            assert np.array_equal(scores, reference, equal_nan=True), (window, size)
    one_feature = np.round(rng.normal(size=(200, 1)), 1)
    reference = river_scores(one_feature, ("x",), n_trees=3, height=4, window_size=10, seed=1)
    model = HalfSpaceTrees(("x",), n_trees=3, height=4, window_size=10, seed=1)
    assert np.array_equal(model.score_learn_many(one_feature), reference)


# -- score_many, learn_many, the _one methods -----------------------------------------------------


def test_score_many_is_score_one_without_learning(synthetic_stream: np.ndarray) -> None:
    learnt, probes = synthetic_stream[:3333], synthetic_stream[3333:3833].copy()
    probes[::50] *= 3.0  # some outside the learnt range
    river = river_pipeline(10, 8)
    for row in learnt.tolist():
        river.learn_one(dict(zip(NAMES, row, strict=True)))
    expected = np.array([river.score_one(dict(zip(NAMES, row, strict=True))) for row in probes.tolist()])

    model = HalfSpaceTrees(NAMES, n_trees=10, height=8)
    assert np.array_equal(model.score_many(probes), np.zeros(len(probes)))  # nothing learnt yet
    for batch in batches(learnt, 1000):
        model.learn_many(batch)
    assert np.array_equal(model.score_many(probes), expected)
    assert [model.score_one(p) for p in probes[:20].tolist()] == expected[:20].tolist()
    assert np.array_equal(model.score_many(probes), expected)  # scoring learnt nothing


def test_one_at_a_time_methods(synthetic_stream: np.ndarray, synthetic_reference: np.ndarray) -> None:
    model = HalfSpaceTrees(NAMES, n_trees=10, height=8)
    scores = []
    for x in synthetic_stream[:700].tolist():  # plain lists work too
        scores.append(model.score_one(x))
        model.learn_one(x)
    assert all(type(s) is float for s in scores)
    assert scores == synthetic_reference[:700].tolist()
    assert np.array_equal(model.score_learn_many(synthetic_stream[700:1500]), synthetic_reference[700:1500])


# -- state, inputs, seeds ---------------------------------------------------------------------------


def _plain(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return value.dtype != object
    return value is None or type(value) in (str, int, float, bool)


@pytest.mark.parametrize("cut", [0, 1, 250, 3333, 5000])
def test_snapshot_restore_mid_stream(
    cut: int, synthetic_stream: np.ndarray, synthetic_reference: np.ndarray
) -> None:
    model = HalfSpaceTrees(NAMES, n_trees=10, height=8)
    before = [model.score_learn_many(b) for b in batches(synthetic_stream[:cut], 1000)]
    snapshot = model.snapshot()
    assert _plain(snapshot)
    restored = HalfSpaceTrees.restore(snapshot)
    rest = synthetic_stream[cut : cut + 3000]
    after_original = model.score_learn_many(rest)  # the original goes on; the snapshot must not move
    after_restored = np.concatenate([restored.score_learn_many(b) for b in batches(rest, 777)])
    again = HalfSpaceTrees.restore(snapshot).score_learn_many(rest)
    expected = synthetic_reference[cut : cut + 3000]
    assert np.array_equal(after_original, expected)
    assert np.array_equal(after_restored, expected)
    assert np.array_equal(again, expected)
    assert np.array_equal(np.concatenate([*before, after_restored]), synthetic_reference[: cut + 3000])
    assert restored.version == model.version


def test_snapshot_rejects_wrong_shapes(synthetic_stream: np.ndarray) -> None:
    model = HalfSpaceTrees(NAMES, n_trees=3, height=4, window_size=10)
    model.learn_many(synthetic_stream[:50])
    snapshot = model.snapshot()
    snapshot["state"]["reference_mass"] = snapshot["state"]["reference_mass"][:, :-1]
    with pytest.raises(ValueError, match="reference_mass"):
        HalfSpaceTrees.restore(snapshot)


def test_input_is_not_mutated(synthetic_stream: np.ndarray) -> None:
    X = synthetic_stream[:1200].copy()
    X.flags.writeable = False  # any write raises
    model = HalfSpaceTrees(NAMES, n_trees=10, height=8)
    model.score_learn_many(X)
    model.score_many(X)
    model.learn_many(X)
    model.score_learn_many(X[::-1])
    assert np.array_equal(X, synthetic_stream[:1200])


def test_seeds(synthetic_stream: np.ndarray, synthetic_reference: np.ndarray) -> None:
    X = synthetic_stream[:2000]
    same = HalfSpaceTrees(NAMES, n_trees=10, height=8, seed=42).score_learn_many(X)
    assert np.array_equal(same, synthetic_reference[:2000])
    other = HalfSpaceTrees(NAMES, n_trees=10, height=8, seed=43).score_learn_many(X)
    assert not np.array_equal(other[WINDOW:], same[WINDOW:])
    assert np.array_equal(other, river_scores(X, NAMES, n_trees=10, height=8, seed=43))


def test_version_is_stable_and_names_the_settings(synthetic_stream: np.ndarray) -> None:
    model = HalfSpaceTrees(NAMES, n_trees=10, height=8)
    version = model.version
    model.score_learn_many(synthetic_stream[:600])
    assert model.version == version == HalfSpaceTrees(NAMES).version
    assert version.startswith("hst")
    assert HalfSpaceTrees(NAMES, height=9).version != version
    assert HalfSpaceTrees(NAMES, seed=1).version != version


def test_bad_input_and_settings() -> None:
    model = HalfSpaceTrees(("a", "b"))
    with pytest.raises(ValueError, match="2 features"):
        model.score_learn_many(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="2 features"):
        model.score_many(np.zeros(2))
    with pytest.raises(ValueError, match="unique"):
        HalfSpaceTrees(("a", "a"))
    with pytest.raises(ValueError, match="window_size"):
        HalfSpaceTrees(("a",), window_size=0)
    assert model.score_learn_many(np.zeros((0, 2))).shape == (0,)
    assert not model.fitted  # nothing learnt, no trees


# -- any split of the stream, as a property ----------------------------------------------------------

PROPERTY_SETTINGS = {"n_trees": 3, "height": 5, "window_size": 10, "seed": 11}


@pytest.fixture(scope="module")
def property_stream() -> tuple[np.ndarray, np.ndarray]:
    X = synthetic(240, seed=5)
    return X, river_scores(X, NAMES, **PROPERTY_SETTINGS)


@settings(max_examples=50)
@given(
    sizes=st.lists(st.integers(0, 40), min_size=1, max_size=25),
    peeks=st.lists(st.booleans(), min_size=1, max_size=25),
)
def test_any_batch_split_gives_the_same_scores(
    property_stream: tuple[np.ndarray, np.ndarray], sizes: list[int], peeks: list[bool]
) -> None:
    """Random batch sizes (some empty), with score_many peeks between batches that learn nothing."""
    X, reference = property_stream
    model = HalfSpaceTrees(NAMES, **PROPERTY_SETTINGS)
    scores: list[np.ndarray] = []
    start = i = 0
    while start < len(X):
        size = sizes[i % len(sizes)] or (1 if all(s == 0 for s in sizes) else 0)
        batch = X[start : start + size]
        if peeks[i % len(peeks)] and len(batch):
            # the first row's score without learning equals its prequential score
            assert model.score_many(batch[:3])[0] == reference[start]
        scores.append(model.score_learn_many(batch))
        start += len(batch)
        i += 1
    assert np.array_equal(np.concatenate(scores), reference)


def test_max_score_limit() -> None:
    """River's float sums of integer masses are exact below 2 ** 53; larger settings are refused."""
    with pytest.raises(ValueError, match="too large"):
        HalfSpaceTrees(("a",), n_trees=2**20, height=30, window_size=2**10)
    big = HalfSpaceTrees(
        ("a",), n_trees=1, height=40, window_size=2**11
    )  # max_score 2 ** 52 - 2 ** 11: accepted
    assert big.score_one([1.0]) == 0.0  # nothing learnt: River's first-window score, without any work
    assert not big.fitted


# -- last, so that the forked worker has had the other tests' time to build River's trees -----------


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_parity_25_trees_height_15(
    batch_size: int, deep_stream: np.ndarray, deep_reference: np.ndarray
) -> None:
    assert np.all(deep_reference[:WINDOW] == 0.0) and np.unique(deep_reference[WINDOW:]).size > 200
    scores = ours(deep_stream, NAMES, batch_size, **DEEP)
    assert np.array_equal(scores, deep_reference), np.flatnonzero(scores != deep_reference)[:10]
