"""``anomrec generate`` as a user runs it: files, stdout and a real broker's topic."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from anomrec.streaming.sample import (
    FRAUD_TYPES,
    generate_interactions,
    generate_transactions,
    inject_bot_burst,
)

from anomrec.cli import main

OPTIONS = ["--events", "3000", "--seed", "5", "--users", "80", "--items", "700", "--fraud-rate", "0.02"]
EXPECTED_KW: dict[str, Any] = {"seed": 5, "n_users": 80, "n_items": 700, "fraud_rate": 0.02}


def generate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "anomrec", "generate", *args],
        capture_output=True,
        timeout=300,
        check=False,
        env=env,
    )


def summary_line(expected: list[dict[str, Any]]) -> str:
    kinds = Counter(e["fraud_type"] for e in expected if e["label"])
    return f"{sum(kinds.values()):,} fraud: " + ", ".join(f"{k} {kinds[k]:,}" for k in FRAUD_TYPES)


@pytest.fixture(scope="module")
def expected() -> list[dict[str, Any]]:
    return generate_transactions(3000, **EXPECTED_KW)


@pytest.mark.parametrize("name", ["events.jsonl", "events.jsonl.gz"])
def test_writes_the_stream_as_json_lines(tmp_path: Path, name: str, expected: list[dict[str, Any]]) -> None:
    out = tmp_path / name
    result = generate(*OPTIONS, "--out", str(out))
    assert result.returncode == 0, result.stderr.decode()
    raw = out.read_bytes()
    data = gzip.decompress(raw) if name.endswith(".gz") else raw
    assert raw[:2] == b"\x1f\x8b" if name.endswith(".gz") else raw[:1] == b"{"
    assert [orjson.loads(line) for line in data.splitlines()] == expected
    stderr = result.stderr.decode()
    assert stderr.count("\n") == 1, stderr
    assert "generated 3,000 events (seed 5)" in stderr and summary_line(expected) in stderr


def test_the_same_options_write_the_same_bytes_even_gzipped(tmp_path: Path) -> None:
    first, second = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz"
    for path in (first, second):
        assert main(["generate", *OPTIONS, "--quiet", "--out", str(path)]) == 0
    assert first.read_bytes() == second.read_bytes()


def test_dash_writes_to_stdout_and_quiet_says_nothing(expected: list[dict[str, Any]]) -> None:
    result = generate(*OPTIONS, "--out", "-", "--quiet")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    assert [orjson.loads(line) for line in result.stdout.splitlines()] == expected


def exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse rejects a value with exit 2 and its usage
        return int(exc.code or 0)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--events", "-5", "--out", "x"], "argument --events: '-5': expected a whole number >= 0"),
        (["--events", "lots", "--out", "x"], "argument --events: 'lots' is not a whole number"),
        (["--fraud-rate", "1.5", "--out", "x"], "argument --fraud-rate: '1.5': expected a share in [0, 1)"),
        (["--fraud-rate", "1", "--out", "x"], "argument --fraud-rate: '1': expected a share in [0, 1)"),
        (["--fraud-rate", "-0.1", "--out", "x"], "argument --fraud-rate: '-0.1': expected a share in [0, 1)"),
        (["--users", "0", "--out", "x"], "argument --users: '0': expected a number >= 1"),
        (["--items", "-2", "--out", "x"], "argument --items: '-2': expected a number >= 1"),
        ([], "one of the arguments --out --topic is required"),
        (["--out", "x", "--topic", "t"], "argument --topic: not allowed with argument --out"),
        (["--topic", "events"], "--topic needs a broker: pass --bootstrap-servers HOST:PORT or set KAFKA_"),
        (["--out", "x", "--bootstrap-servers", "h:9"], "--bootstrap-servers='h:9' only applies with --topic"),
        (["--out", "/proc/nope/events.jsonl"], "cannot write events to '/proc/nope/events.jsonl'"),
    ],
)
def test_bad_options_exit_2_saying_what_was_wrong(
    argv: list[str],
    says: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.chdir(tmp_path)  # "x" is never written: every case fails before any output
    assert exit_code(["generate", "--events", "10", *argv]) == 2
    assert says in capsys.readouterr().err
    assert not Path("x").exists()


def test_bad_option_exits_2_from_the_command_line_too() -> None:
    result = generate("--fraud-rate", "2", "--out", "-")
    assert result.returncode == 2 and result.stdout == b""
    assert b"argument --fraud-rate: '2': expected a share in [0, 1)" in result.stderr


def test_transactions_is_the_default_stream(tmp_path: Path) -> None:
    named, default = tmp_path / "named.jsonl", tmp_path / "default.jsonl"
    assert main(["generate", "transactions", *OPTIONS, "--quiet", "--out", str(named)]) == 0
    assert main(["generate", *OPTIONS, "--quiet", "--out", str(default)]) == 0
    assert named.read_bytes() == default.read_bytes()


# -- interactions ----------------------------------------------------------------------------------

INTERACTION_OPTIONS = ["--events", "3000", "--seed", "5", "--users", "80", "--items", "400"]
INTERACTION_KW: dict[str, Any] = {"seed": 5, "n_users": 80, "n_items": 400}


def test_writes_interactions_with_a_bot_burst(tmp_path: Path) -> None:
    out = tmp_path / "interactions.jsonl.gz"
    argv = ["interactions", *INTERACTION_OPTIONS, "--bot-burst", "item-00042", "--bots", "25"]
    result = generate(*argv, "--out", str(out))
    assert result.returncode == 0, result.stderr.decode()
    expected = inject_bot_burst(
        generate_interactions(3000, **INTERACTION_KW), target_item="item-00042", n_bots=25
    )
    assert [orjson.loads(line) for line in gzip.decompress(out.read_bytes()).splitlines()] == expected
    stderr = result.stderr.decode()
    assert "generated 3,075 interactions (seed 5), 75 by 25 bots on item-00042; to " in stderr, stderr


def test_writes_interactions_with_their_own_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "interactions", "--events", "2000", "--out", "-"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [orjson.loads(line) for line in lines] == generate_interactions(2000)
    assert "generated 2,000 interactions (seed 7), no bot burst; to stdout" in captured.err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--bot-burst", "item-00042"], "--bot-burst applies to interactions, not to transactions"),
        (["--bots", "5"], "--bots applies to interactions, not to transactions"),
        (["interactions", "--fraud-rate", "0.1"], "--fraud-rate=0.1 applies to transactions"),
        (["interactions", "--bots", "5"], "--bots=5 needs --bot-burst ITEM"),
        (
            ["interactions", "--items", "300", "--bot-burst", "item-00300"],
            "--bot-burst='item-00300' is not an item of the 300-item catalogue: "
            "give one of item-00000 to item-00299",
        ),
        (["interactions", "--bot-burst", "42"], "--bot-burst='42' is not an item"),
        (["interactions", "--bot-burst", "item-0042"], "--bot-burst='item-0042' is not an item"),
        (["interactions", "--bot-burst", "item-00001", "--bots", "0"], "argument --bots: '0'"),
        (["purchases"], "argument stream: invalid choice: 'purchases'"),
    ],
)
def test_bad_interaction_options_exit_2_saying_what_was_wrong(
    argv: list[str],
    says: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert exit_code(["generate", "--events", "10", *argv, "--out", "x"]) == 2
    assert says in capsys.readouterr().err
    assert not Path("x").exists()


@pytest.mark.kafka
def test_produces_to_a_topic_keyed_by_card_at_event_time(
    kafka_bootstrap: str, fresh_topic: Callable[..., str], expected: list[dict[str, Any]]
) -> None:
    from kafka import KafkaConsumer
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    topic = fresh_topic("generated")
    # The events are months old by the broker's clock: keep them past any retention check.
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "-1"})])
    finally:
        admin.close()
    # The broker comes from KAFKA_BOOTSTRAP_SERVERS here: the flag's default.
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    result = generate(*OPTIONS, "--topic", topic, env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert f"to topic {topic} at {kafka_bootstrap}" in result.stderr.decode()
    assert summary_line(expected) in result.stderr.decode()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    try:
        records = []
        for record in consumer:
            records.append(record)
            if len(records) == len(expected):
                break
    finally:
        consumer.close()
    assert len(records) == len(expected)
    assert [orjson.loads(r.value) for r in records] == expected
    assert [r.key.decode() for r in records] == [e["card_id"] for e in expected]
    assert [r.timestamp for r in records] == [
        round(datetime.fromisoformat(e["ts"]).timestamp() * 1000) for e in expected
    ]
    assert all(r.timestamp_type == 0 for r in records), "CreateTime: the producer's event time"


def test_an_unreachable_broker_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: nothing answers there
        argv = ["generate", "--events", "10", "--topic", "t", "--bootstrap-servers", f"127.0.0.1:{port}"]
        assert exit_code(argv) == 2
    assert f"no Kafka broker answered at bootstrap servers '127.0.0.1:{port}'" in capsys.readouterr().err


@pytest.mark.kafka
def test_produces_interactions_keyed_by_user(kafka_bootstrap: str, fresh_topic: Callable[..., str]) -> None:
    from kafka import KafkaConsumer
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

    topic = fresh_topic("interactions")
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.ms": "-1"})])
    finally:
        admin.close()
    argv = ["generate", "interactions", *INTERACTION_OPTIONS, "--bot-burst", "item-00007", "--bots", "10"]
    assert main([*argv, "--quiet", "--topic", topic, "--bootstrap-servers", kafka_bootstrap]) == 0
    expected = inject_bot_burst(
        generate_interactions(3000, **INTERACTION_KW), target_item="item-00007", n_bots=10
    )
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=10_000,
    )
    try:
        records = []
        for record in consumer:
            records.append(record)
            if len(records) == len(expected):
                break
    finally:
        consumer.close()
    assert [orjson.loads(r.value) for r in records] == expected
    assert [r.key.decode() for r in records] == [e["user_id"] for e in expected]
