"""Compiled inner loops of the recommendation models (numba).

Every loop that runs once per interaction or once per candidate item lives here, compiled with
numba and cached on disk, so that a model learns an event in about a microsecond and ranks 10,000
items in tens of microseconds. The Python classes in :mod:`anomrec.streaming.reco` own the arrays
and grow them; these functions only read and update them in place.

Randomness comes from a per-model xorshift64* state held in a one-element ``uint64`` array, so a
model's draws depend only on its own seed and the events it has learned, never on another model
in the same process.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

# numba caches compiled code next to this file, keyed by the file, and the cache names the module
# it was compiled in. Imported under another name (``pytest --doctest-modules streaming/``), the
# kernels compile without the cache, so that they never leave code the package cannot load.
_CACHE = __name__ == "anomrec.streaming._reco_kernels"
# --------------------------------------------------------------------------------------------------
# random numbers


@njit(cache=_CACHE, inline="always")
def _next(state: np.ndarray) -> np.uint64:
    x = state[0]
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    state[0] = x
    return x * np.uint64(0x2545F4914F6CDD1D)


@njit(cache=_CACHE, inline="always")
def _uniform(state: np.ndarray) -> float:
    """A float in [0, 1)."""
    return float(_next(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=_CACHE, inline="always")
def _below(state: np.ndarray, n: int) -> int:
    """An int in [0, n)."""
    return int(_uniform(state) * n)


@njit(cache=_CACHE)
def init_rows(
    seed: np.uint64, matrix: np.ndarray, start: int, stop: int, scale: float, first_key: int
) -> None:
    """Fill ``matrix[start:stop]`` with uniform noise of standard deviation ``scale``.

    Row ``r``'s values depend on ``seed`` and its key ``first_key + r - start`` only, so a row is
    the same whether it was added alone or in a batch. A fresh row's key is its index; a reused
    one (a forgotten user's) gets a key no row has had before, from the caller.
    """
    half_width = scale * math.sqrt(3.0)
    state = np.zeros(1, np.uint64)
    for r in range(start, stop):
        # splitmix64 of (seed, key): a well-mixed, never-zero start for the row's xorshift.
        z = seed + np.uint64(first_key + r - start + 1) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        state[0] = (z ^ (z >> np.uint64(31))) | np.uint64(1)
        for c in range(matrix.shape[1]):
            matrix[r, c] = (2.0 * _uniform(state) - 1.0) * half_width


# --------------------------------------------------------------------------------------------------
# popularity


@njit(cache=_CACHE)
def popularity_learn(counts: np.ndarray, items: np.ndarray, weights: np.ndarray) -> None:
    for e in range(items.shape[0]):
        counts[items[e]] += weights[e]


# --------------------------------------------------------------------------------------------------
# co-occurrence: one sparse row per item, all rows in one pool of plain arrays
#
# Row ``i`` holds ``fill[i]`` entries at ``pool_cols/pool_vals[start : start + fill]`` (start =
# ``row_start[i]``): a neighbour and its count. Its hash index is ``pool_index[2 * start : 2 *
# (start + cap)]`` (cap = ``row_cap[i]``), open addressing from a neighbour to its position + 1
# (0 is empty). A full row moves to the end of the pool with twice the room; the space it leaves
# is reclaimed when the pool itself grows (:func:`cooc_compact`). Plain arrays, not lists of
# arrays, because numba unboxes a typed list in microseconds on every call.


@njit(cache=_CACHE, inline="always")
def _slot(col: int, mask: int) -> int:
    return ((col * 0x9E3779B1) >> 7) & mask


@njit(cache=_CACHE)
def _row_add(
    pool_index: np.ndarray,
    pool_cols: np.ndarray,
    pool_vals: np.ndarray,
    pool_end: np.ndarray,
    row_start: np.ndarray,
    row_cap: np.ndarray,
    fill: np.ndarray,
    row: int,
    col: int,
    w: float,
) -> None:
    cap = row_cap[row]
    start = row_start[row]
    mask = 2 * cap - 1
    s = 0
    if cap > 0:
        s = _slot(col, mask)
        while True:
            p = pool_index[2 * start + s]
            if p == 0:
                break
            if pool_cols[start + p - 1] == col:
                pool_vals[start + p - 1] += w
                return
            s = (s + 1) & mask
    n = fill[row]
    if n == cap:
        new_cap = max(8, 2 * cap)
        new_start = pool_end[0]
        pool_end[0] = new_start + new_cap
        pool_cols[new_start : new_start + n] = pool_cols[start : start + n]
        pool_vals[new_start : new_start + n] = pool_vals[start : start + n]
        pool_index[2 * new_start : 2 * (new_start + new_cap)] = 0
        mask = 2 * new_cap - 1
        for p in range(n):
            t = _slot(pool_cols[new_start + p], mask)
            while pool_index[2 * new_start + t] != 0:
                t = (t + 1) & mask
            pool_index[2 * new_start + t] = p + 1
        start = new_start
        row_start[row] = start
        row_cap[row] = new_cap
        s = _slot(col, mask)
        while pool_index[2 * start + s] != 0:
            s = (s + 1) & mask
    pool_cols[start + n] = col
    pool_vals[start + n] = w
    pool_index[2 * start + s] = n + 1
    fill[row] = n + 1


@njit(cache=_CACHE)
def _room_needed(row_cap: np.ndarray, fill: np.ndarray, row: int, new_entries: int) -> int:
    """Pool slots that ``new_entries`` more entries in ``row`` may take, at most."""
    cap = row_cap[row]
    needed = 0
    while fill[row] + new_entries > cap:
        cap = max(8, 2 * cap)
        needed += cap
    return needed


@njit(cache=_CACHE)
def cooc_learn(
    pool_index: np.ndarray,
    pool_cols: np.ndarray,
    pool_vals: np.ndarray,
    pool_end: np.ndarray,
    row_start: np.ndarray,
    row_cap: np.ndarray,
    fill: np.ndarray,
    degree: np.ndarray,
    recent: np.ndarray,
    recent_w: np.ndarray,
    recent_len: np.ndarray,
    users: np.ndarray,
    items: np.ndarray,
    weights: np.ndarray,
    pair_decay: float,
    first: int,
) -> int:
    """Count each event's item together with the other items in its user's window.

    ``recent``/``recent_w`` are a per-user ring of the latest distinct items and their weights
    (slot ``n % window`` holds the ``n``-th). A new item pairs with each item ``r`` places back
    with weight ``sqrt(w_new · w_old) · pair_decay**r`` and adds ``w_new`` to its degree, so that
    ``count / sqrt(degree · degree)`` is a cosine (at most 1 when each user's window holds the two
    items once). An item already in the window adds nothing, unless it comes with a higher weight
    (a view, then a purchase): then its pairs and degree grow to that weight.

    Starts at event ``first``; returns -1 when all are learned, or the index of the first event
    that would not fit in the pool (nothing of it learned): grow the pool and call again there.
    """
    window = recent.shape[1]
    capacity = pool_cols.shape[0]
    for e in range(first, users.shape[0]):
        u = users[e]
        i = items[e]
        w = weights[e]
        n = recent_len[u]
        depth = min(n, window)
        at = -1
        for r in range(depth):
            if recent[u, (n - 1 - r) % window] == i:
                at = r
                break
        if at >= 0 and recent_w[u, (n - 1 - at) % window] >= w:
            continue
        needed = _room_needed(row_cap, fill, i, depth)
        for r in range(depth):
            needed += _room_needed(row_cap, fill, recent[u, (n - 1 - r) % window], 1)
        if pool_end[0] + needed > capacity:
            return e
        w_old = 0.0 if at < 0 else recent_w[u, (n - 1 - at) % window]
        degree[i] += w - w_old
        for r in range(depth):
            if r == at:
                continue
            slot = (n - 1 - r) % window
            j = recent[u, slot]
            distance = r if at < 0 else abs(r - at) - 1
            g = (
                math.sqrt(w * recent_w[u, slot]) - math.sqrt(w_old * recent_w[u, slot])
            ) * pair_decay**distance
            _row_add(pool_index, pool_cols, pool_vals, pool_end, row_start, row_cap, fill, i, j, g)
            _row_add(pool_index, pool_cols, pool_vals, pool_end, row_start, row_cap, fill, j, i, g)
        if at < 0:
            recent[u, n % window] = i
            recent_w[u, n % window] = w
            recent_len[u] = n + 1
        else:
            recent_w[u, (n - 1 - at) % window] = w
    return -1


@njit(cache=_CACHE)
def cooc_compact(
    pool_index: np.ndarray,
    pool_cols: np.ndarray,
    pool_vals: np.ndarray,
    row_start: np.ndarray,
    row_cap: np.ndarray,
    fill: np.ndarray,
    new_index: np.ndarray,
    new_cols: np.ndarray,
    new_vals: np.ndarray,
) -> int:
    """Copy every row into the (larger, zeroed) new pool back to back; returns the new pool end."""
    end = 0
    for row in range(row_start.shape[0]):
        cap = row_cap[row]
        if cap == 0:
            continue
        start = row_start[row]
        n = fill[row]
        new_cols[end : end + n] = pool_cols[start : start + n]
        new_vals[end : end + n] = pool_vals[start : start + n]
        # Positions are relative to the row's start, so the hash index copies as it is.
        new_index[2 * end : 2 * (end + cap)] = pool_index[2 * start : 2 * (start + cap)]
        row_start[row] = end
        end += cap
    return end


@njit(cache=_CACHE)
def cooc_user_scores(
    pool_cols: np.ndarray,
    pool_vals: np.ndarray,
    row_start: np.ndarray,
    fill: np.ndarray,
    degree: np.ndarray,
    recent: np.ndarray,
    recent_len: np.ndarray,
    user: int,
    history: int,
    recency_decay: float,
    out: np.ndarray,
) -> None:
    """``out[j]`` = Σ_r recency_decay**r · cosine(item r places back in the user's history, j).

    Cosine is ``count[h, j] / sqrt(degree[h] · degree[j])``; items outside ``out`` are ignored.
    """
    out[:] = 0.0
    if user < 0 or user >= recent_len.shape[0]:
        return
    window = recent.shape[1]
    n = recent_len[user]
    g = 1.0
    n_out = out.shape[0]
    for r in range(min(n, window, history)):
        h = recent[user, (n - 1 - r) % window]
        if degree[h] > 0.0:
            start = row_start[h]
            scale = g / math.sqrt(degree[h])
            for p in range(start, start + fill[h]):
                j = pool_cols[p]
                if j < n_out:
                    out[j] += pool_vals[p] * scale
        g *= recency_decay
    for j in range(n_out):
        if out[j] != 0.0:
            out[j] /= math.sqrt(degree[j])


@njit(cache=_CACHE)
def cooc_neighbours(
    pool_cols: np.ndarray,
    pool_vals: np.ndarray,
    row_start: np.ndarray,
    fill: np.ndarray,
    degree: np.ndarray,
    item: int,
    out: np.ndarray,
) -> None:
    """``out[j]`` = cosine(item, j) for every item counted with ``item``, 0 elsewhere."""
    out[:] = 0.0
    if item >= fill.shape[0] or degree[item] <= 0.0:
        return
    start = row_start[item]
    d = math.sqrt(degree[item])
    for p in range(start, start + fill[item]):
        j = pool_cols[p]
        if j < out.shape[0] and degree[j] > 0.0:
            out[j] = pool_vals[p] / (d * math.sqrt(degree[j]))


# --------------------------------------------------------------------------------------------------
# matrix factorisation


@njit(cache=_CACHE)
def bpr_learn(
    state: np.ndarray,
    P: np.ndarray,
    Q: np.ndarray,
    bias: np.ndarray,
    users: np.ndarray,
    items: np.ndarray,
    weights: np.ndarray,
    n_items: np.ndarray,
    negatives: int,
    lr: float,
    reg: float,
) -> None:
    """BPR: for each positive, ``negatives`` SGD steps on log σ(x_ui − x_uj), j uniform among known items.

    ``n_items[e]`` is the number of items known when event ``e`` arrives (its own item counts as
    known: a new item is a valid positive at once). The step is scaled by the event's weight.
    """
    k = P.shape[1]
    for e in range(users.shape[0]):
        u = users[e]
        i = items[e]
        m = max(n_items[e], i + 1)
        step = lr * weights[e]
        for _ in range(negatives):
            if m < 2:
                break
            j = _below(state, m)
            if j == i:
                continue
            x = bias[i] - bias[j]
            for f in range(k):
                x += P[u, f] * (Q[i, f] - Q[j, f])
            g = 1.0 / (1.0 + math.exp(x)) if x > -30.0 else 1.0
            for f in range(k):
                pu = P[u, f]
                qi = Q[i, f]
                qj = Q[j, f]
                P[u, f] += step * (g * (qi - qj) - reg * pu)
                Q[i, f] += step * (g * pu - reg * qi)
                Q[j, f] += step * (-g * pu - reg * qj)
            bias[i] += step * (g - reg * bias[i])
            bias[j] += step * (-g - reg * bias[j])


@njit(cache=_CACHE)
def isgd_learn(
    P: np.ndarray,
    Q: np.ndarray,
    users: np.ndarray,
    items: np.ndarray,
    weights: np.ndarray,
    lr: float,
    reg: float,
) -> None:
    """ISGD (Vinagre et al. 2014): one SGD step towards p_u · q_i = 1 per positive."""
    k = P.shape[1]
    for e in range(users.shape[0]):
        u = users[e]
        i = items[e]
        err = 1.0
        for f in range(k):
            err -= P[u, f] * Q[i, f]
        step = lr * weights[e]
        for f in range(k):
            pu = P[u, f]
            qi = Q[i, f]
            P[u, f] += step * (err * qi - reg * pu)
            Q[i, f] += step * (err * pu - reg * qi)


@njit(cache=_CACHE)
def biased_mf_learn(
    P: np.ndarray,
    Q: np.ndarray,
    user_bias: np.ndarray,
    item_bias: np.ndarray,
    moments: np.ndarray,
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    lr: float,
    reg: float,
) -> None:
    """Biased MF on explicit ratings: SGD on (r − μ − b_u − b_i − p_u · q_i)².

    ``moments`` holds ``[count, mean]`` of the ratings seen so far (μ is their running mean).
    """
    k = P.shape[1]
    for e in range(users.shape[0]):
        u = users[e]
        i = items[e]
        r = ratings[e]
        moments[0] += 1.0
        moments[1] += (r - moments[1]) / moments[0]
        pred = moments[1] + user_bias[u] + item_bias[i]
        for f in range(k):
            pred += P[u, f] * Q[i, f]
        err = r - pred
        user_bias[u] += lr * (err - reg * user_bias[u])
        item_bias[i] += lr * (err - reg * item_bias[i])
        for f in range(k):
            pu = P[u, f]
            qi = Q[i, f]
            P[u, f] += lr * (err * qi - reg * pu)
            Q[i, f] += lr * (err * pu - reg * qi)


# --------------------------------------------------------------------------------------------------
# ranking


@njit(cache=_CACHE, inline="always")
def _worse(s: float, j: int, t: float, i: int) -> bool:
    """Is item ``j`` scored ``s`` ranked below item ``i`` scored ``t``? (Ties: higher index.)"""
    return s < t or (s == t and j > i)


@njit(cache=_CACHE)
def _sift_down(items: np.ndarray, scores: np.ndarray, size: int, j: int, s: float) -> None:
    """Put (j, s) at the root of the min-heap ``items/scores[:size]`` and restore the heap."""
    p = 0
    while True:
        c = 2 * p + 1
        if c >= size:
            break
        if c + 1 < size and _worse(scores[c + 1], items[c + 1], scores[c], items[c]):
            c += 1
        if _worse(s, j, scores[c], items[c]):
            break
        items[p] = items[c]
        scores[p] = scores[c]
        p = c
    items[p] = j
    scores[p] = s


@njit(cache=_CACHE, inline="always")
def _push(items: np.ndarray, scores: np.ndarray, size: int, n: int, j: int, s: float) -> int:
    """Offer (j, s) to the min-heap of the best ``n`` so far (``size`` kept); returns the new size."""
    if size < n:
        p = size
        while p > 0:
            parent = (p - 1) // 2
            if _worse(scores[parent], items[parent], s, j):
                break
            items[p] = items[parent]
            scores[p] = scores[parent]
            p = parent
        items[p] = j
        scores[p] = s
        return size + 1
    if size > 0 and s > scores[0]:
        _sift_down(items, scores, size, j, s)
    return size


@njit(cache=_CACHE)
def _sort_heap(items: np.ndarray, scores: np.ndarray, size: int) -> None:
    """Heap to sorted, best first: move the worst to the end, repeatedly."""
    for end in range(size - 1, 0, -1):
        worst_i = items[0]
        worst_s = scores[0]
        _sift_down(items, scores, end, items[end], scores[end])
        items[end] = worst_i
        scores[end] = worst_s


@njit(cache=_CACHE)
def top_n(
    scores: np.ndarray, exclude: np.ndarray, n: int, out_items: np.ndarray, out_scores: np.ndarray
) -> int:
    """The ``n`` best-scored items not in ``exclude``, best first (ties: lower index first).

    Writes into ``out_items``/``out_scores`` and returns how many it wrote (items scored -inf or
    NaN never count). ``scores`` is restored on return: excluded items are masked with -inf
    during the call.
    """
    saved = np.empty(exclude.shape[0], np.float64)
    for t in range(exclude.shape[0]):
        saved[t] = scores[exclude[t]]
        scores[exclude[t]] = -np.inf
    size = 0
    for j in range(scores.shape[0]):
        s = scores[j]
        if s > -np.inf:  # also False for NaN
            size = _push(out_items, out_scores, size, n, j, s)
    for t in range(exclude.shape[0] - 1, -1, -1):
        scores[exclude[t]] = saved[t]
    _sort_heap(out_items, out_scores, size)
    return size


@njit(cache=_CACHE)
def _scaling(
    components: np.ndarray, weights: np.ndarray, excluded: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per component: the offset and factor that map its candidates' scores onto [0, weight].

    A component with weight 0, or constant over the candidates, gets factor 0 (it adds nothing).
    """
    n_comp, n_items = components.shape
    lo = np.zeros(n_comp)
    scale = np.zeros(n_comp)
    for c in range(n_comp):
        if weights[c] == 0.0:
            continue
        row = components[c]
        low = np.inf
        high = -np.inf
        for j in range(n_items):
            if not excluded[j]:
                v = row[j]
                low = min(low, v)
                high = max(high, v)
        if high > low:
            lo[c] = low
            scale[c] = weights[c] / (high - low)
    return lo, scale


@njit(cache=_CACHE)
def _mask(n_items: int, exclude: np.ndarray) -> np.ndarray:
    excluded = np.zeros(n_items, np.bool_)
    for t in range(exclude.shape[0]):
        excluded[exclude[t]] = True
    return excluded


@njit(cache=_CACHE)
def blend(components: np.ndarray, weights: np.ndarray, exclude: np.ndarray, out: np.ndarray) -> None:
    """``out`` = Σ_c weights[c] · (components[c] min-max scaled over the items not excluded).

    A component that is constant over the candidates contributes nothing.
    """
    lo, scale = _scaling(components, weights, _mask(out.shape[0], exclude))
    for j in range(out.shape[0]):
        s = 0.0
        for c in range(components.shape[0]):
            if scale[c] != 0.0:
                s += (components[c, j] - lo[c]) * scale[c]
        out[j] = s


@njit(cache=_CACHE)
def blend_top_n(
    components: np.ndarray,
    weights: np.ndarray,
    exclude: np.ndarray,
    n: int,
    out_items: np.ndarray,
    out_scores: np.ndarray,
) -> int:
    """:func:`blend` then :func:`top_n` in one pass, with the same results to the last bit.

    The blended score of each candidate is summed in the same order as :func:`blend` sums it, and
    goes straight into the heap instead of an array.
    """
    n_comp, n_items = components.shape
    excluded = _mask(n_items, exclude)
    lo, scale = _scaling(components, weights, excluded)
    size = 0
    for j in range(n_items):
        if excluded[j]:
            continue
        s = 0.0
        for c in range(n_comp):
            if scale[c] != 0.0:
                s += (components[c, j] - lo[c]) * scale[c]
        size = _push(out_items, out_scores, size, n, j, s)
    _sort_heap(out_items, out_scores, size)
    return size
