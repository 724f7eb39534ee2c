"""End to end over a real Kafka broker: the client's ceiling, a naive loop, anomrec, and two anomrecs.

The broker is ``--bootstrap-servers`` (or ``KAFKA_BOOTSTRAP_SERVERS``) if given, else a local
single-node Apache Kafka started for the run (:class:`anomrec.localkafka.LocalKafka`) and stopped
at the end. Every topic and consumer group the run creates has a fresh name and is deleted at the
end. Every variant runs in a child process of its own (this script with a hidden ``--worker``
option), which reports its counts and timings back.

Throughput (events/s, CPU s, cores, CPU µs/event)
    ``--events`` sample card transactions (``generate_transactions``, seed 1, 2,000 cards) are
    produced beforehand to a topic of ``--partitions`` partitions, keyed by card, the event time as
    the record timestamp. Each variant then reads that backlog from the start. The measured window
    opens when the first poll that returned records comes back and closes after the last event's
    outputs are flushed or committed; events/s is events / window, and CPU s is the worker process's
    CPU time (``time.process_time()``: every thread, user + system) over the same window, so that
    interpreter start, imports and the group join count for no one; "cores" is CPU s / window s.
    The broker's CPU is not counted.

    (a) consume-only: the runner's own consumer (``KafkaRunner._connect_consumer``: read_committed,
        max_poll_records 500, cooperative-sticky group) polling raw records to the end of the topic.
        produce-only: the runner's own exactly-once producer (``_connect_producer``: acks all,
        linger 5 ms, idempotent, transactional) sending the same N record values and keys to a fresh
        topic, one transaction per 500 records as the runner commits one per poll; and, as an extra
        row, its at-least-once producer with a flush every 500 records.
    (b) naive: ``benchmarks/_e2e_naive.py``, what a user would write from the public examples:
        ``json.loads``, River ``MinMaxScaler | HalfSpaceTrees`` per event, scikit-learn
        IsolationForest and LOF (novelty) fitted once on the first 1,000 events then
        ``score_samples`` one row per event, River ``BiasedMF`` per event, one ``send`` per alert.
        It runs on the first ``--naive-events`` events only (it manages a few hundred per second);
        a footnote gives its rate after the fit, without the 1,000 cheap unscored events.
    (c) anomrec: ``KafkaRunner`` at the default ``ProcessorConfig`` (exactly-once), only the
        broker, topics, group, instance id and a fresh state folder set; it starts consuming once
        its imports are done and stops by itself 8 s after the end of the backlog
        (``idle_timeout``). The window is timed by a subclass that wraps ``KafkaRunner._cycle``
        (one poll's processing and its transaction). An extra row runs it with
        ``delivery="at-least-once"``.
    (d) anomrec x2: two such processes in one group, with their own instance ids and a shared state
        folder, released together once both have imported. The local broker keeps Kafka's default
        ``group.initial.rebalance.delay.ms=3000`` (the project's test broker sets 0), so both
        members share the group's first assignment rather than one taking every partition until
        the other's join is served; a given broker's own setting applies. events/s is
        N / (last window close - first window open); CPU s is the sum of both processes'.

Latency (p50, p99 ms, alerts measured)
    A load-generator process sends fresh sample transactions to a fresh topic at ``--rate`` events/s
    (bursts of 20, paced against a monotonic clock) for ``--warmup-seconds`` + ``--latency-seconds``,
    stamping each event's ``ts`` and record timestamp with the wall clock at the send and logging
    ``event_id -> send time`` (a card then buys about once a second instead of twice an hour: the
    models learn online, and the alert rate stays near the backlog's). The variant's process(es),
    at the same settings as in the throughput runs, are started and have joined their group (all
    partitions assigned) before it begins. A consumer in this process reads the alerts topic with
    ``read_committed`` (as readers of exactly-once output must) and logs each alert's arrival.
    Latency = arrival - send, over the alerts of the events sent after the warm-up (the processor
    alerts only after a few thousand events of each partition). With exactly-once delivery an alert
    is visible only once its poll's transaction commits, so the latency includes that cadence. A
    variant that has not processed all the offered events within ``--drain-seconds`` after the load
    stops is "saturated": its latency grows with the run, and the figures are lower bounds (``≥``),
    or, when none of the measured events alerted in time, ``>`` the age of the first measured event
    at stop.

Targets (printed, never asserted): (c) >= 5x (b) in events/s; (c) >= 30 % of the consume-only
ceiling; (d) >= 1.7x (c); (c)'s p99 <= 100 ms at 2,000 events/s.
Run: .venv/bin/python benchmarks/e2e.py [--bootstrap-servers HOST:PORT] [--events N] [--naive-events N]
     [--partitions N] [--rate N] [--latency-seconds S] [--warmup-seconds S] [--skip-latency] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.kafka_runner import KafkaRunner
from anomrec.streaming.sample import generate_transactions
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from anomrec.localkafka import KAFKA_VERSION, LocalKafka

RESULT = "E2E-RESULT "
READY = "E2E-READY"
SEED = 1  # the throughput backlog
LOAD_SEED = 2  # the latency runs' events
USERS = 2000
BURST = 20
IDLE_TIMEOUT = 8.0  # seconds a throughput run's processor waits at the end of the backlog
# Targets (printed, not asserted).
NAIVE_SPEEDUP = 5.0
CEILING_SHARE = 0.30
SCALE_OUT = 1.7
P99_MS = 100.0


def say(text: str) -> None:
    """Progress on stderr; the table goes to stdout."""
    print(f"[e2e {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# == workers: each runs in a child process and prints one RESULT line ================================


class TimedRunner(KafkaRunner):
    """``KafkaRunner`` noting wall and CPU time around every cycle (a poll's processing and commit)
    that processed events: the first one's start and the last one's end bound the window."""

    def __init__(self, config: ProcessorConfig) -> None:
        super().__init__(config)
        self.window: dict[str, float] = {}

    def _cycle(self, polled: Mapping[Any, list[Any]]) -> BaseException | None:
        before = self.stats.events
        started, cpu_started = time.time(), time.process_time()
        failure = super()._cycle(polled)
        if self.stats.events > before:
            self.window.setdefault("first", started)
            self.window.setdefault("cpu_first", cpu_started)
            self.window["last"], self.window["cpu_last"] = time.time(), time.process_time()
        return failure


def processor_config(spec: Mapping[str, Any]) -> ProcessorConfig:
    """The default ``ProcessorConfig`` with only where to read, write and keep state set."""
    defaults = ProcessorConfig()
    return ProcessorConfig(
        bootstrap_servers=spec["servers"],
        input_topic=spec["input"],
        alerts_topic=spec.get("alerts", defaults.alerts_topic),
        recommendations_topic=spec.get("recommendations", defaults.recommendations_topic),
        similar_items_topic=spec.get("similar", defaults.similar_items_topic),
        dead_letter_topic=spec.get("dead_letters", defaults.dead_letter_topic),
        group_id=spec["group"],
        instance_id=spec["instance"],
        state_dir=spec.get("state_dir", defaults.state_dir),
        delivery=spec["delivery"],
    )


def work_anomrec(spec: Mapping[str, Any]) -> dict[str, Any]:
    runner = TimedRunner(processor_config(spec))
    signal.signal(signal.SIGTERM, lambda signum, frame: runner.stop())
    if spec.get("go_file"):
        # Imports done: wait for the other processes of the run, so that they join the group together.
        print(READY, flush=True)
        while not Path(spec["go_file"]).exists():
            time.sleep(0.01)
    stats = runner.run(idle_timeout=spec.get("idle_timeout"))
    if stats.events and not runner.window:
        raise RuntimeError("KafkaRunner._cycle was never called: the benchmark's timing hook needs updating")
    return {
        **runner.window,
        "events": stats.events,
        "alerts": stats.alerts,
        "recommendations": stats.recommendations,
        "neighbour_lists": stats.neighbour_lists,
        "checkpoints": stats.checkpoints,
        "replayed": stats.replayed,
        "restored": stats.restored,
        "aborted": stats.aborted,
        "dead_letters": stats.dead_letters,
    }


def work_consume(spec: Mapping[str, Any]) -> dict[str, Any]:
    consumer = KafkaRunner(processor_config(spec))._connect_consumer()
    consumer.subscribe([spec["input"]])
    out: dict[str, Any] = {"events": 0}
    try:
        while out["events"] < spec["events"]:
            polled = consumer.poll(timeout_ms=200)
            if polled and "first" not in out:
                out["first"], out["cpu_first"] = time.time(), time.process_time()
            out["events"] += sum(len(records) for records in polled.values())
        out["last"], out["cpu_last"] = time.time(), time.process_time()
    finally:
        consumer.close(autocommit=False)
    return out


def work_produce(spec: Mapping[str, Any]) -> dict[str, Any]:
    config = processor_config(spec)
    records = [
        (d["card_id"].encode(), orjson.dumps(d), epoch_ms(d["ts"]))
        for d in generate_transactions(spec["events"], seed=SEED, n_users=USERS)
    ]
    producer = KafkaRunner(config)._connect_producer()
    exactly_once = config.delivery == "exactly-once"
    step = config.max_poll_records
    out: dict[str, Any] = {"events": len(records)}
    try:
        out["first"], out["cpu_first"] = time.time(), time.process_time()
        for start in range(0, len(records), step):
            if exactly_once:
                producer.begin_transaction()
            for key, value, stamp in records[start : start + step]:
                producer.send(spec["input"], key=key, value=value, timestamp_ms=stamp)
            if exactly_once:
                producer.commit_transaction()
            else:
                producer.flush()
        out["last"], out["cpu_last"] = time.time(), time.process_time()
    finally:
        producer.close(timeout=10)
    return out


def work_naive(spec: Mapping[str, Any]) -> dict[str, Any]:
    import _e2e_naive  # noqa: PLC0415 - the sibling benchmarks/_e2e_naive.py; River and sklearn load here

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    return _e2e_naive.run(
        spec["servers"],
        spec["input"],
        spec["alerts"],
        spec["group"],
        max_events=spec.get("events"),
        should_stop=stop.is_set,
    )


def work_load(spec: Mapping[str, Any]) -> dict[str, Any]:
    """Send ``rate * seconds`` fresh events at ``rate`` per second; write event_id -> send time."""
    rate, n = spec["rate"], int(spec["rate"] * spec["seconds"])
    docs = generate_transactions(n, seed=LOAD_SEED, n_users=USERS)
    producer = KafkaProducer(bootstrap_servers=spec["servers"], acks="all", linger_ms=0)
    sent: dict[str, float] = {}
    behind = 0.0
    start = time.monotonic()
    first = time.time()
    for i in range(0, n, BURST):
        lag = start + i / rate - time.monotonic()
        if lag > 0:
            time.sleep(lag)
        else:
            behind = max(behind, -lag)
        for doc in docs[i : i + BURST]:
            now = time.time()
            doc["ts"] = now
            producer.send(
                spec["input"],
                key=doc["card_id"].encode(),
                value=orjson.dumps(doc),
                timestamp_ms=int(now * 1000),
            )
            sent[doc["event_id"]] = now
    last = time.time()
    producer.flush()
    producer.close()
    Path(spec["sent_file"]).write_bytes(orjson.dumps(sent))
    return {"events": n, "first": first, "last": last, "behind": behind}


WORKERS = {
    "anomrec": work_anomrec,
    "consume": work_consume,
    "produce": work_produce,
    "naive": work_naive,
    "load": work_load,
}


def worker_main(kind: str, spec_json: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    result = WORKERS[kind](json.loads(spec_json))
    print(RESULT + json.dumps(result), flush=True)


def epoch_ms(ts: str) -> int:
    return round(datetime.fromisoformat(ts).timestamp() * 1000)


# == the orchestrator ================================================================================


class Child:
    """A worker process, its log and its result."""

    def __init__(self, name: str, kind: str, spec: Mapping[str, Any], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.out_path = log_dir / f"{name}.out"
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, json.dumps(spec)]
        with self.out_path.open("wb") as out, self.log_path.open("wb") as err:
            self.process = subprocess.Popen(command, stdout=out, stderr=err)

    def wait_ready(self, timeout: float) -> None:
        """Wait for the worker's READY line."""
        deadline = time.monotonic() + timeout
        while READY not in self.out_path.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not get ready:\n{self.tail()}")
            time.sleep(0.05)

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.name} did not finish within {timeout:.0f} s:\n{self.tail()}") from None
        lines = [ln for ln in self.out_path.read_text().splitlines() if ln.startswith(RESULT)]
        if code != 0 or not lines:
            raise RuntimeError(f"{self.name} exited with status {code}:\n{self.tail()}")
        return dict(json.loads(lines[-1].removeprefix(RESULT)))

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def tail(self, lines: int = 25) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Outputs:
    """A variant's output topics and group."""

    alerts: str
    recommendations: str
    similar: str
    dead_letters: str
    group: str

    def spec(self) -> dict[str, str]:
        return {
            "alerts": self.alerts,
            "recommendations": self.recommendations,
            "similar": self.similar,
            "dead_letters": self.dead_letters,
            "group": self.group,
        }


@dataclass
class Bench:
    """The broker, what the run created on it, and the child processes it started."""

    servers: str
    partitions: int
    work_dir: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    topics: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)
    admin: KafkaAdminClient | None = None

    def connect(self) -> None:
        self.admin = KafkaAdminClient(bootstrap_servers=self.servers, client_id="anomrec-e2e")

    def name(self, what: str) -> str:
        return f"e2e-{self.tag}-{what}"

    def topic(self, what: str, partitions: int | None = None, **settings: str) -> str:
        """A fresh topic; records never expire (sample events carry event times months old)."""
        assert self.admin is not None
        name = self.name(what)
        configs = {"retention.ms": "-1", **settings}
        count = self.partitions if partitions is None else partitions
        self.admin.create_topics([NewTopic(name, count, 1, topic_configs=configs)])
        self.topics.append(name)
        return name

    def outputs(self, what: str) -> Outputs:
        """Fresh output topics laid out as the runner creates them, and a fresh group."""
        group = self.name(f"{what}-group")
        self.groups.append(group)
        return Outputs(
            alerts=self.topic(f"{what}-alerts"),
            recommendations=self.topic(f"{what}-recommendations"),
            similar=self.topic(f"{what}-similar", 1, **{"cleanup.policy": "compact"}),
            dead_letters=self.topic(f"{what}-dead-letters"),
            group=group,
        )

    def state_dir(self, what: str) -> str:
        path = self.work_dir / f"state-{what}"
        path.mkdir()
        return str(path)

    def start(self, name: str, kind: str, spec: Mapping[str, Any]) -> Child:
        child = Child(name, kind, {"servers": self.servers, **spec}, self.work_dir)
        self.children.append(child)
        return child

    def committed(self, group: str) -> int | None:
        """The sum of ``group``'s committed offsets (None if the broker did not answer)."""
        assert self.admin is not None
        try:
            offsets = self.admin.list_group_offsets({group: None}).get(group, {})
        except Exception:  # noqa: BLE001 - a momentary failure: ask again
            return None
        return sum(o.offset for o in offsets.values() if o.offset > 0)

    def group_ready(self, group: str, members: int) -> bool:
        """Whether ``group`` is stable with ``members`` members sharing all partitions."""
        assert self.admin is not None
        try:
            described = self.admin.describe_groups([group])[group]
        except Exception:  # noqa: BLE001 - the coordinator may not know the group yet
            return False
        if described.get("group_state") != "Stable" or len(described.get("members", [])) != members:
            return False
        assigned = 0
        for member in described["members"]:
            assignment = member.get("member_assignment") or {}
            for topic in assignment.get("assigned_partitions", []):
                assigned += len(topic.get("partitions", []))
        return assigned == self.partitions

    def cleanup(self) -> None:
        for child in self.children:
            child.kill()
        if self.admin is None:
            return
        with contextlib.suppress(Exception):
            if self.groups:
                self.admin.delete_groups(self.groups)
        with contextlib.suppress(Exception):
            if self.topics:
                self.admin.delete_topics(self.topics)
        self.admin.close()


# -- throughput ---------------------------------------------------------------------------------------


@dataclass
class Throughput:
    events: int
    seconds: float
    cpu: float
    detail: str = ""
    raw: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")


def combine(results: list[dict[str, Any]], detail: str = "") -> Throughput:
    ran = [r for r in results if r.get("first") is not None]
    return Throughput(
        events=sum(r["events"] for r in results),
        seconds=max(r["last"] for r in ran) - min(r["first"] for r in ran),
        cpu=sum(r["cpu_last"] - r["cpu_first"] for r in ran),
        detail=detail,
        raw=results,
    )


def produce_backlog(bench: Bench, events: int) -> str:
    topic = bench.topic("input")
    docs = generate_transactions(events, seed=SEED, n_users=USERS)
    producer = KafkaProducer(bootstrap_servers=bench.servers, acks="all", linger_ms=20)
    for d in docs:
        producer.send(topic, key=d["card_id"].encode(), value=orjson.dumps(d), timestamp_ms=epoch_ms(d["ts"]))
    producer.flush()
    producer.close()
    return topic


def run_anomrec(
    bench: Bench, topic: str, what: str, *, processes: int, delivery: str, timeout: float
) -> Throughput:
    outputs = bench.outputs(what)
    state_dir = bench.state_dir(what)
    go_file = bench.work_dir / f"{what}-go"
    children = [
        bench.start(
            f"{what}-{i}",
            "anomrec",
            {
                "input": topic,
                **outputs.spec(),
                "instance": f"{what}-{i}",
                "state_dir": state_dir,
                "delivery": delivery,
                "idle_timeout": IDLE_TIMEOUT,
                "go_file": str(go_file),
            },
        )
        for i in range(processes)
    ]
    for child in children:
        child.wait_ready(300)
    go_file.touch()
    results = [child.result(timeout) for child in children]
    split = " + ".join(f"{r['events']:,}" for r in results)
    total = {k: sum(r[k] for r in results) for k in results[0] if isinstance(results[0][k], int)}
    published = total["alerts"] + total["recommendations"] + total["neighbour_lists"]
    detail = (
        (f"events per process {split}; " if processes > 1 else "")
        + f"{published / max(total['events'], 1):.2f} output records per event ({total['alerts']:,} alerts, "
        f"{total['recommendations']:,} recommendations, {total['neighbour_lists']:,} neighbour lists); "
        + ", ".join(f"{total[k]:,} {k}" for k in ("checkpoints", "restored", "replayed", "aborted"))
    )
    if processes > 1 and not all(r["events"] for r in results):
        detail += "; WARNING: a process got no partition before the backlog was done: not a scale-out figure"
    return combine(results, detail)


def throughput_runs(bench: Bench, args: argparse.Namespace) -> dict[str, Throughput]:
    timeout = 600 + args.events / 50
    say(f"producing the backlog: {args.events:,} events to {args.partitions} partitions")
    topic = produce_backlog(bench, args.events)
    runs: dict[str, Throughput] = {}

    say("(a) consume-only")
    group = bench.name("consume-group")
    bench.groups.append(group)
    spec = {"input": topic, "group": group, "instance": "consume", "delivery": "exactly-once"}
    runs["consume"] = combine(
        [bench.start("consume", "consume", {**spec, "events": args.events}).result(timeout)]
    )

    for delivery, key in (("exactly-once", "produce"), ("at-least-once", "produce-alo")):
        say(f"(a) produce-only, {delivery}")
        target = bench.topic(key)
        group = bench.name(f"{key}-group")
        produce = {**spec, "input": target, "group": group, "instance": key, "delivery": delivery}
        runs[key] = combine([bench.start(key, "produce", {**produce, "events": args.events}).result(timeout)])

    say(f"(b) naive loop on the first {args.naive_events:,} events")
    outputs = bench.outputs("naive")
    naive = bench.start("naive", "naive", {"input": topic, **outputs.spec(), "events": args.naive_events})
    result = naive.result(timeout)
    steady = ""
    if result.get("fitted") is not None and result["events"] > 1000:
        after = (result["events"] - 1000) / (result["last"] - result["fitted"])
        steady = f"after its fit at event 1,000: {after:,.0f} events/s; "
    runs["naive"] = combine([result], f"{steady}{result['alerts']:,} alerts")

    for key, label, processes, delivery in (
        ("anomrec", "(c) anomrec", 1, "exactly-once"),
        ("anomrec-alo", "(c) anomrec", 1, "at-least-once"),
        ("anomrec-x2", "(d) anomrec x2", 2, "exactly-once"),
    ):
        say(f"{label}, {delivery}")
        runs[key] = run_anomrec(bench, topic, key, processes=processes, delivery=delivery, timeout=timeout)
    return runs


# -- latency ------------------------------------------------------------------------------------------


class AlertTap(threading.Thread):
    """Reads an alerts topic with read_committed and notes when each alert arrived."""

    def __init__(self, servers: str, topic: str, partitions: int) -> None:
        super().__init__(name="alert-tap", daemon=True)
        self.consumer = KafkaConsumer(
            bootstrap_servers=servers,
            isolation_level="read_committed",
            enable_auto_commit=False,
            fetch_max_wait_ms=20,  # an answer as soon as a commit makes records visible, or 20 ms
        )
        parts = [TopicPartition(topic, p) for p in range(partitions)]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning(*parts)
        self.arrivals: list[tuple[bytes, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            polled = self.consumer.poll(timeout_ms=100)
            now = time.time()
            self.arrivals.extend((r.value, now) for records in polled.values() for r in records)
        self.consumer.close(autocommit=False)

    def stop(self) -> None:
        self.halt.set()
        self.join(30)


@dataclass
class Latency:
    latencies_ms: np.ndarray
    offered: float
    sent: int
    processed: int
    saturated: bool
    first_measured_age_s: float
    behind_s: float

    def cell(self, q: float) -> str:
        if len(self.latencies_ms) == 0:
            return f">{self.first_measured_age_s * 1e3:,.0f}" if self.saturated else "-"
        value = f"{np.percentile(self.latencies_ms, q):,.1f}"
        return f"≥{value}" if self.saturated else value


def latency_run(
    bench: Bench, what: str, kind: str, *, processes: int, delivery: str, args: argparse.Namespace
) -> Latency:
    topic = bench.topic(f"{what}-input")
    outputs = bench.outputs(what)
    state_dir = bench.state_dir(what)
    tap = AlertTap(bench.servers, outputs.alerts, bench.partitions)
    tap.start()
    spec = {"input": topic, **outputs.spec(), "state_dir": state_dir, "delivery": delivery}
    children = [
        bench.start(f"{what}-{i}", kind, {**spec, "instance": f"{what}-{i}"}) for i in range(processes)
    ]
    deadline = time.monotonic() + 180
    while not bench.group_ready(outputs.group, processes):
        if time.monotonic() > deadline or any(c.process.poll() is not None for c in children):
            for child in children:
                child.kill()
            tap.stop()
            raise RuntimeError(f"{what}: the group did not settle:\n{children[0].tail()}")
        time.sleep(0.5)
    sent_file = bench.work_dir / f"{what}-sent.json"
    seconds = args.warmup_seconds + args.latency_seconds
    load = bench.start(
        f"{what}-load",
        "load",
        {"input": topic, "rate": args.rate, "seconds": seconds, "sent_file": str(sent_file)},
    ).result(seconds + 300)
    drain_until = time.monotonic() + args.drain_seconds
    while time.monotonic() < drain_until and bench.committed(outputs.group) != load["events"]:
        time.sleep(0.5)
    time.sleep(1.0)  # the last commit's alerts reach the tap
    stopped = time.time()
    for child in children:
        child.terminate()
    results = [child.result(120) for child in children]
    tap.stop()
    sent: dict[str, float] = orjson.loads(sent_file.read_bytes())
    window_start = load["first"] + args.warmup_seconds
    latencies = []
    for value, arrived in tap.arrivals:
        at = sent.get(orjson.loads(value)["event_id"])
        if at is not None and at >= window_start:
            latencies.append((arrived - at) * 1e3)
    processed = sum(r["events"] for r in results)
    return Latency(
        latencies_ms=np.array(latencies),
        offered=load["events"] / (load["last"] - load["first"]),
        sent=load["events"],
        processed=processed,
        saturated=processed < load["events"],
        first_measured_age_s=stopped - window_start,
        behind_s=load["behind"],
    )


def latency_runs(bench: Bench, args: argparse.Namespace) -> dict[str, Latency]:
    plan = [
        ("naive", "(b) naive", "naive", 1, "exactly-once"),
        ("anomrec", "(c) anomrec, exactly-once", "anomrec", 1, "exactly-once"),
        ("anomrec-alo", "(c) anomrec, at-least-once", "anomrec", 1, "at-least-once"),
        ("anomrec-x2", "(d) anomrec x2, exactly-once", "anomrec", 2, "exactly-once"),
    ]
    runs = {}
    for key, label, kind, processes, delivery in plan:
        say(
            f"latency of {label} at {args.rate:,} events/s: "
            f"{args.warmup_seconds:g} s warm-up + {args.latency_seconds:g} s"
        )
        runs[key] = latency_run(bench, f"lat-{key}", kind, processes=processes, delivery=delivery, args=args)
    return runs


# -- the report ---------------------------------------------------------------------------------------


ROWS = {
    "consume": "(a) consume-only",
    "produce": "(a) produce-only, transactions of 500",
    "produce-alo": "(a) produce-only, at-least-once *",
    "naive": "(b) naive loop",
    "anomrec": "(c) anomrec (defaults, exactly-once)",
    "anomrec-alo": "(c) anomrec, at-least-once *",
    "anomrec-x2": "(d) anomrec x2 (exactly-once)",
}


def verdict(met: bool) -> str:
    return "PASS" if met else "MISS"


def report(args: argparse.Namespace, runs: dict[str, Throughput], lat: dict[str, Latency]) -> None:
    print(
        f"End to end over Kafka: {args.events:,}-event backlog on {args.partitions} partitions "
        f"((b) on its first {args.naive_events:,});"
    )
    if lat:
        print(
            f"latency at {args.rate:,} events/s offered, over the {args.latency_seconds:g} s after a "
            f"{args.warmup_seconds:g} s warm-up"
        )
    width = max(len(label) for label in ROWS.values())
    header = (
        f"{'variant':<{width}} {'events':>8} {'events/s':>9} {'CPU s':>7} {'cores':>5} {'CPU µs/ev':>9} "
        f"{'p50 ms':>9} {'p99 ms':>9} {'alerts':>7}"
    )
    print(header)
    print("-" * len(header))
    for key, label in ROWS.items():
        run = runs[key]
        cells = f"{'-':>9} {'-':>9} {'-':>7}"
        if key in lat:
            m = lat[key]
            cells = f"{m.cell(50):>9} {m.cell(99):>9} {len(m.latencies_ms):>7,}"
        print(
            f"{label:<{width}} {run.events:>8,} {run.rate:>9,.0f} {run.cpu:>7.2f} "
            f"{run.cpu / run.seconds:>5.2f} {run.cpu / run.events * 1e6:>9.1f} {cells}"
        )
    print(
        "* extra rows. events/s and CPU over the measured window (first poll with records to last output "
        "flushed or committed);\n  CPU is the worker processes', all threads; the broker's is not counted; "
        "cores = CPU s / window s.\n  alerts: alerts of the events sent in the latency window."
    )
    for key in ("naive", "anomrec", "anomrec-alo", "anomrec-x2"):
        if runs[key].detail:
            print(f"  {ROWS[key].split(' (')[0].rstrip(' *')}: {runs[key].detail}")
    for key, m in lat.items():
        note = (
            f"  latency {ROWS[key].split(' (')[0].rstrip(' *')}: offered {m.offered:,.0f} events/s "
            f"({m.sent:,} sent, at most {m.behind_s * 1e3:.0f} ms behind schedule), processed {m.processed:,}"
        )
        if m.saturated:
            note += (
                f": SATURATED, the backlog grows; the measured events' latency is a lower bound "
                f"(the first was {m.first_measured_age_s:,.0f} s old at stop)"
            )
        print(note)
    print()

    print("Targets (not asserted)")
    lines = [
        (
            f"(c) events/s >= {NAIVE_SPEEDUP:g}x (b) naive",
            f"{runs['anomrec'].rate / runs['naive'].rate:.1f}x",
            runs["anomrec"].rate >= NAIVE_SPEEDUP * runs["naive"].rate,
        ),
        (
            f"(c) events/s >= {CEILING_SHARE:.0%} of (a) consume-only",
            f"{runs['anomrec'].rate / runs['consume'].rate:.0%}",
            runs["anomrec"].rate >= CEILING_SHARE * runs["consume"].rate,
        ),
        (
            f"(d) events/s >= {SCALE_OUT:g}x (c)",
            f"{runs['anomrec-x2'].rate / runs['anomrec'].rate:.2f}x",
            runs["anomrec-x2"].rate >= SCALE_OUT * runs["anomrec"].rate,
        ),
    ]
    if "anomrec" in lat and len(lat["anomrec"].latencies_ms):
        p99 = float(np.percentile(lat["anomrec"].latencies_ms, 99))
        lines.append(
            (
                f"(c) p99 <= {P99_MS:g} ms at {args.rate:,} events/s",
                f"{p99:,.1f} ms",
                p99 <= P99_MS and not lat["anomrec"].saturated,
            )
        )
    width = max(len(label) for label, _, _ in lines)
    for label, measured, met in lines:
        print(f"{label:<{width}} {measured:>10} {verdict(met)}")
    if "anomrec" not in lat:
        print(f"(c) p99 <= {P99_MS:g} ms: not measured (--skip-latency)")


def machine(servers: str, local: bool) -> str:
    cores = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    try:
        from kafka.record import util  # noqa: PLC0415 - only to see which checksum kafka-python uses

        crc = "crc32c (C) in use" if util.crc32c_c is not None else "no crc32c: pure-Python checksums"
    except (ImportError, AttributeError):
        crc = "crc32c unknown"
    broker = f"local Apache Kafka {KAFKA_VERSION} (KRaft, JVM)" if local else f"broker at {servers}"
    versions = ", ".join(f"{p} {version(p)}" for p in ("kafka-python", "numpy", "scikit-learn", "river"))
    return (
        f"Machine: {platform.machine()}, {cores} cores ({usable} usable by this process), load average "
        f"{load} at start; Python {platform.python_version()}, {versions}; {crc}; {broker} on the same "
        "machine.\nThe box may be shared with other work, and the broker, the load generator and the "
        "workers share its cores: figures are one run each, not best-of-N."
    )


@contextlib.contextmanager
def broker(servers: str | None) -> Iterator[tuple[str, bool]]:
    if servers:
        yield servers, False
        return
    say(f"starting a local Apache Kafka {KAFKA_VERSION} broker")
    # Kafka's default initial rebalance delay (the project's broker sets 0 for its tests): members
    # that start together share the group's first assignment instead of one taking every partition.
    local = LocalKafka(heap="1g", extra_config={"group.initial.rebalance.delay.ms": "3000"})
    local.start()
    try:
        say(f"broker ready at {local.bootstrap_servers} in {local.timings['total']:.1f} s")
        yield local.bootstrap_servers, True
    finally:
        local.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip() or None,
        help="an existing broker (default: $KAFKA_BOOTSTRAP_SERVERS, else a local broker for the run)",
    )
    parser.add_argument("--events", type=int, default=100_000, help="backlog of the throughput runs")
    parser.add_argument("--naive-events", type=int, default=5_000, help="events of the naive loop's run")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--rate", type=int, default=2_000, help="offered load of the latency runs, events/s")
    parser.add_argument("--latency-seconds", type=float, default=60.0, help="measured part of a latency run")
    parser.add_argument(
        "--warmup-seconds", type=float, default=20.0, help="unmeasured start of a latency run"
    )
    parser.add_argument(
        "--drain-seconds", type=float, default=15.0, help="wait after the load for the backlog to clear"
    )
    parser.add_argument("--skip-latency", action="store_true", help="throughput runs only")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(*args.worker)
        return
    if args.quick:
        args.events, args.naive_events = min(args.events, 10_000), min(args.naive_events, 1_500)
        args.latency_seconds, args.warmup_seconds = (
            min(args.latency_seconds, 10.0),
            min(args.warmup_seconds, 15.0),
        )
        args.drain_seconds = min(args.drain_seconds, 8.0)

    started = time.monotonic()
    work_dir = Path(tempfile.mkdtemp(prefix="anomrec-e2e-"))
    try:
        with broker(args.bootstrap_servers) as (servers, local):
            print(machine(servers, local))
            bench = Bench(servers, args.partitions, work_dir)
            bench.connect()
            try:
                runs = throughput_runs(bench, args)
                lat = {} if args.skip_latency else latency_runs(bench, args)
            finally:
                bench.cleanup()
            print()
            report(args, runs, lat)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    print(f"(whole run: {time.monotonic() - started:,.0f} s; load average {load} at the end)")


if __name__ == "__main__":
    main()
