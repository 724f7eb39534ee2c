"""CompiledLOF scores a row the same, to the last bit, whatever batch it is in, and agrees with scikit-learn.

Batch independence is compared exactly (``array_equal``); agreement with scikit-learn's own
``score_samples`` only to ``rtol=1e-9``, since scikit-learn's distances go through BLAS and round
differently from the exact sums here.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from anomrec.streaming.detectors import SklearnDetector, local_outlier_factor
from anomrec.streaming.lof import CompiledLOF, _pairwise_sum
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import RobustScaler


def distinct_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Continuous training rows (no duplicates) and queries, some far out."""
    X = rng.normal(size=(800, 13)) * rng.uniform(0.1, 50, size=13) + rng.normal(size=13) * 100
    Q = np.vstack([rng.normal(size=(500, 13)) * 2, X[:100] + 1e-3]) * rng.uniform(0.1, 50, size=13)
    return X, Q


def duplicated_data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Training rows drawn from 40 distinct rows, most repeated more than k times, plus some noise."""
    base = rng.integers(0, 3, size=(40, 13)).astype(float)
    X = base[rng.integers(0, 40, size=1200)]
    noisy = rng.random(len(X)) < 0.3
    X[noisy] += rng.normal(size=(int(noisy.sum()), 13))
    Q = np.vstack([base[rng.integers(0, 40, size=300)], X[:300], rng.normal(size=(300, 13)) * 2])
    return X, Q


@pytest.fixture(params=["distinct", "duplicated"])
def fitted(request: pytest.FixtureRequest) -> tuple[object, CompiledLOF, np.ndarray]:
    rng = np.random.default_rng(7)
    X, Q = (distinct_data if request.param == "distinct" else duplicated_data)(rng)
    pipeline = local_outlier_factor(0).fit(X)
    return pipeline, CompiledLOF(pipeline), Q


def reference(compiled: CompiledLOF, Q: np.ndarray) -> np.ndarray:
    """The same computation in plain numpy, one row at a time (so no BLAS, no FMA)."""
    T = compiled._train_T.T
    out = np.empty(len(Q))
    k = compiled.n_neighbors_
    for r, row in enumerate(Q):
        x = (row - compiled._center) / compiled._scale
        d2 = np.zeros(len(T))
        for f in range(T.shape[1]):
            d2 += (x[f] - T[:, f]) ** 2
        nbr = np.argsort(d2, kind="stable")[:k]
        reach = np.maximum(np.sqrt(d2[nbr]), compiled._kdist[nbr])
        x_lrd = 1.0 / (np.mean(reach) + 1e-10)
        out[r] = -np.mean(compiled._lrd[nbr] / x_lrd)
    return out


@pytest.mark.parametrize("n", [1, 3, 7, 8, 9, 20, 64, 127, 128, 129, 300, 1001])
def test_pairwise_sum_is_numpys_order(n: int) -> None:
    rng = np.random.default_rng(n)
    a = rng.normal(size=n) * 10.0 ** rng.integers(-8, 9, size=n)  # magnitudes where order matters
    assert _pairwise_sum(a, 0, n) == np.add.reduce(a)
    assert _pairwise_sum(a, 0, n) / n == np.mean(a[None], axis=1)[0]


def test_same_score_whatever_the_batch(fitted: tuple[object, CompiledLOF, np.ndarray]) -> None:
    _, compiled, Q = fitted
    whole = compiled.score_samples(Q)
    for size in (1, 7, 337):
        parts = [compiled.score_samples(Q[i : i + size]) for i in range(0, len(Q), size)]
        assert np.array_equal(np.concatenate(parts), whole), size
    order = np.random.default_rng(0).permutation(len(Q))
    assert np.array_equal(compiled.score_samples(Q[order]), whole[order])


def test_matches_plain_numpy(fitted: tuple[object, CompiledLOF, np.ndarray]) -> None:
    _, compiled, Q = fitted
    assert np.array_equal(compiled.score_samples(Q[:200]), reference(compiled, Q[:200]))


def test_close_to_sklearn(fitted: tuple[object, CompiledLOF, np.ndarray]) -> None:
    pipeline, compiled, Q = fitted
    ours, theirs = compiled.score_samples(Q), pipeline.score_samples(Q)  # type: ignore[attr-defined]
    assert not np.isnan(ours).any()
    # With duplicates, a row at distance 0 where scikit-learn's cancellation says 1e-8 would
    # differ a lot; on these data it never happens, and scores agree to a few ulps everywhere.
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=0)


def test_query_equal_to_training_rows_and_duplicates() -> None:
    rng = np.random.default_rng(3)
    X = np.repeat(rng.normal(size=(30, 5)), 25, axis=0)  # every row 25 times, k = 20
    pipeline = local_outlier_factor(0).fit(X)
    compiled = CompiledLOF(pipeline)
    assert (compiled._kdist == 0).all()
    scores = compiled.score_samples(X[::25])
    assert not np.isnan(scores).any()
    np.testing.assert_allclose(scores, pipeline.score_samples(X[::25]), rtol=1e-9, atol=0)
    assert np.all(scores == -1.0)  # at the cluster: the same density as its neighbours


@pytest.mark.parametrize(
    ("centering", "scaling"), [(True, True), (False, True), (True, False), (False, False)]
)
def test_scaler_options(centering: bool, scaling: bool) -> None:
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 4)) * [1, 10, 100, 0.1] + 5
    pipeline = make_pipeline(
        RobustScaler(with_centering=centering, with_scaling=scaling),
        LocalOutlierFactor(n_neighbors=10, novelty=True, algorithm="brute"),
    ).fit(X)
    Q = rng.normal(size=(100, 4)) * [1, 10, 100, 0.1] * 2 + 5
    np.testing.assert_allclose(
        CompiledLOF(pipeline).score_samples(Q), pipeline.score_samples(Q), rtol=1e-9, atol=0
    )


def test_few_training_rows_caps_k() -> None:
    rng = np.random.default_rng(5)
    with pytest.warns(UserWarning, match="n_neighbors"):
        pipeline = local_outlier_factor(0, n_neighbors=20).fit(rng.normal(size=(8, 3)))
    compiled = CompiledLOF(pipeline)
    assert compiled.n_neighbors_ == 7
    Q = rng.normal(size=(20, 3))
    np.testing.assert_allclose(compiled.score_samples(Q), pipeline.score_samples(Q), rtol=1e-9, atol=0)


def test_large_k_uses_pairwise_blocks() -> None:
    rng = np.random.default_rng(6)
    X, Q = rng.normal(size=(600, 6)), rng.normal(size=(50, 6))
    pipeline = local_outlier_factor(0, n_neighbors=300).fit(X)
    compiled = CompiledLOF(pipeline)
    np.testing.assert_allclose(compiled.score_samples(Q), pipeline.score_samples(Q), rtol=1e-9, atol=0)
    assert np.array_equal(compiled.score_samples(Q), reference(compiled, Q))


def test_copies_and_pickles(fitted: tuple[object, CompiledLOF, np.ndarray]) -> None:
    _, compiled, Q = fitted
    expected = compiled.score_samples(Q)
    for twin in (copy.deepcopy(compiled), pickle.loads(pickle.dumps(compiled))):
        assert np.array_equal(twin.score_samples(Q), expected)


def test_refuses_bad_input() -> None:
    rng = np.random.default_rng(8)
    pipeline = local_outlier_factor(0).fit(rng.normal(size=(100, 3)))
    compiled = CompiledLOF(pipeline)
    assert compiled.score_samples(np.empty((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match="NaN or infinity"):
        compiled.score_samples(np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(ValueError, match="shape"):
        compiled.score_samples(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="not fitted"):
        CompiledLOF(local_outlier_factor(0))
    with pytest.raises(ValueError, match="novelty"):
        CompiledLOF(make_pipeline(RobustScaler(), LocalOutlierFactor()).fit(rng.normal(size=(50, 3))))
    with pytest.raises(ValueError, match="pipeline"):
        CompiledLOF(LocalOutlierFactor(novelty=True))


def test_detector_restores_the_compiled_scorer() -> None:
    rng = np.random.default_rng(9)
    det = SklearnDetector("lof", local_outlier_factor, compile=CompiledLOF)
    det.begin_fit(rng.normal(size=(500, 6)), seed=1)
    assert det.finish_fit()
    assert isinstance(det.scorer_, CompiledLOF)
    twin = SklearnDetector("lof", local_outlier_factor, compile=CompiledLOF)
    twin.load_fit_state(*det.fit_state())
    assert isinstance(twin.scorer_, CompiledLOF)
    Q = rng.normal(size=(400, 6)) * 1.5
    assert np.array_equal(twin.score_learn_many(Q), det.score_learn_many(Q))
    np.testing.assert_allclose(det.score_learn_many(Q), -det.model_.score_samples(Q), rtol=1e-9, atol=0)


def test_two_fits_of_the_same_rows_compile_to_the_same_model_whatever_the_threads() -> None:
    """The training side (k-distances, LRDs) is computed here, exactly, not taken from scikit-learn's
    BLAS products: a model fitted again from its saved rows on restore scores to the last bit as the
    one it replaces, whatever threads either fit had."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(5)
    X, Q = distinct_data(rng)
    first = CompiledLOF(local_outlier_factor(0).fit(X))
    with threadpool_limits(1):
        second = CompiledLOF(local_outlier_factor(0).fit(X))
    assert np.array_equal(first._lrd, second._lrd) and np.array_equal(first._kdist, second._kdist)
    assert np.array_equal(first.score_samples(Q), second.score_samples(Q))
    # The exact training side agrees with scikit-learn's to rounding.
    lof = local_outlier_factor(0).fit(X).steps[1][1]
    assert np.allclose(first._lrd, lof._lrd, rtol=1e-9, atol=0)
