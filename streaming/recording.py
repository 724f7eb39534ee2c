"""Recordings of Kafka topics: a file that ``anomrec record`` writes and ``anomrec replay`` reads.

A recording is JSON Lines, gzip-compressed when its name ends in ``.gz``. The first line is a
header::

    {"format": "anomrec-recording", "version": 1, "topic": "events", "partitions": 3,
     "recorded_at": "2026-12-04T20:40:00.123456+00:00"}

``partitions`` is the topic's partition count and ``recorded_at`` when the recording started
(ISO 8601, UTC). Every further line is one record, in the order it was consumed (each partition's
records in offset order)::

    {"partition": 0, "offset": 17, "timestamp": 1767225600000,
     "key": {"utf8": "card-0042"}, "headers": [["source", {"utf8": "pos"}]],
     "value": {"base64": "gAN9cQAu"}}

``timestamp`` is the record's timestamp in epoch milliseconds (null if it has none). Keys, values
and header values are bytes, stored losslessly: ``{"utf8": "..."}`` when the bytes are valid UTF-8,
``{"base64": "..."}`` otherwise, and ``null`` for no bytes at all (a tombstone's value). Headers
are a list of ``[name, bytes]`` pairs, in order, names repeated as often as the record has them.

:class:`RecordingWriter` writes a recording (a sink: ``add`` then ``flush``/``close``);
:func:`read_recording` yields its records and :func:`read_header` its header. The reader checks
the header and every line: a line that is not a record (a file cut short, a corrupt line) raises
:class:`~anomrec.streaming.exceptions.ConfigError` naming the file and the line, after every good
record before it has been yielded.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeGuard

import orjson

from .exceptions import ConfigError, DeliveryError

FORMAT = "anomrec-recording"
VERSION = 1

Headers = tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True, slots=True)
class RecordingHeader:
    """The first line of a recording: which topic, how many partitions, when."""

    topic: str
    partitions: int
    recorded_at: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "topic": self.topic,
            "partitions": self.partitions,
            "recorded_at": self.recorded_at,
        }


@dataclass(frozen=True, slots=True)
class RecordedRecord:
    """One Kafka record as recorded: where it was, when, and its bytes.

    Examples
    --------
    >>> r = RecordedRecord(0, 5, 1767225600000, b"card-1", b"\\x80\\x00", (("h", b"v"),))
    >>> encode_record(r)
    b'{"partition":0,"offset":5,"timestamp":1767225600000,"key":{"utf8":"card-1"},"headers":[["h",{"utf8":"v"}]],"value":{"base64":"gAA="}}'
    >>> decode_record(encode_record(r)) == r
    True
    """

    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default=())


def encode_bytes(data: bytes | None) -> dict[str, str] | None:
    """``{"utf8": ...}`` for valid UTF-8, ``{"base64": ...}`` for other bytes, None for None.

    Examples
    --------
    >>> encode_bytes(b"abc"), encode_bytes(b"\\xff"), encode_bytes(None)
    ({'utf8': 'abc'}, {'base64': '/w=='}, None)
    """
    if data is None:
        return None
    try:
        return {"utf8": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def decode_bytes(doc: Any, what: str) -> bytes | None:
    """The bytes :func:`encode_bytes` stored; ``ValueError`` naming ``what`` if ``doc`` is not that."""
    if doc is None:
        return None
    if isinstance(doc, dict) and len(doc) == 1:
        ((kind, text),) = doc.items()
        if kind == "utf8" and isinstance(text, str):
            return text.encode("utf-8")
        if kind == "base64" and isinstance(text, str):
            try:
                return base64.b64decode(text, validate=True)
            except binascii.Error:
                raise ValueError(f"{what} is not valid base64: {text[:40]!r}") from None
    raise ValueError(f'{what} must be null, {{"utf8": "..."}} or {{"base64": "..."}}, got {_preview(doc)}')


def encode_record(record: RecordedRecord) -> bytes:
    """One record as its line of JSON (no newline)."""
    return orjson.dumps(
        {
            "partition": record.partition,
            "offset": record.offset,
            "timestamp": record.timestamp,
            "key": encode_bytes(record.key),
            "headers": [[name, encode_bytes(value)] for name, value in record.headers],
            "value": encode_bytes(record.value),
        }
    )


def decode_record(line: bytes) -> RecordedRecord:
    """The record on one line; ``ValueError`` saying what is wrong with it."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc}): {_preview(line)}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"expected a JSON object, got {_preview(doc)}")
    missing = [k for k in ("partition", "offset", "timestamp", "key", "headers", "value") if k not in doc]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}: {_preview(line)}")
    partition, offset, timestamp = doc["partition"], doc["offset"], doc["timestamp"]
    if not _is_int(partition) or partition < 0:
        raise ValueError(f"partition must be a whole number >= 0, got {partition!r}")
    if not _is_int(offset) or offset < 0:
        raise ValueError(f"offset must be a whole number >= 0, got {offset!r}")
    if timestamp is not None and not _is_int(timestamp):
        raise ValueError(f"timestamp must be epoch milliseconds or null, got {timestamp!r}")
    headers = doc["headers"]
    if not isinstance(headers, list):
        raise ValueError(f"headers must be a list of [name, bytes] pairs, got {_preview(headers)}")
    pairs = []
    for i, pair in enumerate(headers):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise ValueError(f"header {i} must be a [name, bytes] pair, got {_preview(pair)}")
        pairs.append((pair[0], decode_bytes(pair[1], f"header {pair[0]!r}")))
    return RecordedRecord(
        partition=partition,
        offset=offset,
        timestamp=timestamp,
        key=decode_bytes(doc["key"], "key"),
        value=decode_bytes(doc["value"], "value"),
        headers=tuple(pairs),
    )


class RecordingWriter:
    """Write a recording of ``topic`` to ``path`` (gzip when it ends in ``.gz``).

    Use it as a context manager: entering opens the file and writes the header, :meth:`add`
    writes one record, leaving flushes and closes the file, also after an error, so that a
    recording stopped part-way keeps every record added before.

    Parameters
    ----------
    path
        Where the recording goes; its folder is created.
    topic
        The recorded topic.
    partitions
        The topic's partition count.
    recorded_at
        ISO 8601 time of the recording; by default, now (UTC) when the file is opened.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "events.jsonl.gz"
    >>> with RecordingWriter(path, topic="events", partitions=1) as writer:
    ...     writer.add(RecordedRecord(0, 0, 1767225600000, b"k", None))
    >>> read_header(path).topic
    'events'
    >>> list(read_recording(path))
    [RecordedRecord(partition=0, offset=0, timestamp=1767225600000, key=b'k', value=None,
                    headers=())]
    """

    def __init__(
        self, path: Path | str, *, topic: str, partitions: int, recorded_at: str | None = None
    ) -> None:
        self.path = Path(path)
        self.topic = topic
        self.partitions = partitions
        self.recorded_at = recorded_at
        self.records_ = 0
        self._raw: IO[bytes] | None = None
        self._sink: IO[bytes] | gzip.GzipFile | None = None

    def __enter__(self) -> RecordingWriter:
        header = RecordingHeader(
            self.topic, self.partitions, self.recorded_at or datetime.now(UTC).isoformat()
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._raw = self.path.open("wb")
            # No name or mtime in the gzip header: the same records give the same bytes.
            sink: IO[bytes] | gzip.GzipFile = (
                gzip.GzipFile(filename="", fileobj=self._raw, mode="wb", compresslevel=6, mtime=0)
                if self.path.name.endswith(".gz")
                else self._raw
            )
            self._sink = sink
            sink.write(orjson.dumps(header.to_dict()) + b"\n")
        except OSError as exc:
            self.close()
            raise self._error(exc) from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add(self, record: RecordedRecord) -> None:
        """Append one record."""
        if self._sink is None:
            raise RuntimeError("RecordingWriter.add outside its with block")
        try:
            self._sink.write(encode_record(record) + b"\n")
        except OSError as exc:
            raise self._error(exc) from None
        self.records_ += 1

    def flush(self) -> None:
        """Push what was added to the file."""
        if self._sink is not None:
            try:
                self._sink.flush()
            except OSError as exc:
                raise self._error(exc) from None

    def close(self) -> None:
        """Flush and close the file (the gzip trailer included); safe to call twice."""
        sink, raw, self._sink, self._raw = self._sink, self._raw, None, None
        try:
            if sink is not None and sink is not raw:
                sink.close()
            if raw is not None:
                raw.close()
        except OSError as exc:
            raise self._error(exc) from None

    def _error(self, exc: OSError) -> DeliveryError:
        return DeliveryError(
            f"cannot write the recording to {str(self.path)!r}: {exc.strerror or exc}; pass another --out"
        )


def read_header(path: Path | str) -> RecordingHeader:
    """The header of the recording at ``path``; :class:`ConfigError` if it is not one we can read."""
    path = Path(path)
    with _open(path) as lines:
        return _parse_header(path, next(lines, b""))


def read_recording(path: Path | str) -> Iterator[RecordedRecord]:
    """Yield the records of the recording at ``path``, in file order.

    The header is checked first. A line that is not a record raises :class:`ConfigError` naming
    the file and line number, after every record before it has been yielded.
    """
    path = Path(path)
    with _open(path) as lines:
        _parse_header(path, next(lines, b""))
        number = 1
        for number, line in enumerate(lines, start=2):
            if not line.strip():
                continue
            try:
                record = decode_record(line)
            except ValueError as exc:
                cut = (
                    "" if line.endswith(b"\n") else " (the last line, cut short: was the recording stopped?)"
                )
                raise ConfigError(f"{str(path)!r} line {number}{cut}: {exc}") from None
            yield record


def _open(path: Path) -> _Lines:
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"cannot read the recording {str(path)!r}: {exc.strerror or exc}") from None
    return _Lines(path, raw)


class _Lines:
    """The lines of a (maybe gzipped) file; a damaged gzip stream becomes a ConfigError with the line."""

    def __init__(self, path: Path, raw: IO[bytes]) -> None:
        self.path = path
        self.raw = raw
        self.stream: IO[bytes] | gzip.GzipFile = raw
        if path.name.endswith(".gz"):
            self.stream = gzip.GzipFile(fileobj=raw, mode="rb")
        self.number = 0

    def __enter__(self) -> Iterator[bytes]:
        return self._lines()

    def __exit__(self, *exc_info: object) -> None:
        if self.stream is not self.raw:
            self.stream.close()
        self.raw.close()

    def _lines(self) -> Iterator[bytes]:
        while True:
            try:
                line = self.stream.readline()
            except (EOFError, OSError, zlib.error) as exc:
                raise ConfigError(
                    f"{str(self.path)!r} line {self.number + 1}: the compressed data end early or are "
                    f"damaged ({exc}); every record before this line was read"
                ) from None
            if not line:
                return
            self.number += 1
            yield line


def _parse_header(path: Path, line: bytes) -> RecordingHeader:
    what = f"{str(path)!r} is not an anomrec recording"
    hint = "record one with: anomrec record --topic T --out FILE"
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise ConfigError(f"{what}: its first line is not a JSON header ({_preview(line)}); {hint}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else doc
        raise ConfigError(f"{what}: its header has format {_preview(got)}, expected {FORMAT!r}; {hint}")
    if doc.get("version") != VERSION:
        raise ConfigError(
            f"{str(path)!r} is a version {doc.get('version')!r} recording; this anomrec reads version "
            f"{VERSION}: read it with the anomrec that wrote it, or record the topic again"
        )
    topic, partitions, recorded_at = doc.get("topic"), doc.get("partitions"), doc.get("recorded_at")
    if (
        not isinstance(topic, str)
        or not _is_int(partitions)
        or partitions < 1
        or not isinstance(recorded_at, str)
    ):
        raise ConfigError(
            f"{str(path)!r} line 1: the header needs topic (text), partitions (a count >= 1) and "
            f"recorded_at (ISO 8601), got {_preview(doc)}"
        )
    return RecordingHeader(topic, partitions, recorded_at)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _preview(value: object, limit: int = 80) -> str:
    text = repr(value) if not isinstance(value, bytes) else repr(value.rstrip(b"\n"))
    return text if len(text) <= limit else text[: limit - 3] + "..."
