"""The ``anomrec`` command: the one place that wires the runtime, the offline tools and the broker.

Subcommands:

- ``run``: the processor. With no broker configured it runs in process on the bundled sample
  stream of card transactions and prints how well the alerts match the labels.
- ``broker``: a local single-node Apache Kafka for development, in the foreground.
- ``produce-demo``: writes the sample stream to a topic (the docker compose demo producer).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from anomrec import __version__
from anomrec.localkafka import add_arguments as add_broker_arguments
from anomrec.localkafka import serve
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.exceptions import AnomrecError
from anomrec.streaming.runners import KafkaRunner, RunStats, run_embedded, write_alerts_path
from anomrec.streaming.sample import generate_transactions

log = logging.getLogger("anomrec")


# The settings that have flags; every setting has its ANOMREC_* variable.
_FLAGS = ("bootstrap_servers", "input_topic", "alerts_topic", "group_id", "features", "threshold", "seed")


def _config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting in ``_FLAGS``; help, variable and default come from ProcessorConfig."""
    fields = {f.name: f for f in dataclasses.fields(ProcessorConfig)}
    group = parser.add_argument_group("processor settings (flags override ANOMREC_* variables)")
    for name in _FLAGS:
        f = fields[name]
        default = ",".join(f.default) if isinstance(f.default, tuple) else f.default
        kind: Callable[[str], Any] = type(f.default) if isinstance(f.default, int | float) else str
        group.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            help=f"{f.metadata['help']} [{ProcessorConfig.env_var(name)}, default {default}]",
        )


def _config(args: argparse.Namespace) -> ProcessorConfig:
    overrides = {name: getattr(args, name) for name in _FLAGS}
    return ProcessorConfig.from_sources(os.environ, overrides)


class _Progress:
    """A live line on stderr: events/s, events done and alerts (tqdm)."""

    def __init__(self, total: int | None, enabled: bool) -> None:
        from tqdm import tqdm  # noqa: PLC0415 - only the progress line needs it

        self.bar = tqdm(total=total, unit=" ev", unit_scale=True, disable=not enabled, dynamic_ncols=True)

    def __call__(self, stats: RunStats, n: int) -> None:
        self.bar.set_postfix(alerts=stats.alerts, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def cmd_run(args: argparse.Namespace) -> int:
    config = _config(args)
    if config.bootstrap_servers:
        return _run_kafka(config, args)
    print(
        f"anomrec {__version__}: no broker configured, running embedded on {args.events:,} sample card "
        f"transactions (seed {args.sample_seed}); alerts go to {args.alerts_out}",
        file=sys.stderr,
    )
    values = (
        orjson.dumps(e)
        for e in generate_transactions(args.events, seed=args.sample_seed, anomaly_rate=args.anomaly_rate)
    )
    progress = _Progress(args.events, enabled=not args.quiet)
    with write_alerts_path(Path(args.alerts_out)) as out:
        try:
            stats = run_embedded(config, values, out, on_batch=progress)
        finally:
            progress.close()
    print(stats.summary())
    print(f"alerts written to {args.alerts_out}")
    return 0


def _run_kafka(config: ProcessorConfig, args: argparse.Namespace) -> int:
    runner = KafkaRunner(config)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: finishing the current batch, committing, exiting", signal.Signals(signum).name)
        runner.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stats = runner.run(max_events=args.max_events, idle_timeout=args.idle_timeout)
    print(stats.summary(), flush=True)
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    # A development broker: topics spring into being on first use unless --config says otherwise.
    extra = {"auto.create.topics.enable": "true", **dict(args.extra_config)}
    return serve(
        port=args.port,
        controller_port=args.controller_port,
        data_dir=args.data_dir,
        heap=args.heap,
        extra_config=extra,
        timeout=args.timeout,
    )


def cmd_produce_demo(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer  # noqa: PLC0415

    producer = KafkaProducer(bootstrap_servers=args.bootstrap_servers, acks="all", linger_ms=5)
    start = time.monotonic()
    sent = 0
    for event in generate_transactions(args.count, seed=args.sample_seed, anomaly_rate=args.anomaly_rate):
        producer.send(args.topic, key=event["card_id"].encode(), value=orjson.dumps(event))
        sent += 1
        if args.rate > 0:
            lag = sent / args.rate - (time.monotonic() - start)
            if lag > 0:
                time.sleep(lag)
    producer.flush()
    producer.close()
    print(f"produced {sent:,} events to {args.topic} in {time.monotonic() - start:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anomrec", description="Streaming anomaly detection on Kafka.")
    parser.add_argument("--version", action="version", version=f"anomrec {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("ANOMREC_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the processor (embedded sample when no broker is configured)")
    _config_flags(run)
    embedded = run.add_argument_group("embedded run (no broker)")
    embedded.add_argument(
        "--events", type=_positive_int, default=50_000, help="sample events to generate (default 50000)"
    )
    embedded.add_argument(
        "--anomaly-rate", type=float, default=0.02, help="share of labelled frauds (default 0.02)"
    )
    embedded.add_argument("--sample-seed", type=int, default=7, help="seed of the sample stream (default 7)")
    embedded.add_argument("--alerts-out", default="anomrec-alerts.jsonl", help="JSONL file for alerts")
    embedded.add_argument("--quiet", action="store_true", help="no progress line")
    kafka = run.add_argument_group("Kafka run")
    kafka.add_argument("--max-events", type=_positive_int, help="stop after this many events")
    kafka.add_argument("--idle-timeout", type=float, help="stop after this many seconds with no input")
    run.set_defaults(func=cmd_run)

    broker = sub.add_parser("broker", help="run a local single-node Apache Kafka (KRaft) in the foreground")
    add_broker_arguments(broker)
    broker.set_defaults(func=cmd_broker)

    demo = sub.add_parser("produce-demo", help="produce the sample card transactions to a topic")
    demo.add_argument(
        "--bootstrap-servers", default=os.environ.get("ANOMREC_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    )
    demo.add_argument("--topic", default=os.environ.get("ANOMREC_INPUT_TOPIC", "events"))
    demo.add_argument("--count", type=_positive_int, default=100_000)
    demo.add_argument("--rate", type=float, default=0.0, help="events per second; 0 = as fast as possible")
    demo.add_argument("--anomaly-rate", type=float, default=0.02)
    demo.add_argument("--sample-seed", type=int, default=7)
    demo.set_defaults(func=cmd_produce_demo)
    return parser


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r}: expected a number >= 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except AnomrecError as exc:
        print(f"anomrec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
