"""Broker faults: the broker killed and restarted, down when the processor starts, and frozen.

Each scenario runs against a dedicated broker of its own (never the session's shared one), on a
data folder and two ports fixed for the module, so that a broker started again after a
``kill -9`` finds its topics, offsets and transactions where the killed one left them. The
processor runs under the harness's supervisor and the verifier compares its committed outputs
with those of an uninterrupted reference run on the same input, made before any fault.

Every wait is bounded, and every process (processor or broker) is stopped at the end, a frozen
one after a SIGCONT.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from pathlib import Path

import pytest
from harness import (
    SETTINGS,
    Input,
    Outputs,
    ProcessorProcess,
    committed_offsets,
    end_offsets,
    processes,
    produce_input,
    python_command,
    verify,
)
from kafka.errors import KafkaError

from anomrec.localkafka import LocalKafka

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

COMMIT_TIMEOUT_S = float(SETTINGS["commit_timeout_seconds"])
EXIT_CONFIG = 2
EXIT_RESTART = 3


class DedicatedBroker:
    """One broker's data folder and ports, served by whichever JVM is running on them now."""

    def __init__(self, data_dir: Path, port: int, controller_port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.controller_port = controller_port
        self.kafka: LocalKafka | None = None
        self.frozen = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.kafka is not None and self.kafka.is_running

    def start(self) -> float:
        """Start a broker on the data folder and ports; returns the seconds it took."""
        assert not self.running
        started = time.monotonic()
        kafka = LocalKafka(data_dir=self.data_dir, port=self.port, controller_port=self.controller_port)
        kafka.start(timeout=120)
        self.kafka = kafka
        return time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL the JVM's process group, then reap it (the data folder stays)."""
        kafka = self.kafka
        assert kafka is not None and kafka.pid is not None
        self._signal(signal.SIGKILL)
        self.frozen = False
        assert kafka.wait(30) is not None, "the killed broker did not exit"
        kafka.stop()  # reaps the JVM and closes its console log; a given data folder is kept
        self.kafka = None

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        if self.frozen:
            self._signal(signal.SIGCONT)
            self.frozen = False

    def close(self) -> None:
        """Stop whatever runs, a frozen JVM included."""
        self.thaw()
        if self.kafka is not None:
            self.kafka.stop(grace=10)
            self.kafka = None

    def _signal(self, sig: signal.Signals) -> None:
        assert self.kafka is not None and self.kafka.pid is not None
        with suppress(ProcessLookupError):
            os.killpg(self.kafka.pid, sig)


def _free_ports(count: int) -> list[int]:
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DedicatedBroker]:
    data_dir = tmp_path_factory.mktemp("dedicated-kafka")
    port, controller_port = _free_ports(2)
    dedicated = DedicatedBroker(data_dir, port, controller_port)
    try:
        dedicated.start()
        yield dedicated
    finally:
        dedicated.close()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def live_broker(broker: DedicatedBroker) -> Iterator[DedicatedBroker]:
    """The dedicated broker, running and thawed before each scenario and after it."""
    broker.thaw()
    if not broker.running:
        broker.start()
    yield broker
    broker.thaw()
    if not broker.running:
        broker.start()


@pytest.fixture(scope="module")
def source(broker: DedicatedBroker) -> Input:
    return produce_input(broker.bootstrap)


@pytest.fixture(scope="module")
def reference(broker: DedicatedBroker, source: Input, tmp_path_factory: pytest.TempPathFactory) -> Outputs:
    """An uninterrupted run on the dedicated broker, before any fault."""
    outputs = Outputs.fresh("reference")
    root = tmp_path_factory.mktemp("broker-reference")
    proc = ProcessorProcess(
        python_command(), broker.bootstrap, source, outputs, state_dir=root / "state", log_dir=root
    )
    with processes(proc):
        assert proc.supervise(deadline_s=120) == 1, proc.tail()
    return outputs


@pytest.fixture
def run(
    live_broker: DedicatedBroker, source: Input, reference: Outputs, tmp_path: Path
) -> Iterator[tuple[ProcessorProcess, Outputs]]:
    outputs = Outputs.fresh("broker")
    bootstrap = live_broker.bootstrap
    proc = ProcessorProcess(
        python_command(), bootstrap, source, outputs, state_dir=tmp_path / "state", log_dir=tmp_path
    )
    with processes(proc):
        yield proc, outputs


def wait_mid_stream(
    proc: ProcessorProcess, bootstrap: str, source: Input, *, timeout_s: float = 90.0
) -> tuple[int, int]:
    """Wait until the group has committed some of the input but not all; ``(committed, total)``."""
    total = sum(end_offsets(bootstrap, source).values())
    deadline = time.monotonic() + timeout_s
    done = 0
    while time.monotonic() < deadline:
        assert proc.process is not None and proc.process.poll() is None, (
            f"the processor exited before the fault:\n{proc.tail()}"
        )
        try:
            done = sum(o or 0 for o in committed_offsets(bootstrap, proc.outputs.group, source).values())
        except KafkaError:
            done = 0
        assert done < total, "the processor committed all its input before the fault could land"
        if done >= total // 5:
            return done, total
        time.sleep(0.25)
    raise AssertionError(f"only {done} records committed after {timeout_s} s:\n{proc.tail()}")


def watch(proc: ProcessorProcess, seconds: float) -> float | None:
    """Wait up to ``seconds`` for the running processor to exit; the seconds it took, or None.

    An exit is recorded in ``proc.exits``; the supervisor then starts the next process.
    """
    assert proc.process is not None
    started = time.monotonic()
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        return None
    return time.monotonic() - started


def exit_clock(proc: ProcessorProcess) -> Callable[[], float | None]:
    """Time the running process's exit from now on, whatever the test does meanwhile.

    Returns a function giving the seconds from this call until the exit, or None while it runs.
    """
    process = proc.process
    assert process is not None
    started = time.monotonic()
    box: list[float] = []

    def wait() -> None:
        process.wait()  # the test's cleanup kills the process at the latest
        box.append(time.monotonic() - started)

    threading.Thread(target=wait, name="exit-clock", daemon=True).start()
    return lambda: box[0] if box else None


def finish(proc: ProcessorProcess, *, deadline_s: float = 150.0) -> None:
    """Supervise the processor to its end, like ``supervise()``, from wherever the fault left it.

    A process that already exited 0 said it was done: as under a real supervisor, nothing
    restarts it, and :func:`check_finished` holds it to that.
    """
    assert proc.process is not None
    if proc.process.poll() is not None and len(proc.exits) < proc.starts:
        proc.wait(0)  # record how the process that lived through the fault ended
    if len(proc.exits) == proc.starts and proc.exits[-1] == 0:
        return
    proc.supervise(deadline_s=deadline_s)


def check_finished(proc: ProcessorProcess, bootstrap: str, source: Input) -> None:
    """When the last process exited 0 (done), it had committed the whole input."""
    committed = committed_offsets(bootstrap, proc.outputs.group, source)
    end = end_offsets(bootstrap, source)
    assert committed == end, (
        f"the processor exited 0 (exits {proc.exits}) with offsets {committed} committed, "
        f"not the input's ends {end}:\n{proc.tail(60)}"
    )


def test_broker_killed_and_restarted_mid_run(
    live_broker: DedicatedBroker, source: Input, reference: Outputs, run: tuple[ProcessorProcess, Outputs]
) -> None:
    proc, outputs = run
    proc.start()
    committed, total = wait_mid_stream(proc, live_broker.bootstrap, source)
    live_broker.kill()
    exited_after = exit_clock(proc)
    time.sleep(3.0)
    took = live_broker.start()
    finish(proc)
    ended = exited_after()
    print(
        f"killed at {committed}/{total} committed; broker back after {3 + took:.1f} s; the first "
        f"process ended {'?' if ended is None else f'{ended:.1f}'} s after the kill; exits {proc.exits}"
    )
    check_finished(proc, live_broker.bootstrap, source)
    verify(live_broker.bootstrap, source, outputs, reference)
    # A process cut off from the broker exits 3 (restart required), never with a traceback.
    assert set(proc.exits[:-1]) <= {EXIT_RESTART}, (
        f"expected exit {EXIT_RESTART} (restart required) before the last, got {proc.exits}:\n{proc.tail(40)}"
    )


def test_processor_started_while_the_broker_is_down(
    live_broker: DedicatedBroker, source: Input, reference: Outputs, run: tuple[ProcessorProcess, Outputs]
) -> None:
    proc, outputs = run
    live_broker.kill()
    proc.start()
    time.sleep(5.0)
    took = live_broker.start()
    finish(proc)
    print(f"broker back after {5 + took:.1f} s; exits {proc.exits}")
    check_finished(proc, live_broker.bootstrap, source)
    verify(live_broker.bootstrap, source, outputs, reference)
    # No broker at start-up is an error the command line reports (2) or a restart (3): no traceback.
    assert set(proc.exits[:-1]) <= {EXIT_CONFIG, EXIT_RESTART}, f"exits {proc.exits}:\n{proc.tail(40)}"


def test_broker_frozen_during_commits(
    live_broker: DedicatedBroker, source: Input, reference: Outputs, run: tuple[ProcessorProcess, Outputs]
) -> None:
    proc, outputs = run
    # The longest the processor may wait on a frozen broker: a send waits up to max_block_ms
    # (commit_timeout_seconds) for metadata, then the abort of the failed transaction up to
    # commit_timeout_seconds; any transactional call past that raises RestartRequired.
    freeze_s = 2 * COMMIT_TIMEOUT_S + 5
    proc.start()
    committed, total = wait_mid_stream(proc, live_broker.bootstrap, source)
    frozen_at = time.monotonic()
    live_broker.freeze()
    try:
        during = watch(proc, freeze_s)
    finally:
        live_broker.thaw()
    if during is None:  # to report what it did once the broker answered again
        watch(proc, 30.0)
    after = time.monotonic() - frozen_at
    first = proc.exits[0] if proc.exits else None
    finish(proc)
    print(
        f"frozen for {freeze_s:g} s at {committed}/{total} committed; the first process exited "
        f"{'during' if during is not None else 'after'} the freeze, {after:.1f} s in, with {first}; "
        f"exits {proc.exits}"
    )
    check_finished(proc, live_broker.bootstrap, source)
    verify(live_broker.bootstrap, source, outputs, reference)
    # Every wait on the frozen broker is bounded: the process exits 3 for its supervisor while the
    # broker is still frozen, rather than hanging, and the restarted one finishes the input.
    assert during is not None, (
        f"the processor was still running {freeze_s:g} s into the freeze "
        f"(it exited {after:.1f} s in, with {first}):\n{proc.tail(40)}"
    )
    assert set(proc.exits[:-1]) <= {EXIT_RESTART} and first == EXIT_RESTART, (
        f"expected exit {EXIT_RESTART} (restart required), then 0: got {proc.exits}\n{proc.tail(40)}"
    )
