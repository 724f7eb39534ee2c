"""A fitted scikit-learn ``IsolationForest``, compiled into numpy arrays and scored a batch at a time.

:class:`CompiledIsolationForest` returns what ``IsolationForest.score_samples`` returns, bit for bit,
several times faster (``benchmarks/iforest.py``): scikit-learn walks the trees one at a time from
Python (``tree.apply`` per tree, through joblib), which costs tens of microseconds per row for 100
trees at batches of 1000 rows. Here all the trees are packed into a few arrays once, and a batch is
scored by whole-array numpy operations, a few microseconds per row.

What scikit-learn computes (``IsolationForest.score_samples``, read from scikit-learn 1.9)
------------------------------------------------------------------------------------------
* ``X`` is converted to ``float32``; each tree sees ``X[:, estimators_features_[i]]`` when the
  forest subsamples features (``_max_features < n_features_in_``), else ``X`` itself. At a node the
  ``float32`` value is compared, promoted to ``float64``, with the ``float64`` threshold:
  ``x <= threshold`` goes left; NaN goes left when ``missing_go_to_left`` is set, else right.
* A row reaching leaf ``j`` of tree ``i`` adds ``(depth_j + c(n_j)) - 1.0``, with ``depth_j`` the
  number of nodes on the path (the root counts 1, as ``tree_.compute_node_depths`` does), ``n_j`` the
  leaf's ``n_node_samples`` and ``c`` the average path length of an unsuccessful BST search
  (``_average_path_length``). The per-tree terms are summed in tree order, starting from 0.0.
* ``score = -(2 ** -(depths / (n_estimators * c(max_samples))))`` (``depths / 0`` is taken as 1).

This module repeats those floating-point operations in the same order, so the scores are equal,
not merely close (the tests compare with the installed scikit-learn for equality); only the way
each row finds its leaves differs.

Two engines
-----------
``"bitvector"`` (the default when its table fits in ``max_table_bytes``)
    The QuickScorer algorithm (Lucchese et al., SIGIR 2015). The leaves of each tree are numbered
    left to right and a row carries one bit per leaf, all set. Every node whose test is false
    (the row goes right) clears the bits of the leaves of its left subtree; the exit leaf is then the
    lowest bit still set. For one feature, the false nodes are those whose threshold is below the
    value: a prefix of the nodes sorted by threshold. So a table holds, for each feature and each
    rank among that feature's thresholds, the AND of the masks of that prefix, for all trees at once,
    and a row needs one table row per feature: ``n_features`` row gathers and ANDs of
    ``n_words`` 64-bit words (one word per tree of up to 64 leaves). The rank is found with an
    exact bucket index (a monotone affine bucket, then a comparison with the few thresholds in the
    bucket) and the lowest set bit with a de Bruijn multiplication. Subtrees whose leaves all add the
    same value are first collapsed into one leaf, which is exact and saves about a fifth of the bits.
``"levelwise"`` (used when the table would be larger, e.g. ``max_samples`` in the thousands)
    All trees in one flat node array; a ``(n_trees, n_rows)`` array of node indices takes one step
    down per iteration (leaves point to themselves), for ``max depth`` iterations.

Memory: the bitvector table has ``(n_thresholds + 2 * n_features) * n_words * 8`` bytes, about 6 MB
for 100 trees with ``max_samples=256`` and 12 features.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["CompiledIsolationForest", "average_path_length"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
WordArray = npt.NDArray[np.uint64]
Method = Literal["auto", "bitvector", "levelwise"]

_ALL_ONES = (1 << 64) - 1
_DE_BRUIJN = 0x03F79D71B4CB0A89  # B(2, 6): the top 6 bits of (1 << b) * _DE_BRUIJN differ for b = 0..63
_DE_BRUIJN_SLOT = [(((1 << b) * _DE_BRUIJN) & _ALL_ONES) >> 58 for b in range(64)]
assert sorted(_DE_BRUIJN_SLOT) == list(range(64))
_EXPONENT_BIAS = 1023  # raw float64 exponent of 2 ** b is 1023 + b
_MAX_WORDS = 16  # 2 ** (64 * 15 + 63) is still a finite float64: see _decode_block
_BUCKETS_PER_THRESHOLD = 8
_MAX_BUCKET_OCCUPANCY = 8  # more distinct thresholds than this in one bucket: binary search instead
_BLOCK_ROWS = 8192  # rows per pass of score_samples: bounds the (n_trees, n_rows) working arrays


def average_path_length(n_samples: npt.ArrayLike) -> FloatArray:
    """Average path length of an unsuccessful search in a binary search tree of ``n`` nodes.

    The same expression, in the same floating-point order, as scikit-learn's private
    ``sklearn.ensemble._iforest._average_path_length``: 0 for ``n <= 1``, 1 for ``n == 2``, else
    ``2 (ln(n - 1) + γ) - 2 (n - 1) / n``.

    Parameters
    ----------
    n_samples : array_like of int
        Sample counts, e.g. the ``n_node_samples`` of a tree's leaves.

    Returns
    -------
    ndarray of float64, same shape as ``n_samples``

    Examples
    --------
    >>> from anomrec.streaming.iforest import average_path_length
    >>> average_path_length([1, 2, 256]).round(6).tolist()
    [0.0, 1.0, 10.244771]
    """
    n = np.asarray(n_samples)
    shape = n.shape
    n = n.reshape((1, -1))
    out = np.zeros(n.shape)
    mask_1 = n <= 1
    mask_2 = n == 2
    rest = ~np.logical_or(mask_1, mask_2)
    out[mask_2] = 1.0
    out[rest] = 2.0 * (np.log(n[rest] - 1.0) + np.euler_gamma) - 2.0 * (n[rest] - 1.0) / n[rest]
    return out.reshape(shape)


class _Tree:
    """One fitted tree, its features mapped to columns of the full ``X``, with per-node values."""

    def __init__(self, tree: Any, features: IntArray | None) -> None:
        self.left: IntArray = np.asarray(tree.children_left, dtype=np.intp)
        self.right: IntArray = np.asarray(tree.children_right, dtype=np.intp)
        self.is_leaf = self.left < 0
        feature = np.where(self.is_leaf, 0, np.asarray(tree.feature, dtype=np.intp))
        self.feature: IntArray = feature if features is None else np.asarray(features, np.intp)[feature]
        self.threshold: FloatArray = np.asarray(tree.threshold, dtype=np.float64)
        self.missing_left = np.asarray(tree.missing_go_to_left, dtype=bool)
        n = len(self.left)
        # Depth with the root at 1 (tree_.compute_node_depths), by an explicit walk from the root.
        depth = np.zeros(n, dtype=np.int64)
        depth[0] = 1
        stack = [0]
        while stack:
            node = stack.pop()
            if not self.is_leaf[node]:
                for child in (self.left[node], self.right[node]):
                    depth[child] = depth[node] + 1
                    stack.append(int(child))
        self.depth = depth
        # The term a row reaching the node adds when the node is a leaf, in scikit-learn's order:
        # decision_path_lengths[leaf] + average_path_length[leaf] - 1.0.
        self.value: FloatArray = depth + average_path_length(np.asarray(tree.n_node_samples)) - 1.0
        self._collapsed: tuple[npt.NDArray[np.bool_], FloatArray] | None = None

    def collapsed(self) -> tuple[npt.NDArray[np.bool_], FloatArray]:
        """Which nodes have leaves that all add the same value, and that value (cached).

        Every leaf qualifies; an internal node does when both children do with equal values. Such
        a subtree can be read as one leaf: whichever leaf a row reaches, it adds the same term.
        """
        if self._collapsed is None:
            uniform = self.is_leaf.copy()
            value = self.value.copy()
            for node in self._postorder():
                lo, hi = self.left[node], self.right[node]
                if not self.is_leaf[node] and uniform[lo] and uniform[hi] and value[lo] == value[hi]:
                    uniform[node] = True
                    value[node] = value[lo]
            self._collapsed = (uniform, value)
        return self._collapsed

    def _postorder(self) -> list[int]:
        order: list[int] = []
        stack = [0]
        while stack:
            node = stack.pop()
            order.append(node)
            if not self.is_leaf[node]:
                stack.extend((int(self.left[node]), int(self.right[node])))
        return order[::-1]


class CompiledIsolationForest:
    """``IsolationForest.score_samples`` of a fitted forest, exact and vectorised over all trees.

    Parameters
    ----------
    estimator : sklearn.ensemble.IsolationForest
        A fitted forest. Nothing refers back to it: the compiled object holds numpy arrays only and
        pickles, copies and scores on its own.
    method : {"auto", "bitvector", "levelwise"}, default "auto"
        The scoring engine (see the module documentation). ``"auto"`` picks ``"bitvector"`` when its
        table fits in ``max_table_bytes`` and no tree has more than 1024 leaves after collapsing,
        else ``"levelwise"``. Both give the same scores.
    max_table_bytes : int, default 64 MiB
        Upper bound on the bitvector table for ``method="auto"``.
    chunk_rows : int, default 1024
        Rows scored per pass, so that the working arrays stay in cache.

    Attributes
    ----------
    method_ : str
        The engine chosen.
    n_features_in_ : int
    n_estimators_ : int
    nbytes_ : int
        Bytes held by the compiled arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.ensemble import IsolationForest
    >>> from anomrec.streaming.iforest import CompiledIsolationForest
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(2000, 5))
    >>> forest = IsolationForest(n_estimators=50, random_state=0).fit(X)
    >>> compiled = CompiledIsolationForest.from_estimator(forest)
    >>> compiled.method_
    'bitvector'
    >>> batch = rng.normal(size=(300, 5)) * 2
    >>> bool(np.array_equal(compiled.score_samples(batch), forest.score_samples(batch)))
    True
    >>> levelwise = CompiledIsolationForest(forest, method="levelwise")
    >>> bool(np.array_equal(levelwise.score_samples(batch), forest.score_samples(batch)))
    True
    """

    def __init__(
        self,
        estimator: Any,
        *,
        method: Method = "auto",
        max_table_bytes: int = 64 * 2**20,
        chunk_rows: int = 1024,
    ) -> None:
        if method not in ("auto", "bitvector", "levelwise"):
            raise ValueError(f"method must be 'auto', 'bitvector' or 'levelwise', got {method!r}")
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        estimators = getattr(estimator, "estimators_", None)
        if not estimators:
            raise ValueError("the IsolationForest is not fitted")
        self.n_features_in_ = int(estimator.n_features_in_)
        self.n_estimators_ = len(estimators)
        self.chunk_rows = int(chunk_rows)
        # scikit-learn indexes the features only when it subsampled them (see _bagging.py); with all
        # features kept, estimators_features_ may be a permutation that fitting never applied.
        subsample = int(estimator._max_features) != self.n_features_in_
        trees = [
            _Tree(est.tree_, np.asarray(features) if subsample else None)
            for est, features in zip(estimators, estimator.estimators_features_, strict=True)
        ]
        # denominator = len(estimators_) * _average_path_length([_max_samples]), a shape (1,) array.
        self._denominator: FloatArray = self.n_estimators_ * average_path_length([estimator._max_samples])

        self._engine: _Bitvector | _Levelwise
        per_tree = [_number(tree) for tree in trees] if method != "levelwise" else []
        if method == "auto" and (
            max(_Bitvector.words(per_tree)) > _MAX_WORDS
            or _Bitvector.table_bytes(per_tree, self.n_features_in_) > max_table_bytes
        ):
            method = "levelwise"
        if method == "levelwise":
            self._engine = _Levelwise(trees)
        else:
            self._engine = _Bitvector(trees, per_tree, self.n_features_in_)
        self.method_: str = "levelwise" if isinstance(self._engine, _Levelwise) else "bitvector"

    @classmethod
    def from_estimator(
        cls,
        estimator: Any,
        *,
        method: Method = "auto",
        max_table_bytes: int = 64 * 2**20,
        chunk_rows: int = 1024,
    ) -> CompiledIsolationForest:
        """Compile a fitted ``IsolationForest``; the same as calling the class."""
        return cls(estimator, method=method, max_table_bytes=max_table_bytes, chunk_rows=chunk_rows)

    @property
    def nbytes_(self) -> int:
        return self._engine.nbytes()

    def __repr__(self) -> str:
        return (
            f"CompiledIsolationForest(n_estimators={self.n_estimators_}, "
            f"n_features={self.n_features_in_}, method={self.method_!r})"
        )

    def score_samples(self, X: npt.ArrayLike) -> FloatArray:
        """The forest's ``score_samples(X)``: the opposite of the anomaly score, lower is more abnormal.

        Parameters
        ----------
        X : array_like of shape (n_samples, n_features)
            Rows to score, any real dtype; converted to ``float32`` as scikit-learn does (values
            outside the ``float32`` range become infinite). NaN follows each node's
            ``missing_go_to_left``. ``X`` is never modified. Zero rows give an empty result (where
            scikit-learn raises).

        Returns
        -------
        ndarray of float64, shape (n_samples,)
            Equal to ``estimator.score_samples(X)``.
        """
        X32 = self._validate(X)
        n = X32.shape[0]
        depths = np.empty(n, dtype=np.float64)
        for start in range(0, n, _BLOCK_ROWS):
            block = X32[start : start + _BLOCK_ROWS]
            terms = self._engine.leaf_terms(block, self.chunk_rows)  # (n_trees, n_rows), trees in order
            depths[start : start + block.shape[0]] = _sum_over_trees(terms)
        denominator = self._denominator
        scores = 2 ** (-np.divide(depths, denominator, out=np.ones_like(depths), where=denominator != 0))
        result: FloatArray = -scores
        return result

    def _validate(self, X: npt.ArrayLike) -> npt.NDArray[np.float32]:
        array = np.asarray(X)
        if array.ndim != 2:
            raise ValueError(f"X must be 2-dimensional, got shape {array.shape}")
        if array.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {array.shape[1]} features, the forest was fitted on {self.n_features_in_}"
            )
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_) or np.iscomplexobj(array):
            raise ValueError(f"X must hold real numbers, got dtype {array.dtype}")
        with np.errstate(over="ignore"):  # float64 beyond the float32 range becomes ±inf, as in sklearn
            return np.asarray(array, dtype=np.float32)


def _sum_over_trees(terms: FloatArray) -> FloatArray:
    """Column sums of ``terms`` added tree after tree from 0.0, in scikit-learn's order.

    On a C-contiguous ``(n_trees, n_rows)`` array with at least two columns, ``add.reduce`` over
    axis 0 runs its inner loop along the rows, adding one tree's row at a time: sequential, as
    scikit-learn's ``depths += ...``. With a single column numpy would reduce along the trees with
    pairwise summation, so that case (and any other layout) goes through ``add.accumulate``, which
    is sequential by definition but slower.
    """
    if terms.shape[1] >= 2 and terms.flags.c_contiguous:
        summed: FloatArray = np.add.reduce(terms, axis=0)
        return summed
    accumulated: FloatArray = np.add.accumulate(terms, axis=0)
    return accumulated[-1]


_Numbered = tuple[list[float], list[int], list[tuple[int, int]]]


def _number(tree: _Tree) -> _Numbered:
    """The collapsed tree's leaf values left to right, its internal nodes and their left leaves.

    For each internal node, ``(first, stop)``: the ordinals of the leaves of its left subtree.
    """
    uniform, value = tree.collapsed()
    leaves: list[float] = []
    internal: list[int] = []
    ranges: list[tuple[int, int]] = []
    # Depth first, left before right; ("close", k) comes once the left subtree of internal[k]
    # is numbered.
    stack: list[tuple[bool, int]] = [(False, 0)]
    while stack:
        close, item = stack.pop()
        if close:
            ranges[item] = (ranges[item][0], len(leaves))
        elif uniform[item]:
            leaves.append(float(value[item]))
        else:
            stack.append((False, int(tree.right[item])))
            stack.append((True, len(internal)))
            stack.append((False, int(tree.left[item])))
            internal.append(item)
            ranges.append((len(leaves), -1))
    return leaves, internal, ranges


class _Bitvector:
    """The QuickScorer engine; see the module documentation."""

    @staticmethod
    def words(per_tree: list[_Numbered]) -> list[int]:
        """64-bit words per tree: one bit per leaf of the collapsed tree."""
        return [max(1, (len(leaves) + 63) // 64) for leaves, _, _ in per_tree]

    @classmethod
    def table_bytes(cls, per_tree: list[_Numbered], n_features: int) -> int:
        """An upper bound on the table's size: (thresholds + 2 rows per feature) x words x 8."""
        thresholds = sum(len(internal) for _, internal, _ in per_tree)
        return (thresholds + 2 * n_features) * sum(cls.words(per_tree)) * 8

    def __init__(self, trees: list[_Tree], per_tree: list[_Numbered], n_features: int) -> None:
        n_trees = len(trees)
        words = np.array(self.words(per_tree), dtype=np.intp)
        if words.max() > _MAX_WORDS:
            raise ValueError(f"a tree has more than {64 * _MAX_WORDS} leaves: use method='levelwise'")

        # Trees grouped by word count, each group word-major: word j of the group's k-th tree is
        # column start + j * group_size + k, so every word j of a group is one contiguous block.
        order = np.argsort(words, kind="stable")
        self._order: IntArray = order.astype(np.intp)  # block (w, first, stop, _) holds order[first:stop]
        blocks = []
        column = np.zeros((n_trees, int(words.max())), dtype=np.intp)
        start = 0
        for w in np.unique(words):
            members = np.flatnonzero(words[order] == w)
            first, size = int(members[0]), len(members)
            blocks.append((int(w), first, first + size, start))
            for k, position in enumerate(range(first, first + size)):
                column[order[position], :w] = start + np.arange(w) * size + k
            start += int(w) * size
        n_words = start
        self._blocks = np.array(blocks, dtype=np.intp)

        # Leaf values by slot: slot = de Bruijn hash of the bit for word 0, 1023 + 64 (j - 1) + bit
        # for word j >= 1 (the raw float64 exponent, see _decode_block). Unused slots are NaN.
        slot_counts = np.where(words == 1, 64, _EXPONENT_BIAS + 64 * (words - 1))
        self._slot_base: IntArray = np.concatenate([[0], np.cumsum(slot_counts)[:-1]]).astype(np.intp)
        values = np.full(int(slot_counts.sum()), np.nan)
        for tree_index, (leaves, _, _) in enumerate(per_tree):
            for ordinal, value in enumerate(leaves):
                word, bit = divmod(ordinal, 64)
                slot = _DE_BRUIJN_SLOT[bit] if word == 0 else _EXPONENT_BIAS + 64 * (word - 1) + bit
                values[self._slot_base[tree_index] + slot] = value
        self._values: FloatArray = values

        # Per feature: distinct thresholds; table rows [all ones, prefix ANDs..., NaN row].
        node_tree, node_feature, node_threshold, node_missing_left, node_mask = [], [], [], [], []
        for tree_index, (tree, (_, internal, ranges)) in enumerate(zip(trees, per_tree, strict=True)):
            for node, (lo, hi) in zip(internal, ranges, strict=True):
                node_tree.append(tree_index)
                node_feature.append(int(tree.feature[node]))
                node_threshold.append(float(tree.threshold[node]))
                node_missing_left.append(bool(tree.missing_left[node]))
                node_mask.append((1 << hi) - (1 << lo))
        features = np.array(node_feature, dtype=np.intp)
        thresholds = np.array(node_threshold, dtype=np.float64)
        used = np.unique(features)
        self._features: IntArray = used.astype(np.intp)
        self._all_features = np.array_equal(self._features, np.arange(n_features))
        tables = []
        offsets, nan_rows = [], []
        distinct_by_feature = []
        row = 0
        for f in used:
            members = np.flatnonzero(features == f)
            distinct = np.unique(thresholds[members])
            table = np.full((len(distinct) + 2, n_words), _ALL_ONES, dtype=np.uint64)
            ranks = np.searchsorted(distinct, thresholds[members]) + 1
            for node, rank in zip(members.tolist(), ranks.tolist(), strict=True):
                tree_index, mask = node_tree[node], node_mask[node]
                for j in range(int(words[tree_index])):
                    word = (mask >> (64 * j)) & _ALL_ONES
                    if word:
                        cleared = np.uint64(_ALL_ONES ^ word)
                        col = column[tree_index, j]
                        table[rank, col] &= cleared
                        if not node_missing_left[node]:  # NaN goes right: the node's test is false
                            table[-1, col] &= cleared
            np.bitwise_and.accumulate(table[:-1], axis=0, out=table[:-1])
            tables.append(table)
            offsets.append(row)
            nan_rows.append(row + len(distinct) + 1)
            distinct_by_feature.append(distinct)
            row += len(distinct) + 2
        self._table: WordArray = np.concatenate(tables) if tables else np.zeros((0, n_words), dtype=np.uint64)
        self._n_words = n_words
        self._nan_rows: IntArray = np.array(nan_rows, dtype=np.intp)
        self._rank = _Ranks(distinct_by_feature, np.array(offsets, dtype=np.intp))

    def nbytes(self) -> int:
        return int(self._table.nbytes + self._values.nbytes + self._rank.nbytes())

    def leaf_terms(self, X32: npt.NDArray[np.float32], chunk_rows: int) -> FloatArray:
        """Each tree's term for each row, ``(n_trees, n_rows)``; rows ANDed ``chunk_rows`` at a time."""
        n = X32.shape[0]
        used = X32 if self._all_features else X32[:, self._features]
        XT = np.ascontiguousarray(used.T, dtype=np.float64)  # (n_used_features, n)
        rows = self._rank.rows(XT)
        if np.isnan(XT).any():
            rows = np.where(np.isnan(XT), self._nan_rows[:, None], rows)
        words = np.empty((self._n_words, n), dtype=np.uint64)
        if len(rows) == 0:
            words.fill(_ALL_ONES)
        for start in range(0, n if len(rows) else 0, chunk_rows):
            stop = min(n, start + chunk_rows)
            bits = np.take(self._table, rows[0, start:stop], axis=0)
            for f in range(1, len(rows)):
                np.bitwise_and(bits, np.take(self._table, rows[f, start:stop], axis=0), out=bits)
            words[:, start:stop] = bits.T
        terms = np.empty((len(self._slot_base), n), dtype=np.float64)
        for w, first, stop, start in self._blocks.tolist():
            trees = self._order[first:stop]
            slots = _decode_block(words, w, stop - first, start)
            slots += self._slot_base[trees, None]
            terms[trees] = np.take(self._values, slots)
        return terms


def _decode_block(words: WordArray, w: int, size: int, start: int) -> IntArray:
    """Slot of the lowest set bit of each tree of a block of ``size`` trees with ``w`` words each.

    Word 0: ``low = v & -v`` isolates the bit, ``(low * B) >> 58`` maps it to 0..63 (de Bruijn).
    Words j >= 1: the bit counts only when all lower words are zero; ``~v + carry`` is ``-v``
    exactly then, so ``v & (~v + carry)`` isolates it, else gives 0. At most one such bit is set over
    the words, so the float64 sum of ``low_j * 2 ** (64 (j - 1))`` is exact and its raw exponent,
    ``1023 + 64 (j - 1) + bit``, is zero when word 0 holds the bit. Slot = hash + raw exponent.
    """
    word0 = words[start : start + size]
    low = np.negative(word0)
    low &= word0
    low *= np.uint64(_DE_BRUIJN)
    low >>= np.uint64(58)
    if w > 1:
        carry = word0 == 0
        power: FloatArray | None = None
        for j in range(1, w):
            word = words[start + j * size : start + (j + 1) * size]
            lowj = np.invert(word)
            lowj += carry
            lowj &= word
            part = lowj.astype(np.float64)
            if j > 1:
                part *= 2.0 ** (64 * (j - 1))
            if power is None:
                power = part
            else:
                power += part
            if j < w - 1:
                carry &= word == 0
        assert power is not None
        exponent = power.view(np.int64)
        exponent >>= 52
        low += exponent.view(np.uint64)
    return low.view(np.int64).astype(np.intp, copy=False)


class _Ranks:
    """For each used feature, the number of its distinct thresholds below each value, exactly.

    Bucket ``b = clip(floor((x - lo) * scale), 0, n_buckets - 1)`` is monotone in ``x`` (each
    IEEE operation is), and a threshold's bucket is computed by the same expression, so a threshold
    in a lower bucket is below ``x`` and one in a higher bucket is not; only the few thresholds in
    ``x``'s own bucket are compared. Features whose thresholds crowd into a bucket (or are infinite)
    use ``np.searchsorted``.
    """

    def __init__(self, distinct_by_feature: list[FloatArray], offsets: IntArray) -> None:
        self._offsets = offsets
        bucketed, searched = [], []
        lows, scales, tops, bases, bucket_offsets, contents = [], [], [], [], [], []
        total = 0
        for index, distinct in enumerate(distinct_by_feature):
            plan = self._plan(distinct)
            if plan is None:
                searched.append(index)
                continue
            lo, scale, n_buckets, buckets = plan
            counts = np.bincount(buckets, minlength=n_buckets)
            bucketed.append(index)
            lows.append(lo)
            scales.append(scale)
            tops.append(float(n_buckets - 1))
            bases.append(np.concatenate([[0], np.cumsum(counts)[:-1]]) + offsets[index])
            bucket_offsets.append(total)
            contents.append((buckets + total, distinct, counts))
            total += n_buckets
        self._bucketed: IntArray = np.array(bucketed, dtype=np.intp)
        self._searched: IntArray = np.array(searched, dtype=np.intp)
        self._all_bucketed = len(searched) == 0
        self._low: FloatArray = np.array(lows, dtype=np.float64)[:, None]
        self._scale: FloatArray = np.array(scales, dtype=np.float64)[:, None]
        self._top: FloatArray = np.array(tops, dtype=np.float64)[:, None]
        self._bucket_offset: IntArray = np.array(bucket_offsets, dtype=np.intp)[:, None]
        self._base: IntArray = (np.concatenate(bases) if bases else np.zeros(0)).astype(np.intp)
        depth = max((int(c.max()) for _, _, c in contents), default=0)
        # _content[i, b]: the i-th smallest distinct threshold in bucket b, +inf past the last one.
        content = np.full((depth, total), np.inf)
        for buckets, distinct, counts in contents:
            first = np.repeat(np.cumsum(counts) - counts, counts)  # position of each bucket's first
            position = np.arange(len(distinct)) - first[: len(distinct)]
            content[position, buckets] = distinct
        self._content: FloatArray = content
        self._search: list[FloatArray] = [distinct_by_feature[i] for i in searched]

    @staticmethod
    def _plan(distinct: FloatArray) -> tuple[float, float, int, IntArray] | None:
        if not np.all(np.isfinite(distinct)):
            return None
        lo, hi = float(distinct[0]), float(distinct[-1])
        n_buckets = _BUCKETS_PER_THRESHOLD * len(distinct)
        span = hi - lo
        scale = n_buckets / span if span > 0 else 1.0
        if not (np.isfinite(scale) and scale > 0):
            return None
        if span == 0:
            n_buckets = 1
        buckets = np.clip(np.floor((distinct - lo) * scale), 0, n_buckets - 1).astype(np.intp)
        if np.bincount(buckets).max() > _MAX_BUCKET_OCCUPANCY:
            return None
        return lo, scale, n_buckets, buckets

    def nbytes(self) -> int:
        return int(self._base.nbytes + self._content.nbytes)

    def rows(self, XT: FloatArray) -> IntArray:
        """Table row of each (feature, row) of ``XT``; NaN entries are left to the caller."""
        rows = np.empty(XT.shape, dtype=np.intp)
        if len(self._bucketed):
            x = XT if self._all_bucketed else XT[self._bucketed]
            b = x - self._low
            b *= self._scale
            np.fmax(b, 0.0, out=b)  # fmax also turns NaN into bucket 0
            np.minimum(b, self._top, out=b)
            buckets = b.astype(np.intp)
            buckets += self._bucket_offset
            ranks = np.take(self._base, buckets)
            if len(self._content):
                below = np.take(self._content, buckets, axis=1) < x  # (depth, n_features, n)
                ranks += below.view(np.uint8).sum(axis=0, dtype=np.uint8)  # depth <= 8: no overflow
            if self._all_bucketed:
                return ranks
            rows[self._bucketed] = ranks
        for k, f in enumerate(self._searched.tolist()):
            rows[f] = np.searchsorted(self._search[k], XT[f], side="left") + self._offsets[f]
        return rows


class _Levelwise:
    """Level-by-level traversal of all trees at once; see the module documentation.

    Node ``i`` (trees concatenated) owns slots ``2i`` and ``2i + 1``: feature and threshold are
    stored in both, ``child[2i + 1]`` is ``2 * left`` and ``child[2i]`` is ``2 * right``, so one step
    is ``s = child[s + (x <= threshold)]``. A leaf's two slots point to the leaf itself.
    """

    def __init__(self, trees: list[_Tree]) -> None:
        sizes = np.array([len(t.left) for t in trees], dtype=np.intp)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        n = int(sizes.sum())
        feature = np.zeros(n, dtype=np.intp)
        threshold = np.zeros(n, dtype=np.float64)
        missing_left = np.zeros(n, dtype=bool)
        left = np.zeros(n, dtype=np.intp)
        right = np.zeros(n, dtype=np.intp)
        value = np.full(n, np.nan)
        for tree, offset in zip(trees, offsets.tolist(), strict=True):
            ids = offset + np.arange(len(tree.left))
            leaf = tree.is_leaf
            feature[ids] = np.where(leaf, 0, tree.feature)
            threshold[ids] = np.where(leaf, 0.0, tree.threshold)
            missing_left[ids] = tree.missing_left & ~leaf
            left[ids] = np.where(leaf, ids, tree.left + offset)
            right[ids] = np.where(leaf, ids, tree.right + offset)
            value[ids[leaf]] = tree.value[leaf]
        self._feature: IntArray = np.repeat(feature, 2)
        self._threshold: FloatArray = np.repeat(threshold, 2)
        self._missing_left = np.repeat(missing_left, 2)
        child = np.empty(2 * n, dtype=np.intp)
        child[0::2] = 2 * right
        child[1::2] = 2 * left
        self._child: IntArray = child
        self._value: FloatArray = np.repeat(value, 2)
        self._roots: IntArray = 2 * offsets
        self._levels = max(int(t.depth.max()) for t in trees) - 1

    def nbytes(self) -> int:
        arrays = (self._feature, self._threshold, self._missing_left, self._child, self._value)
        return int(sum(a.nbytes for a in arrays))

    def leaf_terms(self, X32: npt.NDArray[np.float32], chunk_rows: int) -> FloatArray:
        """Each tree's term for each row, ``(n_trees, n_rows)``, walking ``chunk_rows`` rows at a time."""
        n = X32.shape[0]
        terms = np.empty((len(self._roots), n), dtype=np.float64)
        for start in range(0, n, chunk_rows):
            terms[:, start : start + chunk_rows] = self._walk(X32[start : start + chunk_rows])
        return terms

    def _walk(self, X32: npt.NDArray[np.float32]) -> FloatArray:
        n, n_features = X32.shape
        flat = X32.astype(np.float64).ravel()
        has_nan = bool(np.isnan(flat).any())
        row_offset = np.arange(n, dtype=np.intp) * n_features
        slot = np.repeat(self._roots[:, None], n, axis=1)
        for _ in range(self._levels):
            index = np.take(self._feature, slot)
            index += row_offset
            x = np.take(flat, index)
            go_left = x <= np.take(self._threshold, slot)
            if has_nan:
                go_left |= np.isnan(x) & np.take(self._missing_left, slot)
            slot += go_left
            slot = np.take(self._child, slot)
        terms: FloatArray = np.take(self._value, slot)
        return terms
