"""The fault-injection suite's parts: the input, a supervised processor process, and the verifier.

The input is a keyed stream of card transactions on a multi-partition topic, with the bad-input
catalogue mixed in at known offsets. Every scenario runs ``anomrec run`` as a child process (so a
``kill -9`` is a real one) under a small supervisor that restarts it whenever it exits non-zero,
as systemd or Kubernetes would, until it exits 0 after ``--idle-timeout`` seconds with no input.

:func:`verify` then reads every output topic with ``read_committed`` and compares it with the
outputs of an uninterrupted reference run on the same input.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from anomrec.streaming.deadletter import parse_headers
from anomrec.streaming.sample import generate_transactions
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

# Small models, so that fits, swaps and checkpoints all happen within a short stream.
SETTINGS: dict[str, str] = {
    "window_size": "100",
    "n_trees": "10",
    "height": "8",
    "first_fit_after": "200",
    "refit_every": "400",
    "refit_window": "400",
    "lof_window": "300",
    "swap_delay": "50",
    "iforest_trees": "30",
    "calibration_window": "1000",
    "refresh_every": "100",
    "warmup_events": "150",
    "checkpoint_every_events": "250",
    "checkpoint_every_seconds": "0",
    "max_poll_records": "100",
    "debounce_seconds": "600",
    "similar_every": "300",
    "max_record_bytes": "4096",
    "require_key": "true",
    "session_timeout_ms": "6000",
    "commit_timeout_seconds": "15",
}

IDLE_TIMEOUT_S = 6.0


def bad_catalogue() -> list[tuple[str, bytes | None, bytes | None, int | None]]:
    """``(reason, key, value, record timestamp)`` for each kind of bad input the issue lists."""
    good = generate_transactions(1, seed=99)[0]
    ts_ms = 1_767_225_600_000  # 2026-01-01

    def doc(**changes: Any) -> bytes:
        d = {**good, "event_id": f"bad-{uuid.uuid4().hex[:6]}", **changes}
        return orjson.dumps({k: v for k, v in d.items() if v is not ...})

    big = {**good, "event_id": "bad-big", "note": "x" * 5000}
    return [
        ("json", b"card-bad", b'{"amount": 12.5, "card_id": ', ts_ms),
        ("json", b"card-bad", b"\xff\xfe not utf-8 \xc3\x28", ts_ms),
        ("not-numeric", b"card-bad", doc(amount="twelve"), ts_ms),
        ("missing-field", b"card-bad", doc(card_id=...), ts_ms),
        ("not-finite", b"card-bad", doc(amount=...)[:-1] + b',"amount":1e999}', ts_ms),
        ("null-value", b"card-bad", None, ts_ms),
        ("null-key", None, doc(), ts_ms),
        ("oversized", b"card-bad", orjson.dumps(big), ts_ms),
        ("unknown-schema-version", b"card-bad", doc(schema_version="99"), ts_ms),
        ("future-time", b"card-bad", doc(ts="2027-06-01T00:00:00Z"), ts_ms),
    ]


@dataclass
class Input:
    """The input topic and where its bad records went."""

    topic: str
    partitions: int
    valid: int
    bad: dict[tuple[int, int], str]  # (partition, offset) -> expected reason
    partition_of: dict[str, int]  # event id -> partition


def produce_input(bootstrap: str, *, partitions: int = 6, events: int = 4800, seed: int = 5) -> Input:
    """Create a topic and fill it: keyed transactions, the bad catalogue spread through them."""
    topic = f"faults-in-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="anomrec-faults")
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()
    docs = generate_transactions(events, n_users=120, fraud_rate=0.02, seed=seed)
    bad = bad_catalogue()
    every = max(1, len(docs) // (len(bad) + 1))
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    sent: list[tuple[Any, str | None]] = []
    ids: list[str] = []
    for i, d in enumerate(docs):
        # The event time as the record timestamp: the same on every broker and every run.
        stamp = int(datetime.fromisoformat(d["ts"].replace("Z", "+00:00")).timestamp() * 1000)
        future = producer.send(topic, key=d["card_id"].encode(), value=orjson.dumps(d), timestamp_ms=stamp)
        sent.append((future, None))
        ids.append(d["event_id"])
        if i % every == every - 1 and i // every < len(bad):
            reason, key, value, _ = bad[i // every]
            # Bad records spread over the partitions: a key-less one goes round-robin.
            part = (i // every) % partitions
            sent.append(
                (producer.send(topic, key=key, value=value, partition=part, timestamp_ms=stamp), reason)
            )
    producer.flush()
    producer.close()
    where: dict[tuple[int, int], str] = {}
    partition_of: dict[str, int] = {}
    good = iter(ids)
    for future, reason in sent:
        meta = future.get(timeout=30)
        if reason is not None:
            where[(meta.partition, meta.offset)] = reason
        else:
            partition_of[next(good)] = meta.partition
    return Input(topic, partitions, len(docs), where, partition_of)


@dataclass
class Outputs:
    """One run's topics and what they held when read with read_committed."""

    alerts: str
    recommendations: str
    similar: str
    dead_letters: str
    group: str
    records: dict[str, list[tuple[int, bytes | None, bytes | None, dict[str, bytes]]]] = field(
        default_factory=dict
    )

    @classmethod
    def fresh(cls, name: str) -> Outputs:
        tag = f"{name}-{uuid.uuid4().hex[:6]}"
        return cls(f"al-{tag}", f"rec-{tag}", f"sim-{tag}", f"dlq-{tag}", f"grp-{tag}")

    def env(self) -> dict[str, str]:
        return {
            "ANOMREC_ALERTS_TOPIC": self.alerts,
            "ANOMREC_RECOMMENDATIONS_TOPIC": self.recommendations,
            "ANOMREC_SIMILAR_ITEMS_TOPIC": self.similar,
            "ANOMREC_DEAD_LETTER_TOPIC": self.dead_letters,
            "ANOMREC_GROUP_ID": self.group,
        }

    @property
    def topics(self) -> tuple[str, str, str, str]:
        return (self.alerts, self.recommendations, self.similar, self.dead_letters)


class ProcessorProcess:
    """``anomrec run`` as a child process with its own state folder and instance id."""

    def __init__(
        self,
        command: Sequence[str],
        bootstrap: str,
        source: Input,
        outputs: Outputs,
        *,
        state_dir: Path,
        log_dir: Path,
        instance: str = "p0",
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.command = list(command)
        self.bootstrap = bootstrap
        self.source = source
        self.outputs = outputs
        self.state_dir = state_dir
        self.log_dir = log_dir
        self.instance = instance
        self.extra_env = dict(extra_env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exits: list[int] = []

    def start(self, **env: str) -> None:
        assert self.process is None or self.process.poll() is not None
        environ = {k: v for k, v in os.environ.items() if not k.startswith("ANOMREC_")}
        environ.update({f"ANOMREC_{k.upper()}": v for k, v in SETTINGS.items()})
        environ.update(self.outputs.env())
        environ.update(
            {
                "ANOMREC_BOOTSTRAP_SERVERS": self.bootstrap,
                "ANOMREC_INPUT_TOPIC": self.source.topic,
                "ANOMREC_STATE_DIR": str(self.state_dir),
                "ANOMREC_INSTANCE_ID": self.instance,
                **self.extra_env,
                **env,
            }
        )
        self.starts += 1
        log = (self.log_dir / f"{self.instance}-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [*self.command, "--log-level", "info", "run", "--idle-timeout", str(IDLE_TIMEOUT_S)],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        code = self.process.wait(timeout)
        self.exits.append(code)
        return code

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def is_stopped(self) -> bool:
        """Whether the child is stopped by a signal (state ``T`` in ``/proc/PID/stat``)."""
        if self.process is None or self.process.poll() is not None:
            return False
        stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] in "Tt"

    def kill9(self) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.kill()
        self.wait(30)

    def stop(self) -> None:
        """Make sure the child is gone (the test's own cleanup)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(30)

    def supervise(
        self, *, deadline_s: float = 240.0, first_env: Mapping[str, str] | None = None, max_starts: int = 12
    ) -> int:
        """Run until an exit 0, restarting after every non-zero exit; returns the number of starts."""
        deadline = time.monotonic() + deadline_s
        env = dict(first_env or {})
        while True:
            if self.process is None or self.process.poll() is not None:
                if self.starts >= max_starts:
                    raise AssertionError(
                        f"processor {self.instance} crash-loops: exits {self.exits}\n{self.tail()}"
                    )
                self.start(**env)
                env = {}
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise AssertionError(
                    f"processor {self.instance} did not finish in {deadline_s} s:\n{self.tail()}"
                )
            try:
                code = self.wait(left)
            except subprocess.TimeoutExpired:
                continue
            if code == 0:
                return self.starts

    def tail(self, lines: int = 30) -> str:
        texts = []
        for path in sorted(self.log_dir.glob(f"{self.instance}-*.log")):
            body = path.read_text(errors="replace").splitlines()[-lines:]
            texts.append(f"--- {path.name} ---\n" + "\n".join(body))
        return "\n".join(texts[-3:])


def supervise_all(
    procs: Sequence[ProcessorProcess], *, deadline_s: float = 240.0, max_starts: int = 12
) -> None:
    """Supervise several processors at once until each has exited 0 (restarting crashed ones)."""
    deadline = time.monotonic() + deadline_s
    done: set[str] = set()
    while len(done) < len(procs):
        for p in procs:
            if p.instance in done:
                continue
            code = p.process.poll() if p.process is not None else 1
            if code is None:
                continue
            if p.process is not None:
                p.exits.append(code)
            if code == 0:
                done.add(p.instance)
                continue
            if p.starts >= max_starts:
                raise AssertionError(f"processor {p.instance} crash-loops: exits {p.exits}\n{p.tail()}")
            p.start()
        if time.monotonic() > deadline:
            raise AssertionError(
                f"processors did not finish in {deadline_s} s: "
                + "\n".join(f"{p.instance}: exits {p.exits}\n{p.tail()}" for p in procs)
            )
        time.sleep(0.2)


@contextmanager
def processes(*procs: ProcessorProcess) -> Iterator[tuple[ProcessorProcess, ...]]:
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


def read_committed(bootstrap: str, topics: Sequence[str], *, timeout_s: float = 60.0) -> dict[str, list[Any]]:
    """Every committed record of ``topics``, per topic in partition-then-offset order."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=1000,
    )
    try:
        existing = consumer.topics()
        parts = [
            TopicPartition(t, p)
            for t in topics
            if t in existing
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        out: dict[str, list[Any]] = {t: [] for t in topics}
        if not parts:
            return out
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        deadline = time.monotonic() + timeout_s
        got: dict[TopicPartition, list[Any]] = defaultdict(list)
        while any(consumer.position(tp) < end[tp] for tp in parts):
            assert time.monotonic() < deadline, "the outputs could not be read to their end"
            for tp, records in consumer.poll(timeout_ms=500).items():
                got[tp].extend(records)
        for tp in parts:
            out[tp.topic].extend(
                (tp.partition, r.key, r.value, {k: bytes(v) for k, v in (r.headers or [])}) for r in got[tp]
            )
        return out
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, source: Input) -> dict[int, int | None]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="anomrec-faults")
    try:
        offsets = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    return {
        p: (offsets[tp].offset if (tp := TopicPartition(source.topic, p)) in offsets else None)
        for p in range(source.partitions)
    }


def end_offsets(bootstrap: str, source: Input) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(source.topic, p) for p in range(source.partitions)]
        return {tp.partition: o for tp, o in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()


def _by_key(records: list[Any]) -> dict[bytes | None, list[bytes | None]]:
    keyed: dict[bytes | None, list[bytes | None]] = defaultdict(list)
    for _, key, value, _ in records:
        keyed[key].append(value)
    return keyed


def verify(bootstrap: str, source: Input, run: Outputs, reference: Outputs) -> dict[str, int]:
    """Kafka's verifier, for our outputs; raises AssertionError naming the first violation.

    Checks: no duplicates; the input is consumed and committed to its end; the dead-letter topic
    holds exactly the bad inputs, once each, with their headers; per key (each key's records come
    from one input partition, in order) the sequence of every output equals the reference's.
    """
    got = read_committed(bootstrap, run.topics)
    want = reference.records or read_committed(bootstrap, reference.topics)
    reference.records = want
    # The input is consumed to its end and the offsets committed.
    committed, end = committed_offsets(bootstrap, run.group, source), end_offsets(bootstrap, source)
    assert committed == end, f"the group's committed offsets {committed} are not the input's ends {end}"
    # No duplicates: an event alerts at most once; an update is unique by (user, trigger event).
    alert_ids = Counter(orjson.loads(v)["event_id"] for _, _, v, _ in got[run.alerts])
    dupes = [k for k, n in alert_ids.items() if n > 1]
    assert not dupes, "duplicate alerts for events (event, input partition): " + str(
        [(k, source.partition_of.get(k)) for k in dupes[:5]]
    )
    updates = Counter(
        (orjson.loads(v)["user"], orjson.loads(v)["trigger_event_id"])
        for _, _, v, _ in got[run.recommendations]
    )
    assert not [k for k, n in updates.items() if n > 1], "duplicate recommendation updates"
    # The dead-letter topic holds exactly the bad inputs, once each, raw bytes and headers intact.
    letters = Counter()
    for _, _, _, headers in got[run.dead_letters]:
        h = parse_headers(list(headers.items()))
        assert h["source_topic"] == source.topic
        letters[(h["source_partition"], h["source_offset"])] += 1
        assert h["reason"] == source.bad[(h["source_partition"], h["source_offset"])], h
    assert set(letters) == set(source.bad), (
        f"dead letters {sorted(letters)} are not the bad inputs {sorted(source.bad)}"
    )
    assert max(letters.values()) == 1, f"dead-lettered twice: {[k for k, n in letters.items() if n > 1]}"

    # Equal to the uninterrupted run, record for record. Order is compared where it is defined:
    # an alert's key (the card) lives in one input partition; a user's updates are ordered within
    # each input partition their events come from; neighbour lists only as a whole.
    def alerts_by_key(records: list[Any]) -> dict[Any, list[Any]]:
        return _by_key(records)

    def updates_by_source(records: list[Any]) -> dict[Any, list[Any]]:
        keyed: dict[Any, list[Any]] = defaultdict(list)
        for _, key, value, _ in records:
            keyed[(key, source.partition_of[orjson.loads(value)["trigger_event_id"]])].append(value)
        return keyed

    def neighbours_as_bag(records: list[Any]) -> dict[Any, list[Any]]:
        return {k: sorted(v) for k, v in _by_key(records).items()}

    for mine, theirs, group in (
        (run.alerts, reference.alerts, alerts_by_key),
        (run.recommendations, reference.recommendations, updates_by_source),
        (run.similar, reference.similar, neighbours_as_bag),
    ):
        a, b = group(got[mine]), group(want[theirs])
        assert a.keys() == b.keys(), (
            f"{mine}: keys differ from the reference run's: {sorted(set(a) ^ set(b))[:5]}"
        )
        for key in b:
            assert a[key] == b[key], (
                f"{mine}: the outputs for {key!r} differ from the reference run's: "
                + _first_difference(a[key], b[key])
            )
    assert len(got[run.alerts]) > 0 and len(got[run.recommendations]) > 0
    return {
        "alerts": len(got[run.alerts]),
        "recommendations": len(got[run.recommendations]),
        "similar": len(got[run.similar]),
        "dead_letters": len(got[run.dead_letters]),
    }


def _first_difference(got: list[Any], want: list[Any]) -> str:
    """Where two output sequences part, for the failure message: counts, then the first two records."""
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        if g != w:
            return f"{len(got)} records against {len(want)}; #{i} is\n  {g!r}\nnot\n  {w!r}"
    return f"{len(got)} records against {len(want)}; the shorter is a prefix of the longer"


def python_command() -> list[str]:
    script = Path(sys.executable).with_name("anomrec")
    return [str(script)] if script.exists() else [sys.executable, "-m", "anomrec"]
