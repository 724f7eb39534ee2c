"""Throughput of anomrec's numpy HalfSpaceTrees against River's pipeline, on River's Shuttle rows.

For each setting (10 trees of height 8, 25 trees of height 15; window 250, seed 42) the baseline is
River's ``MinMaxScaler | HalfSpaceTrees`` pipeline, score_one then learn_one per event, and ours is
``HalfSpaceTrees.score_learn_many`` on batches of 1, 100 and 1000 of the same events. Every run must
give River's scores exactly (the "same" column). Both build their trees at the first learnt event:
that first event is timed apart ("build s"); events/s and the speed-up are for the rest.
Run: .venv/bin/python benchmarks/hst.py [--events N]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from anomrec.streaming.hst import HalfSpaceTrees
from river import anomaly, compose, datasets, preprocessing

SETTINGS = ((10, 8), (25, 15))
BATCH_SIZES = (1, 100, 1000)
WINDOW = 250
SEED = 42


def river_run(X: np.ndarray, names: list[str], n_trees: int, height: int) -> tuple[np.ndarray, float, float]:
    """Scores, seconds for the first event (tree build), seconds for the rest."""
    model = compose.Pipeline(
        preprocessing.MinMaxScaler(),
        anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=WINDOW, seed=SEED),
    )
    dicts = [dict(zip(names, row, strict=True)) for row in X.tolist()]
    scores = np.empty(len(dicts))
    start = time.perf_counter()
    scores[0] = model.score_one(dicts[0])
    model.learn_one(dicts[0])
    build = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(1, len(dicts)):
        scores[i] = model.score_one(dicts[i])
        model.learn_one(dicts[i])
    return scores, build, time.perf_counter() - start


def our_run(
    X: np.ndarray, names: list[str], n_trees: int, height: int, batch_size: int
) -> tuple[np.ndarray, float, float]:
    model = HalfSpaceTrees(names, n_trees=n_trees, height=height, window_size=WINDOW, seed=SEED)
    parts = []
    start = time.perf_counter()
    parts.append(model.score_learn_many(X[:1]))
    build = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(1, len(X), batch_size):
        parts.append(model.score_learn_many(X[i : i + batch_size]))
    return np.concatenate(parts), build, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    rows = [x for x, _ in datasets.Shuttle().take(args.events)]
    names = list(rows[0])
    X = np.array([[row[k] for k in names] for row in rows], dtype=np.float64)
    rest = len(X) - 1

    print(f"HalfSpaceTrees, {len(X):,} Shuttle events x {len(names)} features, window {WINDOW}")
    header = f"{'setting':<16} {'run':<22} {'build s':>8} {'events/s':>11} {'speed-up':>9} {'same':>5}"
    print(header)
    print("-" * len(header))
    for n_trees, height in SETTINGS:
        setting = f"{n_trees} trees, h {height}"
        reference, build, seconds = river_run(X, names, n_trees, height)
        river = "River, per event"
        print(f"{setting:<16} {river:<22} {build:>8.3f} {rest / seconds:>11,.0f} {1.0:>8.1f}x {'-':>5}")
        for batch_size in BATCH_SIZES:
            scores, our_build, our_seconds = our_run(X, names, n_trees, height, batch_size)
            same = "yes" if np.array_equal(scores, reference) else "NO"
            run = f"ours, batches of {batch_size}"
            print(
                f"{'':<16} {run:<22} {our_build:>8.3f} {rest / our_seconds:>11,.0f} "
                f"{seconds / our_seconds:>8.1f}x {same:>5}"
            )


if __name__ == "__main__":
    main()
