"""``anomrec record`` and ``anomrec replay`` against a real broker: a topic survives the round trip."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from anomrec.streaming.recording import RecordedRecord, RecordingWriter, read_header, read_recording
from kafka import KafkaProducer

from anomrec.cli import main

pytestmark = pytest.mark.kafka

N_RECORDS = 500


def source_records(now_ms: int) -> list[RecordedRecord]:
    """Keys, headers, timestamps, binary and UTF-8 values and tombstones, spread over 3 partitions."""
    records = []
    for i in range(N_RECORDS):
        key = None if i % 11 == 0 else f"card-{i % 37}".encode()
        if i % 50 == 7:
            key, value = f"gone-{i}".encode(), None  # a tombstone
        elif i % 5 == 0:
            value = bytes([0x80, i % 256, 0xFF]) + b"\x00binary"
        else:
            value = orjson.dumps({"event_id": f"e{i}", "amount": i / 10, "note": "café ✓"})
        headers = (("source", b"pos"), ("seq", str(i).encode()))
        if i % 3 == 0:
            headers += (("trace", b"\xde\xad\xbe\xef"), ("seq", b""))
        records.append(RecordedRecord(i % 3, 0, now_ms - 60_000 + i * 37, key, value, headers))
    return records


def produce(bootstrap: str, topic: str, records: list[RecordedRecord]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        futures = [
            producer.send(
                topic,
                key=r.key,
                value=r.value,
                headers=list(r.headers),
                partition=r.partition,
                timestamp_ms=r.timestamp,
            )
            for r in records
        ]
        producer.flush()
        for future in futures:
            future.get(timeout=10)
    finally:
        producer.close()


def by_partition(records: list[RecordedRecord]) -> dict[int, list[tuple[object, ...]]]:
    """Each partition's records in order, without their offsets."""
    out: dict[int, list[tuple[object, ...]]] = defaultdict(list)
    for r in records:
        out[r.partition].append((r.timestamp, r.key, r.value, r.headers))
    return dict(out)


def test_record_replay_record_gives_the_same_records(
    kafka_bootstrap: str, fresh_topic: Callable[..., str], tmp_path: Path
) -> None:
    source, target = fresh_topic("record-src", 3), fresh_topic("record-dst", 3)
    produced = source_records(int(time.time() * 1000))
    produce(kafka_bootstrap, source, produced)
    servers = ["--bootstrap-servers", kafka_bootstrap, "--quiet"]
    first, second = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl"

    assert main(["record", "--topic", source, "--out", str(first), *servers]) == 0
    assert main(["replay", str(first), "--topic", target, *servers]) == 0
    assert main(["record", "--topic", target, "--out", str(second), *servers]) == 0

    a, b = list(read_recording(first)), list(read_recording(second))
    assert len(a) == N_RECORDS
    assert by_partition(a) == by_partition(produced)
    assert by_partition(b) == by_partition(a)
    assert all(
        sorted(r.offset for r in a if r.partition == p) == list(range(len(by_partition(a)[p])))
        for p in range(3)
    )
    header_a, header_b = read_header(first), read_header(second)
    assert (header_a.topic, header_a.partitions) == (source, 3)
    assert (header_b.topic, header_b.partitions) == (target, 3)


def test_record_limits_and_start_time(
    kafka_bootstrap: str, fresh_topic: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = fresh_topic("record-limits", 3)
    produced = source_records(int(time.time() * 1000))
    produce(kafka_bootstrap, topic, produced)
    servers = ["--bootstrap-servers", kafka_bootstrap]

    capped = tmp_path / "capped.jsonl"
    assert main(["record", "--topic", topic, "--out", str(capped), "--max-records", "120", *servers]) == 0
    assert len(list(read_recording(capped))) == 120
    assert "recorded 120 records" in capsys.readouterr().err

    # From a time: each partition from its first record at or after it.
    cut = produced[300].timestamp
    assert cut is not None
    since = tmp_path / "since.jsonl"
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut / 1000)) + f".{cut % 1000:03d}Z"
    assert main(["record", "--topic", topic, "--out", str(since), "--from", when, *servers, "--quiet"]) == 0
    assert by_partition(list(read_recording(since))) == by_partition(produced[300:])

    # From the end, until the end: nothing, at once.
    empty = tmp_path / "empty.jsonl"
    assert (
        main(["record", "--topic", topic, "--out", str(empty), "--from", "latest", *servers, "--quiet"]) == 0
    )
    assert list(read_recording(empty)) == []

    # Following new records stops after --max-seconds.
    follow = tmp_path / "follow.jsonl"
    args = ["--from", "latest", "--no-until-end", "--max-seconds", "1.5", *servers]
    assert main(["record", "--topic", topic, "--out", str(follow), *args]) == 0
    assert "--max-seconds 1.5 passed" in capsys.readouterr().err


def test_replay_repartition_and_missing_topic(
    kafka_bootstrap: str, fresh_topic: Callable[..., str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = fresh_topic("replay-src", 3), fresh_topic("replay-one", 1)
    produced = source_records(int(time.time() * 1000))[:60]
    produce(kafka_bootstrap, source, produced)
    servers = ["--bootstrap-servers", kafka_bootstrap, "--quiet"]
    recording, again = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["record", "--topic", source, "--out", str(recording), *servers]) == 0

    # Into one partition (3 % 1), paced at 100x the recorded 37 ms spacing.
    assert main(["replay", str(recording), "--topic", target, "--rate-factor", "100", *servers]) == 0
    assert main(["record", "--topic", target, "--out", str(again), *servers]) == 0
    replayed = list(read_recording(again))
    assert {r.partition for r in replayed} == {0}
    assert sorted((r.timestamp, r.key, r.value) for r in replayed) == sorted(
        (r.timestamp, r.key, r.value) for r in produced
    )

    # --repartition: the key decides, so each key's records share a partition.
    spread, third = fresh_topic("replay-keyed", 2), tmp_path / "c.jsonl"
    assert main(["replay", str(recording), "--topic", spread, "--repartition", *servers]) == 0
    assert main(["record", "--topic", spread, "--out", str(third), *servers]) == 0
    keyed: dict[bytes, set[int]] = defaultdict(set)
    for r in read_recording(third):
        if r.key is not None:
            keyed[r.key].add(r.partition)
    assert keyed and all(len(parts) == 1 for parts in keyed.values())

    missing = f"no-such-topic-{time.time_ns()}"
    assert main(["replay", str(recording), "--topic", missing, *servers]) == 2
    assert f"topic '{missing}' does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_recording_and_keeps_what_was_recorded(
    kafka_bootstrap: str, fresh_topic: Callable[..., str], tmp_path: Path, signum: int
) -> None:
    topic = fresh_topic("record-signal", 3)
    produced = source_records(int(time.time() * 1000))[:60]
    produce(kafka_bootstrap, topic, produced)
    out = tmp_path / "followed.jsonl.gz"
    env = {**os.environ, "ANOMREC_BOOTSTRAP_SERVERS": kafka_bootstrap}
    argv = [sys.executable, "-m", "anomrec", "record", "--topic", topic, "--out", str(out), "--no-until-end"]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not out.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        time.sleep(3)  # the 60 records are read within a few polls of 200 ms
        process.send_signal(signum)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err.decode()
    assert "interrupted" in err.decode()
    assert by_partition(list(read_recording(out))) == by_partition(produced)


def test_replay_sends_null_header_values_empty(
    kafka_bootstrap: str, fresh_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = fresh_topic("replay-null-header", 1)
    recording, again = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    now = int(time.time() * 1000)
    with RecordingWriter(recording, topic="elsewhere", partitions=4) as writer:
        writer.add(RecordedRecord(3, 0, now, b"k", b"v", (("null", None), ("set", b"\x01"))))
    servers = ["--bootstrap-servers", kafka_bootstrap, "--quiet"]
    assert main(["replay", str(recording), "--topic", topic, *servers]) == 0
    assert main(["record", "--topic", topic, "--out", str(again), *servers]) == 0
    assert list(read_recording(again)) == [
        RecordedRecord(0, 0, now, b"k", b"v", (("null", b""), ("set", b"\x01")))
    ]
