"""Throughput of the anomaly path: HalfSpaceTrees against River, then the whole Processor.

Everything runs on the same events: ``--events`` card transactions from the bundled sample
(``generate_transactions``, ``--users`` cards), decoded once with ``EventDecoder`` before any timing
starts (decoding is never inside a timed region), and turned into feature vectors by the
"transactions" profile.

1. **HalfSpaceTrees.** River's ``MinMaxScaler | HalfSpaceTrees`` pipeline, score_one then learn_one
   per event, against ours (``anomrec.streaming.hst.HalfSpaceTrees.score_learn_many``) on batches
   of 1, 100 and 1000, for 10 trees of height 8 and 25 trees of height 15, window 250, seed 42 (the
   helpers of ``benchmarks/hst.py``). The first event, where both build their trees, is timed apart
   ("build s"); events/s and the speed-up are for the rest. River at (25, 15) runs on the first
   ``--river-events`` events only (it manages a few hundred events/s); ours on all of them, and its
   scores are compared with River's over the events River saw ("same" is ``np.array_equal``).
2. **The full path** at the default ``ProcessorConfig()`` with ``recommend=False`` (the anomaly
   path alone; the recommender, also on by default, is ``benchmarks/recommender.py``'s, and it costs
   more than the whole anomaly path): features, HST (numpy), IsolationForest
   (compiled), LOF, calibrated ensemble, alerts; ``Processor.process`` on micro-batches of 500 and
   of 1000, each in a fresh processor. IsolationForest and LOF are refit during the run at fixed
   stream positions (first after ``first_fit_after`` events, then every ``refit_every``) on the
   processor's own worker thread, and the new models take over ``swap_delay`` events later, where
   ``process`` waits for a fit that is not done yet. Reported: events/s, latency per ``process``
   call (p50, p99), the time spent waiting for fits at swap points and the fit durations.
3. **Where the time goes**: each stage (feature profile, HST, IsolationForest scoring, LOF
   scoring, waits for fits at swap points) timed inside the runs of part 2, the rest of the path
   (calibration, ensemble, alerts, bookkeeping) being what they leave of the total; and the same
   stages timed alone on the same events and batches (a fresh profile, a fresh HST detector, the
   last fitted IsolationForest and LOF scoring the events they scored in the run). The fit thread
   competes with the path for the GIL and the cores, so a stage can cost more in the path.

Targets (printed, not asserted): our HST at batches of 1000 at least 10x River at (10, 8) and 40x
at (25, 15); the full path at least 40,000 events/s on one core at the defaults.
Run: .venv/bin/python benchmarks/anomaly.py [--events N] [--users N] [--river-events N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any, TypeVar

import numpy as np
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.core import Processor
from anomrec.streaming.detectors import HalfSpaceTreesDetector, SklearnDetector
from anomrec.streaming.events import Event, EventDecoder
from anomrec.streaming.features import build_profile
from anomrec.streaming.sample import generate_transactions
from hst import BATCH_SIZES, SETTINGS, WINDOW, our_run, river_run  # the sibling benchmarks/hst.py

PATH_BATCHES = (500, 1000)
HST_TARGETS = {(10, 8): 10.0, (25, 15): 40.0}  # speed-up over River at batches of 1000
PATH_TARGET = 40_000  # events/s, full path at the defaults
STAGES = {
    "profile": "feature profile (transform_many)",
    "hst": "HST (numpy)",
    "iforest": "IsolationForest scoring (compiled)",
    "lof": "LOF scoring",
    "wait": "waiting for fits at swap points",
    "rest": "rest: calibration, ensemble, alerts",
    "total": "total (table 2)",
}

T = TypeVar("T")


def batches(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def verdict(met: bool) -> str:
    return "met" if met else "not met"


def machine() -> str:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    versions = ", ".join(f"{p} {version(p)}" for p in ("numpy", "scikit-learn", "river"))
    return (
        f"Machine: {platform.machine()}, {cores} cores ({usable} usable by this process), "
        f"load average {load} at start; Python {platform.python_version()}, {versions}.\n"
        "The box may be shared with other work: figures are one run each, not best-of-N."
    )


# -- 1. HalfSpaceTrees -----------------------------------------------------------------------------


def hst_table(X: np.ndarray, names: list[str], river_events: int) -> dict[tuple[int, int], float]:
    """Print the table; return the speed-up over River at batches of 1000, per setting."""
    speedups: dict[tuple[int, int], float] = {}
    capped = min(river_events, len(X))
    print(f"1. HalfSpaceTrees: River pipeline vs ours, window {WINDOW}, {len(names)} features")
    header = (
        f"{'setting':<16} {'run':<22} {'events':>7} {'build s':>8} {'events/s':>11} "
        f"{'speed-up':>9} {'same':>5}"
    )
    print(header)
    print("-" * len(header))
    for n_trees, height in SETTINGS:
        setting = f"{n_trees} trees, h {height}"
        n_river = len(X) if (n_trees, height) == SETTINGS[0] else capped
        reference, build, seconds = river_run(X[:n_river], names, n_trees, height)
        river_rate = (n_river - 1) / seconds
        river = "River, per event" + (" *" if n_river < len(X) else "")
        print(
            f"{setting:<16} {river:<22} {n_river:>7,} {build:>8.3f} {river_rate:>11,.0f} "
            f"{1.0:>8.1f}x {'-':>5}"
        )
        for batch_size in BATCH_SIZES:
            scores, our_build, our_seconds = our_run(X, names, n_trees, height, batch_size)
            rate = (len(X) - 1) / our_seconds
            same = "yes" if np.array_equal(scores[:n_river], reference) else "NO"
            run = f"ours, batches of {batch_size}"
            print(
                f"{'':<16} {run:<22} {len(X):>7,} {our_build:>8.3f} {rate:>11,.0f} "
                f"{rate / river_rate:>8.1f}x {same:>5}"
            )
            if batch_size == 1000:
                speedups[(n_trees, height)] = rate / river_rate
    if capped < len(X):
        print(
            f"* River at ({SETTINGS[1][0]}, {SETTINGS[1][1]}) runs on the first {capped:,} "
            "events only (--river-events);\n  the speed-up compares events/s, and 'same' compares "
            "our scores over those events."
        )
    return speedups


# -- 2. the full path ------------------------------------------------------------------------------


def instrument(obj: object, method: str, totals: dict[str, float], key: str) -> None:
    """Add the seconds spent in ``obj.method`` from now on to ``totals[key]``."""
    original = getattr(obj, method)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - start

    setattr(obj, method, timed)


def run_path(cfg: ProcessorConfig, events: list[Event], batch_size: int) -> dict[str, Any]:
    latencies = []
    scores = []
    n_alerts = 0
    in_path = {key: 0.0 for key in STAGES if key not in ("rest", "total")}
    with Processor(cfg) as proc:
        # Stage times inside the run: the profile, each detector's scoring, and the waits at swap
        # points (finish_fit blocks until the fit thread is done); a timer call or two per batch.
        instrument(proc.profile, "transform_many", in_path, "profile")
        for det in proc.detectors:
            instrument(det, "score_learn_many", in_path, det.name)
            if isinstance(det, SklearnDetector):
                instrument(det, "finish_fit", in_path, "wait")
        for batch in batches(events, batch_size):
            start = time.perf_counter()
            step = proc.process(batch)
            latencies.append(time.perf_counter() - start)
            scores.append(step.scores)
            n_alerts += len(step.alerts)
        fitted = [d for d in proc.detectors if isinstance(d, SklearnDetector)]
    seconds = sum(latencies)
    in_path["rest"] = seconds - sum(in_path.values())
    in_path["total"] = seconds
    return {
        "seconds": seconds,
        "latencies": np.array(latencies),
        "scores": np.concatenate(scores),
        "alerts": n_alerts,
        "in_path": in_path,
        "fits": {d.name: list(d.fit_seconds_) for d in fitted},
        "scorers": {d.name: d.scorer_ for d in fitted},
    }


def path_table(cfg: ProcessorConfig, events: list[Event]) -> dict[int, dict[str, Any]]:
    n = len(events)
    print(
        f"2. Full path: Processor(ProcessorConfig(recommend=False)), profile {cfg.profile!r}, detectors "
        f"{', '.join(cfg.detectors)}; HST {cfg.n_trees} trees h {cfg.height} window {cfg.window_size}, "
        f"IsolationForest {cfg.iforest_trees} trees (compiled), LOF k={cfg.lof_neighbors}"
    )
    print(
        f"   refits at event {cfg.first_fit_after:,} then every {cfg.refit_every:,} on the last "
        f"{cfg.refit_window:,} clean events, swapped in {cfg.swap_delay:,} events later; "
        "fits run on the processor's worker thread"
    )
    header = (
        f"{'batch':>6} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'fit wait s':>10} {'alerts':>7} {'same':>5}"
    )
    print(header)
    print("-" * len(header))
    runs: dict[int, dict[str, Any]] = {}
    for batch_size in PATH_BATCHES:
        run = runs[batch_size] = run_path(cfg, events, batch_size)
        p50, p99 = np.percentile(run["latencies"], [50, 99]) * 1e3
        first = runs[PATH_BATCHES[0]]["scores"]
        same = (
            "-"
            if batch_size == PATH_BATCHES[0]
            else _yes(np.array_equal(run["scores"], first, equal_nan=True))
        )
        print(
            f"{batch_size:>6} {n / run['seconds']:>9,.0f} {p50:>8.1f} {p99:>8.1f} "
            f"{run['latencies'].max() * 1e3:>8.1f} {run['in_path']['wait']:>10.2f} "
            f"{run['alerts']:>7,} {same:>5}"
        )
    print(
        "fit wait s: time process() spent at swap points waiting for a fit; "
        f"same: combined scores equal to the run in batches of {PATH_BATCHES[0]}"
    )
    print()
    header = f"{'refits':<8} {'batch':>6} {'count':>6} {'median s':>9} {'max s':>7} {'total s':>8}"
    print(header)
    print("-" * len(header))
    for batch_size, run in runs.items():
        for name, fits in run["fits"].items():
            print(
                f"{name:<8} {batch_size:>6} {len(fits):>6} {statistics.median(fits):>9.3f} "
                f"{max(fits):>7.3f} {sum(fits):>8.2f}"
            )
    print(
        "(seconds of fit plus compile, one fit after the other on the processor's one worker thread; "
        f"the first fit has only {cfg.first_fit_after:,} rows)"
    )
    return runs


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


# -- 3. where the time goes ------------------------------------------------------------------------


def timed_batches(fn: Callable[[Any], object], items: Sequence[Any], batch_size: int) -> float:
    parts = batches(items, batch_size)
    start = time.perf_counter()
    for part in parts:
        fn(part)
    return time.perf_counter() - start


def stage_seconds(
    cfg: ProcessorConfig, events: list[Event], batch_size: int, run: dict[str, Any]
) -> dict[str, float]:
    """Seconds of each stage alone, in fresh objects, on ``events`` in batches of ``batch_size``."""
    profile = build_profile(cfg)  # a fresh one, built as the processor builds its own
    rows: list[np.ndarray] = []

    def transform(part: Sequence[Event]) -> None:
        rows.append(
            profile.transform_many(
                [e.entity for e in part], [e.event_time for e in part], [e.values for e in part]
            )
        )

    seconds = {"profile": timed_batches(transform, events, batch_size)}
    X = np.concatenate(rows)
    hst = HalfSpaceTreesDetector(
        profile.feature_names,
        n_trees=cfg.n_trees,
        height=cfg.height,
        window_size=cfg.window_size,
        seed=cfg.seed,
        implementation=cfg.hst_implementation,
    )
    seconds["hst"] = timed_batches(hst.score_learn_many, X, batch_size)
    # IsolationForest and LOF score nothing until their first model is swapped in.
    scored = X[cfg.first_fit_after + cfg.swap_delay :]
    for name, scorer in run["scorers"].items():
        seconds[name] = timed_batches(scorer.score_samples, scored, batch_size)
    return seconds


def breakdown_table(cfg: ProcessorConfig, events: list[Event], runs: dict[int, dict[str, Any]]) -> None:
    n = len(events)
    alone = {batch_size: stage_seconds(cfg, events, batch_size, run) for batch_size, run in runs.items()}
    print(f"3. Where the time goes, on the same {n:,} events and batches")
    width = max(len(label) for label in STAGES.values())
    over = "".join(f" {'batches of ' + str(b):^33}" for b in runs)
    cols = "".join(f" {'in path s':>9} {'µs/ev':>7} {'share':>6} {'alone s':>8}" for _ in runs)
    print(f"{'':<{width}}{over}".rstrip())
    header = f"{'stage':<{width}}{cols}"
    print(header)
    print("-" * len(header))
    for key, label in STAGES.items():
        line = f"{label:<{width}}"
        for batch_size, run in runs.items():
            s = run["in_path"][key]
            by_itself = alone[batch_size].get(key)
            alone_s = f"{by_itself:>8.2f}" if by_itself is not None else f"{'-':>8}"
            line += f" {s:>9.2f} {s / n * 1e6:>7.1f} {s / run['seconds']:>6.0%} {alone_s}"
        print(line)
    print(
        "in path: timed inside the runs of table 2 (the rest is what the timed stages leave of the "
        "total);\nalone: the stage by itself, in a fresh profile or detector, or (IsolationForest, LOF) "
        "the run's last\nmodels scoring the events after the first swap "
        f"({cfg.first_fit_after + cfg.swap_delay:,} on), as they do in the path."
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=60_000)
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--river-events", type=int, default=3000, help="River's events at (25, 15)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the sample events")
    args = parser.parse_args()

    print(machine())
    cfg = ProcessorConfig(recommend=False)
    docs = generate_transactions(args.events, n_users=args.users, seed=args.seed)
    decoder = EventDecoder(cfg)
    start = time.perf_counter()
    events = [decoder.from_dict(doc) for doc in docs]
    decode_s = time.perf_counter() - start
    print(
        f"Events: {len(events):,} sample card transactions, {args.users} cards, seed {args.seed}; "
        f"decoded once beforehand ({len(events) / decode_s:,.0f} events/s, not in any timing below)."
    )
    print()

    # The feature vectors HalfSpaceTrees is benchmarked on: the profile's, over the same events.
    profile = build_profile(cfg)
    X = profile.transform_many(
        [e.entity for e in events], [e.event_time for e in events], [e.values for e in events]
    )
    speedups = hst_table(X, list(profile.feature_names), args.river_events)
    print()
    runs = path_table(cfg, events)
    print()
    breakdown_table(cfg, events, runs)
    print()

    print("Targets (not asserted)")
    lines = [
        (
            f"our HST >= {target:.0f}x River at ({n_trees}, {height}), batches of 1000",
            f"{speedups[(n_trees, height)]:.1f}x",
            speedups[(n_trees, height)] >= target,
        )
        for (n_trees, height), target in HST_TARGETS.items()
    ]
    for batch_size, run in runs.items():
        rate = len(events) / run["seconds"]
        lines.append(
            (
                f"full path >= {PATH_TARGET:,} events/s at the defaults, batches of {batch_size}",
                f"{rate:,.0f}/s",
                rate >= PATH_TARGET,
            )
        )
    width = max(len(label) for label, _, _ in lines)
    for label, measured, met in lines:
        print(f"{label:<{width}} {measured:>10} {verdict(met)}")
    print(
        "(the path itself runs on one thread; the refits run on the processor's worker thread, "
        f"which can use another of the {os.cpu_count()} cores)"
    )


if __name__ == "__main__":
    main()
