"""Decoding throughput: anomrec's EventDecoder (orjson) against the same decoder on stdlib json.

Prints a table of events per second over the sample card transactions, best of several repeats.
Run: .venv/bin/python benchmarks/decode.py [--events N] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import orjson
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.events import EventDecoder
from anomrec.streaming.sample import generate_transactions


def best_rate(fn: Callable[[], int], repeats: int) -> float:
    best = float("inf")
    n = 0
    for _ in range(repeats):
        start = time.perf_counter()
        n = fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    values = [orjson.dumps(e) for e in generate_transactions(args.events, seed=1)]
    decoder = EventDecoder(ProcessorConfig())

    def with_orjson() -> int:
        for v in values:
            decoder.decode(v)
        return len(values)

    def with_stdlib_json() -> int:  # the baseline: json.loads, then the same field handling
        for v in values:
            decoder.from_dict(json.loads(v))
        return len(values)

    def parse_only_orjson() -> int:
        for v in values:
            orjson.loads(v)
        return len(values)

    def parse_only_json() -> int:
        for v in values:
            json.loads(v)
        return len(values)

    rows = [
        ("EventDecoder.decode (orjson)", best_rate(with_orjson, args.repeats)),
        ("baseline: json.loads + from_dict", best_rate(with_stdlib_json, args.repeats)),
        ("parse only: orjson.loads", best_rate(parse_only_orjson, args.repeats)),
        ("parse only: json.loads (baseline)", best_rate(parse_only_json, args.repeats)),
    ]
    base = rows[1][1]
    print(f"{'decoder':<36} {'events/s':>12} {'vs baseline':>12}")
    for name, rate in rows:
        print(f"{name:<36} {rate:>12,.0f} {rate / base:>11.2f}x")


if __name__ == "__main__":
    main()
