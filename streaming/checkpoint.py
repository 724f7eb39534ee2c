"""Checkpoint files: a processor's state at an input offset, written atomically, read back safely.

A checkpoint holds the state of one :class:`~anomrec.streaming.core.Processor` (see
:meth:`~anomrec.streaming.core.Processor.state`) after it processed every record of one input
partition before ``offset``. A restarted processor restores the newest good one and goes on from
its offset.

Layout
------
``<directory>/<key>/<offset, 20 digits>.ckpt``, where the key names the partition, e.g.
``events-3`` for partition 3 of topic ``events``. Each key keeps its newest few checkpoints.

File format
-----------
Three parts, one after the other:

1. the magic line ``ANOMREC-CHECKPOINT\\n``;
2. a header: one line of JSON, ending in ``\\n``, with ``schema_version`` (:data:`SCHEMA_VERSION`),
   ``key``, ``offset``, ``model_versions`` (detector and recommender model versions), ``created``
   (ISO 8601 UTC; for people, never used), ``app_version`` (of anomrec), ``payload_bytes`` and
   ``payload_sha256`` (of the payload);
3. the payload: an ``.npz`` archive (:func:`numpy.savez`; deflated on request) of the state's
   arrays, plus its JSON part as UTF-8 bytes in a ``uint8`` array named ``__meta__`` (written by
   Python's :mod:`json`, which spells non-finite floats ``NaN``, ``Infinity``).

A reader checks the magic, the header, the schema version, the payload's length and its SHA-256
before it hands the payload to :func:`numpy.load`, and then loads it with ``allow_pickle=False``:
nothing in a checkpoint is ever unpickled or executed, and arrays of Python objects are refused.

Writing is atomic: the file is written under a temporary name (``.<offset>.<random>.tmp``) in the
same folder, flushed and synced to disk, renamed into place with :func:`os.replace`, and the
folder is synced. A crash at any point leaves either the complete new checkpoint or none (only a
temporary file, which readers ignore and readers and writers delete). One writer per key at a time.

Resetting
---------
Deleting the folder (:func:`reset_state`) makes processors rebuild their state from the input. It
is the way out when the settings changed: state taken under other model settings is refused (see
:class:`~anomrec.streaming.exceptions.CheckpointError`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from .exceptions import CheckpointError
from .faults import crash_point

log = logging.getLogger(__name__)

MAGIC = b"ANOMREC-CHECKPOINT\n"
#: Version of the file format; readers skip files of any other.
SCHEMA_VERSION = 1
#: The name of the payload's array that holds the state's JSON part.
META_ARRAY = "__meta__"
SUFFIX = ".ckpt"
TEMP_SUFFIX = ".tmp"

_KEY = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
_NAME = re.compile(r"^(\d{20})\.ckpt$")
_ARRAY_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_MAX_HEADER = 1 << 20
_HEADER_FIELDS: dict[str, type] = {
    "schema_version": int,
    "key": str,
    "offset": int,
    "model_versions": dict,
    "created": str,
    "app_version": str,
    "payload_bytes": int,
    "payload_sha256": str,
}

State = tuple[Mapping[str, Any], Mapping[str, np.ndarray]]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint read back and verified.

    Attributes
    ----------
    key
        The partition it belongs to, e.g. ``"events-3"``.
    offset
        The next input offset: the state reflects every record before it, and none from it on.
    model_versions
        The model versions at the time, from the header.
    meta, arrays
        The state, as :meth:`~anomrec.streaming.core.Processor.state` gave it.
    path
        The file.
    header
        The whole header.
    """

    key: str
    offset: int
    model_versions: dict[str, str]
    meta: dict[str, Any]
    arrays: dict[str, np.ndarray]
    path: Path
    header: dict[str, Any]


def app_version() -> str:
    """anomrec's installed version, or ``"unknown"``."""
    try:
        return importlib.metadata.version("anomrec")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def write_checkpoint(
    directory: str | os.PathLike[str],
    key: str,
    offset: int,
    state: State,
    model_versions: Mapping[str, str],
    *,
    keep: int = 3,
    compress: bool = False,
) -> Path:
    """Write ``state`` as the checkpoint of ``key`` at ``offset``, atomically; prune older ones.

    Parameters
    ----------
    directory
        The state folder; created if need be.
    key
        Names the partition: letters, digits, ``.``, ``_`` and ``-`` (e.g. ``"events-3"``).
    offset
        The next input offset: ``state`` reflects every record before it.
    state
        ``(meta, arrays)``: a JSON-able dict and named numpy arrays with no Python objects in them,
        as :meth:`~anomrec.streaming.core.Processor.state` returns.
    model_versions
        Recorded in the header, for people and tools.
    keep
        Checkpoints of ``key`` kept: the newest ``keep`` by offset, and always the one just
        written.
    compress
        Deflate the arrays (:func:`numpy.savez_compressed`). HalfSpaceTrees' node masses are
        mostly zeros, so the default processor's state shrinks about five times, but it takes
        about five times as long to write. Readers take either.

    Returns
    -------
    Path
        The checkpoint file, ``<directory>/<key>/<offset:020d>.ckpt``.

    Raises
    ------
    ValueError
        A bad key, offset, ``keep`` or array name, or an array of Python objects.
    OSError
        The file could not be written; an earlier checkpoint is then still the newest.

    Examples
    --------
    >>> import tempfile
    >>> state = ({"n_seen": 3}, {"x": np.arange(3.0)})
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     for offset in (100, 200, 300):
    ...         path = write_checkpoint(folder, "events-3", offset, state, {"hst": "hst-1"}, keep=2)
    ...     kept = sorted(p.name for p in path.parent.iterdir())
    >>> path.name, kept
    ('00000000000000000300.ckpt', ['00000000000000000200.ckpt', '00000000000000000300.ckpt'])
    """
    folder = _key_folder(directory, key)
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"offset={offset!r}: expected a whole number >= 0")
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep={keep!r}: expected a whole number >= 1")
    payload = encode_state(state, compress=compress)
    header = {
        "schema_version": SCHEMA_VERSION,
        "key": key,
        "offset": offset,
        "model_versions": {str(k): str(v) for k, v in model_versions.items()},
        "created": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "app_version": app_version(),
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    header_line = json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n"

    _make_folder(folder)
    _remove_temp_files(folder)
    final = folder / f"{offset:020d}{SUFFIX}"
    fd, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{offset:020d}.", suffix=TEMP_SUFFIX)
    temp = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC)
            f.write(header_line)
            f.flush()
            crash_point("in-checkpoint-write")  # a kill here leaves only the temporary file
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, final)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _sync_folder(folder)
    for old in _checkpoint_files(folder)[keep:]:
        if old[1] != final:
            old[1].unlink(missing_ok=True)
    return final


def read_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and verify one checkpoint file.

    Raises
    ------
    CheckpointError
        The file cannot be read, or fails a check (magic, header, schema version, length, SHA-256,
        payload); the message says which.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_checkpoint(folder, "events-0", 42, ({"a": [1, 2]}, {}), {})
    ...     _ = path.write_bytes(path.read_bytes()[:-1] + b"?")   # damage the last byte
    ...     read_checkpoint(path)
    Traceback (most recent call last):
    ...
    anomrec.streaming.exceptions.CheckpointError: payload SHA-256 is ... expected ...
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read it: {exc}") from exc
    if not data.startswith(MAGIC):
        raise CheckpointError(f"it does not start with {MAGIC!r}: not an anomrec checkpoint")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER)
    if end < 0:
        raise CheckpointError("no complete header line after the magic (a truncated file?)")
    try:
        header = json.loads(data[len(MAGIC) : end])
    except ValueError as exc:
        raise CheckpointError(f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"header is a JSON {type(header).__name__}, expected an object")
    version = header.get("schema_version")
    if version != SCHEMA_VERSION:
        raise CheckpointError(
            f"unknown schema version {version!r}: this anomrec ({app_version()}) reads version "
            f"{SCHEMA_VERSION}; it was written by anomrec {header.get('app_version', 'unknown')}"
        )
    for name, kind in _HEADER_FIELDS.items():
        value = header.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(f"header field {name!r} is {value!r}: expected a {_type_name(kind)}")
    payload = memoryview(data)[end + 1 :]
    if len(payload) != header["payload_bytes"]:
        raise CheckpointError(
            f"payload is {len(payload)} bytes, the header says {header['payload_bytes']} "
            "(a truncated or appended file?)"
        )
    digest = hashlib.sha256(payload).hexdigest()
    if digest != header["payload_sha256"]:
        raise CheckpointError(f"payload SHA-256 is {digest}, expected {header['payload_sha256']}")
    meta, arrays = decode_state(payload)
    return Checkpoint(
        key=header["key"],
        offset=header["offset"],
        model_versions={str(k): str(v) for k, v in header["model_versions"].items()},
        meta=meta,
        arrays=arrays,
        path=path,
        header=header,
    )


def load_checkpoint(
    directory: str | os.PathLike[str],
    key: str,
    *,
    max_offset: int | None = None,
    validate: Callable[[Checkpoint], None] | None = None,
) -> Checkpoint | None:
    """The newest good checkpoint of ``key``, or None; bad ones are logged and skipped, never raised.

    Checkpoints are tried newest (highest offset) first. One is skipped, with an error in the log
    naming the file and the reason, when its offset is above ``max_offset``, when it fails any
    check of :func:`read_checkpoint`, when it belongs to another key or offset than its name
    says, or when ``validate`` raises :class:`~anomrec.streaming.exceptions.CheckpointError` for
    it. Leftover temporary files of interrupted writes are deleted.

    Parameters
    ----------
    directory
        The state folder (it need not exist).
    key
        The partition's key, as given to :func:`write_checkpoint`.
    max_offset
        Skip checkpoints beyond this offset (e.g. beyond the committed input offset).
    validate
        Called with each candidate that passed the checks; raising ``CheckpointError`` rejects it
        (e.g. a restore that finds other settings).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     for offset in (100, 200):
    ...         _ = write_checkpoint(folder, "events-3", offset, ({"at": offset}, {}), {})
    ...     newest = load_checkpoint(folder, "events-3")
    ...     older = load_checkpoint(folder, "events-3", max_offset=150)
    ...     none = load_checkpoint(folder, "events-4")
    >>> newest.offset, newest.meta, older.offset, none
    (200, {'at': 200}, 100, None)
    """
    try:
        folder = _key_folder(directory, key)
    except ValueError as exc:
        log.error("no checkpoint for key %r: %s", key, exc)
        return None
    if not folder.is_dir():
        return None
    _remove_temp_files(folder)
    for offset, path in _checkpoint_files(folder):
        if max_offset is not None and offset > max_offset:
            log.error(
                "skipping checkpoint %s: its offset %d is beyond %d, the latest the state may reflect",
                path,
                offset,
                max_offset,
            )
            continue
        try:
            checkpoint = read_checkpoint(path)
            if checkpoint.key != key or checkpoint.offset != offset:
                raise CheckpointError(
                    f"its header says key {checkpoint.key!r} at offset {checkpoint.offset}, but it is "
                    f"filed as key {key!r} at offset {offset}"
                )
            if validate is not None:
                validate(checkpoint)
        except CheckpointError as exc:
            log.error("skipping checkpoint %s: %s", path, exc)
            continue
        return checkpoint
    return None


def list_checkpoints(directory: str | os.PathLike[str], key: str) -> list[Path]:
    """The checkpoint files of ``key``, newest (highest offset) first; none are read.

    Examples
    --------
    >>> list_checkpoints("no-such-folder", "events-0")
    []
    """
    folder = _key_folder(directory, key)
    return [path for _, path in _checkpoint_files(folder)] if folder.is_dir() else []


def reset_state(directory: str | os.PathLike[str], key: str | None = None) -> None:
    """Delete the checkpoints of ``key``, or the whole state folder: processors then start afresh.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     _ = write_checkpoint(folder, "events-0", 7, ({}, {}), {})
    ...     reset_state(folder, "events-0")
    ...     load_checkpoint(folder, "events-0") is None
    True
    """
    target = Path(directory) if key is None else _key_folder(directory, key)
    shutil.rmtree(target, ignore_errors=True)


# -- internals ------------------------------------------------------------------------------------


def _key_folder(directory: str | os.PathLike[str], key: str) -> Path:
    if not isinstance(key, str) or not _KEY.match(key) or key in (".", ".."):
        raise ValueError(f"key={key!r}: expected 1-255 letters, digits, '.', '_' or '-', e.g. 'events-3'")
    return Path(directory) / key


def _checkpoint_files(folder: Path) -> list[tuple[int, Path]]:
    """``(offset, path)`` of each checkpoint file in ``folder``, newest first."""
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path))
    return sorted(found, reverse=True)


def _remove_temp_files(folder: Path) -> None:
    """Delete what interrupted writes left behind."""
    for path in folder.glob(f".*{TEMP_SUFFIX}"):
        log.info("deleting %s, left by an interrupted checkpoint write", path)
        path.unlink(missing_ok=True)


def _make_folder(folder: Path) -> None:
    """Create ``folder`` and any missing parents, durably (each new entry synced in its parent)."""
    missing = [f for f in (folder, *folder.parents) if not f.is_dir()]
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        _sync_folder(new.parent)


def _sync_folder(folder: Path) -> None:
    """Make a rename or a new entry in ``folder`` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_state(state: State, *, compress: bool = False) -> bytes:
    """``(meta, arrays)`` as one ``.npz`` archive: the arrays packed losslessly, the JSON in ``__meta__``.

    :func:`decode_state` undoes it. Checkpoint payloads and model artifacts are such archives.

    >>> meta, arrays = decode_state(encode_state(({"n": 1}, {"x": np.zeros(5000)})))
    >>> meta, arrays["x"].shape
    ({'n': 1}, (5000,))
    """
    meta, arrays = state
    if not isinstance(meta, Mapping):
        raise ValueError(f"state meta is a {type(meta).__name__}, expected a dict")
    named: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not _ARRAY_NAME.match(name) or name == META_ARRAY:
            raise ValueError(f"array name {name!r}: expected 1-200 letters, digits, '.', '_' or '-'")
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise ValueError(
                f"array {name!r} holds Python objects ({array.dtype}): only plain arrays can be saved"
            )
        named.update(_pack(name, array))
    try:
        meta_json = json.dumps(meta, separators=(",", ":"))
    except TypeError as exc:
        raise ValueError(f"state meta is not JSON-able: {exc}") from exc
    named[META_ARRAY] = np.frombuffer(meta_json.encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    save = np.savez_compressed if compress else np.savez
    save(buffer, allow_pickle=False, **named)
    return buffer.getvalue()


def decode_state(payload: bytes | memoryview) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The ``(meta, arrays)`` of an :func:`encode_state` archive, with pickles refused.

    Check the bytes' SHA-256 first if they come from a file: this only refuses what numpy refuses.

    Raises
    ------
    CheckpointError
        Not a plain ``.npz`` archive, no ``__meta__`` array, or JSON that is not an object.
    """
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            arrays = _unpack({name: archive[name] for name in archive.files})
    except Exception as exc:  # whatever numpy or zipfile make of a bad archive: all mean "bad file"
        raise CheckpointError(f"payload is not a plain .npz archive: {type(exc).__name__}: {exc}") from exc
    meta_bytes = arrays.pop(META_ARRAY, None)
    if meta_bytes is None or meta_bytes.dtype != np.uint8 or meta_bytes.ndim != 1:
        raise CheckpointError(f"payload has no {META_ARRAY!r} array of bytes")
    try:
        meta = json.loads(meta_bytes.tobytes())
    except ValueError as exc:
        raise CheckpointError(f"state JSON does not parse: {exc}") from exc
    if not isinstance(meta, dict):
        raise CheckpointError(f"state JSON is a {type(meta).__name__}, expected an object")
    return meta, arrays


def _type_name(kind: type) -> str:
    return {int: "whole number", str: "string", dict: "JSON object"}.get(kind, kind.__name__)


# -- lossless packing ------------------------------------------------------------------------------
# HalfSpaceTrees' node masses are int64 and mostly zero, its split features small integers: kept
# as they are they make a default processor's checkpoint ~47 MB. Mostly-zero arrays are stored as
# their non-zero entries, integer arrays in the narrowest integer type that holds them. Stored
# names carry a "~" (which state names cannot) saying how to undo it.

_PACK_MIN_SIZE = 4096
_SPARSE_MAX_SHARE = 0.25


def _narrowest(array: np.ndarray) -> np.ndarray:
    """``array`` in the smallest signed integer type that holds its values exactly."""
    if array.size == 0 or array.dtype.kind not in "iu":
        return array
    low, high = int(array.min()), int(array.max())
    for dtype in (np.int8, np.int16, np.int32, np.int64):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return array.astype(dtype) if np.dtype(dtype).itemsize < array.dtype.itemsize else array
    return array


def _pack(name: str, array: np.ndarray) -> dict[str, np.ndarray]:
    """How ``array`` is stored: as it is, sparse, or narrowed (see the comment above).

    >>> masses = np.zeros((4, 2048), dtype=np.int64)
    >>> masses[1, 7] = 300
    >>> sorted(_pack("m", masses))
    ['m~sparse~idx', 'm~sparse~shape', 'm~sparse~val']
    >>> restored = _unpack(_pack("m", masses))["m"]
    >>> restored.dtype, bool(np.array_equal(restored, masses))
    (dtype('int64'), True)
    """
    if array.size < _PACK_MIN_SIZE or array.dtype.kind not in "iuf" or array.dtype.byteorder == ">":
        return {name: array}
    flat = array.reshape(-1)
    nonzero = np.flatnonzero(flat)
    if len(nonzero) <= _SPARSE_MAX_SHARE * flat.size and not (
        array.dtype.kind == "f" and np.signbit(flat[flat == 0]).any()  # -0.0 must stay -0.0
    ):
        return {
            f"{name}~sparse~idx": _narrowest(nonzero),
            f"{name}~sparse~val": flat[nonzero],
            f"{name}~sparse~shape": np.asarray(array.shape, dtype=np.int64),
        }
    narrow = _narrowest(array)
    if narrow.dtype != array.dtype:
        return {f"{name}~as~{array.dtype.name}": narrow}
    return {name: array}


def _unpack(stored: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The arrays :func:`_pack` stored, as they were."""
    arrays: dict[str, np.ndarray] = {}
    for key, value in stored.items():
        if "~" not in key:
            arrays[key] = value
            continue
        name, how, what = key.split("~", 2)
        if how == "as":
            arrays[name] = value.astype(np.dtype(what))
        elif how == "sparse" and what == "idx":
            values = stored[f"{name}~sparse~val"]
            shape = tuple(int(n) for n in stored[f"{name}~sparse~shape"])
            full = np.zeros(int(np.prod(shape)), dtype=values.dtype)
            full[value] = values
            arrays[name] = full.reshape(shape)
        elif how != "sparse" or what not in ("val", "shape"):
            raise ValueError(f"unknown packed array {key!r}")
    return arrays
