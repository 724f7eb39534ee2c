"""Scoring speed of scikit-learn's IsolationForest against CompiledIsolationForest, same forest.

The forest: 100 trees, max_samples="auto" (256), fitted on 5000 rows of 12 features. For each batch
size, sklearn's ``score_samples`` and the compiled one are timed in alternation (so that a busy
machine slows both alike), ``--rounds`` times each; the table gives the best time per row of each,
the speed-up of the best times and the median speed-up over the rounds. The scores are checked
equal, and the largest absolute difference is printed.
Run: .venv/bin/python benchmarks/iforest.py [--rounds N] [--method auto|bitvector|levelwise]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from anomrec.streaming.iforest import CompiledIsolationForest
from sklearn.ensemble import IsolationForest

N_FEATURES = 12
N_TRAIN = 5000
N_TREES = 100
BATCHES = (100, 1000, 10_000)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--method", choices=("auto", "bitvector", "levelwise"), default="auto")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    X_train = rng.normal(size=(N_TRAIN, N_FEATURES))
    forest = IsolationForest(n_estimators=N_TREES, random_state=0).fit(X_train)
    start = time.perf_counter()
    compiled = CompiledIsolationForest(forest, method=args.method)
    compile_s = time.perf_counter() - start
    print(
        f"{N_TREES} trees, max_samples={forest.max_samples_}, {N_FEATURES} features, "
        f"trained on {N_TRAIN} rows; engine {compiled.method_!r}, compiled in {compile_s:.2f} s, "
        f"{compiled.nbytes_ / 2**20:.1f} MiB"
    )
    print(
        f"{'batch':>7} {'sklearn µs/row':>15} {'compiled µs/row':>16} {'speed-up':>9} "
        f"{'median speed-up':>16} {'max |diff|':>11}"
    )
    for batch in BATCHES:
        # Mostly inliers, some far outliers, as a stream would bring.
        X = rng.normal(size=(batch, N_FEATURES)) * rng.choice([1.0, 4.0], size=(batch, 1), p=[0.9, 0.1])
        expected = forest.score_samples(X)
        got = compiled.score_samples(X)
        diff = float(np.max(np.abs(got - expected)))
        theirs, ours = [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            forest.score_samples(X)
            theirs.append(time.perf_counter() - start)
            start = time.perf_counter()
            compiled.score_samples(X)
            ours.append(time.perf_counter() - start)
        best_theirs, best_ours = min(theirs) / batch * 1e6, min(ours) / batch * 1e6
        median = statistics.median(t / o for t, o in zip(theirs, ours, strict=True))
        print(
            f"{batch:>7} {best_theirs:>15.2f} {best_ours:>16.2f} {best_theirs / best_ours:>8.1f}x "
            f"{median:>15.1f}x {diff:>11.1e}"
        )


if __name__ == "__main__":
    main()
