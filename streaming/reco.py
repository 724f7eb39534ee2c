"""Incremental recommendation models: every interaction updates them, any moment they can rank.

Four models share one small protocol (:class:`Model`):

- :class:`Popularity`: time-decayed interaction counts, the cold-start list;
- :class:`ItemItem`: "customers also bought", sparse co-occurrence counts, time-decayed and
  cosine-normalised, ranked from the user's latest items;
- :class:`BPR` (implicit feedback, the default factor model), :class:`ISGD` (its simpler
  alternative) and :class:`BiasedMF` (explicit ratings): user and item factors learned by SGD;
- :class:`Hybrid`: a weighted blend of the above over one shared id space.

Each learns from one interaction (``learn_one``) or a batch (``learn_many``), scores a (user,
item) pair (``score``) and ranks (``rank``: the user's best ``n`` items they have not interacted
with; ``similar_items``: an item's neighbours). New users and items may appear at any time: ids
map to rows of dense arrays that double when full, so nothing is resized by hand and ranking is
one pass over a contiguous array. With ``max_users`` (:class:`Interactions`), the least recently
active user makes room for a new one, so the per-user arrays stop growing there. The per-event
and per-item loops are compiled with numba (:mod:`anomrec.streaming._reco_kernels`).

Determinism: the only randomness (BPR's negative samples, initial factors) comes from each
model's own seeded generator, and time decay uses the events' own times, so the same
interactions in the same order always give the same model. Which user is forgotten depends on
the order of the interactions only.

Examples
--------
>>> model = ItemItem()
>>> model.learn_many(["ann", "ann", "bob", "bob", "cy"], ["tea", "cup", "tea", "cup", "tea"])
>>> [(item, round(score, 3)) for item, score in model.rank("cy", 2)]
[('cup', 0.816)]
>>> [(item, round(score, 3)) for item, score in model.similar_items("tea", 1)]
[('cup', 0.816)]
>>> model.rank("somebody new", 2)  # an unknown user gets the popularity list
[('tea', 3.0), ('cup', 2.0)]
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from . import _reco_kernels as k
from .exceptions import ConfigError

# A forward-decayed weight is w · 2**((t - t_ref) / half_life); past this exponent every stored
# weight is scaled down and t_ref moves to the event's time, far before any float64 overflow.
_MAX_EXPONENT = 256.0


#: Most entries a user's history holds before it is compacted (:meth:`Interactions.record`):
#: a bound on a bot's repeated clicks, far above MovieLens' busiest user (1,115 positives).
MAX_HISTORY = 4096


def _grown(array: np.ndarray, rows: int, fill: float = 0.0, limit: int | None = None) -> np.ndarray:
    """``array`` with room for ``rows`` rows (doubling, to ``limit`` at most), new rows set to ``fill``."""
    if rows <= array.shape[0]:
        return array
    capacity = max(rows, 2 * array.shape[0], 16)
    if limit is not None:
        capacity = max(rows, min(capacity, limit))
    bigger = np.full((capacity, *array.shape[1:]), fill, dtype=array.dtype)
    bigger[: array.shape[0]] = array
    return bigger


def _latest_distinct(row: np.ndarray, keep: int) -> np.ndarray:
    """The distinct values of ``row``, the ``keep`` latest (by latest occurrence), oldest first."""
    backwards = row[::-1]
    _, first = np.unique(backwards, return_index=True)
    return backwards[np.sort(first)[:keep]][::-1].copy()


def _check(
    name: str, value: float, *, low: float = 0.0, high: float = math.inf, low_open: bool = False
) -> None:
    bad = not math.isfinite(value) or value > high or (value <= low if low_open else value < low)
    if bad:
        bound = f"> {low}" if low_open else f">= {low}"
        if high < math.inf:
            bound += f" and <= {high}"
        raise ConfigError(f"{name}={value!r} is out of range: expected a number {bound}")


class Interactions:
    """The id space and interaction histories that the models of a :class:`Hybrid` share.

    Users and items get dense indices (slots) in order of first appearance. A user's history
    (the items they interacted with, in order, repeats included, up to :data:`MAX_HISTORY`
    entries) is what ranking excludes.

    Parameters
    ----------
    max_users
        Users held at most (None: no bound). They are kept in order of their latest interaction
        (event order, never wall time); a new user arriving when ``max_users`` are held takes
        the slot of the least recently active one, who is forgotten: its history is cleared and
        every model resets its rows, as for a user never seen (new factors, an empty item-item
        window, a zero bias). A forgotten user who comes back is a new user. Items are not
        bounded: co-occurrence rows and the users' windows refer to item slots, so an item
        cannot be forgotten without rewriting them, and catalogues are far smaller than user
        bases.

    Examples
    --------
    >>> data = Interactions(max_users=2)
    >>> [data.encode_one(user, "tea")[0] for user in ("ann", "bob", "ann", "cy")]
    [0, 1, 0, 1]
    >>> data.last_evicted, sorted(data.user_index), data.n_users
    ('bob', ['ann', 'cy'], 2)
    """

    def __init__(self, max_users: int | None = None) -> None:
        if max_users is not None and (
            not isinstance(max_users, int) or isinstance(max_users, bool) or max_users < 1
        ):
            raise ConfigError(f"max_users={max_users!r} is out of range: expected an integer >= 1 or None")
        self.max_users = max_users
        # user -> slot, least recently active first (kept in that order only when bounded)
        self.user_index: OrderedDict[str, int] = OrderedDict()
        self.item_index: dict[str, int] = {}
        self.user_ids: list[str] = []  # slot -> user
        self.item_ids: list[str] = []
        self._history: list[np.ndarray] = []
        self._history_len: list[int] = []
        self.counts = np.zeros(16)
        self.learned = 0
        #: Users ever added (forgotten ones count again when they come back).
        self.created = 0
        #: Users forgotten so far, and the latest of them (None before the first).
        self.evicted = 0
        self.last_evicted: str | None = None
        # Slots given to a new user since the last learned batch, with that user's number in
        # ``created``: the models reset these rows before they learn (:meth:`Model.learn_encoded`).
        # A freed slot is reused at once, so no free list outlives an event.
        self.resets: list[tuple[int, int]] = []

    @property
    def n_users(self) -> int:
        """Slots in use: the rows per-user arrays need (at most ``max_users``)."""
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def _add_user(self, user: str) -> int:
        index = self.user_index
        if self.max_users is not None and len(index) >= self.max_users:
            gone, u = index.popitem(last=False)
            self.user_ids[u] = user
            self._history_len[u] = 0
            if self._history[u].shape[0] > 4:
                self._history[u] = np.empty(4, np.int32)
            self.resets.append((u, self.created))
            self.evicted += 1
            self.last_evicted = gone
        else:
            u = len(self.user_ids)
            self.user_ids.append(user)
            self._history.append(np.empty(4, np.int32))
            self._history_len.append(0)
        index[user] = u
        self.created += 1
        return u

    def _victim(self) -> int:
        """The slot a new user would take now; -1 when there is room."""
        if self.max_users is None or len(self.user_index) < self.max_users:
            return -1
        return next(iter(self.user_index.values()))

    def encode_one(self, user: str, item: str) -> tuple[int, int, int]:
        """:meth:`encode` for one interaction, as plain ints (the per-event fast path).

        A new user may make room by forgetting the least recently active one
        (:attr:`last_evicted`, :attr:`evicted` counts them).
        """
        u = self.user_index.get(user)
        if u is None:
            u = self._add_user(user)
        elif self.max_users is not None:
            self.user_index.move_to_end(user)
        known = len(self.item_ids)
        i = self.item_index.get(item)
        if i is None:
            i = self.item_index[item] = known
            self.item_ids.append(item)
        return u, i, known

    def encode(self, users: Sequence[str], items: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Indices of ``users`` and ``items``, adding new ids; also the item count before each event.

        With ``max_users``, a batch in which a new user would take the slot of a user met earlier
        in the same batch cannot be encoded at once (learned as one, the two users' events would
        mix): :meth:`Model.learn_many` splits it with :meth:`encode_part`.
        """
        u, i, known = self.encode_part(users, items, 0)
        if len(u) < len(users):
            raise ConfigError(
                f"a batch of {len(users)} interactions names more users than max_users={self.max_users} "
                f"can hold at once (the first {len(u)} were encoded): learn it with learn_many, which "
                "splits it, or in smaller batches"
            )
        return u, i, known

    def encode_part(
        self, users: Sequence[str], items: Sequence[str], start: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`encode` from event ``start`` on, stopping before the first event (if any) whose
        new user would take the slot of a user met earlier in this part.
        """
        n = len(users)
        u = np.empty(n - start, np.int32)
        i = np.empty(n - start, np.int32)
        known = np.empty(n - start, np.int64)
        used: set[int] | None = None if self.max_users is None else set()
        index = self.user_index
        for e in range(start, n):
            user = users[e]
            if used is not None and user not in index and self._victim() in used:
                return u[: e - start], i[: e - start], known[: e - start]
            slot, item, before = self.encode_one(user, items[e])
            if used is not None:
                used.add(slot)
            u[e - start], i[e - start], known[e - start] = slot, item, before
        return u, i, known

    def record(self, users: np.ndarray, items: np.ndarray, weights: np.ndarray) -> None:
        """Append learned interactions to the users' histories and the plain item counts.

        A history that reaches :data:`MAX_HISTORY` entries is compacted to its distinct items, the
        :data:`MAX_HISTORY` // 2 latest (by their latest interaction).
        """
        if self.n_items > self.counts.shape[0]:
            self.counts = _grown(self.counts, self.n_items)
        k.popularity_learn(self.counts, items, weights)
        history, lengths = self._history, self._history_len
        for u, i in zip(users.tolist(), items.tolist(), strict=True):
            row = history[u]
            n = lengths[u]
            if n == MAX_HISTORY:
                kept = _latest_distinct(row[:n], MAX_HISTORY // 2)
                n = kept.shape[0]
                row[:n] = kept
            if n == row.shape[0]:
                row = history[u] = np.concatenate([row, np.empty(min(n, MAX_HISTORY - n), np.int32)])
            row[n] = i
            lengths[u] = n + 1
        self.learned += len(users)
        self.resets.clear()

    def state_arrays(self) -> dict[str, np.ndarray]:
        """Ids, histories, counts: plain arrays (no objects), safe to save with ``allow_pickle=False``."""
        lengths = np.array(self._history_len, np.int64)
        rows = [row[:n] for row, n in zip(self._history, self._history_len, strict=True)]
        return {
            "user_ids": np.array(self.user_ids, dtype=np.str_),
            "item_ids": np.array(self.item_ids, dtype=np.str_),
            "history": np.concatenate(rows) if rows else np.empty(0, np.int32),
            "history_len": lengths,
            "counts": self.counts[: self.n_items].copy(),
            "learned": np.array(self.learned, np.int64),
            "max_users": np.array(-1 if self.max_users is None else self.max_users, np.int64),
            # slots, least recently active user first
            "lru": np.fromiter(self.user_index.values(), np.int64, len(self.user_index)),
            "created": np.array(self.created, np.int64),
            "evicted": np.array(self.evicted, np.int64),
            "last_evicted": np.array("" if self.last_evicted is None else self.last_evicted, np.str_),
            "resets": np.array(self.resets, np.int64).reshape(-1, 2),
        }

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace everything with a :meth:`state_arrays`'s contents."""
        saved_max = int(arrays.get("max_users", -1))
        if saved_max != (-1 if self.max_users is None else self.max_users):
            raise ConfigError(
                f"recommender state was learned with max_users={None if saved_max < 0 else saved_max}, "
                f"not {self.max_users}: restore it with that setting, or start afresh"
            )
        self.user_ids = [str(u) for u in arrays["user_ids"].tolist()]
        self.item_ids = [str(i) for i in arrays["item_ids"].tolist()]
        n_users = len(self.user_ids)
        lru = arrays["lru"].tolist() if "lru" in arrays else range(n_users)  # older states
        if sorted(lru) != list(range(n_users)):
            raise ConfigError("recommender state is inconsistent: the users' order does not match the users")
        self.user_index = OrderedDict((self.user_ids[s], int(s)) for s in lru)
        self.item_index = {i: k for k, i in enumerate(self.item_ids)}
        lengths = arrays["history_len"].astype(np.int64)
        if len(lengths) != n_users or int(lengths.sum()) != len(arrays["history"]):
            raise ConfigError("recommender state is inconsistent: user histories do not match the users")
        ends = np.cumsum(lengths)
        self._history = [
            np.concatenate(
                [
                    arrays["history"][e - n : e].astype(np.int32),
                    np.empty(max(4, min(n, MAX_HISTORY - n)), np.int32),
                ]
            )
            for e, n in zip(ends.tolist(), lengths.tolist(), strict=True)
        ]
        self._history_len = lengths.tolist()
        self.counts = _grown(arrays["counts"].astype(np.float64), max(16, self.n_items))
        self.learned = int(arrays["learned"])
        self.created = int(arrays.get("created", n_users))
        self.evicted = int(arrays.get("evicted", 0))
        last = str(arrays.get("last_evicted", ""))
        self.last_evicted = last or None
        self.resets = [(int(u), int(c)) for u, c in arrays.get("resets", np.empty((0, 2), np.int64)).tolist()]

    def seen(self, user: int) -> np.ndarray:
        """The items user ``user`` interacted with (a view: copy before keeping it)."""
        if user < 0:
            return np.empty(0, np.int32)
        return self._history[user][: self._history_len[user]]


class Model:
    """The protocol every recommendation model follows; subclasses fill in three hooks.

    Parameters
    ----------
    data
        The id space to learn into; models blended by a :class:`Hybrid` share one. By default the
        model has its own.
    """

    name: ClassVar[str] = "model"
    #: Whether :meth:`similar_items` can say anything (popularity alone cannot).
    has_neighbours: ClassVar[bool] = True
    #: The attributes (arrays and numbers) that make up the model's learned state.
    _STATE: ClassVar[tuple[str, ...]] = ()

    def __init__(self, data: Interactions | None = None) -> None:
        self.data = data if data is not None else Interactions()
        self._buffer = np.zeros(16)
        self._top_items = np.zeros(16, np.int64)
        self._top_scores = np.zeros(16)

    # -- hooks ------------------------------------------------------------------------------------

    def _learn(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray, known: np.ndarray
    ) -> None:
        """Learn encoded interactions; ``known[e]`` = items known before event ``e``."""
        raise NotImplementedError

    def _scores(self, user: int, out: np.ndarray) -> None:
        """Write the user's raw score of every known item into ``out`` (user -1: unknown)."""
        raise NotImplementedError

    def _neighbours(self, item: int, out: np.ndarray) -> None:
        """Write every known item's similarity to ``item`` into ``out`` (0 when unrelated)."""
        out[:] = 0.0

    def _forget(self, user: int, key: int) -> None:
        """Reset user slot ``user``'s rows to a new user's, whose number (in ``data.created``) is ``key``."""

    def _settings(self) -> str:
        """The settings a saved state must have been learned with to be restored here."""
        return self.name

    # -- state ------------------------------------------------------------------------------------

    def state_arrays(self) -> dict[str, np.ndarray]:
        """All learned state as named plain arrays (strings and numbers only, a copy).

        ``numpy.savez(path, **model.state_arrays())`` saves it; ``numpy.load(path,
        allow_pickle=False)`` reads it back without executing anything from the file.
        """
        arrays = {f"data.{k}": v for k, v in self.data.state_arrays().items()}
        arrays.update(self._own_state(""))
        return arrays

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace all learned state with a :meth:`state_arrays`'s, from a model built alike."""
        self.data.load_state_arrays({k[5:]: v for k, v in arrays.items() if k.startswith("data.")})
        self._load_own(arrays, "")

    def _own_state(self, prefix: str) -> dict[str, np.ndarray]:
        arrays = {prefix + "settings": np.array(self._settings(), dtype=np.str_)}
        for attr in self._STATE:
            arrays[prefix + attr] = np.array(getattr(self, attr), copy=True)
        decay = getattr(self, "_decay", None)
        if decay is not None:
            arrays[prefix + "decay_t_ref"] = np.array(np.nan if decay.t_ref is None else decay.t_ref)
        return arrays

    def _load_own(self, arrays: dict[str, np.ndarray], prefix: str) -> None:
        saved = str(arrays.get(prefix + "settings", "?"))
        if saved != self._settings():
            raise ConfigError(
                f"recommender state was learned by {saved!r}, not {self._settings()!r}: restore it into "
                "a model with those settings, or start this one afresh"
            )
        for attr in self._STATE:
            current = getattr(self, attr)
            value = arrays[prefix + attr]
            if isinstance(current, np.ndarray):
                setattr(self, attr, value.astype(current.dtype, copy=True))
            else:
                setattr(self, attr, type(current)(value))
        decay = getattr(self, "_decay", None)
        if decay is not None:
            t_ref = float(arrays[prefix + "decay_t_ref"])
            decay.t_ref = None if math.isnan(t_ref) else t_ref

    # -- the protocol -----------------------------------------------------------------------------

    @property
    def version(self) -> str:
        """Changes whenever the model learns: its name and how many interactions it has learned."""
        return f"{self.name}-{self.data.learned}"

    def learn_one(self, user: str, item: str, weight: float = 1.0, time: float = 0.0) -> None:
        """Learn one interaction: ``user`` interacted with ``item`` at ``time`` (epoch seconds)."""
        self.learn_many([user], [item], [weight], [time])

    def learn_many(
        self,
        users: Sequence[str],
        items: Sequence[str],
        weights: Sequence[float] | np.ndarray | None = None,
        times: Sequence[float] | np.ndarray | None = None,
    ) -> None:
        """Learn interactions in order; weights default to 1 and times to 0 (no decay).

        The same as learning them one at a time. With ``max_users``, a batch in which a new user
        would take the slot of a user met earlier in it is learned in parts.
        """
        n = len(users)
        w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
        t = np.zeros(n) if times is None else np.asarray(times, np.float64)
        start = 0
        while True:
            u, i, known = self.data.encode_part(users, items, start)
            stop = start + len(u)
            self.learn_encoded(u, i, w[start:stop], t[start:stop], known)
            start = stop
            if start >= n:
                return

    def learn_encoded(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray, known: np.ndarray
    ) -> None:
        """Learn interactions already encoded by ``self.data.encode`` (the fast path).

        Slots that changed hands since the last call (``data.resets``) are reset first.
        """
        for user, key in self.data.resets:
            self._forget(user, key)
        self._learn(users, items, weights, times, known)
        self.data.record(users, items, weights)

    def _out(self) -> np.ndarray:
        """A reused buffer with one slot per known item."""
        n = self.data.n_items
        if self._buffer.shape[0] < n:
            self._buffer = np.zeros(max(n, 2 * self._buffer.shape[0]))
        return self._buffer[:n]

    def scores_of(self, user: int) -> np.ndarray:
        """Raw scores of every known item for user index ``user`` (a reused buffer)."""
        out = self._out()
        self._scores(user, out)
        return out

    def score(self, user: str, item: str) -> float:
        """The model's score of ``item`` for ``user``; NaN when the item is unknown."""
        j = self.data.item_index.get(item)
        if j is None:
            return math.nan
        return float(self.scores_of(self.data.user_index.get(user, -1))[j])

    def rank_index(self, user: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices and scores of the ``n`` best items user index ``user`` has not interacted with.

        An unknown user (-1) gets :meth:`cold_scores`, the popularity list.
        """
        scores = self.cold_scores() if user < 0 else self.scores_of(user)
        if self._top_items.shape[0] < n:
            self._top_items = np.zeros(n, np.int64)
            self._top_scores = np.zeros(n)
        m = k.top_n(scores, self.data.seen(user), n, self._top_items, self._top_scores)
        return self._top_items[:m].copy(), self._top_scores[:m].copy()

    def rank(self, user: str, n: int = 10) -> list[tuple[str, float]]:
        """The user's ``n`` best items, excluding every item they interacted with, best first."""
        items, scores = self.rank_index(self.data.user_index.get(user, -1), n)
        ids = self.data.item_ids
        return [(ids[j], s) for j, s in zip(items.tolist(), scores.tolist(), strict=True)]

    recommend = rank

    def cold_scores(self) -> np.ndarray:
        """Scores for a user the model has never seen: interaction counts (popularity)."""
        return self.data.counts[: self.data.n_items]

    def similar_items(self, item: str, n: int = 10) -> list[tuple[str, float]]:
        """The ``n`` items most similar to ``item``, best first; empty for an unknown item."""
        j = self.data.item_index.get(item)
        if j is None or not self.has_neighbours:
            return []
        out = self._out()
        self._neighbours(j, out)
        if self._top_items.shape[0] < n:
            self._top_items = np.zeros(n, np.int64)
            self._top_scores = np.zeros(n)
        m = k.top_n(out, np.array([j], np.int32), n, self._top_items, self._top_scores)
        ids = self.data.item_ids
        return [
            (ids[c], s)
            for c, s in zip(self._top_items[:m].tolist(), self._top_scores[:m].tolist(), strict=True)
            if s > 0.0
        ]


class _ForwardDecay:
    """Time decay without touching stored weights per event: newer events simply weigh more.

    An event at time ``t`` is stored with weight ``w · 2**((t - t_ref) / half_life)``; ratios of
    stored sums are then ratios of exponentially decayed sums at any common time. When the
    multiplier grows large, :meth:`scales` rescales the stored state (``rescale(factor)``) and
    moves ``t_ref``. A ``half_life`` of None means no decay.
    """

    def __init__(self, half_life: float | None) -> None:
        if half_life is not None:
            _check("half_life", half_life, low_open=True)
        self.half_life = half_life
        self.t_ref: float | None = None

    def scaled(self, weights: np.ndarray, times: np.ndarray, rescale: Any) -> np.ndarray:
        """``weights`` as stored: multiplied by each event's decay multiplier."""
        if self.half_life is None or len(times) == 0:
            return weights
        if self.t_ref is None:
            self.t_ref = float(times[0])
        exponent = (times - self.t_ref) / self.half_life
        top = float(exponent.max())
        if top > _MAX_EXPONENT:
            rescale(2.0 ** (-top))
            self.t_ref += top * self.half_life
            exponent = exponent - top
        return weights * np.exp2(exponent)


class Popularity(Model):
    """Items ranked by time-decayed interaction weight (half-life in seconds; None: no decay)."""

    name = "popularity"
    has_neighbours = False
    _STATE = ("_counts",)

    def __init__(self, data: Interactions | None = None, *, half_life: float | None = None) -> None:
        super().__init__(data)
        self._decay = _ForwardDecay(half_life)
        self._counts = np.zeros(16)

    def _settings(self) -> str:
        return f"popularity(half_life={self._decay.half_life})"

    def _rescale(self, factor: float) -> None:
        self._counts *= factor

    def _learn(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray, known: np.ndarray
    ) -> None:
        self._counts = _grown(self._counts, self.data.n_items)
        k.popularity_learn(self._counts, items, self._decay.scaled(weights, times, self._rescale))

    def _scores(self, user: int, out: np.ndarray) -> None:
        n = min(out.shape[0], self._counts.shape[0])
        out[:] = 0.0
        out[:n] = self._counts[:n]

    def cold_scores(self) -> np.ndarray:
        return self.scores_of(-1)


class ItemItem(Model):
    """Incremental item-to-item similarity ("customers also bought").

    Each interaction is counted together with the other distinct items among the same user's
    latest ``window``, the one ``r`` places back weighing ``sqrt(w · w_r) · pair_decay**r``;
    counts live in one sparse row per item. Similarity is cosine, ``count[i, j] / sqrt(weight[i]
    · weight[j])``. Interacting again with an item still in the window adds nothing (a higher
    weight, as a purchase after a view, raises the item's weight in the window to it). A user's
    score of item ``j`` sums its similarity to the user's latest ``history`` items, the one ``r``
    places back weighted ``recency_decay**r``. With ``half_life`` (seconds) older counts fade.

    The defaults were chosen by the prequential Recall@10 on MovieLens (see the README).
    """

    name = "itemitem"
    _STATE = (
        "_pool_index",
        "_pool_cols",
        "_pool_vals",
        "_pool_end",
        "_row_start",
        "_row_cap",
        "_fill",
        "_degree",
        "_recent",
        "_recent_w",
        "_recent_len",
    )

    def __init__(
        self,
        data: Interactions | None = None,
        *,
        window: int = 50,
        pair_decay: float = 1.0,
        history: int = 20,
        recency_decay: float = 0.85,
        half_life: float | None = None,
    ) -> None:
        super().__init__(data)
        if window < 1 or history < 1:
            raise ConfigError(f"window={window} and history={history} must both be at least 1")
        _check("pair_decay", pair_decay, low_open=True, high=1.0)
        _check("recency_decay", recency_decay, low_open=True, high=1.0)
        self.window = int(window)
        self.pair_decay = float(pair_decay)
        self.history = int(history)
        self.recency_decay = float(recency_decay)
        self._decay = _ForwardDecay(half_life)
        self._pool_index = np.zeros(2 * 4096, np.int32)
        self._pool_cols = np.zeros(4096, np.int32)
        self._pool_vals = np.zeros(4096)
        self._pool_end = np.zeros(1, np.int64)
        self._row_start = np.zeros(16, np.int64)
        self._row_cap = np.zeros(16, np.int64)
        self._fill = np.zeros(16, np.int64)
        self._degree = np.zeros(16)
        self._recent = np.full((16, self.window), -1, np.int32)
        self._recent_w = np.zeros((16, self.window))
        self._recent_len = np.zeros(16, np.int64)

    def _settings(self) -> str:
        return (
            f"itemitem(window={self.window}, pair_decay={self.pair_decay}, history={self.history}, "
            f"recency_decay={self.recency_decay}, half_life={self._decay.half_life})"
        )

    def _rescale(self, factor: float) -> None:
        self._pool_vals[: self._pool_end[0]] *= factor
        self._degree *= factor
        self._recent_w *= factor

    def _learn(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray, known: np.ndarray
    ) -> None:
        n_items, n_users = self.data.n_items, self.data.n_users
        if n_items > self._fill.shape[0]:
            self._row_start = _grown(self._row_start, n_items)
            self._row_cap = _grown(self._row_cap, n_items)
            self._fill = _grown(self._fill, n_items)
            self._degree = _grown(self._degree, n_items)
        if n_users > self._recent_len.shape[0]:
            limit = self.data.max_users
            self._recent = _grown(self._recent, n_users, fill=-1, limit=limit)
            self._recent_w = _grown(self._recent_w, n_users, limit=limit)
            self._recent_len = _grown(self._recent_len, n_users, limit=limit)
        scaled = self._decay.scaled(weights, times, self._rescale)
        first = 0
        while first >= 0:
            first = k.cooc_learn(
                self._pool_index,
                self._pool_cols,
                self._pool_vals,
                self._pool_end,
                self._row_start,
                self._row_cap,
                self._fill,
                self._degree,
                self._recent,
                self._recent_w,
                self._recent_len,
                users,
                items,
                scaled,
                self.pair_decay,
                first,
            )
            if first >= 0:
                self._grow_pool()

    def _forget(self, user: int, key: int) -> None:
        if user < self._recent_len.shape[0]:
            self._recent[user] = -1
            self._recent_w[user] = 0.0
            self._recent_len[user] = 0

    def _grow_pool(self) -> None:
        """Double the pool (at least), packing the rows back to back."""
        live = int(self._row_cap.sum())
        size = max(2 * self._pool_cols.shape[0], 4 * live)
        index, cols, vals = np.zeros(2 * size, np.int32), np.zeros(size, np.int32), np.zeros(size)
        self._pool_end[0] = k.cooc_compact(
            self._pool_index,
            self._pool_cols,
            self._pool_vals,
            self._row_start,
            self._row_cap,
            self._fill,
            index,
            cols,
            vals,
        )
        self._pool_index, self._pool_cols, self._pool_vals = index, cols, vals

    def _scores(self, user: int, out: np.ndarray) -> None:
        k.cooc_user_scores(
            self._pool_cols,
            self._pool_vals,
            self._row_start,
            self._fill,
            self._degree,
            self._recent,
            self._recent_len,
            user,
            self.history,
            self.recency_decay,
            out,
        )

    def _neighbours(self, item: int, out: np.ndarray) -> None:
        k.cooc_neighbours(
            self._pool_cols, self._pool_vals, self._row_start, self._fill, self._degree, item, out
        )

    @property
    def n_pairs(self) -> int:
        """Distinct (item, item) pairs counted, each direction once."""
        return int(self._fill.sum())


class _Factors(Model):
    """Shared storage of the factor models: user rows ``P``, item rows ``Q``, seeded init."""

    def __init__(
        self,
        data: Interactions | None = None,
        *,
        factors: int = 10,
        learning_rate: float = 0.05,
        regularization: float = 0.01,
        init_scale: float = 0.1,
        seed: int = 42,
    ) -> None:
        super().__init__(data)
        if factors < 1:
            raise ConfigError(f"factors={factors} must be at least 1")
        _check("learning_rate", learning_rate, low_open=True)
        _check("regularization", regularization)
        _check("init_scale", init_scale)
        self.factors = int(factors)
        self.learning_rate = float(learning_rate)
        self.regularization = float(regularization)
        self.init_scale = float(init_scale)
        # Negative samples come from this xorshift64* state (never 0); initial rows from the seed.
        self._seed = np.uint64(seed % 2**64)
        self._state = np.array([(seed * 0x9E3779B97F4A7C15 + 1) % 2**64 or 1], np.uint64)
        self.P = np.zeros((0, self.factors))
        self.Q = np.zeros((0, self.factors))
        self._users = 0
        self._items = 0

    _STATE: ClassVar[tuple[str, ...]] = ("P", "Q", "_state", "_users", "_items")

    def _settings(self) -> str:
        return (
            f"{self.name}(factors={self.factors}, learning_rate={self.learning_rate}, "
            f"regularization={self.regularization}, init_scale={self.init_scale}, seed={int(self._seed)})"
        )

    def _grow(self) -> None:
        n_users, n_items = self.data.n_users, self.data.n_items
        if n_users > self._users:
            # A fresh slot is taken by the user numbered as the slot: nobody was forgotten yet.
            self.P = _grown(self.P, n_users, limit=self.data.max_users)
            k.init_rows(self._seed, self.P, self._users, n_users, self.init_scale, self._users)
            self._users = n_users
        if n_items > self._items:
            self.Q = _grown(self.Q, n_items)
            k.init_rows(
                self._seed ^ np.uint64(0x5BD1E995), self.Q, self._items, n_items, self.init_scale, self._items
            )
            self._items = n_items

    def _forget(self, user: int, key: int) -> None:
        """The user's row gets the initial values of a fresh row numbered ``key``."""
        if user < self._users:
            k.init_rows(self._seed, self.P, user, user + 1, self.init_scale, key)

    def _neighbours(self, item: int, out: np.ndarray) -> None:
        """Cosine similarity of item factors."""
        n = out.shape[0]
        Q = self.Q[:n]
        norms = np.sqrt(np.einsum("ij,ij->i", Q, Q))
        norms[norms == 0.0] = 1.0
        out[:] = (Q @ Q[item]) / (norms * norms[item])


class BPR(_Factors):
    """Implicit-feedback matrix factorisation by BPR (Rendle et al. 2009), one SGD pass per event.

    Each positive (user, item) takes ``negatives`` steps against items drawn uniformly from those
    known so far, with an item bias (which learns popularity, so unknown users still get a
    sensible list). The event weight scales the step.
    """

    name = "bpr"
    _STATE = (*_Factors._STATE, "bias")

    def __init__(self, data: Interactions | None = None, *, negatives: int = 1, **options: Any) -> None:
        """``options``: ``factors``, ``learning_rate``, ``regularization``, ``init_scale``, ``seed``."""
        super().__init__(data, **options)
        if negatives < 1:
            raise ConfigError(f"negatives={negatives} must be at least 1")
        self.negatives = int(negatives)
        self.bias = np.zeros(16)

    def _settings(self) -> str:
        return super()._settings()[:-1] + f", negatives={self.negatives})"

    def _learn(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray, known: np.ndarray
    ) -> None:
        self._grow()
        if self.data.n_items > self.bias.shape[0]:
            self.bias = _grown(self.bias, self.data.n_items)
        k.bpr_learn(
            self._state,
            self.P,
            self.Q,
            self.bias,
            users,
            items,
            weights,
            known,
            self.negatives,
            self.learning_rate,
            self.regularization,
        )

    def _scores(self, user: int, out: np.ndarray) -> None:
        n = out.shape[0]
        if user < 0:
            out[:] = self.bias[:n]
        else:
            np.matmul(self.Q[:n], self.P[user], out=out)
            out += self.bias[:n]


class ISGD(_Factors):
    """Incremental SGD for positive-only feedback (Vinagre et al. 2014): push p_u · q_i towards 1."""

    name = "isgd"

    def _learn(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray, known: np.ndarray
    ) -> None:
        self._grow()
        k.isgd_learn(self.P, self.Q, users, items, weights, self.learning_rate, self.regularization)

    def _scores(self, user: int, out: np.ndarray) -> None:
        if user < 0:
            out[:] = 0.0
        else:
            np.matmul(self.Q[: out.shape[0]], self.P[user], out=out)


class BiasedMF(_Factors):
    """Explicit ratings: r̂ = μ + b_u + b_i + p_u · q_i, one SGD step per rating (the weight)."""

    name = "biased-mf"
    _STATE = (*_Factors._STATE, "user_bias", "item_bias", "_moments")

    def __init__(
        self,
        data: Interactions | None = None,
        *,
        learning_rate: float = 0.01,
        regularization: float = 0.05,
        **options: Any,
    ) -> None:
        super().__init__(data, learning_rate=learning_rate, regularization=regularization, **options)
        self.user_bias = np.zeros(16)
        self.item_bias = np.zeros(16)
        self._moments = np.zeros(2)

    def _forget(self, user: int, key: int) -> None:
        super()._forget(user, key)
        if user < self.user_bias.shape[0]:
            self.user_bias[user] = 0.0

    @property
    def global_mean(self) -> float:
        return float(self._moments[1])

    def _learn(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray, known: np.ndarray
    ) -> None:
        self._grow()
        self.user_bias = _grown(self.user_bias, self.data.n_users, limit=self.data.max_users)
        self.item_bias = _grown(self.item_bias, self.data.n_items)
        k.biased_mf_learn(
            self.P,
            self.Q,
            self.user_bias,
            self.item_bias,
            self._moments,
            users,
            items,
            weights,
            self.learning_rate,
            self.regularization,
        )

    def _scores(self, user: int, out: np.ndarray) -> None:
        n = out.shape[0]
        out[:] = self.global_mean + self.item_bias[:n]
        if user >= 0:
            out += self.Q[:n] @ self.P[user] + self.user_bias[user]

    def predict(self, user: str, item: str) -> float:
        """The predicted rating (the global mean for an unknown user and item)."""
        u = self.data.user_index.get(user, -1)
        j = self.data.item_index.get(item, -1)
        pred = self.global_mean
        if u >= 0:
            pred += self.user_bias[u]
        if j >= 0:
            pred += self.item_bias[j]
        if u >= 0 and j >= 0:
            pred += float(self.P[u] @ self.Q[j])
        return pred


class Hybrid(Model):
    """A weighted blend of models over one id space.

    Each component's scores are min-max scaled over the user's candidate items (those they have
    not interacted with), then summed with the weights; a component that cannot tell the
    candidates apart (an unknown user's item-item scores) adds nothing. Cold start is the
    :class:`Popularity` component's list when there is one, and ``similar_items`` is the
    :class:`ItemItem` component's (else the first factor model's).

    Parameters
    ----------
    components
        ``(model, weight)`` pairs; every model must have been built on ``data``.
    """

    name = "hybrid"

    def __init__(self, components: Sequence[tuple[Model, float]], data: Interactions) -> None:
        super().__init__(data)
        if not components:
            raise ConfigError("a hybrid needs at least one component")
        for model, weight in components:
            if model.data is not data:
                raise ConfigError(f"the {model.name} component must be built on the hybrid's Interactions")
            _check(f"weight of {model.name}", weight)
        self.components = [model for model, _ in components]
        self.weights = np.array([w for _, w in components], np.float64)
        self._stack = np.zeros((len(self.components), 16))

    def _settings(self) -> str:
        parts = ", ".join(
            f"{m._settings()}: {w}" for m, w in zip(self.components, self.weights.tolist(), strict=True)
        )
        return f"hybrid({parts})"

    def _own_state(self, prefix: str) -> dict[str, np.ndarray]:
        arrays = super()._own_state(prefix)
        for c, model in enumerate(self.components):
            arrays.update(model._own_state(f"{prefix}c{c}."))
        return arrays

    def _load_own(self, arrays: dict[str, np.ndarray], prefix: str) -> None:
        super()._load_own(arrays, prefix)  # checks the settings; the hybrid holds no arrays itself
        for c, model in enumerate(self.components):
            model._load_own(arrays, f"{prefix}c{c}.")

    def _learn(
        self, users: np.ndarray, items: np.ndarray, weights: np.ndarray, times: np.ndarray, known: np.ndarray
    ) -> None:
        for model in self.components:
            model._learn(users, items, weights, times, known)

    def _forget(self, user: int, key: int) -> None:
        for model in self.components:
            model._forget(user, key)

    def _component_scores(self, user: int, n: int) -> np.ndarray:
        if self._stack.shape[1] < n:
            self._stack = np.zeros((len(self.components), max(n, 2 * self._stack.shape[1])))
        stack = self._stack[:, :n]
        for c, model in enumerate(self.components):
            model._scores(user, stack[c])
        return stack

    def _scores(self, user: int, out: np.ndarray) -> None:
        stack = self._component_scores(user, out.shape[0])
        k.blend(stack, self.weights, self.data.seen(user), out)

    def rank_index(self, user: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`Model.rank_index`; blending and selection happen in one compiled pass."""
        if user < 0:
            return super().rank_index(user, n)
        stack = self._component_scores(user, self.data.n_items)
        if self._top_items.shape[0] < n:
            self._top_items = np.zeros(n, np.int64)
            self._top_scores = np.zeros(n)
        m = k.blend_top_n(stack, self.weights, self.data.seen(user), n, self._top_items, self._top_scores)
        return self._top_items[:m].copy(), self._top_scores[:m].copy()

    def cold_scores(self) -> np.ndarray:
        for model in self.components:
            if isinstance(model, Popularity):
                return model.cold_scores()
        return super().cold_scores()

    @property
    def has_neighbours(self) -> bool:  # type: ignore[override]
        return any(model.has_neighbours for model in self.components)

    def _neighbours(self, item: int, out: np.ndarray) -> None:
        for kind in (ItemItem, _Factors):
            for model in self.components:
                if isinstance(model, kind):
                    model._neighbours(item, out)
                    return
        super()._neighbours(item, out)


MODELS = ("hybrid", "itemitem", "bpr", "isgd", "biased-mf", "popularity")


def build_model(
    name: str = "hybrid",
    *,
    factors: int = 10,
    half_life: float | None = None,
    hybrid_weights: dict[str, float] | None = None,
    seed: int = 42,
    max_users: int | None = None,
) -> Model:
    """A model by name, with the defaults chosen on MovieLens.

    The hybrid blends item-item (1.0), BPR (0.1) and popularity (0.05) unless ``hybrid_weights``
    names others (keys ``itemitem``, ``bpr``, ``popularity``). ``max_users`` bounds the users held
    (see :class:`Interactions`; None: no bound).
    """
    data = Interactions(max_users)
    if name == "hybrid":
        weights = {"itemitem": 1.0, "bpr": 0.1, "popularity": 0.05}
        if hybrid_weights is not None:
            unknown = sorted(set(hybrid_weights) - set(weights))
            if unknown:
                raise ConfigError(
                    f"hybrid weights name {unknown}: the hybrid blends itemitem, bpr and popularity"
                )
            weights = {**dict.fromkeys(weights, 0.0), **hybrid_weights}
        parts: list[tuple[Model, float]] = [
            (ItemItem(data, half_life=half_life), weights["itemitem"]),
            (BPR(data, factors=factors, seed=seed), weights["bpr"]),
            (Popularity(data, half_life=half_life), weights["popularity"]),
        ]
        return Hybrid([(m, w) for m, w in parts if w > 0.0], data)
    if name == "itemitem":
        return ItemItem(data, half_life=half_life)
    if name == "bpr":
        return BPR(data, factors=factors, seed=seed)
    if name == "isgd":
        return ISGD(data, factors=factors, seed=seed)
    if name == "biased-mf":
        return BiasedMF(data, factors=factors, seed=seed)
    if name == "popularity":
        return Popularity(data, half_life=half_life)
    raise ConfigError(f"unknown model {name!r}: expected one of {', '.join(MODELS)}")
