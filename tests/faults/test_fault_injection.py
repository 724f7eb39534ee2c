"""Fault injection against the real broker: kill -9 at every crash point, kill loops, bad input and
corrupt checkpoints, each checked by the verifier against an uninterrupted reference run.

Run on its own with ``pytest -m faults``; CI runs it with everything else. Every process is a real
``anomrec run`` child on loopback, every wait is bounded, and every child is killed at the end.
"""

from __future__ import annotations

import random
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from anomrec.streaming.faults import CRASH_POINTS
from harness import (
    Input,
    Outputs,
    ProcessorProcess,
    committed_offsets,
    processes,
    produce_input,
    python_command,
    supervise_all,
    verify,
)

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


def test_the_verifier_catches_the_duplicates_at_least_once_delivers(
    kafka_bootstrap: str, source: Input, reference: Outputs, run: tuple[ProcessorProcess, Outputs]
) -> None:
    # The same crash as above, in the mode that flushes outputs before it commits offsets: the
    # restarted processor produces the uncommitted tail's outputs again, and the verifier says so.
    proc, outputs = run
    proc.extra_env["ANOMREC_DELIVERY"] = "at-least-once"
    proc.supervise(first_env={"ANOMREC_CRASH_AT": "in-commit", "ANOMREC_CRASH_AFTER": "15"})
    assert proc.exits[0] == -signal.SIGKILL
    with pytest.raises(AssertionError, match="duplicate"):
        verify(kafka_bootstrap, source, outputs, reference)


def _wait_for_progress(
    bootstrap: str, source: Input, outputs: Outputs, *, at_least: int, timeout_s: float
) -> None:
    """Wait, bounded, until the group has committed at least ``at_least`` input records."""
    deadline = time.monotonic() + timeout_s
    while sum(o or 0 for o in committed_offsets(bootstrap, outputs.group, source).values()) < at_least:
        assert time.monotonic() < deadline, (
            f"the group committed fewer than {at_least} records in {timeout_s} s"
        )
        time.sleep(0.5)


def test_a_zombie_frozen_past_its_session_timeout_is_fenced(
    kafka_bootstrap: str, source: Input, reference: Outputs, tmp_path: Path
) -> None:
    outputs = Outputs.fresh("zombie")
    a, b = (
        ProcessorProcess(
            python_command(),
            kafka_bootstrap,
            source,
            outputs,
            state_dir=tmp_path / f"state-{name}",
            log_dir=tmp_path,
            instance=name,
        )
        for name in ("a", "b")
    )
    with processes(a, b):
        # a freezes itself right after producing a batch's outputs, its transaction open; its
        # heartbeats stop too, so after session_timeout_ms the group evicts it and b takes over.
        a.start(ANOMREC_CRASH_AT="after-produce", ANOMREC_CRASH_AFTER="5", ANOMREC_CRASH_SIGNAL="SIGSTOP")
        deadline = time.monotonic() + 120
        while not a.is_stopped():
            assert a.process is not None and a.process.poll() is None, a.tail()
            assert time.monotonic() < deadline, f"a never reached its freeze point:\n{a.tail()}"
            time.sleep(0.2)
        b.start()
        _wait_for_progress(kafka_bootstrap, source, outputs, at_least=2000, timeout_s=120)
        a.signal(signal.SIGCONT)  # it wakes up believing it owns its partitions, and commits
        supervise_all([a, b])
        log = a.tail(400)
    verify(kafka_bootstrap, source, outputs, reference)
    assert "fenced" in log or "transaction failed" in log, log


def test_three_processors_joining_and_leaving_over_six_partitions(
    kafka_bootstrap: str, source: Input, reference: Outputs, tmp_path: Path
) -> None:
    outputs = Outputs.fresh("churn")
    procs = group(3, kafka_bootstrap, source, outputs, tmp_path)
    rng = random.Random(7)
    with processes(*procs):
        procs[0].start()
        for _ in range(8):
            time.sleep(rng.uniform(2.0, 4.0))
            p = rng.choice(procs)
            if p.process is not None and p.process.poll() is None:
                p.signal(signal.SIGTERM)  # leaves the group cleanly: commits, checkpoints, exits 0
                p.wait(60)
            else:
                p.start()
        for p in procs:
            if p.process is None or p.process.poll() is not None:
                p.start()
        supervise_all(procs)
    assert sum(p.starts for p in procs) >= 5
    verify(kafka_bootstrap, source, outputs, reference)


def test_scale_out_three_processors_share_six_partitions_and_a_leaver_hands_its_state_over(
    kafka_bootstrap: str, source: Input, reference: Outputs, tmp_path: Path
) -> None:
    """Three processors in one group share the six partitions; the second leaves cleanly a few
    batches in (it sends itself SIGTERM after its fourth produce), and the two left take over its
    partitions from its checkpoints in the shared state folder. Outputs equal the one-process run."""
    outputs = Outputs.fresh("scale")
    procs = group(3, kafka_bootstrap, source, outputs, tmp_path)
    leaver = procs[1]
    with processes(*procs):
        for p in procs:
            p.start(
                **(
                    {
                        "ANOMREC_CRASH_AT": "after-produce",
                        "ANOMREC_CRASH_AFTER": "3",
                        "ANOMREC_CRASH_SIGNAL": "SIGTERM",
                    }
                    if p is leaver
                    else {}
                )
            )
        supervise_all(procs, max_starts=1)  # nobody crashes: every exit is a clean 0
    logs = {p.instance: (tmp_path / f"{p.instance}-1.log").read_text() for p in procs}
    owned = {name: _partitions(text, "partitions assigned") for name, text in logs.items()}
    assert all(owned.values()), owned  # each took part
    assert set().union(*owned.values()) == set(range(6))
    # The leaver stopped with its partitions unfinished; the others restored them from its checkpoints.
    leaver_events = _summary(logs["p1"], "events")
    assert 0 < leaver_events < 4800
    restored = [
        (int(m.group(1)), int(m.group(2)))
        for name in ("p0", "p2")
        for m in re.finditer(r"partition (\d+): restored the checkpoint at offset (\d+)", logs[name])
    ]
    assert any(partition in owned["p1"] and offset > 0 for partition, offset in restored), restored
    # Every good event once, across the group (bad records are dead letters, not events).
    assert sum(_summary(text, "events") for text in logs.values()) == 4800
    verify(kafka_bootstrap, source, outputs, reference)


def group(n: int, bootstrap: str, source: Input, outputs: Outputs, tmp_path: Path) -> list[ProcessorProcess]:
    """``n`` processors of one group, p0 to p(n-1), sharing one state folder: a partition that moves
    resumes from the checkpoint its last owner wrote."""
    return [
        ProcessorProcess(
            python_command(),
            bootstrap,
            source,
            outputs,
            state_dir=tmp_path / "state",
            log_dir=tmp_path,
            instance=f"p{i}",
        )
        for i in range(n)
    ]


def _partitions(log: str, what: str) -> set[int]:
    return {
        int(p)
        for m in re.finditer(rf"{what}: \[([\d, ]*)\]", log)
        for p in m.group(1).split(",")
        if p.strip()
    }


def _summary(log: str, name: str) -> int:
    match = re.search(rf"^{name}\s+([\d,]+)", log, re.MULTILINE)
    assert match is not None, f"no {name!r} line in the summary:\n{log[-2000:]}"
    return int(match.group(1).replace(",", ""))
