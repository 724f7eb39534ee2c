"""The recording format: lossless bytes, gzip, header checks, and damaged files read up to the damage."""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import pytest
from anomrec.streaming.exceptions import ConfigError
from anomrec.streaming.recording import (
    RecordedRecord,
    RecordingWriter,
    decode_bytes,
    encode_bytes,
    read_header,
    read_recording,
)
from hypothesis import given
from hypothesis import strategies as st

RECORDS = [
    RecordedRecord(0, 0, 1767225600000, b"card-1", b'{"amount": 12.5}', (("source", b"pos"),)),
    RecordedRecord(1, 7, 1767225600001, b"\x00\xff\xfe", b"\x80\x81 not utf-8", (("bin", b"\xc3\x28"),)),
    RecordedRecord(2, 3, None, None, None, ()),  # a tombstone without key or timestamp
    RecordedRecord(0, 1, 1767225600002, b"", b"", (("dup", b"1"), ("dup", None), ("empty", b""))),
    RecordedRecord(1, 8, 0, "kéy ✓".encode(), "välue ✓".encode(), (("ünï", "✓".encode()),)),
]


def write(path: Path, records: list[RecordedRecord], **kw: object) -> None:
    with RecordingWriter(path, topic="events", partitions=3, **kw) as writer:  # type: ignore[arg-type]
        for record in records:
            writer.add(record)


@pytest.mark.parametrize("name", ["rec.jsonl", "rec.jsonl.gz"])
def test_round_trip_of_binary_utf8_and_null_keys_values_and_headers(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write(path, RECORDS)
    assert list(read_recording(path)) == RECORDS
    header = read_header(path)
    assert (header.topic, header.partitions) == ("events", 3)
    assert header.recorded_at.endswith("+00:00")
    raw = path.read_bytes()
    assert (raw[:2] == b"\x1f\x8b") == name.endswith(".gz")


def test_lines_are_readable_json(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    write(path, RECORDS[:3], recorded_at="2026-12-04T00:00:00+00:00")
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert lines[0] == {
        "format": "anomrec-recording",
        "version": 1,
        "topic": "events",
        "partitions": 3,
        "recorded_at": "2026-12-04T00:00:00+00:00",
    }
    assert lines[1] == {
        "partition": 0,
        "offset": 0,
        "timestamp": 1767225600000,
        "key": {"utf8": "card-1"},
        "headers": [["source", {"utf8": "pos"}]],
        "value": {"utf8": '{"amount": 12.5}'},
    }
    assert lines[2]["key"] == {"base64": "AP/+"}
    assert lines[3]["key"] is None and lines[3]["value"] is None


@given(st.one_of(st.none(), st.binary(max_size=64), st.text(max_size=32).map(str.encode)))
def test_any_bytes_survive(data: bytes | None) -> None:
    assert decode_bytes(orjson.loads(orjson.dumps(encode_bytes(data))), "value") == data


@pytest.mark.parametrize(
    ("first_line", "message"),
    [
        (b'{"format": "something-else", "version": 1}', "expected 'anomrec-recording'"),
        (b'{"event_id": "e1", "amount": 3}', "is not an anomrec recording"),
        (b"not json at all", "first line is not a JSON header"),
        (b"", "first line is not a JSON header"),
        (
            b'{"format": "anomrec-recording", "version": 2, "topic": "t", "partitions": 1, '
            b'"recorded_at": "x"}',
            "version 2 recording; this anomrec reads version 1",
        ),
        (b'{"format": "anomrec-recording", "version": 1, "topic": "t", "partitions": 0}', "partitions"),
    ],
)
def test_header_is_checked(tmp_path: Path, first_line: bytes, message: str) -> None:
    path = tmp_path / "rec.jsonl"
    path.write_bytes(first_line + b"\n")
    with pytest.raises(ConfigError, match=message):
        read_header(path)
    with pytest.raises(ConfigError, match=message):
        list(read_recording(path))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the recording"):
        list(read_recording(tmp_path / "nope.jsonl"))


def read_until_error(path: Path) -> tuple[list[RecordedRecord], ConfigError]:
    good = []
    with pytest.raises(ConfigError) as caught:
        for record in read_recording(path):
            good.append(record)
    return good, caught.value


def test_truncated_last_line_yields_every_record_before_it(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    write(path, RECORDS)
    path.write_bytes(path.read_bytes()[:-25])  # cut in the middle of the last record
    good, error = read_until_error(path)
    assert good == RECORDS[:-1]
    assert f"{str(path)!r} line {len(RECORDS) + 1}" in str(error)
    assert "cut short" in str(error)


def test_corrupt_middle_line_yields_every_record_before_it(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    write(path, RECORDS)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[3] = b'{"partition": 0, "offset": "x"}\n'  # the third record
    path.write_bytes(b"".join(lines))
    good, error = read_until_error(path)
    assert good == RECORDS[:2]
    assert "line 4" in str(error) and "missing timestamp" in str(error)


GOOD_LINE = {"partition": 0, "offset": 0, "timestamp": 0, "key": None, "headers": [], "value": None}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"[1, 2]", "expected a JSON object"),
        (orjson.dumps({**GOOD_LINE, "partition": -1}), "partition"),
        (orjson.dumps({**GOOD_LINE, "timestamp": 1.5}), "timestamp"),
        (orjson.dumps({**GOOD_LINE, "key": "raw"}), "key must"),
        (orjson.dumps({**GOOD_LINE, "value": {"base64": "*"}}), "base64"),
        (orjson.dumps({**GOOD_LINE, "headers": [["h"]]}), "header 0"),
    ],
)
def test_bad_record_lines_are_named(tmp_path: Path, line: bytes, message: str) -> None:
    path = tmp_path / "rec.jsonl"
    write(path, RECORDS[:1])
    path.write_bytes(path.read_bytes() + line + b"\n")
    good, error = read_until_error(path)
    assert good == RECORDS[:1]
    assert "line 3" in str(error) and message in str(error)


def test_truncated_gzip_yields_the_records_before_the_cut(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl.gz"
    many = [RecordedRecord(0, i, i, str(i).encode(), b"x" * 50, ()) for i in range(2000)]
    write(path, many)
    path.write_bytes(path.read_bytes()[:-200])
    good, error = read_until_error(path)
    assert 0 < len(good) < len(many)
    assert good == many[: len(good)]
    assert str(path) in str(error) and "line" in str(error)


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    write(path, RECORDS[:2])
    path.write_bytes(path.read_bytes() + b"\n\n")
    assert list(read_recording(path)) == RECORDS[:2]


def test_writer_keeps_what_was_added_when_the_block_fails(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl.gz"
    with pytest.raises(RuntimeError), RecordingWriter(path, topic="t", partitions=1) as writer:
        writer.add(RECORDS[0])
        raise RuntimeError("stopped")
    assert list(read_recording(path)) == RECORDS[:1]
    assert gzip.decompress(path.read_bytes()).count(b"\n") == 2
