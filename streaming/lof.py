"""A fitted scikit-learn ``RobustScaler`` + ``LocalOutlierFactor`` pipeline, scored one row at a time.

:class:`CompiledLOF` returns what the pipeline's ``score_samples`` returns, to within a few ulps,
and gives every row the same score, to the last bit, whatever batch the row comes in.

Why not scikit-learn's own ``score_samples``
--------------------------------------------
Brute-force euclidean ``kneighbors`` computes ``|x|² - 2 x·y + |y|²`` with a matrix product (BLAS),
whose blocking, and so whose rounding, follows the shape of the batch: the same row scored in a
batch of 3,000 or of 337 can get a raw score that differs in the last bit. A percentile rank among
many equal scores can then flip, and with it an alert, which breaks exactly-once replay.

What this module computes
-------------------------
For each query row, on its own (a numba loop, no BLAS, no parallel reduction):

* ``x = (row - center_) / scale_``, as ``RobustScaler.transform`` does (``center_`` is skipped
  when ``with_centering=False`` and ``scale_`` when ``with_scaling=False``);
* the squared euclidean distance to every training row ``_fit_X[j]``, as
  ``sum_f (x[f] - _fit_X[j, f]) ** 2`` added up in feature order, and its square root: exact up
  to rounding, with no cancellation;
* the ``k = n_neighbors_`` nearest training rows, ties broken by the lower training index, in
  increasing distance;
* from there scikit-learn's formulas (``LocalOutlierFactor.score_samples`` and
  ``_local_reachability_density``, read from scikit-learn 1.9), with the fitted ``_lrd`` and the
  k-distances ``_distances_fit_X_[:, -1]`` of the training rows::

      reach_i = max(dist_i, kdist[nbr_i])
      lrd_x   = 1 / (mean(reach) + 1e-10)
      score   = -mean(_lrd[nbr] / lrd_x)

  where each ``mean`` is a sum in numpy's pairwise order divided by ``k``, as ``np.mean`` does.

The training side is worked out the same way, once, when the pipeline is compiled: each training
row's ``k`` nearest other training rows (the row itself left out, as scikit-learn does), its
k-distance, and its LRD by scikit-learn's ``_local_reachability_density``. scikit-learn's own
``_lrd`` and ``_distances_fit_X_`` come from the same BLAS products, and two fits of the same rows
could differ in their last bits with the threads at hand (seen once in eight restores of a
processor whose LOF was fitted again from its saved rows): these are the same on every fit.

The scores differ from scikit-learn's only where its rounded distances do: by a few ulps in most
rows, and more where the training set holds duplicate rows, whose k-distance can be 0 (their LRD is
then about 1e10, and a distance of 1e-8, which scikit-learn's cancellation can produce, instead of
0 changes the score a lot).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

__all__ = ["CompiledLOF"]

FloatArray = npt.NDArray[np.float64]

# numba caches compiled code next to this file, keyed by the file, and the cache names the module
# it was compiled in. Imported under another name (``pytest --doctest-modules streaming/``), the
# kernels compile without the cache, so that they never leave code the package cannot load.
_CACHE = __name__ == "anomrec.streaming.lof"
_PAIRWISE_BLOCK = 128  # numpy's PW_BLOCKSIZE


@njit(cache=_CACHE)
def _block_sum(a: FloatArray, start: int, n: int) -> float:
    """numpy's ``pairwise_sum`` of a run of at most ``_PAIRWISE_BLOCK`` values: eight partial sums."""
    if n < 8:
        res = 0.0
        for i in range(start, start + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[start], a[start + 1], a[start + 2], a[start + 3]
    r4, r5, r6, r7 = a[start + 4], a[start + 5], a[start + 6], a[start + 7]
    i = 8
    stop = n - n % 8
    while i < stop:
        p = start + i
        r0 += a[p]
        r1 += a[p + 1]
        r2 += a[p + 2]
        r3 += a[p + 3]
        r4 += a[p + 4]
        r5 += a[p + 5]
        r6 += a[p + 6]
        r7 += a[p + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[start + i]
        i += 1
    return res


@njit(cache=_CACHE)
def _pairwise_sum(a: FloatArray, start: int, n: int) -> float:
    """``a[start:start + n].sum()`` in the order numpy's ``pairwise_sum`` adds a contiguous run.

    numpy recurses on halves (cut at a multiple of 8) down to blocks of ``_PAIRWISE_BLOCK``; this
    walks the same tree with an explicit stack, because numba cannot load a recursive function
    from its on-disk cache (it crashes).
    """
    if n <= _PAIRWISE_BLOCK:
        return _block_sum(a, start, n)
    depth = 2 * (64 + 1)
    starts = np.empty(depth, dtype=np.intp)
    sizes = np.empty(depth, dtype=np.intp)  # -1 marks "add the last two values"
    values = np.empty(64 + 1)
    top, n_values = 1, 0
    starts[0], sizes[0] = start, n
    while top:
        top -= 1
        s, m = starts[top], sizes[top]
        if m < 0:
            n_values -= 1
            values[n_values - 1] = values[n_values - 1] + values[n_values]
        elif m <= _PAIRWISE_BLOCK:
            values[n_values] = _block_sum(a, s, m)
            n_values += 1
        else:
            half = m // 2
            half -= half % 8
            starts[top], sizes[top] = s, -1
            starts[top + 1], sizes[top + 1] = s + half, m - half
            starts[top + 2], sizes[top + 2] = s, half
            top += 3
    return values[0]


# numba kernels take their arrays positionally: compiled functions cannot take keyword-only ones.
@njit(cache=_CACHE)
def _score_rows(  # noqa: PLR0917
    X: FloatArray,
    center: FloatArray,
    scale: FloatArray,
    train_T: FloatArray,
    kdist: FloatArray,
    lrd: FloatArray,
    k: int,
    out: FloatArray,
) -> None:
    """Score each row of ``X`` into ``out``; row ``r``'s score depends on ``X[r]`` alone."""
    n_features, n_train = train_T.shape
    x = np.empty(n_features)
    d2 = np.empty(n_train)
    best_d2 = np.empty(k)
    best_j = np.empty(k, dtype=np.intp)
    terms = np.empty(k)
    for r in range(X.shape[0]):
        for f in range(n_features):
            x[f] = (X[r, f] - center[f]) / scale[f]
        _sq_distances(x, train_T, d2)
        _select(d2, -1, k, best_d2, best_j)
        for i in range(k):
            terms[i] = max(math.sqrt(best_d2[i]), kdist[best_j[i]])
        x_lrd = 1.0 / (_pairwise_sum(terms, 0, k) / k + 1e-10)
        for i in range(k):
            terms[i] = lrd[best_j[i]] / x_lrd
        out[r] = -(_pairwise_sum(terms, 0, k) / k)


@njit(cache=_CACHE)
def _sq_distances(x: FloatArray, train_T: FloatArray, d2: FloatArray) -> None:
    """``d2[j]``: the squared distance from ``x`` to training row ``j``, summed in feature order.

    Feature by feature over all training rows (contiguous in ``train_T``), so each sum still runs
    in feature order: the same bits whatever the batch, for the scored rows and the training side.
    """
    n_features, n_train = train_T.shape
    for j in range(n_train):
        d2[j] = 0.0
    for f in range(n_features):
        xf = x[f]
        for j in range(n_train):
            diff = xf - train_T[f, j]
            d2[j] += diff * diff


@njit(cache=_CACHE)
def _select(d2: FloatArray, skip: int, k: int, best_d2: FloatArray, best_j: npt.NDArray[np.intp]) -> None:
    """The ``k`` smallest of ``d2`` (leaving out index ``skip``), sorted; ties keep the lower index."""
    m = 0
    for j in range(d2.shape[0]):
        if j == skip:
            continue
        v = d2[j]
        if m == k:
            if v >= best_d2[k - 1]:
                continue
            i = k - 1
        else:
            i = m
            m += 1
        while i > 0 and best_d2[i - 1] > v:
            best_d2[i] = best_d2[i - 1]
            best_j[i] = best_j[i - 1]
            i -= 1
        best_d2[i] = v
        best_j[i] = j


@njit(cache=_CACHE)
def _fit_rows(train_T: FloatArray, k: int, kdist: FloatArray, lrd: FloatArray) -> None:
    """Each training row's k-distance and LRD among the other training rows, exactly."""
    n_train = train_T.shape[1]
    d2 = np.empty(n_train)
    best_d2 = np.empty(k)
    best_j = np.empty(k, dtype=np.intp)
    dist = np.empty((n_train, k))
    nbr = np.empty((n_train, k), dtype=np.intp)
    for r in range(n_train):
        _sq_distances(train_T[:, r], train_T, d2)
        _select(d2, r, k, best_d2, best_j)
        for i in range(k):
            dist[r, i] = math.sqrt(best_d2[i])
            nbr[r, i] = best_j[i]
        kdist[r] = dist[r, k - 1]
    terms = np.empty(k)
    for r in range(n_train):
        for i in range(k):
            terms[i] = max(dist[r, i], kdist[nbr[r, i]])
        lrd[r] = 1.0 / (_pairwise_sum(terms, 0, k) / k + 1e-10)


class CompiledLOF:
    """``score_samples`` of a fitted ``RobustScaler`` + novelty ``LocalOutlierFactor`` pipeline, per row.

    Parameters
    ----------
    pipeline : sklearn.pipeline.Pipeline
        A fitted ``make_pipeline(RobustScaler(...), LocalOutlierFactor(novelty=True, ...))``, as
        :func:`~anomrec.streaming.detectors.local_outlier_factor` builds. Nothing refers back to
        it: the compiled object holds numpy arrays only and pickles and copies on its own.

    Attributes
    ----------
    n_features_in_ : int
    n_neighbors_ : int
        The ``k`` of the fitted LOF (``n_neighbors``, capped at the training rows less one).
    n_train_ : int
        Training rows.

    Examples
    --------
    >>> import numpy as np
    >>> from anomrec.streaming.detectors import local_outlier_factor
    >>> from anomrec.streaming.lof import CompiledLOF
    >>> rng = np.random.default_rng(0)
    >>> pipeline = local_outlier_factor(0).fit(rng.normal(size=(500, 4)))
    >>> compiled = CompiledLOF(pipeline)
    >>> X = rng.normal(size=(300, 4)) * 2
    >>> scores = compiled.score_samples(X)
    >>> bool(np.allclose(scores, pipeline.score_samples(X), rtol=1e-9, atol=0))
    True
    >>> one_by_one = np.concatenate([compiled.score_samples(row[None]) for row in X])
    >>> bool(np.array_equal(one_by_one, scores))
    True
    """

    def __init__(self, pipeline: Any) -> None:
        steps = getattr(pipeline, "steps", None)
        if not steps or len(steps) != 2:
            raise ValueError(
                f"expected a fitted RobustScaler + LocalOutlierFactor pipeline, got {pipeline!r}"
            )
        scaler, lof = steps[0][1], steps[1][1]
        if type(scaler).__name__ != "RobustScaler" or type(lof).__name__ != "LocalOutlierFactor":
            raise ValueError(
                "expected a RobustScaler followed by a LocalOutlierFactor, got "
                f"{type(scaler).__name__} and {type(lof).__name__}"
            )
        if not getattr(lof, "novelty", False):
            raise ValueError("the LocalOutlierFactor must have novelty=True to score new rows")
        if not hasattr(lof, "_lrd"):
            raise ValueError("the pipeline is not fitted: fit it before compiling")
        if getattr(lof, "metric", "minkowski") not in ("minkowski", "euclidean") or (
            lof.metric == "minkowski" and lof.p != 2
        ):
            raise ValueError(f"only the euclidean metric is supported, got {lof.metric!r}, p={lof.p}")
        n_features = int(scaler.n_features_in_)
        self.n_features_in_ = n_features
        self._center: FloatArray = (
            np.array(scaler.center_, dtype=np.float64) if scaler.with_centering else np.zeros(n_features)
        )
        self._scale: FloatArray = (
            np.array(scaler.scale_, dtype=np.float64) if scaler.with_scaling else np.ones(n_features)
        )
        self._train_T: FloatArray = np.ascontiguousarray(np.asarray(lof._fit_X, dtype=np.float64).T)
        self.n_train_ = int(self._train_T.shape[1])
        self.n_neighbors_ = int(lof.n_neighbors_)
        self._kdist: FloatArray = np.empty(self.n_train_)
        self._lrd: FloatArray = np.empty(self.n_train_)
        _fit_rows(self._train_T, self.n_neighbors_, self._kdist, self._lrd)

    def score_samples(self, X: npt.ArrayLike) -> FloatArray:
        """Opposite of the local outlier factor of each row: lower is more abnormal.

        Parameters
        ----------
        X : array_like of shape (n_rows, n_features_in_)
            Raw (unscaled) rows, as the pipeline takes them; converted to float64.

        Returns
        -------
        ndarray of float64, shape (n_rows,)

        Raises
        ------
        ValueError
            If ``X`` has the wrong shape or holds NaN or infinity (scikit-learn refuses those too).
        """
        rows = np.ascontiguousarray(X, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.n_features_in_:
            raise ValueError(f"X has shape {rows.shape}; expected (n_rows, {self.n_features_in_}) rows")
        if not np.isfinite(rows).all():
            raise ValueError("X contains NaN or infinity; LocalOutlierFactor cannot score such rows")
        out = np.empty(rows.shape[0])
        if rows.shape[0]:
            _score_rows(
                rows,
                self._center,
                self._scale,
                self._train_T,
                self._kdist,
                self._lrd,
                self.n_neighbors_,
                out,
            )
        return out
