"""CompiledIsolationForest gives scikit-learn's IsolationForest.score_samples, to the last bit.

Every comparison is exact (``assert_array_equal``): the compiled forest repeats scikit-learn's
floating-point operations in the same order, so any difference, even of one ulp, is a bug.
"""

from __future__ import annotations

import copy
import pickle
import warnings
from typing import Any

import numpy as np
import pytest
from anomrec.streaming import iforest
from anomrec.streaming.iforest import CompiledIsolationForest, average_path_length
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal
from sklearn.ensemble import IsolationForest

METHODS = ("bitvector", "levelwise")


def awkward_data(rng: np.random.Generator, n: int) -> np.ndarray:
    """Columns that stress the comparison: duplicates, a constant, extreme scales, heavy tails."""
    return np.column_stack(
        [
            rng.normal(size=n),
            rng.integers(0, 4, size=n).astype(float),  # few distinct values: many duplicates
            np.full(n, 3.25),  # constant: never split on
            rng.normal(size=n) * 1e30,
            rng.normal(size=n) * 1e-30,
            rng.standard_cauchy(size=n),  # heavy tails: thresholds crowd near 0, far outliers
            rng.exponential(size=n) + 1e6,  # float32 spacing 0.0625 at 1e6: float64 rounding matters
            rng.uniform(-1, 1, size=n),
        ]
    )


def batch_for(rng: np.random.Generator, X_train: np.ndarray) -> np.ndarray:
    """Training rows, fresh rows, rows far outside the training range and rows mixing both."""
    fresh = awkward_data(rng, 300)
    far = fresh * rng.choice([-1e3, 1e3], size=fresh.shape)
    mixed = X_train[:200].copy()
    mask = rng.random(mixed.shape) < 0.3
    mixed[mask] = far[:200][mask]
    return np.concatenate([X_train[:300], fresh, far, mixed])


def score(forest: IsolationForest, X: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # float64 beyond float32 range -> inf
        return forest.score_samples(X)


FORESTS: dict[str, dict[str, Any]] = {
    "default": {},
    "one tree, 16 samples": {"n_estimators": 1, "max_samples": 16},
    "float max_samples, half the features": {"n_estimators": 7, "max_samples": 0.5, "max_features": 0.5},
    "int max_features, bootstrap": {"n_estimators": 20, "max_features": 3, "bootstrap": True},
    "deep trees (2 to 5 words each)": {"n_estimators": 30, "max_samples": 1500},
    "contamination": {"n_estimators": 25, "contamination": 0.1, "max_features": 0.75},
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", FORESTS)
def test_matches_sklearn_exactly(name: str, method: str) -> None:
    rng = np.random.default_rng(len(name))
    X_train = awkward_data(rng, 2000)
    forest = IsolationForest(random_state=len(name), **FORESTS[name]).fit(X_train)
    compiled = CompiledIsolationForest(forest, method=method)
    assert compiled.method_ == method
    X = batch_for(rng, X_train)
    expected = score(forest, X)
    got = compiled.score_samples(X)
    assert got.dtype == np.float64 and got.shape == (len(X),)
    assert_array_equal(got, expected)
    assert np.allclose(got, expected, rtol=1e-12, atol=0)


def test_feature_subsets_matter() -> None:
    """Guard for the test above: with max_features < 1 the trees index different columns."""
    rng = np.random.default_rng(1)
    forest = IsolationForest(n_estimators=7, max_features=0.5, random_state=1).fit(awkward_data(rng, 500))
    assert forest._max_features < forest.n_features_in_
    subsets = {tuple(features) for features in forest.estimators_features_}
    assert len(subsets) > 1 and all(len(s) == forest._max_features for s in subsets)


def node_thresholds(forest: IsolationForest) -> list[tuple[int, float]]:
    """(column of X, threshold) of every split node of the forest."""
    out = []
    subsample = forest._max_features != forest.n_features_in_
    for est, features in zip(forest.estimators_, forest.estimators_features_, strict=True):
        tree = est.tree_
        for node in np.flatnonzero(tree.children_left >= 0):
            column = int(features[tree.feature[node]]) if subsample else int(tree.feature[node])
            out.append((column, float(tree.threshold[node])))
    return out


@pytest.mark.parametrize("method", METHODS)
def test_values_at_and_next_to_thresholds(method: str) -> None:
    """Values on thresholds, one float64 ulp off, and float32 neighbours: sklearn compares float32."""
    rng = np.random.default_rng(7)
    X_train = awkward_data(rng, 1500)
    forest = IsolationForest(n_estimators=40, max_features=0.75, random_state=3).fit(X_train)
    columns, thresholds, values = [], [], []
    for column, t in node_thresholds(forest):
        t32 = np.float32(t)
        for value in (
            t,
            np.nextafter(t, np.inf),
            np.nextafter(t, -np.inf),
            float(t32),
            float(np.nextafter(t32, np.float32(np.inf))),
            float(np.nextafter(t32, np.float32(-np.inf))),
        ):
            columns.append(column)
            thresholds.append(t)
            values.append(value)
    X = X_train[rng.integers(len(X_train), size=len(values))]
    X[np.arange(len(X)), columns] = values
    # The batch holds many values that float32 rounding sends the other way than float64 would.
    v, t = np.array(values), np.array(thresholds)
    assert np.count_nonzero((v.astype(np.float32).astype(np.float64) <= t) != (v <= t)) > 100
    assert_array_equal(CompiledIsolationForest(forest, method=method).score_samples(X), score(forest, X))


@pytest.mark.parametrize("method", METHODS)
def test_values_equal_to_thresholds(method: str) -> None:
    """``x <= threshold`` goes left when equal, in both rank paths (buckets and binary search).

    Fitted thresholds are random doubles, almost never float32 values, so a float32 input is never
    equal to one. Here the thresholds of a copy of the forest are rounded to float32 (through the
    trees' pickled state, so that sklearn scores with them too) and the batch hits them exactly.
    """
    rng = np.random.default_rng(12)
    X_train = np.column_stack([rng.normal(size=2000), rng.standard_cauchy(size=2000) ** 3])
    forest = IsolationForest(n_estimators=40, max_samples=512, random_state=0).fit(X_train)
    for est in forest.estimators_:
        state = est.tree_.__getstate__()
        nodes = state["nodes"].copy()
        nodes["threshold"] = nodes["threshold"].astype(np.float32).astype(np.float64)
        est.tree_.__setstate__({**state, "nodes": nodes})
    compiled = CompiledIsolationForest(forest, method=method)
    if method == "bitvector":  # white box: both rank paths are exercised
        assert len(compiled._engine._rank._searched) == 1 and len(compiled._engine._rank._bucketed) == 1
    columns, values = zip(*node_thresholds(forest), strict=True)
    X = X_train[rng.integers(len(X_train), size=len(values))]
    X[np.arange(len(X)), columns] = values
    assert_array_equal(compiled.score_samples(X), score(forest, X))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("nan_in_training", [False, True])
def test_nan_and_infinite_values(method: str, nan_in_training: bool) -> None:
    """NaN follows missing_go_to_left; ±inf and float64 beyond the float32 range go to the ends."""
    rng = np.random.default_rng(11)
    X_train = awkward_data(rng, 1500)
    if nan_in_training:
        X_train[rng.random(X_train.shape) < 0.1] = np.nan
    forest = IsolationForest(n_estimators=30, random_state=5).fit(X_train)
    missing_left = np.concatenate([e.tree_.missing_go_to_left[e.tree_.children_left >= 0] for e in forest])
    assert missing_left.any() and not missing_left.all()  # both directions occur
    X = awkward_data(rng, 600)
    specials = np.array([np.nan, np.inf, -np.inf, 1e300, -1e300, 3.5e38, -3.5e38])
    mask = rng.random(X.shape) < 0.25
    X[mask] = rng.choice(specials, size=int(mask.sum()))
    X[0] = np.nan
    assert_array_equal(CompiledIsolationForest(forest, method=method).score_samples(X), score(forest, X))


def test_heavy_tailed_features_use_binary_search() -> None:
    """Thresholds crowded into one affine bucket take the searchsorted path; scores stay exact."""
    rng = np.random.default_rng(2)
    X_train = np.column_stack([rng.standard_cauchy(size=3000) ** 3, rng.normal(size=3000)])
    forest = IsolationForest(n_estimators=50, max_samples=1024, random_state=0).fit(X_train)
    compiled = CompiledIsolationForest(forest, method="bitvector")
    assert len(compiled._engine._rank._searched) == 1  # white box: the path under test is taken
    X = np.concatenate([X_train[:500], rng.standard_cauchy(size=(500, 2)) ** 3])
    assert_array_equal(compiled.score_samples(X), score(forest, X))


@pytest.mark.parametrize("method", METHODS)
def test_single_rows_small_chunks_and_blocks(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One row at a time (where numpy's reduce would sum pairwise), odd chunks, several blocks."""
    rng = np.random.default_rng(4)
    X_train = awkward_data(rng, 2000)
    forest = IsolationForest(n_estimators=100, random_state=9).fit(X_train)
    X = batch_for(rng, X_train)[::3]
    expected = score(forest, X)
    compiled = CompiledIsolationForest(forest, method=method)
    single = np.concatenate([compiled.score_samples(X[i : i + 1]) for i in range(len(X))])
    assert_array_equal(single, expected)
    compiled.chunk_rows = 7
    monkeypatch.setattr(iforest, "_BLOCK_ROWS", 50)
    assert_array_equal(compiled.score_samples(X), expected)


@pytest.mark.parametrize("method", METHODS)
def test_degenerate_forests(method: str) -> None:
    """Trees that are a single leaf: one training row (the denominator is 0), constant data."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(50, 3))
    one_row = IsolationForest(n_estimators=5, random_state=0).fit(X[:1])
    constant = IsolationForest(n_estimators=5, random_state=0).fit(np.ones((100, 3)))
    for forest in (one_row, constant):
        compiled = CompiledIsolationForest(forest, method=method)
        assert_array_equal(compiled.score_samples(X), score(forest, X))


@pytest.mark.parametrize("method", METHODS)
def test_input_is_never_modified(method: str) -> None:
    rng = np.random.default_rng(6)
    X_train = awkward_data(rng, 1000)
    forest = IsolationForest(n_estimators=20, random_state=0).fit(X_train)
    compiled = CompiledIsolationForest(forest, method=method)
    base = batch_for(rng, X_train)
    base[::17, 3] = np.nan
    inputs = [
        base,
        base.astype(np.float32),
        np.asfortranarray(base),
        base[::2, :],
        rng.integers(-5, 5, size=base.shape),
    ]
    read_only = base.copy()
    read_only.flags.writeable = False
    inputs.append(read_only)
    for X in inputs:
        before, flags = X.copy(order="K"), {k: X.flags[k] for k in ("C", "F", "W", "O")}
        got = compiled.score_samples(X)
        assert_array_equal(X, before)  # NaN-aware: NaN in the same places counts as equal
        assert X.dtype == before.dtype and {k: X.flags[k] for k in ("C", "F", "W", "O")} == flags
        assert_array_equal(got, score(forest, X))
    as_list = base[:20].tolist()
    assert_array_equal(compiled.score_samples(as_list), score(forest, np.array(as_list)))


def _plain(value: object) -> bool:
    """True when ``value`` holds only numpy arrays, numbers, strings and containers of those."""
    if isinstance(value, np.ndarray):
        return value.dtype != object
    if isinstance(value, (int, float, str, bool, np.generic, type(None))):
        return True
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    if type(value).__module__ == iforest.__name__:
        return all(_plain(v) for v in vars(value).values())
    return False


@pytest.mark.parametrize("method", METHODS)
def test_pickle_and_deepcopy_round_trip(method: str) -> None:
    rng = np.random.default_rng(8)
    X_train = awkward_data(rng, 1000)
    forest = IsolationForest(n_estimators=25, max_features=0.5, random_state=0).fit(X_train)
    compiled = CompiledIsolationForest(forest, method=method)
    assert _plain(compiled)  # no reference to the estimator or anything else that pickles badly
    X = batch_for(rng, X_train)
    expected = score(forest, X)
    for clone in (copy.deepcopy(compiled), pickle.loads(pickle.dumps(compiled))):
        assert clone is not compiled and clone.method_ == method
        assert_array_equal(clone.score_samples(X), expected)
    assert_array_equal(compiled.score_samples(X), expected)


def test_auto_falls_back_to_levelwise_when_the_table_is_too_big() -> None:
    rng = np.random.default_rng(3)
    X_train = awkward_data(rng, 500)
    forest = IsolationForest(n_estimators=10, random_state=0).fit(X_train)
    assert CompiledIsolationForest(forest).method_ == "bitvector"
    small = CompiledIsolationForest(forest, max_table_bytes=1000)
    assert small.method_ == "levelwise"
    X = batch_for(rng, X_train)
    assert_array_equal(small.score_samples(X), score(forest, X))


def test_empty_batch_and_bad_input() -> None:
    rng = np.random.default_rng(0)
    forest = IsolationForest(n_estimators=5, random_state=0).fit(rng.normal(size=(100, 3)))
    compiled = CompiledIsolationForest.from_estimator(forest)
    assert compiled.score_samples(np.empty((0, 3))).shape == (0,)
    for bad in (np.zeros(3), np.zeros((2, 4)), np.zeros((2, 3), dtype=complex), np.array([["a"] * 3])):
        with pytest.raises(ValueError):
            compiled.score_samples(bad)
    with pytest.raises(ValueError, match="not fitted"):
        CompiledIsolationForest(IsolationForest())
    with pytest.raises(ValueError, match="method"):
        CompiledIsolationForest(forest, method="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_rows"):
        CompiledIsolationForest(forest, chunk_rows=0)


def test_average_path_length_is_sklearns() -> None:
    from sklearn.ensemble._iforest import _average_path_length

    n = np.arange(0, 5000)
    assert_array_equal(average_path_length(n), _average_path_length(n))
    assert_array_equal(average_path_length([256]), _average_path_length([256]))


@settings(max_examples=40)
@given(
    params=st.fixed_dictionaries(
        {
            "seed": st.integers(0, 2**32 - 1),
            "n_train": st.integers(2, 80),
            "n_features": st.integers(1, 4),
            "n_estimators": st.integers(1, 6),
            "max_samples": st.sampled_from(["auto", 0.5, 1.0, 3]),
            "max_features": st.sampled_from([1.0, 0.5]),
            "levels": st.integers(1, 6),
        }
    )
)
def test_property_random_forests(params: dict[str, Any]) -> None:
    """Small forests on data with few distinct values (ties everywhere), NaN and infinities."""
    rng = np.random.default_rng(params["seed"])
    n_train, n_features, max_samples = params["n_train"], params["n_features"], params["max_samples"]
    palette = rng.normal(size=params["levels"]) * 10.0 ** rng.integers(-3, 4)
    X_train = rng.choice(palette, size=(n_train, n_features))
    queries = np.concatenate([palette, palette + 1e-9, palette.astype(np.float32), [np.nan, np.inf, -np.inf]])
    X = rng.choice(queries, size=(40, n_features))
    forest = IsolationForest(
        n_estimators=params["n_estimators"],
        max_samples=min(max_samples, n_train) if isinstance(max_samples, int) else max_samples,
        max_features=params["max_features"],
        random_state=params["seed"] % 1000,
    ).fit(X_train)
    expected = score(forest, X)
    for method in METHODS:
        assert_array_equal(CompiledIsolationForest(forest, method=method).score_samples(X), expected)
