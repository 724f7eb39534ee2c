"""``anomrec run --source`` on a recording, and the record/replay errors that need no broker."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from anomrec.streaming.recording import RecordedRecord, RecordingWriter
from anomrec.streaming.sample import generate_transactions

from anomrec.cli import main

EVENTS = 5000


@pytest.fixture(autouse=True)
def no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANOMREC_BOOTSTRAP_SERVERS", raising=False)


def run(tmp_path: Path, name: str, *args: str) -> tuple[bytes, bytes]:
    alerts, lists = tmp_path / f"{name}.alerts.jsonl", tmp_path / f"{name}.lists.jsonl"
    argv = ["run", *args, "--quiet", "--alerts-out", str(alerts), "--recommendations-out", str(lists)]
    assert main(argv) == 0
    return alerts.read_bytes(), lists.read_bytes()


def test_run_on_a_recording_alerts_as_on_the_same_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The values `anomrec run --events 5000` generates, recorded over three partitions, then a
    # tombstone and a value that is not JSON: both are bad records, counted, not alerts.
    values = [orjson.dumps(e) for e in generate_transactions(EVENTS, seed=7, fraud_rate=0.02, n_users=500)]
    recording = tmp_path / "recording.jsonl.gz"
    with RecordingWriter(recording, topic="events", partitions=3) as writer:
        for i, value in enumerate([*values, None, b"\x80not json"]):
            writer.add(RecordedRecord(i % 3, i // 3, 1767225600000 + i, b"k", value, (("h", b"v"),)))
    direct = run(tmp_path, "direct", "--events", str(EVENTS))
    capsys.readouterr()
    replayed = run(tmp_path, "replayed", "--source", str(recording))
    out = capsys.readouterr()
    assert replayed == direct
    assert direct[0] != b""
    assert re.search(rf"events\s+{EVENTS:,}\n", out.out)
    assert re.search(r"bad records\s+2\s+\(json: 1, null-value: 1\)", out.out)
    assert f"running embedded on the recording {recording} of topic events" in out.err


def test_run_on_a_damaged_recording_processes_what_comes_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recording = tmp_path / "recording.jsonl"
    values = [orjson.dumps(e) for e in generate_transactions(50, seed=3)]
    with RecordingWriter(recording, topic="events", partitions=1) as writer:
        for i, value in enumerate(values):
            writer.add(RecordedRecord(0, i, None, None, value))
    recording.write_bytes(recording.read_bytes()[:-10])
    alerts = tmp_path / "alerts.jsonl"
    assert main(["run", "--source", str(recording), "--quiet", "--alerts-out", str(alerts)]) == 2
    out = capsys.readouterr()
    assert f"anomrec: error: {str(recording)!r} line 51 (the last line, cut short" in out.err
    assert "the records before it were processed" in out.err
    assert re.search(r"events\s+49\n", out.out), out.out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["record", "--topic", "t", "--out", "x.jsonl"], "record needs a broker: pass --bootstrap-servers"),
        (["replay", "x.jsonl", "--topic", "t"], "replay needs a broker"),
        (
            ["replay", "does-not-exist.jsonl", "--topic", "t", "--bootstrap-servers", "127.0.0.1:1"],
            "cannot read the recording 'does-not-exist.jsonl'",
        ),
        (["run", "--source", "does-not-exist.jsonl"], "cannot read the recording"),
    ],
)
def test_errors_name_what_to_do(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_file_that_is_no_recording_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = tmp_path / "events.jsonl"
    assert main(["generate", "--events", "10", "--out", str(events), "--quiet"]) == 0
    argv = ["replay", str(events), "--topic", "t", "--bootstrap-servers", "127.0.0.1:1"]
    assert main(argv) == 2
    assert "is not an anomrec recording" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["record", "--topic", "t", "--out", "x", "--from", "yesterday"],
            "expected earliest, latest or an ISO",
        ),
        (["replay", "x", "--topic", "t", "--rate-factor", "-1"], "expected 0 (as fast as possible)"),
    ],
)
def test_bad_flags_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
