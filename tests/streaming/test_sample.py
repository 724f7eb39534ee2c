"""The sample stream: deterministic, well-formed, and its fraud and habits show in the data itself.

Every property is checked on the events as a consumer sees them (no peeking at the simulation),
mostly on one 100,000-event stream with the default population.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import numpy as np
import orjson
import pytest
from anomrec.streaming.exceptions import ConfigError
from anomrec.streaming.sample import (
    BOT_BURST,
    FIELDS,
    FRAUD_TYPES,
    INTERACTION_FIELDS,
    KIND_SHARES,
    KINDS,
    generate_interactions,
    generate_transactions,
    haversine_km,
    inject_bot_burst,
    item_catalogue,
    iter_transactions,
)

N, SEED = 100_000, 7
Event = dict[str, Any]


@pytest.fixture(scope="module")
def stream() -> list[Event]:
    return generate_transactions(N, seed=SEED)


def seconds(event: Event) -> float:
    return datetime.fromisoformat(event["ts"]).timestamp()


def by_key(events: list[Event], key: str) -> dict[str, list[Event]]:
    groups: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        groups[e[key]].append(e)
    return groups


@dataclass
class Incident:
    """Consecutive fraud events of one type on one card, less than an hour apart."""

    kind: str
    events: list[Event]
    before: list[Event]  # the card's events before the incident
    previous: Event | None = field(default=None)

    @property
    def span(self) -> float:
        return seconds(self.events[-1]) - seconds(self.events[0])

    def new_merchants(self) -> bool:
        used = {e["merchant"] for e in self.before}
        return all(e["merchant"] not in used for e in self.events)


@pytest.fixture(scope="module")
def incidents(stream: list[Event]) -> dict[str, list[Incident]]:
    found: dict[str, list[Incident]] = defaultdict(list)
    for events in by_key(stream, "card_id").values():
        current: Incident | None = None
        for k, e in enumerate(events):
            if not e["label"]:
                continue
            if (
                current is not None
                and current.kind == e["fraud_type"]
                and seconds(e) - seconds(current.events[-1]) < 3600
            ):
                current.events.append(e)
            else:
                current = Incident(e["fraud_type"], [e], events[:k], events[k - 1] if k else None)
                found[current.kind].append(current)
    return found


@pytest.fixture(scope="module")
def median_amount(stream: list[Event]) -> dict[str, float]:
    honest = defaultdict(list)
    for e in stream:
        if not e["label"]:
            honest[e["user_id"]].append(e["amount"])
    return {user: float(np.median(amounts)) for user, amounts in honest.items()}


# -- determinism and shape -------------------------------------------------------------------------


def test_same_arguments_same_bytes_and_any_change_changes_them() -> None:
    def encoded(**kw: Any) -> bytes:
        return orjson.dumps(generate_transactions(5000, **{"seed": 3, "n_users": 100, **kw}))

    first = encoded()
    assert first == encoded()
    assert first == orjson.dumps(list(iter_transactions(5000, seed=3, n_users=100)))
    for change in ({"seed": 4}, {"fraud_rate": 0.02}, {"n_items": 4000}, {"n_users": 101}):
        assert encoded(**change) != first, change


def test_every_event_has_exactly_the_documented_fields(stream: list[Event]) -> None:
    ts = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
    for e in stream:
        assert tuple(e) == FIELDS, e
        assert all(isinstance(e[k], str) for k in ("event_id", "card_id", "user_id", "merchant", "item_id"))
        assert ts.fullmatch(e["ts"]), e
        assert isinstance(e["amount"], float) and e["amount"] >= 0 and round(e["amount"], 2) == e["amount"]
        for coord, limit in (("lat", 90), ("lon", 180)):
            assert isinstance(e[coord], float) and abs(e[coord]) <= limit and round(e[coord], 4) == e[coord]
        assert re.fullmatch(r"[A-Z]{2}", e["country"]), e
        assert re.fullmatch(r"item-\d{5}", e["item_id"]), e
        assert type(e["label"]) is int and e["label"] in (0, 1)
        assert (e["fraud_type"] in FRAUD_TYPES) if e["label"] else (e["fraud_type"] is None), e


def test_events_are_numbered_in_event_time_order(stream: list[Event]) -> None:
    assert [e["event_id"] for e in stream] == [f"tx-{i:07d}" for i in range(1, N + 1)]
    times = [e["ts"] for e in stream]
    assert times == sorted(times)
    assert times[0].startswith("2026-01-01T")
    assert 20 < (seconds(stream[-1]) - seconds(stream[0])) / 86_400 < 120, "weeks of history"


@pytest.mark.parametrize("rate", [0.0, 0.004, 0.01, 0.05, 0.2])
def test_share_of_fraud_events_is_the_fraud_rate(rate: float) -> None:
    events = generate_transactions(20_000, seed=5, fraud_rate=rate, n_users=400)
    share = sum(e["label"] for e in events) / len(events)
    assert abs(share - rate) <= 0.05 * rate + 1e-9, share


def test_anomaly_rate_is_an_alias_of_fraud_rate() -> None:
    assert generate_transactions(3000, anomaly_rate=0.05, n_users=80) == generate_transactions(
        3000, fraud_rate=0.05, n_users=80
    )


def test_start_sets_the_clock_and_must_be_timezone_aware() -> None:
    events = generate_transactions(300, n_users=10, start=datetime(2027, 6, 1, 12, tzinfo=UTC))
    assert events[0]["ts"] >= "2027-06-01T12:00:00.000Z" and events[0]["ts"] < "2027-06-02"
    with pytest.raises(ConfigError, match="has no timezone"):
        generate_transactions(10, start=datetime(2027, 6, 1))


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"n": -1}, "n=-1 is out of range: expected a whole number >= 0"),
        ({"n": 10, "fraud_rate": 1.0}, "fraud_rate=1.0 is out of range: expected a share in [0, 1)"),
        ({"n": 10, "fraud_rate": -0.1}, "fraud_rate=-0.1"),
        ({"n": 10, "n_users": 0}, "n_users=0"),
        ({"n": 10, "n_items": 0}, "n_items=0"),
        ({"n": 10, "seed": -3}, "seed=-3"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as info:
        generate_transactions(**kwargs)
    assert says in str(info.value)


def test_tiny_and_degenerate_streams_still_work() -> None:
    assert generate_transactions(0) == []
    for n, kw in [(1, {}), (10, {"fraud_rate": 0.5}), (60, {"n_users": 1, "n_items": 1, "fraud_rate": 0.3})]:
        events = generate_transactions(n, **kw)
        assert len(events) == n
        assert sum(e["label"] for e in events) == round(kw.get("fraud_rate", 0.01) * n)


# -- the fraud patterns ----------------------------------------------------------------------------


def test_every_fraud_pattern_occurs(stream: list[Event], incidents: dict[str, list[Incident]]) -> None:
    events = Counter(e["fraud_type"] for e in stream if e["label"])
    assert set(events) == set(FRAUD_TYPES)
    assert all(events[kind] >= 50 for kind in FRAUD_TYPES), events
    assert all(len(incidents[kind]) >= 30 for kind in FRAUD_TYPES), {k: len(v) for k, v in incidents.items()}


def test_card_testing_is_a_burst_of_tiny_amounts_at_new_merchants(
    incidents: dict[str, list[Incident]],
) -> None:
    for burst in incidents["card-testing"]:
        assert 5 <= len(burst.events) <= 20, burst.events
        assert all(0.5 <= e["amount"] <= 5.0 for e in burst.events), burst.events
        assert burst.span <= 10 * 60, burst.span
        assert burst.new_merchants(), burst.events
        assert len({e["merchant"] for e in burst.events}) == len(burst.events)


def test_impossible_travel_outruns_an_airliner(incidents: dict[str, list[Incident]]) -> None:
    for incident in incidents["impossible-travel"]:
        (event,) = incident.events
        before = incident.previous
        assert before is not None and before["label"] == 0, "it follows an honest purchase"
        km = haversine_km(before["lat"], before["lon"], event["lat"], event["lon"])
        hours = (seconds(event) - seconds(before)) / 3600
        assert km > 3000 and 0 < hours <= 4, (km, hours)
        assert km / hours > 1000, (km, hours)
        assert event["country"] != before["country"]
        assert incident.new_merchants()


def test_large_purchase_is_ten_to_fifty_times_the_usual(
    incidents: dict[str, list[Incident]], median_amount: dict[str, float]
) -> None:
    ratios = []
    for incident in incidents["large-purchase"]:
        (event,) = incident.events
        ratios.append(event["amount"] / median_amount[event["user_id"]])
        assert incident.new_merchants()
    assert min(ratios) >= 10 and max(ratios) <= 51, (min(ratios), max(ratios))


def test_spree_is_big_purchases_at_new_merchants_within_the_hour(
    incidents: dict[str, list[Incident]], median_amount: dict[str, float]
) -> None:
    for spree in incidents["new-merchant-spree"]:
        assert 3 <= len(spree.events) <= 8, spree.events
        assert spree.span <= 3600
        assert spree.new_merchants() and len({e["merchant"] for e in spree.events}) == len(spree.events)
        usual = median_amount[spree.events[0]["user_id"]]
        assert all(e["amount"] >= 4 * usual for e in spree.events), (usual, spree.events)


def test_fraud_strikes_cards_with_a_history(incidents: dict[str, list[Incident]]) -> None:
    assert all(len(i.before) >= 5 for kind in FRAUD_TYPES for i in incidents[kind])


# -- honest behaviour ------------------------------------------------------------------------------


def test_honest_travel_is_far_but_never_faster_than_a_plane(
    stream: list[Event], incidents: dict[str, list[Incident]]
) -> None:
    honest = [e for e in stream if not e["label"]]
    home = {}
    for user, events in by_key(honest, "user_id").items():
        favourite = Counter(e["merchant"] for e in events).most_common(1)[0][0]
        home[user] = next(e for e in events if e["merchant"] == favourite)
    km_from_home = np.array(
        [
            haversine_km(home[e["user_id"]]["lat"], home[e["user_id"]]["lon"], e["lat"], e["lon"])
            for e in honest
        ]
    )
    away = km_from_home > 300
    assert 0.01 < away.mean() < 0.15, away.mean()
    assert len({e["user_id"] for e, a in zip(honest, away, strict=True) if a}) >= 200
    # Far-away purchases are mostly honest: distance alone is no proof of fraud.
    assert (km_from_home > 3000).sum() > 5 * len(incidents["impossible-travel"])
    for events in by_key(honest, "card_id").values():
        for before, after in pairwise(events):
            km = haversine_km(before["lat"], before["lon"], after["lat"], after["lon"])
            hours = (seconds(after) - seconds(before)) / 3600
            assert hours > 0 and km / hours < 1000, (before, after)


def test_activity_is_uneven_and_follows_the_day(stream: list[Event]) -> None:
    per_user = np.sort(np.array(list(Counter(e["user_id"] for e in stream).values())))[::-1]
    assert per_user[: len(per_user) // 10].sum() > 0.3 * per_user.sum(), "a few users shop a lot"
    assert np.median(per_user) < per_user.mean()
    # European shoppers (UTC+0 to +2): quiet at night, busy by day.
    hours = Counter(int(e["ts"][11:13]) for e in stream if -10 < e["lon"] < 25 and e["lat"] > 35)
    night, day = sum(hours[h] for h in (1, 2, 3, 4)), sum(hours[h] for h in (10, 11, 12, 13))
    assert night < day / 5, (night, day)


def test_items_have_a_long_tail(stream: list[Event]) -> None:
    sold = Counter(e["item_id"] for e in stream if not e["label"])
    counts = np.sort(np.array(list(sold.values())))[::-1]
    assert counts[:500].sum() > 0.5 * counts.sum(), "the top 10% of 5,000 items sell most"
    assert len(sold) > 2500, "yet much of the catalogue sells"
    assert (counts <= 2).sum() > 500, "and many items sell only once or twice"


def test_users_buy_mostly_in_their_categories_and_buy_again(stream: list[Event]) -> None:
    category = item_catalogue(5000, seed=SEED).category
    honest = [e for e in stream if not e["label"]]

    def concentration(items_of: dict[str, list[int]]) -> tuple[float, float]:
        top3, again = [], []
        for items in items_of.values():
            if len(items) >= 20:
                cats = Counter(category[items].tolist())
                top3.append(sum(c for _, c in cats.most_common(3)) / len(items))
                again.append(1 - len(set(items)) / len(items))
        return float(np.median(top3)), float(np.median(again))

    items_of: dict[str, list[int]] = defaultdict(list)
    for e in honest:
        items_of[e["user_id"]].append(int(e["item_id"][5:]))
    top3, again = concentration(items_of)
    # The same purchases with items shuffled between users: what no preference would look like.
    shuffled = np.random.default_rng(0).permutation([int(e["item_id"][5:]) for e in honest]).tolist()
    control: dict[str, list[int]] = defaultdict(list)
    for e, item in zip(honest, shuffled, strict=True):
        control[e["user_id"]].append(item)
    top3_control, again_control = concentration(control)
    assert top3 > 0.8 and top3 - top3_control > 0.25, (top3, top3_control)
    assert again > 0.2 and again - again_control > 0.1, (again, again_control)


# -- interactions ----------------------------------------------------------------------------------

N_INTERACTIONS, N_USERS, N_ITEMS = 20_000, 500, 2000


@pytest.fixture(scope="module")
def interactions() -> list[Event]:
    return generate_interactions(N_INTERACTIONS, seed=SEED)


def item_index(event: Event) -> int:
    return int(event["item_id"][5:])


def test_interactions_same_arguments_same_bytes_and_any_change_changes_them() -> None:
    def encoded(**kw: Any) -> bytes:
        return orjson.dumps(generate_interactions(3000, **{"seed": 3, "n_users": 80, "n_items": 400, **kw}))

    first = encoded()
    assert first == encoded()
    changes: list[dict[str, Any]] = [
        {"seed": 4},
        {"n_users": 81},
        {"n_items": 401},
        {"start": datetime(2026, 1, 2, tzinfo=UTC)},
        {"kinds": {"view": 0.5, "click": 0.5}},
    ]
    for change in changes:
        assert encoded(**change) != first, change


def test_every_interaction_has_exactly_the_documented_fields(interactions: list[Event]) -> None:
    ts = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
    for e in interactions:
        assert tuple(e) == INTERACTION_FIELDS, e
        assert re.fullmatch(r"u\d{5}", e["user_id"]) and 1 <= int(e["user_id"][1:]) <= N_USERS, e
        assert re.fullmatch(r"item-\d{5}", e["item_id"]) and item_index(e) < N_ITEMS, e
        assert e["kind"] in KINDS and ts.fullmatch(e["ts"]), e
        assert type(e["label"]) is int and e["label"] == 0 and e["fraud_type"] is None, e
    assert [e["event_id"] for e in interactions] == [f"ix-{i:07d}" for i in range(1, N_INTERACTIONS + 1)]


def test_interactions_are_in_time_order_over_a_few_days(interactions: list[Event]) -> None:
    times = [e["ts"] for e in interactions]
    assert all(a <= b for a, b in pairwise(times))
    assert times[0].startswith("2026-01-01T")
    assert 2 < (seconds(interactions[-1]) - seconds(interactions[0])) / 86_400 < 6


def test_kinds_follow_their_shares(interactions: list[Event]) -> None:
    counts = Counter(e["kind"] for e in interactions)
    shares = [counts[k] / N_INTERACTIONS for k in KINDS]
    assert shares == sorted(shares, reverse=True), shares
    for kind, share in zip(KINDS, shares, strict=True):
        assert share == pytest.approx(KIND_SHARES[kind], abs=0.015), (kind, share)
    only = generate_interactions(500, n_users=20, kinds={"like": 1, "skip": 0})
    assert {e["kind"] for e in only} == {"like"}


def test_users_browse_in_sessions_over_several_days(interactions: list[Event]) -> None:
    gaps, days = [], []
    for events in by_key(interactions, "user_id").values():
        t = [seconds(e) for e in events]
        gaps += [b - a for a, b in pairwise(t)]
        if len(events) >= 20:
            days.append(len({e["ts"][:10] for e in events}))
    gaps_a = np.array(gaps)
    assert np.median(gaps_a) < 120, "most interactions follow another within minutes"
    assert (gaps_a > 10 * 60).mean() > 0.1, "and sessions are hours apart"
    assert np.median(days) >= 3, "active users come back on several days"
    per_user = np.sort(np.array(list(Counter(e["user_id"] for e in interactions).values())))[::-1]
    assert per_user[: len(per_user) // 10].sum() > 0.25 * per_user.sum(), "a few users do a lot"


def test_interactions_follow_the_day(interactions: list[Event]) -> None:
    hours = Counter(int(e["ts"][11:13]) for e in interactions)
    night, day = sum(hours[h] for h in (1, 2, 3)), sum(hours[h] for h in (12, 13, 14))
    assert night < day / 5, (night, day)


def test_users_interact_mostly_in_their_categories(interactions: list[Event]) -> None:
    category = item_catalogue(N_ITEMS, seed=SEED).category

    def top3_share(items_of: dict[str, list[int]]) -> float:
        shares = []
        for items in items_of.values():
            if len(items) >= 20:
                cats = Counter(category[items].tolist())
                shares.append(sum(c for _, c in cats.most_common(3)) / len(items))
        return float(np.median(shares))

    items_of: dict[str, list[int]] = defaultdict(list)
    for e in interactions:
        items_of[e["user_id"]].append(item_index(e))
    shuffled = np.random.default_rng(0).permutation([item_index(e) for e in interactions]).tolist()
    control: dict[str, list[int]] = defaultdict(list)
    for e, item in zip(interactions, shuffled, strict=True):
        control[e["user_id"]].append(item)
    taste, no_taste = top3_share(items_of), top3_share(control)
    assert taste > 0.8 and taste - no_taste > 0.35, (taste, no_taste)
    counts = np.sort(np.array(list(Counter(e["item_id"] for e in interactions).values())))[::-1]
    assert counts[: N_ITEMS // 10].sum() > 0.4 * counts.sum(), "a tenth of the items get 40% or more"


def test_an_item_item_recommender_beats_chance_and_popularity(interactions: list[Event]) -> None:
    """Next item from the items seen right before or after the last one, trained on the first 80%."""
    cut = int(0.8 * N_INTERACTIONS)
    together: dict[str, Counter[str]] = defaultdict(Counter)
    last: dict[str, str] = {}
    for e in interactions[:cut]:
        user, item = e["user_id"], e["item_id"]
        if user in last and last[user] != item:
            together[last[user]][item] += 1
            together[item][last[user]] += 1
        last[user] = item
    popular = {item for item, _ in Counter(e["item_id"] for e in interactions[:cut]).most_common(10)}
    hits = popular_hits = tried = 0
    for e in interactions[cut:]:
        user, item = e["user_id"], e["item_id"]
        if user in last and last[user] != item:
            tried += 1
            hits += item in {i for i, _ in together[last[user]].most_common(10)}
            popular_hits += item in popular
        last[user] = item
    assert tried > 2000
    hit_rate, popular_rate = hits / tried, popular_hits / tried
    assert hit_rate > 3 * popular_rate and hit_rate > 0.25, (hit_rate, popular_rate, 10 / N_ITEMS)


def test_interactions_use_the_transactions_catalogue() -> None:
    bought = {e["item_id"] for e in generate_transactions(3000, seed=2, n_users=50, n_items=300)}
    seen = {e["item_id"] for e in generate_interactions(3000, seed=2, n_users=50, n_items=300)}
    assert len(bought & seen) > 0.5 * len(bought), "the same catalogue, the same popular items"


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"n": -1}, "n=-1 is out of range: expected a whole number >= 0"),
        ({"n": 10, "n_users": 0}, "n_users=0"),
        ({"n": 10, "n_items": 0}, "n_items=0"),
        ({"n": 10, "seed": -3}, "seed=-3"),
        ({"n": 10, "start": datetime(2026, 1, 1)}, "has no timezone"),
        ({"n": 10, "kinds": {}}, "kinds={}: expected a mapping of kind names to shares"),
        ({"n": 10, "kinds": {"view": 0}}, "kinds={'view': 0}"),
        ({"n": 10, "kinds": {"view": float("nan")}}, "kinds={'view': nan}"),
        ({"n": 10, "kinds": {"view": True}}, "kinds={'view': True}"),
        ({"n": 10, "kinds": {"": 1.0}}, "kinds={'': 1.0}"),
        ({"n": 10, "kinds": ["view"]}, "kinds=['view']"),
    ],
)
def test_interactions_bad_arguments_name_the_argument(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as info:
        generate_interactions(**kwargs)
    assert says in str(info.value)


def test_tiny_interaction_streams_still_work() -> None:
    assert generate_interactions(0) == []
    for n, kw in [(1, {}), (50, {"n_users": 1, "n_items": 1}), (200, {"n_users": 3, "n_items": 2})]:
        events = generate_interactions(n, **kw)
        assert len(events) == n and all(tuple(e) == INTERACTION_FIELDS for e in events)


# -- the bot burst ---------------------------------------------------------------------------------

TARGET = "item-00042"


@pytest.fixture(scope="module")
def burst(interactions: list[Event]) -> list[Event]:
    return inject_bot_burst(interactions, target_item=TARGET)


def test_a_burst_is_new_accounts_on_the_target_and_popular_items(
    interactions: list[Event], burst: list[Event]
) -> None:
    bots = [e for e in burst if e["label"]]
    assert len(burst) == N_INTERACTIONS + 300 * 3 and len(bots) == 900
    assert all(tuple(e) == INTERACTION_FIELDS and e["fraud_type"] == BOT_BURST for e in bots)
    by_bot = by_key(bots, "user_id")
    assert sorted(by_bot) == [f"bot-{b:05d}" for b in range(1, 301)]
    assert not set(by_bot) & {e["user_id"] for e in interactions}, "brand-new accounts"
    popular = {i for i, _ in Counter(e["item_id"] for e in interactions).most_common(20)}
    for events in by_bot.values():
        items = [e["item_id"] for e in events]
        # Each bot links the target to two popular items: the co-occurrence a recommender learns.
        assert items.count(TARGET) == 1 and len(set(items)) == 3, items
        assert set(items) - {TARGET} <= popular
        assert {e["kind"] for e in events if e["item_id"] == TARGET} == {"click"}


def test_a_burst_lasts_ten_minutes_from_70_percent_of_the_stream(
    interactions: list[Event], burst: list[Event]
) -> None:
    at = seconds(interactions[int(0.7 * (N_INTERACTIONS - 1))])
    times = [seconds(e) for e in burst if e["label"]]
    assert at <= min(times) and max(times) <= at + 600
    assert max(times) - min(times) > 500, "spread over the whole burst"
    assert all(a["ts"] <= b["ts"] for a, b in pairwise(burst))
    assert len({e["event_id"] for e in burst}) == len(burst)
    # The honest events are all there, unchanged and in order.
    assert [e for e in burst if not e["label"]] == interactions


def test_a_burst_copies_its_input_and_is_deterministic(interactions: list[Event]) -> None:
    events = interactions[:3000]
    before = orjson.dumps(events)
    mixed = inject_bot_burst(events, target_item=TARGET, n_bots=20)
    assert orjson.dumps(events) == before
    assert mixed[0] is not events[0]
    assert mixed == inject_bot_burst(events, target_item=TARGET, n_bots=20)
    assert mixed != inject_bot_burst(events, target_item=TARGET, n_bots=20, seed=12)


def test_burst_options() -> None:
    events = generate_interactions(2000, seed=1, n_users=40, n_items=200)
    at = datetime(2026, 1, 2, 12, tzinfo=UTC)
    mixed = inject_bot_burst(
        events, target_item="x", n_bots=5, at=at, duration_seconds=30.0, extra_items=0, seed=3
    )
    bots = [e for e in mixed if e["label"]]
    assert [e["item_id"] for e in bots] == ["x"] * 5
    assert all("2026-01-02T12:00:00.000Z" <= e["ts"] <= "2026-01-02T12:00:30.000Z" for e in bots)
    # A second burst continues the numbering: ids stay unique.
    twice = inject_bot_burst(mixed, target_item="y", n_bots=5, extra_items=1)
    assert len({e["event_id"] for e in twice}) == len(twice) == 2000 + 5 + 10
    assert {e["user_id"] for e in twice if e["item_id"] == "y"} == {f"bot-{b:05d}" for b in range(6, 11)}


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"n_bots": 0}, "n_bots=0 is out of range"),
        ({"extra_items": -1}, "extra_items=-1"),
        ({"extra_items": 5}, "extra_items=5 but the events hold only 2 items besides 'a'"),
        ({"duration_seconds": 0}, "duration_seconds=0: expected a positive number"),
        ({"at": datetime(2026, 1, 1)}, "has no timezone"),
        ({"target_item": ""}, "target_item=''"),
        ({"seed": -1}, "seed=-1"),
    ],
)
def test_burst_bad_arguments(kwargs: dict[str, Any], says: str) -> None:
    events = [
        {"event_id": f"e{i}", "user_id": "u", "item_id": "abc"[i % 3], "ts": f"2026-01-01T00:00:0{i}Z"}
        for i in range(6)
    ]
    with pytest.raises(ConfigError) as info:
        inject_bot_burst(events, **{"target_item": "a", **kwargs})
    assert says in str(info.value)
    with pytest.raises(ConfigError, match="events is empty"):
        inject_bot_burst([], target_item="a")
