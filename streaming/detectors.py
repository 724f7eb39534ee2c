"""Anomaly detectors behind one small protocol.

Every detector maps rows of a fixed-order feature matrix to scores where **higher means more
anomalous**, and scores each row *before* it learns from it (prequential). A detector that has not
seen enough data yet returns NaN for the rows it cannot score: it is warming up, and a made-up
score would be worse than none.

Two kinds:

* **online** detectors learn from every row as it goes by (:class:`HalfSpaceTreesDetector`, with our
  numpy HalfSpaceTrees or River's as the reference);
* **refit** detectors (:class:`SklearnDetector`: IsolationForest, LocalOutlierFactor) keep one fitted
  model fixed between model swaps. The processing core decides *when* to fit and *when* to swap, at
  fixed positions in the stream, and hands the detector the rows to fit on. The fit itself runs on
  an executor, off the poll loop.

scikit-learn's ``score_samples`` is *lower = more abnormal*; the sign is flipped here, once.
"""

from __future__ import annotations

import copy
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol, runtime_checkable

import numpy as np
from river import anomaly, compose, preprocessing
from sklearn.ensemble import IsolationForest
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import RobustScaler

from .hst import HalfSpaceTrees


@runtime_checkable
class Detector(Protocol):
    """What the processing core needs of every detector."""

    name: str

    @property
    def version(self) -> str:
        """Identifies the model that produced a score; it goes into every alert."""
        ...

    def score_learn_many(self, X: np.ndarray) -> np.ndarray:
        """Score each row of ``X``, then learn it, in order. NaN for rows it cannot score yet."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The detector's whole state, as plain data and fitted estimators."""
        ...

    def restore_state(self, snapshot: Mapping[str, Any]) -> None:
        """Continue exactly where the detector that took ``snapshot`` left off."""
        ...


@runtime_checkable
class Refittable(Protocol):
    """A detector whose model is refit on rows the core chooses, and swapped in when the core says."""

    def begin_fit(self, X: np.ndarray, seed: int) -> None:
        """Start fitting a new model on ``X`` (copied), in the background."""
        ...

    def finish_fit(self, timeout: float | None = None) -> bool:
        """Swap in the model begun last; False if it is not ready within ``timeout`` seconds."""
        ...


class RiverReferenceHST:
    """River's ``MinMaxScaler | HalfSpaceTrees``, one row at a time: the reference implementation.

    Gives exactly River's scores, including 0 during the first window.

    Examples
    --------
    >>> det = RiverReferenceHST(("amount",), n_trees=5, height=6, window_size=10, seed=1)
    >>> scores = det.score_learn_many(np.array([[v] for v in [10.0, 11.0, 9.5, 10.2] * 5]))
    >>> scores[:10].tolist() == [0.0] * 10   # first window: no reference mass yet
    True
    """

    def __init__(
        self,
        feature_names: Sequence[str],
        *,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int = 42,
    ) -> None:
        self.feature_names = tuple(feature_names)
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.model_ = compose.Pipeline(
            preprocessing.MinMaxScaler(),
            anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed),
        )

    def score_learn_many(self, X: np.ndarray) -> np.ndarray:
        model, names = self.model_, self.feature_names
        out = np.empty(len(X))
        for i, row in enumerate(X.tolist()):
            d = dict(zip(names, row, strict=True))
            out[i] = model.score_one(d)
            model.learn_one(d)
        return out

    def snapshot(self) -> dict[str, Any]:
        """Settings and a copy of the pipeline; the same shape of API as our HalfSpaceTrees."""
        settings = {"n_trees": self.n_trees, "height": self.height, "window_size": self.window_size}
        return {
            "feature_names": self.feature_names,
            "seed": self.seed,
            **settings,
            "model": copy.deepcopy(self.model_),
        }

    @classmethod
    def restore(cls, snap: Mapping[str, Any]) -> RiverReferenceHST:
        """A reference model that continues where the one that took ``snap`` left off."""
        ref = cls(
            snap["feature_names"],
            n_trees=snap["n_trees"],
            height=snap["height"],
            window_size=snap["window_size"],
            seed=snap["seed"],
        )
        ref.model_ = copy.deepcopy(snap["model"])
        return ref


class HalfSpaceTreesDetector:
    """HalfSpaceTrees with an online MinMax scaler, learning from every event.

    Parameters
    ----------
    feature_names
        Names of the matrix columns, in order.
    n_trees, height, window_size, seed
        HalfSpaceTrees settings.
    implementation
        ``"numpy"`` (default) scores whole batches with :class:`anomrec.streaming.hst.HalfSpaceTrees`;
        ``"river"`` runs River's own code row by row. Both give bit-identical raw scores.

    Until ``window_size`` events have been learnt the trees hold no reference mass and River would
    say 0 for everything; this detector says NaN (warming up) instead.

    Examples
    --------
    >>> det = HalfSpaceTreesDetector(("amount",), n_trees=5, height=6, window_size=10, seed=1)
    >>> scores = det.score_learn_many(np.array([[v] for v in [10.0, 11.0, 9.5, 10.2] * 5]))
    >>> int(np.isnan(scores).sum())     # the first window
    10
    >>> bool(det.score_learn_many(np.array([[500.0]]))[0] > np.nanmax(scores))
    True
    """

    name = "hst"

    def __init__(
        self,
        feature_names: Sequence[str],
        *,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int = 42,
        implementation: str = "numpy",
    ) -> None:
        self.feature_names = tuple(feature_names)
        self.window_size = window_size
        self.implementation = implementation
        self.n_seen_ = 0
        settings = {"n_trees": n_trees, "height": height, "window_size": window_size, "seed": seed}
        self.model_: Any
        if implementation == "numpy":
            self.model_ = HalfSpaceTrees(self.feature_names, **settings)
        elif implementation == "river":
            self.model_ = RiverReferenceHST(self.feature_names, **settings)
        else:
            raise ValueError(f"implementation={implementation!r}: expected 'numpy' or 'river'")
        self._version = f"hst-{n_trees}x{height}-w{window_size}-s{seed}"

    @property
    def version(self) -> str:
        return self._version

    def score_learn_many(self, X: np.ndarray) -> np.ndarray:
        scores = np.asarray(self.model_.score_learn_many(X), dtype=np.float64)
        warming = self.window_size - self.n_seen_
        if warming > 0:
            scores[:warming] = np.nan
        self.n_seen_ += len(X)
        return scores

    def snapshot(self) -> dict[str, Any]:
        return {"n_seen": self.n_seen_, "model": self.model_.snapshot()}

    def restore_state(self, snap: Mapping[str, Any]) -> None:
        self.n_seen_ = int(snap["n_seen"])
        self.model_ = type(self.model_).restore(snap["model"])


def isolation_forest(seed: int, *, n_estimators: int = 100) -> IsolationForest:
    """The IsolationForest the refit detector trains."""
    return IsolationForest(n_estimators=n_estimators, random_state=seed)


def local_outlier_factor(seed: int, *, n_neighbors: int = 20) -> Any:
    """LOF in novelty mode behind a RobustScaler; brute force, 2-4x faster than a kd-tree at ~10 features.

    LOF is distance based, so features are centred on their median and scaled by their
    inter-quartile range, which outliers in the training rows barely move. ``seed`` is unused: LOF
    is deterministic.
    """
    del seed
    return make_pipeline(
        RobustScaler(), LocalOutlierFactor(n_neighbors=n_neighbors, novelty=True, algorithm="brute")
    )


class _Inline(Executor):
    """Runs each submitted call at once, in the caller's thread (for tests and offline runs)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        return future


class SklearnDetector:
    """A scikit-learn novelty detector refit on recent normal rows, scored in micro-batches.

    Parameters
    ----------
    name
        ``"iforest"`` or ``"lof"``; also the prefix of every model version.
    factory
        ``factory(seed)`` returns an unfitted estimator with ``score_samples``.
    executor
        Where fits run. The default runs them inline; the processor passes a thread pool so that a
        slow fit never stalls the poll loop.
    compile
        Optional ``compile(fitted) -> scorer``, run on the executor right after the fit; the
        scorer's ``score_samples`` must equal the estimator's. IsolationForest uses
        :class:`~anomrec.streaming.iforest.CompiledIsolationForest`, several times faster.

    The version is ``"<name>-<k>"`` after the k-th model has been swapped in, and
    ``"<name>-warming-up"`` before the first, when every score is NaN.

    A fit is a deterministic function of its rows and seed, so the detector keeps the rows and seed
    of the swapped-in model (``train_X_``, ``train_seed_``): :meth:`fit_state` saves those instead
    of the fitted estimator, and :meth:`load_fit_state` fits the same model again.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> det = SklearnDetector("iforest", isolation_forest)
    >>> det.score_learn_many(rng.normal(size=(2, 3))).tolist(), det.version
    ([nan, nan], 'iforest-warming-up')
    >>> det.begin_fit(rng.normal(size=(500, 3)), seed=1)
    >>> det.finish_fit()
    True
    >>> far, near = det.score_learn_many(np.array([[8.0, 8.0, 8.0], [0.0, 0.0, 0.0]]))
    >>> bool(far > near), det.version
    (True, 'iforest-1')
    """

    def __init__(
        self,
        name: str,
        factory: Callable[[int], Any],
        *,
        executor: Executor | None = None,
        compile: Callable[[Any], Any] | None = None,
    ) -> None:
        self.name = name
        self.factory = factory
        self.compile = compile
        self.scorer_: Any = None
        self.executor = executor if executor is not None else _Inline()
        self.model_: Any = None
        self.fits_ = 0
        # The latest fit durations, for benchmarks and reports; bounded, the process runs for months.
        self.fit_seconds_: deque[float] = deque(maxlen=1000)
        self._pending: Future[tuple[Any, Any, float]] | None = None
        self._pending_X = np.empty((0, 0))
        self._pending_seed = 0
        self.train_X_ = np.empty((0, 0))
        self.train_seed_: int | None = None

    @property
    def version(self) -> str:
        return f"{self.name}-{self.fits_}" if self.fits_ else f"{self.name}-warming-up"

    def score_learn_many(self, X: np.ndarray) -> np.ndarray:
        if self.scorer_ is None or len(X) == 0:
            return np.full(len(X), np.nan)
        return -np.asarray(self.scorer_.score_samples(X), dtype=np.float64)

    def begin_fit(self, X: np.ndarray, seed: int) -> None:
        if self._pending is not None:
            raise RuntimeError(f"{self.name}: a fit is already pending; finish it before starting another")
        rows = np.array(X, dtype=np.float64, copy=True)
        estimator = self.factory(seed)
        self._pending_X, self._pending_seed = rows, seed
        self._pending = self.executor.submit(_timed_fit, estimator, rows, self.compile)

    def finish_fit(self, timeout: float | None = None) -> bool:
        if self._pending is None:
            return True
        try:
            model, scorer, seconds = self._pending.result(timeout=timeout)
        except FutureTimeout:
            return False
        self._pending = None
        self.train_X_, self.train_seed_ = self._pending_X, self._pending_seed
        self._pending_X = np.empty((0, 0))
        self.model_ = model
        self.scorer_ = scorer
        self.fits_ += 1
        self.fit_seconds_.append(seconds)
        return True

    def snapshot(self) -> dict[str, Any]:
        """The swapped-in model, and the rows and seed of a pending fit, which restore begins again."""
        return {
            "model": copy.deepcopy(self.model_),
            "scorer": copy.deepcopy(self.scorer_) if self.scorer_ is not self.model_ else None,
            "fits": self.fits_,
            "train": None if self.train_seed_ is None else (self.train_X_.copy(), self.train_seed_),
            "pending": None if self._pending is None else (self._pending_X.copy(), self._pending_seed),
        }

    def restore_state(self, snap: Mapping[str, Any]) -> None:
        self.model_ = copy.deepcopy(snap["model"])
        scorer = snap.get("scorer")
        self.scorer_ = copy.deepcopy(scorer) if scorer is not None else self.model_
        self.fits_ = int(snap["fits"])
        train = snap.get("train")
        self.train_X_, self.train_seed_ = (
            (np.empty((0, 0)), None) if train is None else (train[0].copy(), train[1])
        )
        self._pending = None
        if snap.get("pending") is not None:
            rows, seed = snap["pending"]
            self.begin_fit(rows, seed)

    def fit_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The detector's state as JSON-able data and plain arrays, with no fitted estimator in it.

        Returns
        -------
        meta
            ``fits`` (models swapped in so far), ``seed`` (of the swapped-in model; None before
            the first) and ``pending_seed`` (of a fit begun but not swapped in yet; None if none).
        arrays
            ``train``, the rows the swapped-in model was fitted on, and ``pending``, those of the
            pending fit; each only when there is one.
        """
        meta: dict[str, Any] = {
            "fits": self.fits_,
            "seed": self.train_seed_,
            "pending_seed": None if self._pending is None else self._pending_seed,
        }
        arrays: dict[str, np.ndarray] = {}
        if self.train_seed_ is not None:
            arrays["train"] = self.train_X_.copy()
        if self._pending is not None:
            arrays["pending"] = self._pending_X.copy()
        return meta, arrays

    def load_fit_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        """Continue from a :meth:`fit_state`: refit the swapped-in model here, begin the pending fit again.

        The refit runs in the caller's thread and gives the very model that was swapped in (same
        rows, same seed, same scores); a pending fit goes to the executor as :meth:`begin_fit`
        does. Raises ``KeyError`` or ``ValueError`` for inconsistent state, leaving the detector
        unchanged.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> det = SklearnDetector("iforest", isolation_forest)
        >>> det.begin_fit(rng.normal(size=(300, 3)), seed=1); det.finish_fit()
        True
        >>> twin = SklearnDetector("iforest", isolation_forest)
        >>> twin.load_fit_state(*det.fit_state())
        >>> X = rng.normal(size=(5, 3))
        >>> np.array_equal(twin.score_learn_many(X), det.score_learn_many(X)), twin.version
        (True, 'iforest-1')
        """
        fits = int(meta["fits"])
        seed, pending_seed = meta["seed"], meta["pending_seed"]
        if fits < 0 or (seed is None) != (fits == 0):
            raise ValueError(f"{self.name}: state says {fits} models were swapped in, with seed {seed!r}")
        model = scorer = None
        rows = np.empty((0, 0))
        if seed is not None:
            rows = np.array(arrays["train"], dtype=np.float64)  # a copy, C-ordered like begin_fit's
            if rows.ndim != 2 or len(rows) == 0:
                raise ValueError(f"{self.name}: training rows have shape {rows.shape}")
            model, scorer, _ = _timed_fit(self.factory(int(seed)), rows, self.compile)
        pending = None if pending_seed is None else np.asarray(arrays["pending"], dtype=np.float64)
        self.model_, self.scorer_, self.fits_ = model, scorer, fits
        self.train_X_, self.train_seed_ = rows, None if seed is None else int(seed)
        self._pending = None
        if pending is not None:
            self.begin_fit(pending, int(pending_seed))


def _timed_fit(
    estimator: Any, rows: np.ndarray, compile: Callable[[Any], Any] | None
) -> tuple[Any, Any, float]:
    started = time.perf_counter()
    estimator.fit(rows)
    scorer = compile(estimator) if compile is not None else estimator
    return estimator, scorer, time.perf_counter() - started
