"""Fault injection against the real broker: kill -9 at every crash point, kill loops, bad input and
corrupt checkpoints, each checked by the verifier against an uninterrupted reference run.

Run on its own with ``pytest -m faults``; CI runs it with everything else. Every process is a real
``anomrec run`` child on loopback, every wait is bounded, and every child is killed at the end.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from anomrec.streaming.faults import CRASH_POINTS
from harness import Input, Outputs, ProcessorProcess, processes, produce_input, python_command, verify

pytestmark = [pytest.mark.kafka, pytest.mark.faults]


@pytest.fixture(scope="module")
def source(kafka_bootstrap: str) -> Input:
    return produce_input(kafka_bootstrap)


@pytest.fixture(scope="module")
def reference(kafka_bootstrap: str, source: Input, tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    """An uninterrupted run: one process, no faults, from an empty state folder."""
    outputs = Outputs.fresh("reference")
    root = tmp_path_factory.mktemp("reference")
    proc = ProcessorProcess(
        python_command(), kafka_bootstrap, source, outputs, state_dir=root / "state", log_dir=root
    )
    with processes(proc):
        assert proc.supervise() == 1, proc.tail()
    return outputs


@pytest.fixture
def run(kafka_bootstrap: str, source: Input, tmp_path: Path) -> Iterator[tuple[ProcessorProcess, Outputs]]:
    outputs = Outputs.fresh("run")
    proc = ProcessorProcess(
        python_command(), kafka_bootstrap, source, outputs, state_dir=tmp_path / "state", log_dir=tmp_path
    )
    with processes(proc):
        yield proc, outputs


def test_reference_run_dead_letters_exactly_the_bad_input_catalogue(
    kafka_bootstrap: str, source: Input, reference: Outputs
) -> None:
    # The catalogue (bad JSON and bad UTF-8 share the reason "json") is in the input, and the
    # verifier holds for the reference run against itself.
    assert len(source.bad) == 10 and len(set(source.bad.values())) == 9
    counts = verify(kafka_bootstrap, source, reference, reference)
    assert counts["dead_letters"] == len(source.bad)


def test_same_input_twice_gives_byte_identical_outputs(
    kafka_bootstrap: str, source: Input, reference: Outputs, run: tuple[ProcessorProcess, Outputs]
) -> None:
    proc, outputs = run
    assert proc.supervise() == 1, proc.tail()
    verify(kafka_bootstrap, source, outputs, reference)


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_kill_at_crash_point(
    kafka_bootstrap: str,
    source: Input,
    reference: Outputs,
    run: tuple[ProcessorProcess, Outputs],
    point: str,
) -> None:
    proc, outputs = run
    # Let a few passes through the point go by, so that the crash lands mid-stream with commits
    # (and, for the checkpoint write, earlier checkpoints) behind it.
    after = "3" if point == "in-checkpoint-write" else "15"
    starts = proc.supervise(first_env={"ANOMREC_CRASH_AT": point, "ANOMREC_CRASH_AFTER": after})
    assert starts == 2, f"expected one crash and one restart, got {proc.exits}\n{proc.tail()}"
    assert proc.exits[0] == -signal.SIGKILL
    verify(kafka_bootstrap, source, outputs, reference)


def test_five_random_kills(
    kafka_bootstrap: str, source: Input, reference: Outputs, run: tuple[ProcessorProcess, Outputs]
) -> None:
    proc, outputs = run
    rng = random.Random(20261204)
    for _ in range(5):
        proc.start()
        time.sleep(rng.uniform(3.0, 9.0))  # start-up takes ~3 s: some kills land mid-stream
        proc.kill9()
    proc.supervise()
    assert proc.exits[:5] == [-signal.SIGKILL] * 5 or 0 in proc.exits[:5]
    verify(kafka_bootstrap, source, outputs, reference)


def test_corrupt_checkpoints_fall_back_and_never_crash_loop(
    kafka_bootstrap: str, source: Input, reference: Outputs, run: tuple[ProcessorProcess, Outputs]
) -> None:
    proc, outputs = run
    proc.start(ANOMREC_CRASH_AT="after-poll", ANOMREC_CRASH_AFTER="30")
    assert proc.wait(180) == -signal.SIGKILL, proc.tail()
    checkpoints = sorted(proc.state_dir.rglob("*.ckpt"))
    assert checkpoints, "the crashed run left no checkpoint to corrupt"
    newest: dict[Path, Path] = {}
    for path in checkpoints:
        newest[path.parent] = max(newest.get(path.parent, path), path)
    for path in newest.values():  # flip bytes in the payload of each partition's newest checkpoint
        data = bytearray(path.read_bytes())
        for i in range(len(data) - 200, len(data) - 100):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))
    some = next(iter(newest.values()))
    some.parent.joinpath(some.name).write_bytes(b"not a checkpoint at all")
    assert proc.supervise() == 2, (
        f"a corrupt checkpoint made the processor crash: {proc.exits}\n{proc.tail()}"
    )
    assert "checkpoint" in proc.tail(200)
    verify(kafka_bootstrap, source, outputs, reference)
