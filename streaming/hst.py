"""Half-Space Trees in numpy, score for score identical to River's scaled HalfSpaceTrees.

:class:`HalfSpaceTrees` reproduces ``compose.Pipeline(preprocessing.MinMaxScaler(),
anomaly.HalfSpaceTrees(n_trees, height, window_size, seed=seed))`` from River, scored and learnt one
event at a time, bit for bit, while working on whole batches with vectorised numpy:

* **Scaler.** River's pipeline scores an event with the scaler as it stood *before* the event, then
  learns: the scaler first takes in the event, and the trees learn the event scaled *with* it.
  Running minima and maxima over a batch are cumulative (``np.fmin.accumulate``), so each row gets
  the exact scaler state River would use. A feature whose range is still empty (min == max) scales
  to 0.0; values outside the learnt range scale outside [0, 1] and simply fall to the outer
  branches.
* **Trees.** River builds the trees at the first ``learn_one``: for each tree, depth first and left
  before right, one ``rng.choices`` draw picks the split feature (weighted by the width of each
  feature's current range, features in *sorted name* order) and one ``rng.uniform`` draw picks the
  split point within the padded range. Every internal node consumes exactly two ``rng.random()``
  values, so all draws are taken from a ``random.Random(seed)`` at once and the trees are built a
  level at a time with the same floating-point operations.
* **Windows.** Each learnt event adds 1 to the *latest* mass of every node on its path; after every
  ``window_size`` learnt events the latest masses become the *reference* masses used for scoring and
  the latest masses restart at 0. Scores are 0 until the first window is complete. A batch is cut at
  the window boundaries, since the reference mass is fixed inside a window.
* **Score.** Per tree, the reference masses along the event's path weighted by ``2 ** depth``,
  stopping after the first node whose mass is below ``0.1 * window_size``; summed over the trees
  and returned as ``1 - total / max_score`` with ``max_score = n_trees * window_size *
  (2 ** (height + 1) - 1)``. River sums integer masses in float64, exactly while ``max_score <
  2 ** 53``; here they are summed as integers, so the constructor refuses larger settings.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["HalfSpaceTrees"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_PADDING = 0.15  # River's make_padded_tree padding: a split never falls in the outer 15 % of a range
_SNAPSHOT_FORMAT = 1


def _random_values(rng: random.Random, n: int) -> FloatArray:
    """The next ``n`` values of ``rng.random()``, leaving ``rng`` as ``n`` calls would.

    CPython's ``random()`` takes two 32-bit Mersenne Twister outputs ``a`` and ``b`` and returns
    ``((a >> 5) * 2**26 + (b >> 6)) / 2**53``; ``getrandbits(64 * n)`` returns the next ``2 * n``
    outputs, the first in the lowest bits. The first values are checked against ``random()`` on a
    copy of the generator, and any other implementation falls back to calling ``random()``.
    """
    if n == 0:
        return np.empty(0, dtype=np.float64)
    state = rng.getstate()
    words = np.frombuffer(rng.getrandbits(64 * n).to_bytes(8 * n, "little"), dtype="<u4")
    high = (words[0::2] >> np.uint32(5)).astype(np.float64)
    low = (words[1::2] >> np.uint32(6)).astype(np.float64)
    values: FloatArray = (high * 67108864.0 + low) * (1.0 / 9007199254740992.0)
    probe = random.Random()
    probe.setstate(state)
    if all(probe.random() == v for v in values[:2].tolist()):
        return values
    rng.setstate(state)  # pragma: no cover - only on a Python whose random() differs from CPython's
    return np.array([rng.random() for _ in range(n)], dtype=np.float64)  # pragma: no cover


def _preorder_ranks(height: int) -> IntArray:
    """Depth-first (node, left subtree, right subtree) rank of each internal node, in heap order.

    Heap order: node ``i`` has children ``2i + 1`` and ``2i + 2``. Leaves draw nothing, so a
    subtree whose root is at depth ``j`` holds ``2 ** (height - j) - 1`` drawing nodes, and the right
    child at depth ``j`` comes ``2 ** (height - j)`` ranks after its parent.
    """
    n_internal = 2**height - 1
    ranks = np.zeros(max(n_internal, 0), dtype=np.int64)
    for depth in range(1, height):
        parents = ranks[2 ** (depth - 1) - 1 : 2**depth - 1]
        first = 2**depth - 1
        ranks[first : first + 2**depth : 2] = parents + 1
        ranks[first + 1 : first + 2**depth : 2] = parents + 2 ** (height - depth)
    return ranks


def _build_trees(
    n_features: int, n_trees: int, height: int, rng: random.Random
) -> tuple[IntArray, FloatArray]:
    """Split features and split points of ``n_trees`` trees, drawn as River's make_padded_tree does.

    Features are numbered in sorted-name order here. Returns two ``(n_trees, 2 ** height - 1)``
    arrays in heap order. The trees are grown a depth at a time, several trees together; each node
    is a column of the ``(n_features, nodes)`` lower and upper limits, and a depth's children are
    laid out as all the left children, then all the right ones.
    """
    n_internal = 2**height - 1
    draws = _random_values(rng, 2 * n_trees * n_internal).reshape(n_trees, n_internal, 2)
    ranks = _preorder_ranks(height)
    features = np.zeros((n_trees, n_internal), dtype=np.int64)
    thresholds = np.zeros((n_trees, n_internal), dtype=np.float64)
    per_pass = max(1, 2**16 >> max(height - 1, 0))  # trees grown together: at most 65,536 leaves' worth
    for first_tree in range(0, n_trees, per_pass):
        tree = np.arange(first_tree, min(n_trees, first_tree + per_pass))
        heap = np.zeros(len(tree), dtype=np.int64)
        lo = np.zeros((n_features, len(tree)), dtype=np.float64)
        hi = np.ones((n_features, len(tree)), dtype=np.float64)
        for depth in range(height):
            node_draws = draws[tree, ranks[heap]]
            # random.choices(features, weights=widths): bisect_right(cumulative widths,
            # random() * total, 0, n_features - 1), cumulating in feature order
            cum = np.cumsum(hi - lo, axis=0)
            target = node_draws[:, 0] * (cum[-1] + 0.0)
            chosen = np.count_nonzero(cum[:-1] <= target, axis=0)
            # random.uniform(a + padding * (b - a), b - padding * (b - a)): low + (high - low) * random()
            cols = np.arange(len(heap))
            a, b = lo[chosen, cols], hi[chosen, cols]
            low, high = a + _PADDING * (b - a), b - _PADDING * (b - a)
            at = low + (high - low) * node_draws[:, 1]
            features[tree, heap] = chosen
            thresholds[tree, heap] = at
            if depth + 1 < height:
                # the left child narrows the chosen range to [a, at), the right one to [at, b]
                lo = np.concatenate((lo, lo), axis=1)
                hi = np.concatenate((hi, hi), axis=1)
                hi[chosen, cols] = at
                lo[chosen, cols + len(cols)] = at
                tree = np.concatenate((tree, tree))
                heap = np.concatenate((2 * heap + 1, 2 * heap + 2))
    return features, thresholds


class HalfSpaceTrees:
    """River's ``MinMaxScaler | HalfSpaceTrees`` pipeline, vectorised over batches of events.

    Every score equals, bit for bit, what ``compose.Pipeline(preprocessing.MinMaxScaler(),
    anomaly.HalfSpaceTrees(n_trees, height, window_size, seed=seed))`` returns when each event
    ``dict(zip(feature_names, x))`` is scored with ``score_one`` and then learnt with ``learn_one``,
    whatever the batch sizes. Higher scores are more anomalous; every score is 0.0 until
    ``window_size`` events have been learnt.

    Parameters
    ----------
    feature_names
        Names of the vector's positions, in order; unique. River draws split features in sorted
        name order, so the names (not only their number) determine the trees.
    n_trees, height, window_size
        HalfSpaceTrees settings; a tree of height ``h`` has ``2 ** (h + 1) - 1`` nodes.
    seed
        Seeds the random split features and points (``random.Random(seed)``, as River). ``None``
        draws different trees on each run.

    Attributes
    ----------
    n_seen_ : int
        Events learnt so far.
    min_, max_ : numpy.ndarray
        The scaler's running minimum and maximum of each feature.
    feature_, threshold_ : numpy.ndarray
        ``(n_trees, 2 ** height - 1)`` split column (index into ``feature_names``) and split point
        of each internal node, in heap order (children of node ``i`` are ``2i + 1`` and ``2i + 2``).
    latest_mass_, reference_mass_ : numpy.ndarray
        ``(n_trees, 2 ** (height + 1) - 1)`` masses of the current and of the last complete window.

    The fitted attributes exist once the first event has been learnt, when the trees are built.

    Examples
    --------
    >>> import numpy as np
    >>> from anomrec.streaming.hst import HalfSpaceTrees
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(100.0, 5.0, size=(600, 2))
    >>> hst = HalfSpaceTrees(["amount", "items"], n_trees=5, height=6, window_size=100, seed=1)
    >>> scores = hst.score_learn_many(X)
    >>> scores.shape, scores.dtype
    ((600,), dtype('float64'))
    >>> bool(np.all(scores[:100] == 0.0))   # first window: no reference mass yet
    True
    >>> outlier = hst.score_one([160.0, 40.0])
    >>> bool(outlier > scores[100:].max())
    True

    Batches can be cut anywhere, and a snapshot restores the model exactly:

    >>> a = HalfSpaceTrees(["amount", "items"], n_trees=5, height=6, window_size=100, seed=1)
    >>> first = a.score_learn_many(X[:257])
    >>> b = HalfSpaceTrees.restore(a.snapshot())
    >>> np.array_equal(np.concatenate([first, b.score_learn_many(X[257:])]), scores)
    True
    >>> b.version
    'hst-t5-h6-w100-s1'
    """

    n_seen_: int
    min_: FloatArray
    max_: FloatArray
    feature_: IntArray
    threshold_: FloatArray
    latest_mass_: IntArray
    reference_mass_: IntArray
    _latest_touched: list[IntArray] | None
    _reference_touched: list[IntArray] | None

    def __init__(
        self,
        feature_names: Sequence[str],
        *,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        seed: int | None = 42,
    ) -> None:
        names = tuple(feature_names)
        if not names:
            raise ValueError("feature_names is empty")
        if not all(isinstance(n, str) for n in names):
            raise TypeError("feature_names must be strings")
        if len(set(names)) != len(names):
            raise ValueError(f"feature_names are not unique: {names}")
        for label, value, least in (
            ("n_trees", n_trees, 1),
            ("height", height, 0),
            ("window_size", window_size, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{label} must be an int >= {least}, not {value!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, not {seed!r}")
        if n_trees * window_size * (2 ** (height + 1) - 1) >= 2**53:
            raise ValueError("n_trees * window_size * 2 ** (height + 1) is too large for exact float sums")
        self.feature_names = names
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed

    # -- settings-derived figures -------------------------------------------------------------

    @property
    def version(self) -> str:
        """A stable name of the model and its settings; it never changes while the model learns."""
        return f"hst-t{self.n_trees}-h{self.height}-w{self.window_size}-s{self.seed}"

    @property
    def _n_nodes(self) -> int:
        return int(2 ** (self.height + 1) - 1)

    @property
    def _max_score(self) -> int:
        return self.n_trees * self.window_size * self._n_nodes

    @property
    def fitted(self) -> bool:
        """Whether an event has been learnt (and the trees built)."""
        return hasattr(self, "n_seen_")

    # -- public API -----------------------------------------------------------------------------

    def score_learn_many(self, X: npt.ArrayLike) -> FloatArray:
        """Score each row, then learn it, in order.

        Parameters
        ----------
        X
            ``(n, len(feature_names))`` feature rows; read, never modified.

        Returns
        -------
        numpy.ndarray
            ``(n,)`` float64 scores, each from the model that learnt every earlier row; identical
            however the stream is cut into batches.
        """
        return self._process(self._rows(X), score=True)

    def learn_many(self, X: npt.ArrayLike) -> None:
        """Learn each row, in order, without scoring."""
        self._process(self._rows(X), score=False)

    def score_many(self, X: npt.ArrayLike) -> FloatArray:
        """Score each row with the current model, learning nothing.

        Equal to River's ``score_one`` on each row with no learning in between.
        """
        X = self._rows(X)
        if not self.fitted or self.n_seen_ < self.window_size:
            return np.zeros(len(X), dtype=np.float64)
        scaled = _scale(X, self.min_, self.max_)
        return self._scores(self._paths(scaled))

    def score_one(self, x: Sequence[float]) -> float:
        """Anomaly score of one event; higher is more anomalous."""
        return float(self.score_many(np.asarray(x, dtype=np.float64)[None, :])[0])

    def learn_one(self, x: Sequence[float]) -> None:
        """Learn one event."""
        self.learn_many(np.asarray(x, dtype=np.float64)[None, :])

    def snapshot(self) -> dict[str, Any]:
        """The settings and learnt state as plain data (Python scalars, lists and numpy arrays).

        :meth:`restore` rebuilds an identical model from it; the arrays are copies.
        """
        settings: dict[str, Any] = {
            "format": _SNAPSHOT_FORMAT,
            "feature_names": list(self.feature_names),
            "n_trees": self.n_trees,
            "height": self.height,
            "window_size": self.window_size,
            "seed": self.seed,
        }
        if not self.fitted:
            return {**settings, "state": None}
        state = {
            "n_seen": self.n_seen_,
            "min": self.min_.copy(),
            "max": self.max_.copy(),
            "feature": self.feature_.copy(),
            "threshold": self.threshold_.copy(),
            "latest_mass": self.latest_mass_.copy(),
            "reference_mass": self.reference_mass_.copy(),
        }
        return {**settings, "state": state}

    @classmethod
    def restore(cls, snapshot: dict[str, Any]) -> HalfSpaceTrees:
        """The model a :meth:`snapshot` was taken of."""
        if snapshot.get("format") != _SNAPSHOT_FORMAT:
            raise ValueError(f"unknown HalfSpaceTrees snapshot format {snapshot.get('format')!r}")
        model = cls(
            snapshot["feature_names"],
            n_trees=snapshot["n_trees"],
            height=snapshot["height"],
            window_size=snapshot["window_size"],
            seed=snapshot["seed"],
        )
        state = snapshot["state"]
        if state is None:
            return model
        d, n_internal, n_nodes = len(model.feature_names), 2**model.height - 1, model._n_nodes
        shapes = {
            "min": ((d,), np.float64),
            "max": ((d,), np.float64),
            "feature": ((model.n_trees, n_internal), np.int64),
            "threshold": ((model.n_trees, n_internal), np.float64),
            "latest_mass": ((model.n_trees, n_nodes), np.int64),
            "reference_mass": ((model.n_trees, n_nodes), np.int64),
        }
        arrays: dict[str, npt.NDArray[Any]] = {}
        for key, (shape, dtype) in shapes.items():
            array = np.array(state[key], dtype=dtype)  # a copy: the snapshot stays untouched
            if array.shape != shape:
                raise ValueError(f"snapshot {key} has shape {array.shape}, expected {shape}")
            arrays[key] = array
        if arrays["feature"].size and not (arrays["feature"].min() >= 0 and arrays["feature"].max() < d):
            raise ValueError("snapshot feature indices out of range")
        if int(state["n_seen"]) < 0:
            raise ValueError("snapshot n_seen is negative")
        model.n_seen_ = int(state["n_seen"])
        model.min_, model.max_ = arrays["min"], arrays["max"]
        model.feature_, model.threshold_ = arrays["feature"], arrays["threshold"]
        model.latest_mass_, model.reference_mass_ = arrays["latest_mass"], arrays["reference_mass"]
        model._prepare()
        return model

    def __repr__(self) -> str:
        seen = self.n_seen_ if self.fitted else 0
        return (
            f"HalfSpaceTrees({len(self.feature_names)} features, n_trees={self.n_trees}, "
            f"height={self.height}, window_size={self.window_size}, seed={self.seed}, n_seen={seen})"
        )

    # -- internals ------------------------------------------------------------------------------

    def _rows(self, X: npt.ArrayLike) -> FloatArray:
        rows = np.asarray(X, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != len(self.feature_names):
            raise ValueError(f"expected rows of {len(self.feature_names)} features, got shape {rows.shape}")
        return rows

    def _fit_start(self) -> None:
        """Build the trees and empty state, as River does at the first ``learn_one``."""
        d = len(self.feature_names)
        order = sorted(range(d), key=lambda i: self.feature_names[i])
        sorted_features, thresholds = _build_trees(d, self.n_trees, self.height, random.Random(self.seed))
        self.feature_ = np.asarray(order, dtype=np.int64)[sorted_features]
        self.threshold_ = thresholds
        self.n_seen_ = 0
        self.min_ = np.full(d, np.inf)
        self.max_ = np.full(d, -np.inf)
        self.latest_mass_ = np.zeros((self.n_trees, self._n_nodes), dtype=np.int64)
        self.reference_mass_ = np.zeros((self.n_trees, self._n_nodes), dtype=np.int64)
        self._prepare()
        self._latest_touched, self._reference_touched = [], []  # both all zeros

    def _prepare(self) -> None:
        """Lookup tables padded to every node, so that one flat index serves trees and masses.

        Flat index ``t * n_nodes + k`` is node ``k`` of tree ``t``; its children are nodes ``2k + 1``
        (left) and ``2k + 2`` (right).
        """
        trees, n_nodes, n_internal = self.n_trees, 2 ** (self.height + 1) - 1, 2**self.height - 1
        feature = np.zeros((trees, n_nodes), dtype=np.int32)
        threshold = np.zeros((trees, n_nodes), dtype=np.float64)
        right = np.zeros((trees, n_nodes), dtype=np.int64)
        feature[:, :n_internal] = self.feature_
        threshold[:, :n_internal] = self.threshold_
        right[:, :n_internal] = np.arange(trees)[:, None] * n_nodes + 2 * np.arange(n_internal) + 2
        self._feature_flat = feature.ravel()
        self._threshold_flat = threshold.ravel()
        self._right_flat = right.ravel()
        self._pow2 = 2 ** np.arange(1, self.height + 1, dtype=np.int64)
        self._size_limit = 0.1 * self.window_size  # River's size_limit, the same float
        self._max_score_float = float(self._max_score)  # exact: below 2 ** 53
        self._index_cache: dict[int, tuple[IntArray, IntArray]] = {}
        # Flat indices that may hold a non-zero mass, so that a window swap can zero a few entries
        # instead of the whole array; None means unknown (as after restore) or too many to pay off.
        self._latest_touched = None
        self._latest_touched_size = 0
        self._reference_touched = None
        self._touched_cap = self.n_trees * self._n_nodes // 4

    def _indices(self, n: int) -> tuple[IntArray, IntArray]:
        """Per column (row by row, tree by tree): the root's flat index, the row's start in the rows."""
        cached = self._index_cache.get(n)
        if cached is None:
            trees, n_nodes = self.n_trees, 2 ** (self.height + 1) - 1
            root = np.tile(np.arange(trees, dtype=np.int64) * n_nodes, n)
            row_start = np.repeat(np.arange(n, dtype=np.int64) * len(self.feature_names), trees)
            cached = (root, row_start)
            if len(self._index_cache) >= 8:
                self._index_cache.clear()
            self._index_cache[n] = cached
        return cached

    def _paths(self, scaled: FloatArray) -> IntArray:
        """``(height + 1, n * n_trees)`` flat node index (see ``_prepare``) at each depth.

        Columns run row by row, tree by tree. The path goes left if ``value < threshold``, else
        right (so NaN goes right), as in River.
        """
        n = len(scaled)
        root, row_start = self._indices(n)
        values = scaled.ravel()
        features, thresholds, right = self._feature_flat, self._threshold_flat, self._right_flat
        paths = np.empty((self.height + 1, n * self.n_trees), dtype=np.int64)
        paths[0] = root
        node = root
        for depth in range(1, self.height + 1):
            column = features.take(node)
            if n > 1:
                column = row_start + column
            less = values.take(column) < thresholds.take(node)
            node = np.subtract(right.take(node), less, out=paths[depth])
        return paths

    def _scores(self, paths: IntArray) -> FloatArray:
        """River's score of each row from its paths (see ``_paths``) and the reference masses.

        Per tree: the mass at depth 0, plus ``mass * 2 ** depth`` at each deeper node whose parent's
        mass is at least the size limit. Masses never grow down a path, so that parent condition
        is River's "stop after the first node below the limit".
        """
        mass = self.reference_mass_.ravel().take(paths)
        deeper = mass[1:]
        deeper *= mass[:-1] >= self._size_limit
        per_tree = self._pow2 @ deeper
        per_tree += mass[0]
        total = per_tree.reshape(-1, self.n_trees).sum(axis=1)
        result: FloatArray = 1.0 - np.true_divide(total, self._max_score_float)
        return result

    def _add_latest(self, paths: IntArray, amount: int) -> None:
        np.add.at(self.latest_mass_.ravel(), paths, amount)
        if self._latest_touched is not None:
            self._latest_touched.append(paths)
            self._latest_touched_size += paths.size
            if self._latest_touched_size > self._touched_cap:
                self._latest_touched = None

    def _swap_windows(self) -> None:
        """The latest masses become the reference; the old reference, zeroed, becomes the latest."""
        old_reference = self.reference_mass_
        if self._reference_touched is None:
            old_reference.fill(0)
        else:
            flat = old_reference.ravel()
            for touched in self._reference_touched:
                flat[touched] = 0
        self.reference_mass_, self.latest_mass_ = self.latest_mass_, old_reference
        self._reference_touched = self._latest_touched
        self._latest_touched, self._latest_touched_size = [], 0

    def _process(self, X: FloatArray, *, score: bool) -> FloatArray:
        """Score (if ``score``) then learn each row of ``X``, in order."""
        n = len(X)
        scores = np.zeros(n, dtype=np.float64)
        if n == 0:
            return scores
        if not self.fitted:
            self._fit_start()
        trees, window = self.n_trees, self.window_size
        # the scaler state before each row, and after the last one
        stacked = np.concatenate((self.min_[None, :], X))
        lows = np.fmin.accumulate(stacked, axis=0)
        stacked[0] = self.max_
        highs = np.fmax.accumulate(stacked, axis=0)
        # rows from `first` on are scored, all with a complete reference window
        first = n if not score else min(n, max(0, window - self.n_seen_))
        # Scoring row i scales it with the state before it, learning it with the state after it; the
        # two are the same unless row i moved a bound, and then one path serves both.
        moved = first + np.flatnonzero(
            ((lows[first + 1 :] != lows[first:n]) | (highs[first + 1 :] != highs[first:n])).any(axis=1)
        )
        own = np.concatenate((np.arange(first, dtype=np.int64), moved)) if first else moved
        parts = []
        if first < n:
            parts.append(_scale(X[first:], lows[first:n], highs[first:n]))
        if own.size:
            parts.append(_scale(X[own], lows[own + 1], highs[own + 1]))
        paths = self._paths(parts[0] if len(parts) == 1 else np.concatenate(parts))
        n_scored = n - first
        score_paths, own_paths = paths[:, : n_scored * trees], paths[:, n_scored * trees :]

        start = 0
        while start < n:
            end = min(n, start + window - self.n_seen_ % window)
            own_from, own_to = np.searchsorted(own, (start, end)).tolist() if own.size else (0, 0)
            if start >= first:
                cols = slice((start - first) * trees, (end - first) * trees)
                scores[start:end] = self._scores(score_paths[:, cols])
                self._add_latest(score_paths[:, cols], 1)
                if own_to > own_from:  # rows that moved a bound learn their own path instead
                    rows = own[own_from:own_to] - first
                    self._add_latest(score_paths[:, (rows[:, None] * trees + np.arange(trees)).ravel()], -1)
            if own_to > own_from:
                self._add_latest(own_paths[:, own_from * trees : own_to * trees], 1)
            self.n_seen_ += end - start
            if self.n_seen_ % window == 0:
                self._swap_windows()
            start = end
        self.min_ = lows[-1].copy()
        self.max_ = highs[-1].copy()
        return scores


def _scale(X: FloatArray, low: FloatArray, high: FloatArray) -> FloatArray:
    """River's MinMaxScaler.transform_one: ``(x - min) / (max - min)``, or 0.0 where that is 0."""
    result = np.zeros(X.shape, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf and NaN inputs give inf and NaN, as in River
        span = high - low
        np.divide(X - low, span, out=result, where=span != 0)
    return result
