"""Throughput of the processing core against bare River, on the sample card transactions.

Rows: anomrec's ``Processor.process`` (score, learn, alert decision, alert objects) and the
baseline, a bare loop over River's ``MinMaxScaler | HalfSpaceTrees`` pipeline with the same
settings (score_one then learn_one per event). The gap is anomrec's overhead per event.
Run: .venv/bin/python benchmarks/core.py [--events N]
"""

from __future__ import annotations

import argparse
import time

from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.core import Processor
from anomrec.streaming.events import EventDecoder
from anomrec.streaming.sample import generate_transactions
from river import anomaly, compose, preprocessing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=30_000)
    args = parser.parse_args()
    cfg = ProcessorConfig()
    decoder = EventDecoder(cfg)
    events = [decoder.from_dict(d) for d in generate_transactions(args.events, seed=1)]
    dicts = [dict(zip(cfg.features, e.features, strict=True)) for e in events]

    start = time.perf_counter()
    Processor(cfg).process(events)
    ours = time.perf_counter() - start

    model = compose.Pipeline(
        preprocessing.MinMaxScaler(),
        anomaly.HalfSpaceTrees(
            n_trees=cfg.n_trees, height=cfg.height, window_size=cfg.window_size, seed=cfg.seed
        ),
    )
    start = time.perf_counter()
    for x in dicts:
        model.score_one(x)
        model.learn_one(x)
    river = time.perf_counter() - start

    print(f"{'core (' + str(args.events) + ' events)':<40} {'events/s':>10} {'vs baseline':>12}")
    print(f"{'anomrec Processor.process':<40} {args.events / ours:>10,.0f} {river / ours:>11.2f}x")
    print(f"{'baseline: bare River pipeline loop':<40} {args.events / river:>10,.0f} {1.0:>11.2f}x")


if __name__ == "__main__":
    main()
