from __future__ import annotations

import copy
import dataclasses
import pickle
from pathlib import Path

import pytest
from anomrec.streaming.checkpoint import list_checkpoints
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.deadletter import DeadLetter
from anomrec.streaming.exceptions import AnomrecError, TooManyBadRecords
from anomrec.streaming.sample import generate_transactions
from anomrec.streaming.testing import (
    ABORT,
    EOF,
    Aborted,
    FakeClock,
    Item,
    ListSink,
    ListSource,
    Marker,
    SinkRecord,
    Tick,
    run,
)

CFG = ProcessorConfig(
    first_fit_after=200, refit_every=400, swap_delay=50, warmup_events=150, window_size=100, n_trees=10,
    height=8, iforest_trees=30, calibration_window=1000, refresh_every=100, similar_every=100,
    checkpoint_every_events=300, checkpoint_every_seconds=0,
)  # fmt: skip
BAD: list[Item] = [
    b"{oops",
    b"[]",
    (b"card-1", b'{"event_id": "x", "card_id": "c", "ts": 0, "amount": "NaN"}', 1767225600000),
]
BAD_AT = {120: 0, 430: 1, 610: 2}  # input offset -> which bad record
SEED = 2  # a stream that alerts before offset 700 and after it, which the EOF and ABORT tests need


def records() -> list[Item]:
    """900 records, 3 of them bad; alerts at offsets 511, 573, 644, 798, 878 and after."""
    good: list[Item] = [*generate_transactions(897, seed=SEED)]
    for offset, which in sorted(BAD_AT.items()):
        good.insert(offset, BAD[which])
    return good


@pytest.fixture(scope="module")
def reference() -> ListSink:
    """What an uninterrupted run gives."""
    sink = ListSink()
    run(CFG, ListSource(records()), sink)
    kinds = sink.by_kind()
    assert all(kinds[kind] for kind in ("alert", "recommendation", "neighbours", "dead-letter")), sink
    return sink


def source_with(*markers: tuple[int, Marker]) -> ListSource:
    items = records()
    for offset, marker in sorted(markers, key=lambda m: m[0], reverse=True):
        items.insert(offset, marker)
    return ListSource(items)


def test_eof_stops_the_run_and_the_next_run_continues_after_it(reference: ListSink, tmp_path: Path) -> None:
    source, sink = source_with((700, EOF)), ListSink()
    first = run(CFG, source, sink, state_dir=tmp_path)
    assert first.events == 697 and source.committed == 700 and first.dead_letters == 3
    assert 0 < first.alerts == len(sink.alerts) < len(reference.alerts)
    # every 300 events (at offset 400: one record was bad), and at the end of the input
    assert [int(p.stem) for p in list_checkpoints(tmp_path, "events-0")] == [700, 400]

    second = run(CFG, source, sink, state_dir=tmp_path)
    assert second.restored == 1 and second.replayed == 0
    assert second.events == 200 and source.committed == 900
    assert sink.by_kind() == reference.by_kind()

    third = run(CFG, source, sink, state_dir=tmp_path)  # nothing new: nothing emitted twice
    assert third.events == 0 and third.restored == 1
    assert sink.by_kind() == reference.by_kind()


@pytest.mark.parametrize("with_state", [True, False], ids=["checkpoints", "rebuild"])
@pytest.mark.parametrize(
    "aborts",
    [(750,), (700,), (450, 820)],
    ids=["mid-batch", "at-a-commit", "twice"],
)
def test_abort_then_rerun_gives_what_an_uninterrupted_run_gives(
    reference: ListSink, tmp_path: Path, with_state: bool, aborts: tuple[int, ...]
) -> None:
    state_dir = tmp_path if with_state else None
    source, sink = source_with(*[(offset, ABORT) for offset in aborts]), ListSink()
    for offset in aborts:
        with pytest.raises(Aborted) as caught:
            run(CFG, source, sink, state_dir=state_dir)
        assert caught.value.offset == offset and caught.value.committed == offset // 100 * 100
        assert source.committed == offset // 100 * 100 and sink.pending == 0
        assert f"ABORT at offset {offset} of events-0" in str(caught.value)
        # What was committed is exactly what a run that stopped cleanly there gives.
        upto = ListSink()
        run(CFG, ListSource([*records()[: source.committed], EOF]), upto)
        assert sink.by_kind() == upto.by_kind()
    stats = run(CFG, source, sink, state_dir=state_dir)
    assert stats.restored == (1 if with_state else 0)
    last_commit = aborts[-1] // 100 * 100
    if with_state:
        assert 0 <= stats.replayed < last_commit  # from the checkpoint at or before the commit
    else:
        assert stats.replayed == last_commit  # from the start: the source keeps every record
    assert sink.by_kind() == reference.by_kind()
    alert_ids = [a.event_id for a in sink.alerts]
    assert len(alert_ids) == len(set(alert_ids)) > 0
    assert sorted(d.source_offset for d in sink.dead_letters) == sorted(BAD_AT)


def test_bad_records_land_in_the_dead_letters_with_their_reasons_and_the_run_carries_on(
    reference: ListSink,
) -> None:
    sink = ListSink()
    stats = run(CFG, ListSource(records()), sink)
    assert stats.events == 897 and stats.dead_letters == 3
    assert dict(stats.bad_records) == {"json": 1, "not-object": 1, "not-numeric": 1}
    letters = sink.dead_letters
    assert [(d.source_offset, d.reason, d.stage) for d in letters] == [
        (120, "json", "decode"),
        (430, "not-object", "decode"),
        (610, "not-numeric", "decode"),
    ]
    assert letters[0].value == b"{oops" and letters[0].key is None
    assert letters[2].key == b"card-1" and letters[2].source_timestamp_ms == 1767225600000
    assert "amount" in letters[2].message
    for record in sink.by_kind()["dead-letter"]:  # the bytes a dead-letter topic would hold
        assert DeadLetter.from_record(record.key, record.value, record.headers) == record.payload
    # The bad records never reach the models: the outputs are a clean stream's.
    clean = ListSink()
    run(CFG, ListSource(generate_transactions(897, seed=SEED)), clean)
    for kind in ("alert", "recommendation", "neighbours"):
        assert sink.by_kind()[kind] == clean.by_kind()[kind]
    assert sink.by_kind() == reference.by_kind()


def test_the_fake_clock_drives_time_based_checkpoints(tmp_path: Path) -> None:
    cfg = dataclasses.replace(CFG, checkpoint_every_events=0, checkpoint_every_seconds=10)
    items = records()[:700]

    still = ListSource([*items, ABORT])
    with pytest.raises(Aborted):
        run(cfg, still, ListSink(), state_dir=tmp_path / "still")
    assert list_checkpoints(tmp_path / "still", "events-0") == []

    ticking = ListSource([*items[:300], Tick(6), *items[300:500], Tick(6), *items[500:], ABORT])
    clock = FakeClock(100.0)
    with pytest.raises(Aborted) as caught:
        run(cfg, ticking, ListSink(), state_dir=tmp_path / "ticking", clock=clock)
    # 6 s at offset 300 is not enough; 12 s at 500 is, at the next commit.
    assert [int(p.stem) for p in list_checkpoints(tmp_path / "ticking", "events-0")] == [600]
    assert clock.now() == 112.0 and caught.value.stats.checkpoints == 1
    assert caught.value.stats.elapsed == 12.0  # measured on the fake clock


def test_a_failed_batch_commits_nothing() -> None:
    cfg = dataclasses.replace(CFG, max_bad_ratio=0.2, bad_ratio_window=20)
    source = ListSource([*generate_transactions(250, seed=3), *[b"{oops"] * 10])
    sink = ListSink()
    with pytest.raises(TooManyBadRecords):
        run(cfg, source, sink, batch_size=100)
    assert source.committed == 200 and sink.pending == 0
    assert sink.dead_letters == [] and len(sink.recommendations) > 0
    assert {r.trigger_event_id for r in sink.recommendations} <= {
        e["event_id"] for e in generate_transactions(200, seed=3)
    }


def test_markers_and_their_errors() -> None:
    assert (repr(EOF), repr(ABORT)) == ("EOF", "ABORT") and EOF is not ABORT
    assert pickle.loads(pickle.dumps(ABORT)) is ABORT and copy.copy(EOF) is EOF
    assert issubclass(Aborted, AnomrecError)
    with pytest.raises(ValueError, match="never goes back"):
        Tick(float("nan"))
    with pytest.raises(ValueError, match="expected a finite number"):
        FakeClock().advance(-1)
    with pytest.raises(TypeError, match=r"item 1 is 3\.5, a float"):
        ListSource([b"{}", 3.5])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="item 0 is a tuple of 2"):
        ListSource([(b"k", b"{}")])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="record kind 'alerts'"):
        ListSink().add(SinkRecord("alerts", "alerts", None, b"{}"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size=0"):
        run(CFG, ListSource([]), ListSink(), batch_size=0)
    error = Aborted("stopped", offset=3, committed=2, stats=run(CFG, ListSource([]), ListSink()))
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.offset, again.committed) == ("stopped", 3, 2)
