"""The recommender task in the stream: gating, debouncing in event time, neighbour lists."""

from __future__ import annotations

import json
from itertools import pairwise

import numpy as np
import pytest
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.events import Event, EventDecoder, Interaction
from anomrec.streaming.exceptions import BadRecord
from anomrec.streaming.recommender import RecommenderTask


def interactions(n: int, *, seed: int = 0, n_users: int = 40, n_items: int = 60) -> list[Event]:
    rng = np.random.default_rng(seed)
    t = 0.0
    events = []
    for e in range(n):
        t += float(rng.exponential(5.0))
        user = f"u{int(rng.integers(n_users))}"
        item = f"i{int(rng.integers(n_items))}"
        events.append(Event(str(e), user, t, (), interaction=Interaction(user, item)))
    return events


def run(config: ProcessorConfig, events: list[Event], alerted: np.ndarray, batch: int) -> RecommenderTask:
    task = RecommenderTask(config)
    task.updates = []  # type: ignore[attr-defined]
    task.neighbour_lists = []  # type: ignore[attr-defined]
    for start in range(0, len(events), batch):
        step = task.process(events[start : start + batch], alerted[start : start + batch])
        task.updates += step.updates  # type: ignore[attr-defined]
        task.neighbour_lists += step.neighbours  # type: ignore[attr-defined]
    return task


@pytest.fixture(scope="module")
def stream() -> list[Event]:
    return interactions(3000)


def test_at_most_one_update_per_user_per_interval_and_only_when_the_list_changed() -> None:
    stream = interactions(3000, n_users=8)  # a user's events ~40 s apart: the interval bites
    config = ProcessorConfig(debounce_seconds=120.0, top_n=5)
    task = run(config, stream, np.zeros(len(stream), bool), batch=100)
    by_user: dict[str, list] = {}
    for update in task.updates:
        by_user.setdefault(update.user, []).append(update)
    assert len(by_user) == 8
    for updates in by_user.values():
        times = [u.event_time for u in updates]
        assert all(b >= a + 120.0 for a, b in pairwise(times))
        lists = [[i for i, _ in u.items] for u in updates]
        assert all(a != b for a, b in pairwise(lists))
    # Without debouncing, a user's every changed list goes out: many more updates.
    undebounced = run(
        ProcessorConfig(debounce_seconds=0.0, top_n=5), stream, np.zeros(len(stream), bool), 100
    )
    assert len(undebounced.updates) > 1.5 * len(task.updates)


def test_lists_exclude_what_the_user_had_interacted_with_by_then(stream: list[Event]) -> None:
    task = run(ProcessorConfig(debounce_seconds=30.0), stream, np.zeros(len(stream), bool), batch=250)
    by_id = {e.event_id: i for i, e in enumerate(stream)}
    for update in task.updates:
        upto = by_id[update.trigger_event_id]
        seen = {e.interaction.item for e in stream[: upto + 1] if e.entity == update.user}  # type: ignore[union-attr]
        assert not seen & {item for item, _ in update.items}
        assert update.event_time >= stream[upto].event_time


def test_updates_do_not_depend_on_how_the_stream_is_batched(stream: list[Event]) -> None:
    config = ProcessorConfig(debounce_seconds=60.0, similar_every=500)
    alerted = np.zeros(len(stream), bool)
    one = run(config, stream, alerted, batch=len(stream))
    many = run(config, stream, alerted, batch=37)
    assert [u.to_dict() for u in one.updates] == [u.to_dict() for u in many.updates]
    assert [n.to_dict() for n in one.neighbour_lists] == [n.to_dict() for n in many.neighbour_lists]


def test_alerted_interactions_are_gated_and_counted_unless_gating_is_off(stream: list[Event]) -> None:
    alerted = np.zeros(len(stream), bool)
    alerted[::10] = True
    gated = run(ProcessorConfig(), stream, alerted, batch=500)
    assert gated.gated == 300 and gated.learned == 2700
    assert gated.model.data.learned == 2700
    open_ = run(ProcessorConfig(reco_gating=False), stream, alerted, batch=500)
    assert open_.gated == 0 and open_.learned == 3000


def test_neighbour_lists_go_out_every_similar_every_events_for_the_items_learned_since(
    stream: list[Event],
) -> None:
    task = run(ProcessorConfig(similar_every=1000), stream, np.zeros(len(stream), bool), batch=300)
    assert [n.event_time for n in task.neighbour_lists][:1] == [stream[999].event_time]
    times = sorted({n.event_time for n in task.neighbour_lists})
    assert times == [stream[999].event_time, stream[1999].event_time, stream[2999].event_time]
    first = [n for n in task.neighbour_lists if n.event_time == times[0]]
    assert {n.item for n in first} == {e.interaction.item for e in stream[:1000]}  # type: ignore[union-attr]
    assert all(n.neighbours and n.item not in {i for i, _ in n.neighbours} for n in first)


def test_low_ratings_are_not_positives_for_implicit_models_but_are_ratings_for_biased_mf() -> None:
    events = [
        Event(str(k), f"u{k % 5}", float(k), (), interaction=Interaction(f"u{k % 5}", f"i{k % 7}", rating=r))
        for k, r in enumerate([5.0, 1.0, 4.0, 2.5, 4.5] * 20)
    ]
    implicit = run(ProcessorConfig(), events, np.zeros(100, bool), batch=100)
    assert implicit.learned == 60
    explicit = run(ProcessorConfig(reco_model="biased-mf"), events, np.zeros(100, bool), batch=100)
    assert explicit.learned == 100
    assert explicit.model.global_mean == pytest.approx(3.4)  # type: ignore[attr-defined]


def test_the_decoder_reads_interactions_and_names_what_is_wrong() -> None:
    decoder = EventDecoder(ProcessorConfig(profile="generic", features=("amount",)))
    base = {"event_id": 1, "card_id": "c", "ts": 0, "amount": 1.0}
    event = decoder.from_dict({**base, "user_id": 7, "item_id": "x", "kind": "purchase"})
    assert event.interaction == Interaction("7", "x", 5.0, None, "purchase")
    assert decoder.from_dict(base).interaction is None  # no user or item: scored, not learned
    with pytest.raises(BadRecord, match=r"'kind' is 'like': expected one of view, click"):
        decoder.from_dict({**base, "user_id": "u", "item_id": "x", "kind": "like"})
    with pytest.raises(BadRecord, match=r"'item_id' is 3\.5"):
        decoder.from_dict({**base, "user_id": "u", "item_id": 3.5})
    with pytest.raises(BadRecord, match="'rating' is 'high'"):
        decoder.from_dict({**base, "user_id": "u", "item_id": "x", "rating": "high"})
    off = EventDecoder(ProcessorConfig(profile="generic", features=("amount",), recommend=False))
    assert off.from_dict({**base, "user_id": "u", "item_id": "x"}).interaction is None


def test_a_model_without_neighbours_publishes_lists_but_no_neighbour_lists(stream: list[Event]) -> None:
    task = run(
        ProcessorConfig(reco_model="popularity", similar_every=100), stream, np.zeros(len(stream), bool), 500
    )
    assert task.updates and task.neighbour_lists == []
    assert task.model.similar_items("i1") == []


def test_a_restored_task_publishes_exactly_what_an_uninterrupted_one_does(stream: list[Event]) -> None:
    config = ProcessorConfig(debounce_seconds=90.0, similar_every=700)
    alerted = np.zeros(len(stream), bool)
    alerted[::13] = True
    whole = run(config, stream, alerted, batch=250)

    first = RecommenderTask(config)
    head = first.process(stream[:1234], alerted[:1234])
    arrays, meta = first.snapshot()
    second = RecommenderTask(config)
    second.restore(dict(arrays), json.loads(json.dumps(meta)))  # through JSON, as a checkpoint would
    tail = second.process(stream[1234:], alerted[1234:])
    assert [u.to_dict() for u in head.updates + tail.updates] == [u.to_dict() for u in whole.updates]
    assert [n.to_dict() for n in head.neighbours + tail.neighbours] == [
        n.to_dict() for n in whole.neighbour_lists
    ]
    assert (second.learned, second.gated) == (whole.learned, whole.gated)


def test_events_without_a_user_or_item_are_counted_not_learned() -> None:
    events = [Event(str(k), "c", float(k), (), interaction=None) for k in range(5)]
    events.append(Event("5", "u", 5.0, (), interaction=Interaction("u", "x")))
    step = RecommenderTask(ProcessorConfig()).process(events, np.zeros(6, bool))
    assert (step.not_interactions, step.learned) == (5, 1)


def test_a_restored_task_with_users_being_forgotten_publishes_what_an_uninterrupted_one_does(
    stream: list[Event],
) -> None:
    """40 users through 9 slots: forgetting, and the task's dropped lists, survive a restore."""
    config = ProcessorConfig(debounce_seconds=90.0, similar_every=700, max_users=9)
    alerted = np.zeros(len(stream), bool)
    whole = run(config, stream, alerted, batch=250)
    assert whole.model.data.evicted > 1000

    first = RecommenderTask(config)
    head = first.process(stream[:1234], alerted[:1234])
    arrays, meta = first.snapshot()
    second = RecommenderTask(config)
    second.restore(dict(arrays), json.loads(json.dumps(meta)))
    tail = second.process(stream[1234:], alerted[1234:])
    assert [u.to_dict() for u in head.updates + tail.updates] == [u.to_dict() for u in whole.updates]
    after, before = second.snapshot(), whole.snapshot()
    assert after[1] == before[1]
    for key in before[0]:
        np.testing.assert_array_equal(after[0][key], before[0][key], err_msg=key)


def test_the_task_forgets_what_it_held_of_a_forgotten_user() -> None:
    """Its last list, its debounce clock and an update it had waiting; back, it is a new user."""
    config = ProcessorConfig(debounce_seconds=100.0, max_users=2, top_n=3)
    task = RecommenderTask(config)

    def ev(i: int, user: str, item: str, t: float) -> Event:
        return Event(str(i), user, t, (), interaction=Interaction(user, item))

    events = [ev(0, "b", "x", 0.0), ev(1, "b", "y", 0.5), ev(2, "a", "x", 1.0), ev(3, "a", "z", 2.0)]
    events += [ev(4, "b", "w", 3.0), ev(5, "b", "q", 4.0)]
    step = task.process(events, np.zeros(6, bool))
    assert [(u.user, u.event_time) for u in step.updates] == [("a", 1.0), ("b", 3.0)]
    assert set(task._waiting) == {"a", "b"} and len(task._due) == 2  # both inside their interval
    step = task.process([ev(6, "c", "w", 5.0)], np.zeros(1, bool))  # a is the least recently active
    assert task.model.data.last_evicted == "a"
    assert "a" not in task._last_items and "a" not in task._last_time and "a" not in task._waiting
    assert [entry[2] for entry in task._due] == ["b"]
    assert [u.user for u in step.updates] == ["c"]
    # b's wait ends at t=103 as before (its list had not changed: nothing to publish); a comes back
    # and is published at once, as any new user.
    step = task.process([ev(7, "a", "y", 150.0)], np.zeros(1, bool))
    assert [(u.user, u.event_time) for u in step.updates] == [("a", 150.0)]
    assert task._waiting == {} and task._due == []
    assert task.model.data.last_evicted == "b"  # last active at t=4, c at t=5
    assert step.updates[0].items == task.model.rank("a", 3)
    assert "y" not in {item for item, _ in step.updates[0].items}
    assert set(task._last_items) == {"c", "a"} == set(task.model.data.user_index)
    assert set(task._last_time) == {"c", "a"}


def test_max_users_is_checked() -> None:
    from anomrec.streaming.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"max_users=0 is out of range: expected an integer in \[1, "):
        ProcessorConfig(max_users=0)
