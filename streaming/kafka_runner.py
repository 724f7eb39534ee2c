"""The Kafka edge: one task per input partition, checkpoints, transactions and the dead-letter topic.

:class:`KafkaRunner` consumes ``config.input_topic`` as a member of ``config.group_id`` and keeps one
task per assigned partition. A task is that partition's :class:`~anomrec.streaming.core.Processor`
(entity features, detectors, calibration, recommender) plus its bookkeeping; its outputs are a
function of the partition's records and the configuration alone.

Delivery
--------
``exactly-once`` (the default): each poll's outputs (alerts, recommendation updates, neighbour
lists and dead-letter records) and the input offsets that produced them commit in one Kafka
transaction, fenced by the consumer's group generation (KIP-447), so a zombie that lost its
partitions cannot commit. Readers must consume the outputs with ``isolation_level=read_committed``.

``at-least-once``: outputs are flushed and acknowledged, then the offsets commit. A crash between
the two produces the uncommitted tail's outputs again.

State and recovery
------------------
After a commit, a task whose interval is due writes a checkpoint (:mod:`.checkpoint`) of its state
at the committed offset C; it also does on a clean shutdown and when its partition is revoked. When
a partition is assigned, its task restores the newest good checkpoint at or before the committed
offset K and reprocesses C..K without emitting anything, then carries on from K. With no usable
checkpoint it rebuilds from the start of the partition. Either way the committed outputs equal an
uninterrupted run's.

A transactional call that does not return within ``commit_timeout_seconds`` raises
:class:`~anomrec.streaming.exceptions.RestartRequired`: the command line exits with status 3 for
its supervisor to restart it, rather than hanging. Any other failure inside a transaction aborts
it and rebuilds every task from its checkpoint, in process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .artifacts import new_processor, warm_start_models
from .checkpoint import Checkpoint, load_checkpoint, write_checkpoint
from .config import ProcessorConfig
from .core import Alert, Processor
from .deadletter import BadRecordGuard, decode_or_dead_letter
from .events import Event, EventDecoder
from .exceptions import CheckpointError, ConfigError, DeliveryError, RestartRequired
from .faults import crash_point
from .kafka_clients import open_client
from .metrics import CycleTally, MetricsServer, RunnerMetrics
from .recommender import NeighbourUpdate, RecommendationUpdate
from .runners import RunStats

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class Task:
    """One input partition's processor and where it stands in the partition.

    ``position`` is the offset of the next record the processor has not seen; records below
    ``replay_until`` are reprocessed to rebuild state and emit nothing. ``held`` holds the offsets of
    the events the processor holds back at a model swap point.
    """

    partition: int
    processor: Processor
    position: int
    replay_until: int = 0
    held: deque[int] = field(default_factory=deque)
    since_checkpoint: int = 0
    checkpointed_at: float = field(default_factory=time.monotonic)

    @property
    def committable(self) -> int:
        """The offset every record before which has been fully processed and emitted."""
        return self.held[0] if self.held else self.position


def bounded(call: Callable[[], T], timeout: float, what: str) -> T:
    """Run ``call`` on a watchdog thread; :class:`RestartRequired` if it is not done in ``timeout`` s.

    kafka-python's ``commit_transaction`` and ``abort_transaction`` wait with no timeout and can
    block forever while the broker is unreachable. The stuck thread is a daemon, so the process
    can still exit.

    >>> bounded(lambda: 42, 1.0, "the answer")
    42
    >>> bounded(lambda: time.sleep(5), 0.05, "a nap")
    Traceback (most recent call last):
    ...
    anomrec.streaming.exceptions.RestartRequired: a nap did not finish within 0.05 s: ...
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"anomrec-watchdog-{what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise RestartRequired(
            f"{what} did not finish within {timeout:g} s: the broker may be unreachable or frozen; "
            "exiting so that a supervisor restarts the processor, which resumes from its last commit"
        )
    if "error" in box:
        raise box["error"]
    return box["value"]


def restore_newest(
    config: ProcessorConfig,
    state_dir: str | os.PathLike[str],
    key: str,
    *,
    max_offset: int,
    executor: Executor | None = None,
) -> tuple[Processor, Checkpoint] | None:
    """A processor restored from the newest usable checkpoint of ``key`` at or before ``max_offset``.

    A checkpoint that does not restore (other settings, damaged state) is skipped for the one
    before it, as :func:`~anomrec.streaming.checkpoint.load_checkpoint` does; None when none is left.
    """
    restored: list[Processor] = []

    def validate(checkpoint: Checkpoint) -> None:
        processor = Processor(config, executor=executor)
        try:
            processor.restore(checkpoint.meta, checkpoint.arrays)
        except CheckpointError:
            processor.close()
            raise
        restored.append(processor)

    checkpoint = load_checkpoint(state_dir, key, max_offset=max_offset, validate=validate)
    return None if checkpoint is None else (restored[-1], checkpoint)


def checkpoint_due(config: ProcessorConfig, events_since: int, seconds_since: float) -> bool:
    """Whether a partition's checkpoint interval is up: ``checkpoint_every_events`` events, or
    ``checkpoint_every_seconds`` with at least one event, since its last checkpoint (0 turns each off).

    >>> cfg = ProcessorConfig(checkpoint_every_events=100, checkpoint_every_seconds=60.0)
    >>> checkpoint_due(cfg, 100, 0.0), checkpoint_due(cfg, 1, 61.0), checkpoint_due(cfg, 0, 61.0)
    (True, True, False)
    """
    every_events, every_seconds = config.checkpoint_every_events, config.checkpoint_every_seconds
    by_events = every_events > 0 and events_since >= every_events
    by_time = every_seconds > 0 and events_since > 0 and seconds_since >= every_seconds
    return by_events or by_time


class KafkaRunner:
    """Consume ``config.input_topic`` and publish alerts, recommendations and dead letters.

    Parameters
    ----------
    config
        Topics, group, delivery mode, state folder and model settings; ``config.bootstrap_servers``
        must be set.
    client_options
        Extra keyword arguments for every kafka-python client (client id, ...); the security
        settings come from ``config`` (:meth:`~.config.ProcessorConfig.kafka_security`).
    consumer_options
        Extra keyword arguments for the consumer only (``max_poll_interval_ms``, ...).
    executor
        Runs the IsolationForest and LOF fits of every task; by default one worker thread. A fit
        never blocks the poll loop: at a model swap point whose fit is not done, the partition's
        remaining events are held back and the partition paused, and polling goes on.
    """

    def __init__(
        self,
        config: ProcessorConfig,
        client_options: Mapping[str, Any] | None = None,
        *,
        consumer_options: Mapping[str, Any] | None = None,
        executor: Executor | None = None,
    ) -> None:
        if not config.bootstrap_servers:
            raise ValueError("KafkaRunner needs config.bootstrap_servers")
        self.config = config
        # Verified before anything connects: a bad warm start stops the run at once.
        self._models = warm_start_models(config)
        self.client_options = dict(client_options or {})
        self.consumer_options = dict(consumer_options or {})
        self.stats = RunStats()
        self.instance_id = config.instance_id or _host_name()
        self.state_dir = Path(config.state_dir)
        self.exactly_once = config.delivery == "exactly-once"
        self._stop = threading.Event()
        self._swap_wait = 0.5
        self._decoder = EventDecoder(config)
        self._guard = BadRecordGuard.from_config(config)
        self.tasks: dict[int, Task] = {}
        self._to_open: set[int] = set()
        # Held by a cycle (processing and its transaction) and by the rebalance callbacks.
        self._lock = threading.RLock()
        self._own_executor = executor is None
        self._fits: Executor = executor or ThreadPoolExecutor(1, thread_name_prefix="anomrec-fit")
        self._consumer: Any = None
        self._producer: Any = None
        self.metrics = RunnerMetrics()
        self._tally = CycleTally()

    @property
    def transactional_id(self) -> str:
        """The producer's transactional id: stable across restarts of the same instance."""
        return f"anomrec-{self.config.group_id}-{self.instance_id}"

    def stop(self) -> None:
        """Ask :meth:`run` to finish its current batch, commit and return; safe from a signal handler."""
        self._stop.set()

    # -- the loop --------------------------------------------------------------------------------

    def run(self, *, max_events: int | None = None, idle_timeout: float | None = None) -> RunStats:
        """Process until :meth:`stop`, or after ``max_events`` events or ``idle_timeout`` seconds idle."""
        cfg = self.config
        server = None
        if cfg.metrics_port:
            server = MetricsServer(self.metrics, self.health, host=cfg.metrics_host, port=cfg.metrics_port)
            server.start()
        try:
            self._consumer = self._connect_consumer()
        except BaseException:
            if server is not None:
                server.stop()
            raise
        try:
            self._producer = self._connect_producer()
            ensure_output_topics(cfg, self.client_options)
            self._consumer.subscribe([cfg.input_topic], listener=self._listener())
            log.info(
                "consuming %s as group %s (instance %s, %s) from %s",
                cfg.input_topic,
                cfg.group_id,
                self.instance_id,
                cfg.delivery,
                cfg.bootstrap_servers,
            )
            idle_since = time.monotonic()
            while not self._stop.is_set():
                # Every turn, not only after a cycle: a partition can come back from a rebalance
                # still paused, and a paused partition polls nothing, so no cycle would resume it.
                self._pause_held()
                polled = self._consumer.poll(timeout_ms=200)
                if self._to_open:
                    polled = self._open_assigned(polled)
                with self._lock:
                    held_before = [t for t in self.tasks.values() if t.held]
                if not polled and not held_before:
                    if (
                        idle_timeout is not None
                        and time.monotonic() - idle_since > idle_timeout
                        and self._caught_up()
                    ):
                        break
                    continue
                crash_point("after-poll")
                failure = self._cycle(polled)
                if failure is not None:
                    self._recover(failure)
                else:
                    with self._lock:
                        self._checkpoint_due()
                idle_since = time.monotonic()
                if max_events is not None and self.stats.events >= max_events:
                    break
            with self._lock:
                self._checkpoint_all("clean shutdown")
        except RestartRequired:
            # The broker is unreachable or frozen: closing the clients would wait on it, and a close
            # that times out would replace this exception. The caller exits at once instead.
            self._abandon()
            raise
        finally:
            self.stats.finished = time.monotonic()
            if server is not None:
                server.stop()
            self._close()
        log.info("stopped after %d events, %d alerts", self.stats.events, self.stats.alerts)
        return self.stats

    def _cycle(self, polled: Mapping[Any, list[Any]]) -> BaseException | None:
        """Process one poll's records and commit their outputs and offsets together.

        Returns the error of a failed cycle (its transaction aborted) for :meth:`_recover`. The
        processing and the transaction run under the lock the rebalance callbacks take, so a
        partition is never revoked halfway through a transaction that holds its outputs. The
        metrics count the cycle only once it has committed.
        """
        self._tally = CycleTally()
        failure = self._transact(polled) if self.exactly_once else self._flush_then_commit(polled)
        if failure is None:
            self.metrics.commit(self._tally, time.time())
            with self._lock:
                self._observe_tasks()
        return failure

    def _flush_then_commit(self, polled: Mapping[Any, list[Any]]) -> BaseException | None:
        """At least once: send the outputs, wait for every acknowledgement, then commit the offsets."""
        from kafka.errors import KafkaError  # noqa: PLC0415 - kept off the embedded path

        producer = self._producer
        timeout = self.config.commit_timeout_seconds
        try:
            with self._lock:
                futures = self._handle(polled)
                crash_point("after-produce")
                producer.flush(timeout=timeout)
                failed = [f.exception for f in futures if not f.succeeded()]
                if failed:
                    raise DeliveryError(
                        f"{len(failed)} of {len(futures)} output records were not acknowledged by "
                        f"the broker (first error: {failed[0]!r}); input offsets were not committed"
                    )
                offsets = self._offsets()
            if offsets:
                # Outside the lock: a blocking consumer call needs the network thread, which may
                # be waiting for the lock in a rebalance callback.
                crash_point("in-commit")
                self._consumer.commit(offsets=offsets)
        except (KafkaError, DeliveryError) as exc:
            return exc
        return None

    def _transact(self, polled: Mapping[Any, list[Any]]) -> BaseException | None:
        """Exactly once: the outputs and the input offsets in one transaction."""
        from kafka.errors import KafkaError  # noqa: PLC0415 - kept off the embedded path

        producer = self._producer
        timeout = self.config.commit_timeout_seconds
        with self._lock:
            producer.begin_transaction()
            try:
                self._handle(polled)
                crash_point("after-produce")
                offsets = self._offsets()
                if offsets:
                    metadata = self._consumer.group_metadata()
                    bounded(
                        lambda: producer.send_offsets_to_transaction(offsets, metadata),
                        timeout,
                        "sending the input offsets to the transaction",
                    )

                def commit() -> None:
                    crash_point("in-commit")
                    producer.commit_transaction()

                bounded(commit, timeout, "committing the transaction")
            except RestartRequired:
                raise
            except (KafkaError, DeliveryError) as exc:
                self._abort(exc)
                return exc
        return None

    def _observe_tasks(self) -> None:
        from kafka.structs import TopicPartition  # noqa: PLC0415

        consumer = self._consumer
        topic = self.config.input_topic
        ends = {p: consumer.highwater(TopicPartition(topic, p)) for p in self.tasks}
        self.metrics.observe_tasks(
            topic,
            {p: t.processor for p, t in self.tasks.items()},
            ends,
            {p: t.position for p, t in self.tasks.items()},
        )

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Ready once partitions are assigned and each has its state restored (see :mod:`.metrics`)."""
        tasks, opening = dict(self.tasks), sorted(self._to_open)
        if opening:
            return False, {"reason": f"restoring the state of partitions {opening}"}
        if not tasks:
            return False, {"reason": "no partitions assigned yet"}
        replaying = sorted(p for p, t in tasks.items() if t.replay_until)
        if replaying:
            return False, {"reason": f"replaying partitions {replaying} up to their committed offsets"}
        return True, {"partitions": sorted(tasks)}

    def _abort(self, cause: BaseException) -> None:
        """Abort the failed cycle's transaction; :class:`RestartRequired` if that cannot be done."""
        from kafka.errors import ProducerFencedError  # noqa: PLC0415

        # kafka-python reports a fenced producer directly, or wrapped in the error of the next call.
        if isinstance(cause, ProducerFencedError) or any(
            isinstance(a, ProducerFencedError) for a in cause.args
        ):
            raise RestartRequired(
                f"the producer with transactional id {self.transactional_id!r} was fenced ({cause}): its "
                "transaction timed out while this process was stalled, or another process started with "
                "the same id; exiting for a restart (if two running processors share an instance_id, "
                "give each its own)"
            ) from cause
        timeout = self.config.commit_timeout_seconds
        try:
            bounded(self._producer.abort_transaction, timeout, "aborting")
            # A fresh producer for the next transaction. kafka-python 3.0.12 keeps the offsets of a
            # TxnOffsetCommit that failed with an abortable error (a stale group generation) and
            # adds them to the next transaction's: a fenced zombie would then commit its old
            # positions after rejoining, rewinding partitions other members had moved on.
            old = self._producer
            bounded(lambda: old.close(timeout=5), timeout, "closing the aborted producer")
            self._producer = self._connect_producer()
        except RestartRequired:
            raise
        except Exception as exc:
            raise RestartRequired(
                f"the failed transaction could not be aborted ({exc!r}); exiting for a restart"
            ) from exc

    def _recover(self, cause: BaseException) -> None:
        """After a failed cycle, rebuild every task from its checkpoint and the input.

        The tasks' state has moved past the last commit (exactly-once aborted the cycle's
        transaction; at-least-once may produce that tail again), so they start again from their
        checkpoints and the committed offsets.
        """
        from kafka.errors import CommitFailedError, KafkaError  # noqa: PLC0415

        what = "transaction failed" if self.exactly_once else "delivery or commit failed"
        log.warning("%s (%r): rebuilding the partitions' state", what, cause)
        self.stats.aborted += 1
        with self._lock:
            for task in self.tasks.values():
                task.processor.close()
            self.tasks.clear()
            self._to_open.clear()
        if isinstance(cause, CommitFailedError):
            # The group moved on without this member (it stalled past its session timeout, a
            # zombie): its partitions may be someone else's now. Rejoin; the tasks of whatever
            # the group assigns open as usual.
            log.warning("this processor is no longer a member of its group: rejoining")
            self._consumer.unsubscribe()
            self._consumer.subscribe([self.config.input_topic], listener=self._listener())
            return
        try:
            for tp in sorted(self._consumer.assignment(), key=lambda tp: tp.partition):
                self._open_task(tp.partition)
        except KafkaError as exc:
            raise RestartRequired(
                f"could not rebuild the partitions' state after a failed cycle ({exc!r}); "
                "exiting for a restart"
            ) from exc

    def _handle(self, polled: Mapping[Any, list[Any]]) -> list[Any]:
        """Decode and process the records, send every output; return the send futures."""
        cfg = self.config
        topic = cfg.input_topic
        tally = self._tally
        futures: list[Any] = []
        work: dict[int, tuple[list[Event], list[int]]] = {
            p: ([], []) for p, t in self.tasks.items() if t.held
        }
        for tp in polled:
            task = self.tasks.get(tp.partition)
            if task is None:  # revoked while the records were in flight
                continue
            events, offsets = work.setdefault(tp.partition, ([], []))
            for r in polled[tp]:
                if r.offset < task.position:  # already seen (a re-fetch after a seek)
                    continue
                if r.offset >= task.replay_until:
                    tally.records_in[topic] += 1
                outcome = decode_or_dead_letter(
                    self._decoder,
                    self._guard,
                    value=r.value,
                    key=r.key,
                    timestamp_ms=r.timestamp,
                    topic=topic,
                    partition=tp.partition,
                    offset=r.offset,
                )
                if isinstance(outcome, Event):
                    events.append(outcome)
                    offsets.append(r.offset)
                elif r.offset < task.replay_until:  # dead-lettered by the run that committed it
                    self.stats.replayed += 1
                else:
                    self.stats.bad_records[outcome.reason] += 1
                    self.stats.dead_letters += 1
                    log.warning(
                        "dead-lettered %s-%d@%d (%s): %s",
                        topic,
                        tp.partition,
                        r.offset,
                        outcome.reason,
                        outcome.message,
                    )
                    headers = outcome.headers()
                    tally.dead_letters[outcome.reason] += 1
                    tally.records_out[cfg.dead_letter_topic] += 1
                    send = self._producer.send
                    futures.append(send(cfg.dead_letter_topic, key=r.key, value=r.value, headers=headers))
                task.position = r.offset + 1
        for partition in sorted(work):
            events, offsets = work[partition]
            task = self.tasks[partition]
            if task.replay_until:
                # Records below the committed offset rebuild state only: their outputs were
                # committed by an earlier run. Outputs do not depend on how batches are cut.
                cut = bisect_left(offsets, task.replay_until)
                task.processor.process(events[:cut])
                task.since_checkpoint += cut
                self.stats.replayed += cut
                events, offsets = events[cut:], offsets[cut:]
                if task.position >= task.replay_until:
                    log.info("partition %d: state rebuilt up to offset %d", partition, task.replay_until)
                    task.replay_until = 0
            task.held.extend(offsets)
            # A model swap point whose fit is not done yet holds back the rest of the batch rather
            # than blocking the poll loop past max.poll.interval.ms; the next poll finishes it.
            step = task.processor.process(events, wait=self._swap_wait)
            for _ in range(len(step.events)):
                task.held.popleft()
            task.since_checkpoint += len(step.events)
            outputs: list[tuple[str, str, Alert | RecommendationUpdate | NeighbourUpdate]]
            outputs = [(cfg.alerts_topic, a.entity, a) for a in step.alerts]
            outputs += [(cfg.recommendations_topic, u.user, u) for u in step.reco.updates]
            outputs += [(cfg.similar_items_topic, n.item, n) for n in step.reco.neighbours]
            tally.alerts += len(step.alerts)
            tally.recommendations += len(step.reco.updates)
            tally.event_times.extend(e.event_time for e in step.events)
            for out_topic, key, record in outputs:
                tally.records_out[out_topic] += 1
                futures.append(
                    self._producer.send(
                        out_topic,
                        key=key.encode(),
                        value=record.to_json(),
                        timestamp_ms=int(record.event_time * 1000),
                    )
                )
            self.stats.add(step.events, step.alerts)
            self.stats.add_reco(step.reco)
        return futures

    def _offsets(self) -> dict[Any, Any]:
        from kafka.structs import OffsetAndMetadata, TopicPartition  # noqa: PLC0415

        topic = self.config.input_topic
        return {
            TopicPartition(topic, p): OffsetAndMetadata(t.committable, "", -1)
            for p, t in self.tasks.items()
            if not t.replay_until or t.committable >= t.replay_until
        }

    def _caught_up(self) -> bool:
        """Whether every assigned partition has been read to its end, as the last fetch saw it."""
        consumer = self._consumer
        if self._to_open:
            return False
        assigned = consumer.assignment()  # none assigned: nothing to catch up on
        ends = {tp: consumer.highwater(tp) for tp in assigned}
        unknown = [tp for tp, end in ends.items() if end is None]
        if unknown:  # no fetch has returned records since the assignment: ask the broker
            ends.update(consumer.end_offsets(unknown))
        for tp, end in ends.items():
            task = self.tasks.get(tp.partition)
            if task is None or task.position < end:
                return False
        return True

    def _pause_held(self) -> None:
        consumer = self._consumer
        with self._lock:
            held = {p for p, t in self.tasks.items() if t.held}
        assigned = consumer.assignment()
        consumer.pause(*[tp for tp in assigned if tp.partition in held])
        consumer.resume(*[tp for tp in assigned if tp.partition not in held])

    # -- tasks and checkpoints ---------------------------------------------------------------------

    def _open_assigned(self, polled: Mapping[Any, list[Any]]) -> dict[Any, list[Any]]:
        """Open the tasks of newly assigned partitions; drop their records fetched before the seek."""
        from kafka.errors import KafkaError  # noqa: PLC0415

        with self._lock:
            opened = set(self._to_open)
            self._to_open.clear()
        try:
            for partition in sorted(opened):
                self._open_task(partition)
        except KafkaError as exc:
            raise RestartRequired(
                f"could not read the committed offsets of the assigned partitions ({exc!r}); "
                "exiting for a restart"
            ) from exc
        return {tp: records for tp, records in polled.items() if tp.partition not in opened}

    def _key(self, partition: int) -> str:
        return f"{self.config.input_topic}-{partition}"

    def _open_task(self, partition: int) -> Task | None:
        """Build the partition's task: restore its checkpoint and seek to where state must resume."""
        from kafka.structs import TopicPartition  # noqa: PLC0415

        consumer = self._consumer
        tp = TopicPartition(self.config.input_topic, partition)
        committed = consumer.committed(tp)
        beginning = consumer.beginning_offsets([tp])[tp]
        if committed is None:
            if self.config.auto_offset_reset == "latest":
                committed = consumer.end_offsets([tp])[tp]
            else:
                committed = beginning
        found = restore_newest(
            self.config, self.state_dir, self._key(partition), max_offset=committed, executor=self._fits
        )
        if found is not None and found[1].offset >= beginning:
            processor, start = found[0], found[1].offset
            log.info(
                "partition %d: restored the checkpoint at offset %d; replaying %d records up to %d",
                partition,
                start,
                committed - start,
                committed,
            )
            self.stats.restored += 1
        else:
            if found is not None:
                found[0].close()
                log.error(
                    "partition %d: checkpoint at offset %d is older than the partition's first record "
                    "(%d, deleted by retention); rebuilding state from the start of the partition",
                    partition,
                    found[1].offset,
                    beginning,
                )
            processor, start = new_processor(self.config, self._models, executor=self._fits), beginning
            if committed > beginning:
                log.info(
                    "partition %d: no usable checkpoint; rebuilding state from offsets %d to %d",
                    partition,
                    beginning,
                    committed,
                )
        with self._lock:
            # Revoked while its state was being restored (the callbacks run on another thread).
            if tp not in consumer.assignment():
                processor.close()
                return None
            consumer.seek(tp, start)
            task = Task(
                partition, processor, position=start, replay_until=committed if committed > start else 0
            )
            self.tasks[partition] = task
        return task

    def _checkpoint(self, task: Task, why: str) -> None:
        processor = task.processor
        if task.held or processor.has_pending or task.replay_until:
            log.debug("partition %d: no checkpoint (%s) while events are held back", task.partition, why)
            return
        try:
            write_checkpoint(
                self.state_dir,
                self._key(task.partition),
                task.position,
                processor.state(),
                processor.model_versions(),
            )
        except OSError as exc:
            # A full disk or a folder another instance is pruning: state is still rebuilt from
            # the input on a restart, so carry on without this checkpoint.
            log.error("partition %d: could not write a checkpoint (%s): %s", task.partition, why, exc)
            return
        task.since_checkpoint = 0
        task.checkpointed_at = time.monotonic()
        self.stats.checkpoints += 1
        log.debug("partition %d: checkpoint at offset %d (%s)", task.partition, task.position, why)

    def _checkpoint_due(self) -> None:
        """Write the checkpoint of at most one partition whose interval is up, the one longest due.

        A checkpoint is written in the poll loop, and partitions fed at the same rate fall due
        together: one per cycle spreads the pauses instead of stalling every partition's output
        at once (measured at the defaults: four partitions together paused the loop 1-1.75 s).
        """
        now = time.monotonic()
        due = [
            task
            for task in self.tasks.values()
            if checkpoint_due(self.config, task.since_checkpoint, now - task.checkpointed_at)
        ]
        if due:
            task = max(due, key=lambda t: (t.since_checkpoint, now - t.checkpointed_at, -t.partition))
            self._checkpoint(task, "interval")

    def _checkpoint_all(self, why: str) -> None:
        for task in self.tasks.values():
            if task.since_checkpoint:
                self._checkpoint(task, why)

    def _listener(self) -> Any:
        from kafka import ConsumerRebalanceListener  # noqa: PLC0415 - kept off the embedded path

        runner = self

        class Rebalance(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                # kafka-python calls this on its network thread; the lock makes it wait for a cycle
                # in progress, so each revoked task's state is at its committed offset (or ahead of
                # it after a failed cycle, which a restore skips: checkpoints beyond the committed
                # offset are not used).
                with runner._lock:
                    self._revoke(revoked)

            def _revoke(self, revoked: Any) -> None:
                for tp in sorted(revoked, key=lambda tp: tp.partition):
                    runner._to_open.discard(tp.partition)
                    task = runner.tasks.pop(tp.partition, None)
                    if task is None:
                        continue
                    if task.since_checkpoint:
                        runner._checkpoint(task, "revoked")
                    task.processor.close()
                if revoked:
                    runner.metrics.forget(runner.config.input_topic, (tp.partition for tp in revoked))
                    log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

            def on_partitions_assigned(self, assigned: Any) -> None:
                if not assigned:  # the topic's metadata not seen yet; a real assignment follows
                    return
                runner.stats.assignments += 1
                # kafka-python runs this on its network thread, where the blocking calls that
                # opening a task needs (committed offsets, seek) are refused: the loop opens them.
                with runner._lock:
                    runner._to_open.update(
                        tp.partition for tp in assigned if tp.partition not in runner.tasks
                    )
                log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned))

            def on_partitions_lost(self, lost: Any) -> None:
                # Another member may own them already: drop the tasks without a checkpoint.
                with runner._lock:
                    self._lose(lost)

            def _lose(self, lost: Any) -> None:
                for tp in lost:
                    runner._to_open.discard(tp.partition)
                    task = runner.tasks.pop(tp.partition, None)
                    if task is not None:
                        task.processor.close()
                if lost:
                    runner.metrics.forget(runner.config.input_topic, (tp.partition for tp in lost))
                    log.warning("partitions lost: %s", sorted(tp.partition for tp in lost))

        return Rebalance()

    # -- clients -----------------------------------------------------------------------------------

    def _connect_consumer(self) -> Any:
        from kafka import KafkaConsumer  # noqa: PLC0415 - kept off the embedded path
        from kafka.coordinator.assignors.cooperative_sticky import (  # noqa: PLC0415
            CooperativeStickyAssignor,
        )

        cfg = self.config
        options: dict[str, Any] = {
            "bootstrap_servers": cfg.bootstrap_servers,
            "group_id": cfg.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": cfg.auto_offset_reset,
            "isolation_level": "read_committed",
            "partition_assignment_strategy": (CooperativeStickyAssignor,),
            "session_timeout_ms": cfg.session_timeout_ms,
            "heartbeat_interval_ms": max(100, cfg.session_timeout_ms // 3),
            "max_poll_records": cfg.max_poll_records,
            **_RECONNECT,
            **self.client_options,
            **self.consumer_options,
        }
        unreachable = (
            f"no Kafka broker answered at bootstrap_servers={cfg.bootstrap_servers!r}: check the "
            "address and that the broker is up, or unset it to run embedded"
        )
        return open_client(KafkaConsumer, cfg, unreachable=unreachable, **options)

    def _connect_producer(self) -> Any:
        from kafka import KafkaProducer  # noqa: PLC0415 - kept off the embedded path
        from kafka.errors import UnsupportedVersionError  # noqa: PLC0415

        cfg = self.config
        options: dict[str, Any] = {
            "bootstrap_servers": cfg.bootstrap_servers,
            "acks": "all",
            "linger_ms": 5,
            "max_block_ms": int(cfg.commit_timeout_seconds * 1000),
            **_RECONNECT,
        }
        if not self.exactly_once:
            return open_client(KafkaProducer, cfg, **{**options, **self.client_options})
        options |= {
            "transactional_id": self.transactional_id,
            "enable_idempotence": True,
            # Kafka Streams' choice for exactly-once: a crashed or frozen instance's open
            # transaction, and the input offsets in it, block its partitions' next owner for
            # at most this long.
            "transaction_timeout_ms": 10_000,
        }
        producer = open_client(KafkaProducer, cfg, **{**options, **self.client_options})
        try:
            bounded(producer.init_transactions, cfg.commit_timeout_seconds + 5, "initialising transactions")
        except UnsupportedVersionError:
            log.warning("the broker does not support transactions: delivering at-least-once")
            producer.close(timeout=5)
            self.exactly_once = False
            return self._connect_producer()
        return producer

    def _abandon(self) -> None:
        """Leave the clients as they are, unclosed: the process is about to exit."""
        # Kept referenced: a collected KafkaProducer closes itself, flushing first.
        self._abandoned = (self._producer, self._consumer)
        self._producer = self._consumer = None
        if self._own_executor:
            self._fits.shutdown(wait=False, cancel_futures=True)
            self._own_executor = False

    def _close(self) -> None:
        for task in self.tasks.values():
            task.processor.close()
        self.tasks.clear()
        if self._producer is not None:
            self._producer.close(timeout=10)
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
        if self._own_executor:
            self._fits.shutdown(wait=True, cancel_futures=True)


# kafka-python backs off reconnecting for up to 30 s by default: a broker back after a restart
# would go unnoticed for that long, past the 30 s bootstrap window of a processor started early.
_RECONNECT = {"reconnect_backoff_max_ms": 1000}


def _host_name() -> str:
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())
    return name or f"pid-{os.getpid()}"


def ensure_output_topics(config: ProcessorConfig, client_options: Mapping[str, Any]) -> list[str]:
    """Create the output topics that do not exist yet; returns the ones created.

    Alerts and recommendation updates get as many partitions as the input topic (one if it does
    not exist either). The similar-items topic is keyed by item and only each item's latest list
    matters, so it is created compacted (``cleanup.policy=compact``). The dead-letter topic gets
    as many partitions as the input. Topics that exist are left as they are. A broker that refuses
    to create one is a :class:`ConfigError` naming the topic.
    """
    from kafka.admin import KafkaAdminClient, NewTopic  # noqa: PLC0415 - kept off the embedded path
    from kafka.errors import KafkaError, TopicAlreadyExistsError  # noqa: PLC0415

    wanted: dict[str, dict[str, str]] = {config.alerts_topic: {}, config.dead_letter_topic: {}}
    if config.recommend:
        wanted[config.recommendations_topic] = {}
        wanted[config.similar_items_topic] = {"cleanup.policy": "compact"}
    admin = open_client(
        KafkaAdminClient, config, bootstrap_servers=config.bootstrap_servers, **client_options
    )
    created = []
    try:
        existing = set(admin.list_topics())
        partitions = 1
        if config.input_topic in existing:
            (described,) = admin.describe_topics([config.input_topic])
            partitions = max(1, len(described.get("partitions", [])))
        for topic, settings in wanted.items():
            if topic in existing:
                continue
            count = 1 if settings else partitions
            try:
                admin.create_topics([NewTopic(topic, count, -1, topic_configs=settings)])
            except TopicAlreadyExistsError:
                continue
            except KafkaError as exc:
                raise ConfigError(
                    f"output topic {topic!r} does not exist and the broker refused to create it ({exc!r}): "
                    "create it, or let this client create topics"
                ) from None
            created.append(topic)
            log.info(
                "created output topic %s (%d partitions%s)", topic, count, ", compacted" if settings else ""
            )
    finally:
        admin.close()
    return created
