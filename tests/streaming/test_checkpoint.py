"""Checkpoint files: round trip, pruning, and every way a file can be bad, including a kill -9."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from anomrec.streaming.checkpoint import (
    MAGIC,
    SCHEMA_VERSION,
    Checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_checkpoint,
    reset_state,
    write_checkpoint,
)
from anomrec.streaming.exceptions import CheckpointError

KEY = "events-3"
VERSIONS = {"hst": "hst-25x15-w1000-s42", "iforest": "iforest-2"}


def state(tag: int = 0) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A small state with every kind of array a processor's state holds."""
    meta = {"tag": tag, "nested": {"list": [1, 2.5, None, "x"], "nan": float("nan")}, "empty": {}}
    arrays = {
        "floats": np.linspace(0.0, 1.0, 7).reshape(7, 1) + tag,
        "ints": np.arange(5, dtype=np.int64),
        "seed": np.array([2**63 + 5], dtype=np.uint64),
        "names": np.array(["u1", "user-ü", ""], dtype=np.str_),
        "scalar": np.array(3.5),
        "empty": np.empty((0, 13)),
        "detectors.lof.train": np.random.default_rng(tag).normal(size=(50, 13)),
    }
    return meta, arrays


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def picked(folder: Path, max_offset: int | None = None) -> int | None:
    """The offset of the checkpoint :func:`load_checkpoint` picks, or None."""
    found = load_checkpoint(folder, KEY, max_offset=max_offset)
    return None if found is None else found.offset


def rewrite(path: Path, header: dict[str, Any] | None = None, payload: bytes | None = None) -> None:
    """Rewrite a checkpoint with another header and/or payload (the header kept consistent)."""
    data = path.read_bytes()
    end = data.index(b"\n", len(MAGIC))
    old_header = json.loads(data[len(MAGIC) : end])
    if payload is None:
        payload = data[end + 1 :]
    else:
        old_header |= {"payload_bytes": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest()}
    new_header = old_header | (header or {})
    path.write_bytes(MAGIC + json.dumps(new_header).encode() + b"\n" + payload)


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip_keeps_every_array_bit_for_bit_and_the_header_says_what_it_holds(
    tmp_path: Path, compress: bool
) -> None:
    meta, arrays = state(7)
    path = write_checkpoint(
        tmp_path / "new" / "state", KEY, 1234, (meta, arrays), VERSIONS, compress=compress
    )
    tmp_path = tmp_path / "new" / "state"
    assert path == tmp_path / KEY / "00000000000000001234.ckpt"
    lines = path.read_bytes().split(b"\n", 2)
    assert lines[0] + b"\n" == MAGIC
    header = json.loads(lines[1])
    assert header["schema_version"] == SCHEMA_VERSION
    assert (header["key"], header["offset"], header["model_versions"]) == (KEY, 1234, VERSIONS)
    assert header["app_version"] == importlib.metadata.version("anomrec")
    assert header["payload_bytes"] == len(lines[2])
    assert header["payload_sha256"] == hashlib.sha256(lines[2]).hexdigest()
    assert header["created"].endswith("Z")

    got = load_checkpoint(tmp_path, KEY)
    assert isinstance(got, Checkpoint)
    assert (got.key, got.offset, got.model_versions, got.path, got.header) == (
        KEY,
        1234,
        VERSIONS,
        path,
        header,
    )
    assert json.dumps(got.meta) == json.dumps(meta)  # NaN included
    assert set(got.arrays) == set(arrays)
    for name, array in arrays.items():
        assert got.arrays[name].dtype == array.dtype and got.arrays[name].shape == array.shape, name
        assert np.array_equal(got.arrays[name], array), name


def test_newest_first_keep_the_newest_few_and_max_offset(tmp_path: Path) -> None:
    for offset in (10, 30, 20, 40):
        write_checkpoint(tmp_path, KEY, offset, state(offset), VERSIONS, keep=2)
    assert files(tmp_path / KEY) == ["00000000000000000030.ckpt", "00000000000000000040.ckpt"]
    # One older than every kept one is still kept: it is the one just written.
    write_checkpoint(tmp_path, KEY, 5, state(5), VERSIONS, keep=2)
    assert [p.name[-9:] for p in list_checkpoints(tmp_path, KEY)] == ["0040.ckpt", "0030.ckpt", "0005.ckpt"]
    found = load_checkpoint(tmp_path, KEY)
    assert found is not None and (found.offset, found.meta["tag"]) == (40, 40)
    assert [picked(tmp_path, max_offset=m) for m in (40, 39, 29, 5)] == [40, 30, 5, 5]
    assert load_checkpoint(tmp_path, KEY, max_offset=4) is None
    assert load_checkpoint(tmp_path, "events-4") is None
    assert load_checkpoint(tmp_path / "nowhere", KEY) is None
    # Keys are apart.
    write_checkpoint(tmp_path, "events-4", 99, state(), VERSIONS)
    assert picked(tmp_path) == 40


def _two(tmp_path: Path) -> Path:
    """Checkpoints at 100 and 200; the newer one's path."""
    write_checkpoint(tmp_path, KEY, 100, state(1), VERSIONS)
    return write_checkpoint(tmp_path, KEY, 200, state(2), VERSIONS)


def _falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture, newest: Path, reason: str) -> None:
    """The damaged newest checkpoint is skipped with an error naming it and why; 100 is loaded."""
    with caplog.at_level(logging.ERROR, logger="anomrec.streaming.checkpoint"):
        found = load_checkpoint(tmp_path, KEY)
    assert found is not None and found.offset == 100 and found.meta["tag"] == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(newest) in errors[0] and reason in errors[0], errors
    with pytest.raises(CheckpointError, match=reason):
        read_checkpoint(newest)


def test_a_flipped_byte_in_the_payload_is_caught_before_numpy_reads_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    newest = _two(tmp_path)
    data = bytearray(newest.read_bytes())
    data[-100] ^= 0x01
    newest.write_bytes(bytes(data))
    loads: list[object] = []
    real_load = np.load

    def counted_load(*args: Any, **kwargs: Any) -> Any:
        loads.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(np, "load", counted_load)
    _falls_back(tmp_path, caplog, newest, "SHA-256")
    assert len(loads) == 1  # only the good checkpoint reached numpy


@pytest.mark.parametrize(
    ("cut", "reason"),
    [
        (-1, "payload is"),
        (-5000, "payload is"),
        (len(MAGIC) + 20, "no complete header line"),
        (0, "does not start"),
    ],
)
def test_a_truncated_file_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, cut: int, reason: str
) -> None:
    newest = _two(tmp_path)
    newest.write_bytes(newest.read_bytes()[:cut])
    _falls_back(tmp_path, caplog, newest, reason)


def test_a_file_with_another_magic_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    newest = _two(tmp_path)
    newest.write_bytes(b"PK\x03\x04" + newest.read_bytes()[len(MAGIC) :])
    _falls_back(tmp_path, caplog, newest, "not an anomrec checkpoint")


def test_an_unknown_schema_version_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    newest = _two(tmp_path)
    rewrite(newest, {"schema_version": SCHEMA_VERSION + 1, "app_version": "9.9.9"})
    _falls_back(tmp_path, caplog, newest, f"unknown schema version {SCHEMA_VERSION + 1}")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"offset": "200"}, "header field 'offset'"),
        ({"payload_sha256": None}, "header field 'payload_sha256'"),
        ({"offset": 150}, "filed as key 'events-3' at offset 200"),
        ({"key": "events-9"}, "header says key 'events-9'"),
    ],
)
def test_a_header_that_does_not_fit_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, header: dict[str, Any], reason: str
) -> None:
    newest = _two(tmp_path)
    rewrite(newest, header)
    with caplog.at_level(logging.ERROR, logger="anomrec.streaming.checkpoint"):
        found = load_checkpoint(tmp_path, KEY)
    assert found is not None and found.offset == 100
    assert any(str(newest) in r.getMessage() and reason in r.getMessage() for r in caplog.records)


UNPICKLED: list[str] = []


class Payload:
    """Records that it was unpickled: a checkpoint must never get that far."""

    def __setstate__(self, state: object) -> None:
        UNPICKLED.append("unpickled")


def test_a_pickled_object_array_is_refused_even_with_a_matching_checksum(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    newest = _two(tmp_path)
    meta = np.frombuffer(b'{"tag": 2}', dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, __meta__=meta, evil=np.array([Payload()], dtype=object), allow_pickle=True)
    rewrite(newest, payload=buffer.getvalue())  # the checksum recomputed: it passes that check
    _falls_back(tmp_path, caplog, newest, "Object arrays cannot be loaded")
    assert UNPICKLED == []


def test_the_writer_refuses_object_arrays_and_bad_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Python objects"):
        write_checkpoint(tmp_path, KEY, 1, ({}, {"x": np.array([{}], dtype=object)}), {})
    for name in ("__meta__", "a/b", ""):
        with pytest.raises(ValueError, match="array name"):
            write_checkpoint(tmp_path, KEY, 1, ({}, {name: np.zeros(1)}), {})
    for key in ("../up", "a/b", "..", ""):
        with pytest.raises(ValueError, match="key="):
            write_checkpoint(tmp_path, key, 1, ({}, {}), {})
    bad_offsets: list[Any] = [-1, 1.5, True]
    for bad in bad_offsets:
        with pytest.raises(ValueError, match="offset="):
            write_checkpoint(tmp_path, KEY, bad, ({}, {}), {})
    with pytest.raises(ValueError, match="keep="):
        write_checkpoint(tmp_path, KEY, 1, ({}, {}), {}, keep=0)
    with pytest.raises(ValueError, match="not JSON-able"):
        write_checkpoint(tmp_path, KEY, 1, ({"x": object()}, {}), {})
    assert list_checkpoints(tmp_path, KEY) == []


def test_a_validator_that_rejects_a_checkpoint_makes_the_loader_fall_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _two(tmp_path)
    seen: list[int] = []

    def validate(checkpoint: Checkpoint) -> None:
        seen.append(checkpoint.offset)
        if checkpoint.offset == 200:
            raise CheckpointError("the state was taken under other settings: threshold=0.9")

    with caplog.at_level(logging.ERROR, logger="anomrec.streaming.checkpoint"):
        found = load_checkpoint(tmp_path, KEY, validate=validate)
    assert found is not None and found.offset == 100 and seen == [200, 100]
    assert "threshold=0.9" in caplog.text


def test_stale_temporary_files_are_ignored_and_deleted(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, KEY, 100, state(1), VERSIONS)
    stale = tmp_path / KEY / ".00000000000000000900.abc123.tmp"
    stale.write_bytes(MAGIC + b'{"schema_version": 1')
    found = load_checkpoint(tmp_path, KEY)
    assert found is not None and found.offset == 100
    assert not stale.exists()
    stale.write_bytes(b"junk")
    write_checkpoint(tmp_path, KEY, 200, state(2), VERSIONS)
    assert files(tmp_path / KEY) == ["00000000000000000100.ckpt", "00000000000000000200.ckpt"]


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from anomrec.streaming.checkpoint import write_checkpoint

    state = ({"tag": 2}, {"x": np.arange(100_000.0)})
    write_checkpoint(sys.argv[1], "events-3", 200, state, {})
    print("written")
    """
)


def test_a_kill_during_the_write_leaves_the_previous_checkpoint_the_newest(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, KEY, 100, state(1), VERSIONS)
    env = {**os.environ, "ANOMREC_CRASH_AT": "in-checkpoint-write"}
    done = subprocess.run(
        [sys.executable, "-c", WRITER, str(tmp_path)], env=env, capture_output=True, timeout=120, check=False
    )
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    assert b"written" not in done.stdout
    leftovers = [p for p in (tmp_path / KEY).iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].read_bytes().startswith(MAGIC)  # killed mid-write
    found = load_checkpoint(tmp_path, KEY)
    assert found is not None and found.offset == 100 and found.meta["tag"] == 1
    assert files(tmp_path / KEY) == ["00000000000000000100.ckpt"]
    # Without the crash the same writer completes.
    env.pop("ANOMREC_CRASH_AT")
    subprocess.run([sys.executable, "-c", WRITER, str(tmp_path)], env=env, timeout=120, check=True)
    assert picked(tmp_path) == 200


def test_reset_state_deletes_one_key_or_everything(tmp_path: Path) -> None:
    write_checkpoint(tmp_path / "state", KEY, 1, state(), VERSIONS)
    write_checkpoint(tmp_path / "state", "events-4", 1, state(), VERSIONS)
    reset_state(tmp_path / "state", KEY)
    assert load_checkpoint(tmp_path / "state", KEY) is None
    assert load_checkpoint(tmp_path / "state", "events-4") is not None
    reset_state(tmp_path / "state")
    assert not (tmp_path / "state").exists()
    reset_state(tmp_path / "state")  # nothing there: no error


def test_mostly_zero_and_small_integer_arrays_are_stored_packed_and_come_back_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    masses = np.zeros((25, 65535), dtype=np.int64)  # HalfSpaceTrees' node masses: mostly zero
    masses[rng.integers(25, size=500), rng.integers(65535, size=500)] = rng.integers(1, 10**12, size=500)
    signed_zeros = np.zeros(8192)
    signed_zeros[::2] = -0.0  # -0.0 is not 0.0 bit for bit: kept dense
    arrays = {
        "masses": masses,
        "features": rng.integers(0, 13, size=(25, 32767)),  # int64 holding 0..12
        "unsigned": np.arange(5000, dtype=np.uint32),
        "floats": rng.normal(size=(5000, 13)),
        "sparse-floats": np.where(rng.random(10_000) < 0.01, np.nan, 0.0),
        "signed-zeros": signed_zeros,
        "huge": np.full(5000, 2**62, dtype=np.int64),
    }
    path = write_checkpoint(tmp_path, KEY, 1, ({}, arrays), VERSIONS)
    back = read_checkpoint(path).arrays
    assert back.keys() == arrays.keys()
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype, name
        assert back[name].shape == array.shape, name
        assert back[name].tobytes() == array.tobytes(), name
    # Unpacked, the masses alone would be 13 MB and the features 6.5 MB.
    assert path.stat().st_size < 2_000_000
