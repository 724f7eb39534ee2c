"""The ``interactions`` feature profile: each feature on hand-made sequences, a bot burst, the state."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pytest
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.exceptions import BadRecord, ConfigError
from anomrec.streaming.features import (
    FIRST_USER_GAP,
    InteractionsProfile,
    TransactionsProfile,
    build_profile,
    make_profile,
)
from anomrec.streaming.sample import generate_interactions, inject_bot_burst

DAY = 86_400.0
HOUR = 3600.0
FIRST_GAP = math.log1p(30 * DAY)
NAMES = (
    "log_user_events",
    "log_seconds_since_user_prev",
    "log_user_count_1h",
    "log_item_count_1h",
    "item_surge",
    "item_new_user_share_1h",
    "log_item_events",
)


def run(profile: InteractionsProfile, events: Sequence[tuple[str, float, Mapping[str, Any]]]) -> np.ndarray:
    """Parse and transform ``(user, time, doc)`` events in one batch."""
    return profile.transform_many(
        [u for u, _, _ in events], [t for _, t, _ in events], [profile.parse(d) for _, _, d in events]
    )


def col(x: np.ndarray, name: str) -> list[float]:
    return x[:, NAMES.index(name)].tolist()


def on(item: str | int) -> dict[str, Any]:
    return {"item_id": item}


# -- features, worked out by hand ------------------------------------------------------------------


def test_first_event_values() -> None:
    p = InteractionsProfile()
    assert p.feature_names == NAMES
    (row,) = run(p, [("u1", 1_767_225_600.0, on("a"))]).tolist()
    assert row == [0.0, FIRST_GAP, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert FIRST_USER_GAP == FIRST_GAP == pytest.approx(14.7679407)
    assert p.n_entities == 1 and p.n_items == 1


def test_first_gap_is_a_constant_whatever_the_ttl() -> None:
    p = InteractionsProfile(ttl_seconds=3600.0)
    assert col(run(p, [("u1", 0.0, on("a"))]), "log_seconds_since_user_prev") == [FIRST_GAP]


def test_user_events_gap_and_count_in_the_last_hour() -> None:
    # u1 at 0, 600, 1800, 3600, 4000 s; u2 on the same items in between changes nothing of u1's.
    events = [
        ("u1", 0.0, on("a")),
        ("u2", 100.0, on("a")),
        ("u1", 600.0, on("b")),
        ("u1", 1800.0, on("a")),
        ("u1", 3600.0, on("c")),  # the event at 0 is exactly an hour old: out of the window
        ("u2", 3700.0, on("b")),
        ("u1", 4000.0, on("b")),
    ]
    x = run(InteractionsProfile(), events)
    u1 = [k for k, (u, _, _) in enumerate(events) if u == "u1"]
    assert [col(x, "log_user_events")[k] for k in u1] == pytest.approx([math.log1p(n) for n in range(5)])
    assert [col(x, "log_seconds_since_user_prev")[k] for k in u1] == pytest.approx(
        [FIRST_GAP, math.log1p(600), math.log1p(1200), math.log1p(1800), math.log1p(400)]
    )
    assert [math.expm1(col(x, "log_user_count_1h")[k]) for k in u1] == pytest.approx([0, 1, 2, 2, 3])
    # u2: first event, then 3600 s later, when its event at 100 s has just left the hour.
    assert col(x, "log_seconds_since_user_prev")[5] == pytest.approx(math.log1p(3600))
    assert col(x, "log_user_count_1h")[5] == 0.0
    assert col(x, "log_user_events")[5] == pytest.approx(math.log1p(1))


def test_item_counts_surge_and_new_user_share() -> None:
    p = InteractionsProfile(new_user_events=2)
    events = [
        ("old", 0.0, on("y")),
        ("old", 10.0, on("y")),
        ("old", 100.0, on("x")),  # x's first event; "old" has 2 earlier events: not new
        ("n1", 200.0, on("x")),  # new user
        ("n2", 300.0, on("x")),  # new user
        ("old", 3700.0, on("x")),  # the event at 100 s has left the hour
        ("old", 10 * HOUR + 100.0, on("x")),  # a quiet hour, nine hours after x was first seen
    ]
    x = run(p, events)[2:]
    assert [math.expm1(v) for v in col(x, "log_item_events")] == pytest.approx([0, 1, 2, 3, 4])
    assert [math.expm1(v) for v in col(x, "log_item_count_1h")] == pytest.approx([0, 1, 2, 2, 0])
    assert col(x, "item_new_user_share_1h") == pytest.approx([0.0, 0.0, 1 / 2, 1.0, 0.0])
    assert col(x, "item_surge") == pytest.approx(
        [
            0.0,  # first event of the item
            math.log(2 / 1),  # 1 in the hour; nothing before it: usual rate 0
            math.log(3 / 1),
            math.log(3 / 2),  # 2 in the hour; 1 event before it, known for under an hour: floor of 1 h
            math.log(1 / (1 + 4 / 9)),  # 0 in the hour; 4 events in the 9 hours before it
        ]
    )


def test_steady_item_has_no_surge() -> None:
    # One event every ten minutes for two days, each by one of ten regulars.
    events = [(f"u{k % 10}", 600.0 * k, on("steady")) for k in range(288)]
    surge = col(run(InteractionsProfile(), events), "item_surge")
    # From six hours on: 5 earlier events in the hour against 6 an hour, log(6 / 7) in the long run.
    assert max(abs(s) for s in surge[36:]) < 0.2
    assert surge[-1] == pytest.approx(math.log(6 / (1 + 6 * 282 / 281)))


def test_out_of_order_events_count_as_at_the_latest_time() -> None:
    events = [
        ("u1", 1000.0, on("a")),
        ("u1", 5000.0, on("a")),
        ("u1", 2000.0, on("a")),  # late: as if at 5000 s
        ("u1", 5500.0, on("a")),
    ]
    x = run(InteractionsProfile(), events)
    assert col(x, "log_seconds_since_user_prev")[1:] == pytest.approx(
        [math.log1p(4000), 0.0, math.log1p(500)]
    )
    assert [math.expm1(v) for v in col(x, "log_user_count_1h")] == pytest.approx([0, 0, 1, 2])
    assert [math.expm1(v) for v in col(x, "log_item_count_1h")] == pytest.approx([0, 0, 1, 2])
    assert np.isfinite(x).all()


def test_a_bot_burst_stands_out() -> None:
    """2,000 interactions of 100 users with 30 items over five days, then 50 new accounts on one item."""
    rng = np.random.default_rng(0)
    popularity = 1 / np.arange(1, 31)
    times = np.sort(rng.uniform(0.0, 5 * DAY, 2000)).tolist()
    users = [f"u{u:03d}" for u in rng.integers(0, 100, 2000).tolist()]
    items = [f"i{i:02d}" for i in rng.choice(30, 2000, p=popularity / popularity.sum()).tolist()]
    start = times[-1] + 60.0
    bot_times = np.sort(rng.uniform(start, start + 600.0, 50)).tolist()
    p = InteractionsProfile()
    x = p.transform_many(
        users + [f"bot-{k:02d}" for k in range(50)],
        times + bot_times,
        [(i,) for i in items] + [("i10",)] * 50,  # the 11th most popular item: a few events a day
    )
    surge, share = np.array(col(x, "item_surge")), np.array(col(x, "item_new_user_share_1h"))
    normal_surge, bot_surge = surge[:2000], surge[2000:]
    normal_share, bot_share = share[:2000], share[2000:]
    assert np.median(bot_surge) > np.quantile(normal_surge, 0.99) + 1.0, (bot_surge, normal_surge)
    assert bot_surge.mean() > normal_surge.mean() + 2.5
    assert (bot_surge[10:] > normal_surge.max()).all()
    assert bot_share.mean() > 0.85 and normal_share.mean() < 0.15, (bot_share.mean(), normal_share.mean())
    assert (bot_share[10:] > 0.9).all()
    # Established users after the first day: hardly ever share an item's hour with new users.
    late = np.array(times) > DAY
    assert normal_share[late].mean() < 0.05


def test_a_generated_bot_burst_stands_out() -> None:
    """The sample stream's 20,000 interactions, and 300 bots on a rarely seen item in ten minutes."""
    events = inject_bot_burst(generate_interactions(20_000, seed=7), target_item="item-00042")
    p = InteractionsProfile()
    x = p.transform_many(
        [e["user_id"] for e in events],
        [datetime.fromisoformat(e["ts"]).timestamp() for e in events],
        [p.parse(e) for e in events],
    )
    bot = np.array([e["label"] == 1 for e in events])
    target = bot & np.array([e["item_id"] == "item-00042" for e in events])
    surge, share = np.array(col(x, "item_surge")), np.array(col(x, "item_new_user_share_1h"))
    assert surge[~bot].mean() < 0.2 and share[~bot].mean() < 0.1
    assert surge[target].mean() > 4.0 and share[target].mean() > 0.95
    # The decoy interactions with popular items stand out too, if less.
    decoy = bot & ~target
    assert surge[decoy].mean() > 1.5 and share[decoy].mean() > 0.7
    assert (x[bot, NAMES.index("log_user_events")] <= math.log1p(2)).all(), "every bot is brand new"


# -- parsing ---------------------------------------------------------------------------------------


def test_parse_takes_strings_and_integers() -> None:
    p = InteractionsProfile()
    assert p.parse({"item_id": "item-00042", "user_id": "u1"}) == ("item-00042",)
    assert p.parse({"item_id": 42}) == ("42",)
    assert p.parse({"item_id": ""}) == ("",)
    assert InteractionsProfile(item_field="sku").parse({"sku": "s-1", "item_id": 3.5}) == ("s-1",)


@pytest.mark.parametrize(
    ("doc", "reason", "words"),
    [
        ({}, "missing-field", ["'item_id'"]),
        ({"item": "a"}, "missing-field", ["'item_id'"]),
        ({"item_id": None}, "missing-field", ["'item_id'", "null"]),
        ({"item_id": 3.5}, "wrong-type", ["'item_id'", "3.5", "float", "a string or an integer"]),
        ({"item_id": True}, "wrong-type", ["'item_id'", "True", "bool"]),
        ({"item_id": ["a"]}, "wrong-type", ["'item_id'", "['a']", "list"]),
        ({"item_id": {"id": 1}}, "wrong-type", ["'item_id'", "dict"]),
    ],
)
def test_bad_records(doc: dict[str, Any], reason: str, words: list[str]) -> None:
    p = InteractionsProfile()
    run(p, [("u1", 0.0, on("a"))])
    before = p.snapshot()
    with pytest.raises(BadRecord) as info:
        p.parse(doc)
    assert info.value.reason == reason
    for word in words:
        assert word in str(info.value)
    assert p.snapshot() == before


# -- configuration ---------------------------------------------------------------------------------


def test_build_profile_from_the_settings() -> None:
    config = ProcessorConfig(
        profile="interactions", entity_field="user_id", max_entities=10, entity_ttl_seconds=3600.0
    )
    p = build_profile(config)
    assert isinstance(p, InteractionsProfile)
    assert p.item_field == "item_id" and p.new_user_events == 3
    for store in (p.entities_, p.items_):
        assert store.max_entities == 10 and store.ttl_seconds == 3600.0


def test_make_profile_options() -> None:
    p = make_profile("interactions", item_field="sku", new_user_events=5, max_entities=7, ttl_seconds=60.0)
    assert isinstance(p, InteractionsProfile)
    assert (p.item_field, p.new_user_events, p.ttl_seconds) == ("sku", 5, 60.0)
    with pytest.raises(ConfigError, match="new_user_events"):
        make_profile("interactions", new_user_events=True)


# -- bounded state ---------------------------------------------------------------------------------


def test_users_and_items_are_bounded_least_recently_used_first() -> None:
    p = InteractionsProfile(max_entities=2)
    events = [
        ("a", 0.0, on("x")),
        ("b", 1.0, on("y")),
        ("a", 2.0, on("x")),
        ("c", 3.0, on("z")),  # evicts user "b" and item "y"
        ("b", 4.0, on("y")),  # both start again
        ("a", 5.0, on("x")),  # evicted by "b" and "y" in turn: starts again, evicting "c" and "z"
    ]
    x = run(p, events)
    assert col(x, "log_seconds_since_user_prev") == pytest.approx(
        [FIRST_GAP, FIRST_GAP, math.log1p(2), FIRST_GAP, FIRST_GAP, FIRST_GAP]
    )
    assert [math.expm1(v) for v in col(x, "log_item_events")] == pytest.approx([0, 0, 1, 0, 0, 0])
    assert p.n_entities == 2 and p.n_items == 2
    assert list(p.entities_) == ["b", "a"] and list(p.items_) == ["y", "x"]
    assert p.entities_.evicted == 3 and p.items_.evicted == 3


def test_many_users_and_items_never_exceed_the_bound() -> None:
    p = InteractionsProfile(max_entities=50)
    rng = np.random.default_rng(1)
    users = [f"u{u}" for u in rng.integers(0, 400, 5000).tolist()]
    items = [(f"i{i}",) for i in rng.integers(0, 400, 5000).tolist()]
    x = p.transform_many(users, np.arange(5000.0) * 30.0, items)
    assert p.n_entities == 50 and p.n_items == 50
    assert np.isfinite(x).all()


def test_users_and_items_reset_after_the_ttl() -> None:
    p = InteractionsProfile(ttl_seconds=100.0)
    x = run(p, [("u1", 0.0, on("a")), ("u1", 50.0, on("a")), ("u1", 151.0, on("a"))])
    assert x[2].tolist() == run(InteractionsProfile(ttl_seconds=100.0), [("u1", 151.0, on("a"))])[0].tolist()
    assert p.entities_.expired == 1 and p.items_.expired == 1


# -- snapshot and restore --------------------------------------------------------------------------


def stream(n: int) -> list[tuple[str, float, dict[str, Any]]]:
    """Five users on four items, some events late, several within each hour."""
    return [(f"u{k * 7 % 5}", 900.0 * k - (k % 4) * 1000.0, on(f"i{k * 3 % 4}")) for k in range(n)]


def test_snapshot_restore_gives_identical_features() -> None:
    events = stream(80)
    original = InteractionsProfile(max_entities=4)
    run(original, events[:40])
    snap = json.loads(json.dumps(original.snapshot(), allow_nan=False))
    assert set(snap) == {"profile", "feature_names", "store", "items"}
    restored = InteractionsProfile(max_entities=4)
    restored.restore(snap)
    assert restored.snapshot() == original.snapshot()
    a, b = run(original, events[40:]), run(restored, events[40:])
    assert np.array_equal(a, b)
    # Both stores matter: a profile that lost either gives other features.
    assert not np.array_equal(a, run(InteractionsProfile(max_entities=4), events[40:]))
    users_only = InteractionsProfile(max_entities=4)
    users_only.restore({**snap, "items": {"evicted": 0, "expired": 0, "entities": []}})
    assert not np.array_equal(a, run(users_only, events[40:]))


def test_a_snapshot_is_a_copy() -> None:
    p = InteractionsProfile()
    run(p, stream(20))
    snap = p.snapshot()
    frozen = copy.deepcopy(snap)
    run(p, stream(40)[20:])
    assert snap == frozen


def test_restore_rejects_another_profiles_snapshot() -> None:
    with pytest.raises(ConfigError, match="'transactions'"):
        InteractionsProfile().restore(TransactionsProfile().snapshot())
    with pytest.raises(ConfigError, match="'interactions'"):
        TransactionsProfile().restore(InteractionsProfile().snapshot())
