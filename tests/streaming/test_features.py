from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from anomrec.streaming.exceptions import BadRecord, ConfigError
from anomrec.streaming.features import (
    EntityStore,
    FeatureProfile,
    GenericProfile,
    InteractionsProfile,
    NetworkProfile,
    SensorProfile,
    TransactionsProfile,
    haversine_km,
    make_profile,
)
from hypothesis import given, settings
from hypothesis import strategies as st

LN2 = math.log(2.0)
DAY = 86_400.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
PARIS = (48.857, 2.352)
NEW_YORK = (40.713, -74.006)


def run(profile: FeatureProfile, events: Sequence[tuple[str, float, Mapping[str, Any]]]) -> np.ndarray:
    """Parse and transform ``(entity, time, doc)`` events in one batch."""
    return profile.transform_many(
        [e for e, _, _ in events], [t for _, t, _ in events], [profile.parse(d) for _, _, d in events]
    )


def col(profile: FeatureProfile, x: np.ndarray, name: str) -> list[float]:
    return x[:, profile.feature_names.index(name)].tolist()


# --------------------------------------------------------------------------------------------------
# transactions


def test_transactions_first_event_values() -> None:
    p = TransactionsProfile(hour="utc")
    doc = {"amount": 20, "lat": PARIS[0], "lon": PARIS[1], "merchant": "bakery", "country": "FR"}
    (row,) = run(p, [("c1", T0 + 6 * 3600, doc)]).tolist()  # 06:00 UTC
    expected = {
        "log_amount": math.log1p(20),
        "amount_z": 0.0,
        "log_seconds_since_prev": math.log1p(30 * DAY),
        "log_km_beyond_reach": 0.0,
        "log_kmh_from_prev": 0.0,
        "log_count_1h": LN2,
        "log_count_1d": LN2,
        "new_merchant": 0.0,
        "new_country": 0.0,
        "log_new_merchants_1h": 0.0,
        "log_spend_1h_ratio": math.log1p(1.0),
        "hour_sin": 1.0,
        "hour_cos": 0.0,
    }
    assert p.feature_names == tuple(expected)
    assert row == pytest.approx(list(expected.values()), abs=1e-12)
    assert p.n_entities == 1


def test_first_gap_follows_the_ttl() -> None:
    p = TransactionsProfile(ttl_seconds=3600.0)
    x = run(p, [("c1", 0.0, {"amount": 1})])
    assert col(p, x, "log_seconds_since_prev") == [pytest.approx(math.log1p(3600.0))]


def test_amount_z_against_the_entity_mean_and_std() -> None:
    # log1p amounts 1 and 3 at the same time: mean 2, std 1; a third at log1p = 5 is z = 3.
    p = TransactionsProfile(amount_std_floor=0.1, z_min_events=2)
    amounts = [math.expm1(1.0), math.expm1(3.0), math.expm1(5.0)]
    x = run(p, [("c1", 100.0, {"amount": a}) for a in amounts])
    assert col(p, x, "amount_z") == pytest.approx([0.0, 0.0, 3.0])


def test_amount_z_decays_older_amounts_by_the_half_life() -> None:
    # Weights at t = H: 0.5 for the first amount, 1 for the second; mean 7/3, variance 8/9.
    half = 1000.0
    p = TransactionsProfile(amount_half_life_seconds=half, amount_std_floor=0.1, z_min_events=2)
    mean, std = 7 / 3, math.sqrt(8 / 9)
    las = [1.0, 3.0, mean + 2 * std]
    x = run(p, [("c1", t, {"amount": math.expm1(la)}) for t, la in zip([0.0, half, half], las, strict=True)])
    assert col(p, x, "amount_z") == pytest.approx([0.0, 0.0, 2.0])


def test_big_jump_uses_the_std_floor_and_the_clip() -> None:
    events = [("c1", float(t), {"amount": a}) for t, a in enumerate([10, 10, 1000])]
    jump = (math.log1p(1000) - math.log1p(10)) / 0.1  # equal amounts: std 0, floored at 0.1
    p = TransactionsProfile(amount_std_floor=0.1, z_min_events=2, z_clip=100.0)
    assert col(p, run(p, events), "amount_z")[2] == pytest.approx(jump)
    p = TransactionsProfile(amount_std_floor=0.1, z_min_events=2)
    assert col(p, run(p, events), "amount_z")[2] == 10.0
    p = TransactionsProfile(amount_std_floor=1.0, z_min_events=2, z_clip=100.0)
    assert col(p, run(p, events), "amount_z")[2] == pytest.approx(jump / 10)


def test_amount_z_waits_for_z_min_events() -> None:
    events = [("c1", 0.0, {"amount": 10}), ("c1", 1.0, {"amount": 1000})]
    p = TransactionsProfile()
    assert col(p, run(p, events), "amount_z") == [0.0, 0.0]
    p = TransactionsProfile(z_min_events=1, amount_std_floor=0.1)
    assert col(p, run(p, events), "amount_z") == [0.0, 10.0]


def test_impossible_travel() -> None:
    p = TransactionsProfile()
    km = haversine_km(*PARIS, *NEW_YORK)
    x = run(
        p,
        [
            ("c1", 0.0, {"amount": 5, "lat": PARIS[0], "lon": PARIS[1]}),
            ("c1", 1800.0, {"amount": 5, "lat": NEW_YORK[0], "lon": NEW_YORK[1]}),
        ],
    )
    # Half an hour at 900 km/h covers 450 km; the other 5,390-odd are beyond reach.
    assert math.expm1(col(p, x, "log_km_beyond_reach")[1]) == pytest.approx(km - 450.0, rel=1e-9)
    assert math.expm1(col(p, x, "log_kmh_from_prev")[1]) == pytest.approx(km / 0.5, rel=1e-9)
    assert 5800 < km < 5900


def test_a_journey_a_plane_could_make_is_within_reach() -> None:
    km = haversine_km(*PARIS, *NEW_YORK)
    hours = km / 900.0
    events = [
        ("c1", 0.0, {"amount": 5, "lat": PARIS[0], "lon": PARIS[1]}),
        ("c1", 3600.0 * (hours + 0.5), {"amount": 5, "lat": NEW_YORK[0], "lon": NEW_YORK[1]}),
        ("c2", 0.0, {"amount": 5, "lat": PARIS[0], "lon": PARIS[1]}),
        ("c2", 3600.0 * (hours - 1.0), {"amount": 5, "lat": NEW_YORK[0], "lon": NEW_YORK[1]}),
    ]
    p = TransactionsProfile()
    beyond = col(p, run(p, events), "log_km_beyond_reach")
    assert beyond[1] == 0.0
    assert math.expm1(beyond[3]) == pytest.approx(900.0, rel=1e-9)  # an hour short at 900 km/h
    p = TransactionsProfile(max_travel_kmh=500.0)
    slower = col(p, run(p, events), "log_km_beyond_reach")
    assert math.expm1(slower[1]) == pytest.approx(km - 500.0 * (hours + 0.5), rel=1e-9)


def test_travel_at_equal_times_uses_the_elapsed_floor() -> None:
    p = TransactionsProfile(min_travel_seconds=60.0)
    a = {"amount": 5, "lat": PARIS[0], "lon": PARIS[1]}
    b = {"amount": 5, "lat": NEW_YORK[0], "lon": NEW_YORK[1]}
    x = run(p, [("c1", 0.0, a), ("c1", 0.0, b), ("c1", 0.0, b)])
    km = haversine_km(*PARIS, *NEW_YORK)
    assert math.expm1(col(p, x, "log_kmh_from_prev")[1]) == pytest.approx(km * 60, rel=1e-9)
    assert math.expm1(col(p, x, "log_km_beyond_reach")[1]) == pytest.approx(km - 15.0, rel=1e-9)
    assert col(p, x, "log_km_beyond_reach")[2] == 0.0  # identical location
    assert col(p, x, "log_kmh_from_prev")[2] == 0.0


def test_travel_skips_events_without_a_location() -> None:
    p = TransactionsProfile()
    x = run(
        p,
        [
            ("c1", 0.0, {"amount": 5, "lat": PARIS[0], "lon": PARIS[1]}),
            ("c1", 3600.0, {"amount": 5}),
            ("c1", 7200.0, {"amount": 5, "lat": NEW_YORK[0], "lon": NEW_YORK[1]}),
        ],
    )
    km = haversine_km(*PARIS, *NEW_YORK)
    assert col(p, x, "log_km_beyond_reach")[1] == 0.0
    # Measured from the last located event, two hours earlier.
    assert math.expm1(col(p, x, "log_kmh_from_prev")[2]) == pytest.approx(km / 2, rel=1e-9)


def test_new_merchant_and_country_flags() -> None:
    p = TransactionsProfile()
    docs = [
        {"amount": 1, "merchant": "a", "country": "FR"},
        {"amount": 1, "merchant": "a", "country": "FR"},
        {"amount": 1, "merchant": "b", "country": "DE"},
        {"amount": 1, "merchant": "a"},
        {"amount": 1, "country": "US"},
        {"amount": 1, "merchant": 7, "country": "DE"},
        {"amount": 1, "merchant": "7"},
    ]
    x = run(p, [("c1", float(i), d) for i, d in enumerate(docs)])
    assert col(p, x, "new_merchant") == [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    assert col(p, x, "new_country") == [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]


def test_seen_merchants_are_bounded_most_recent_kept() -> None:
    p = TransactionsProfile(max_seen=2)
    merchants = ["a", "b", "a", "c", "a", "b"]  # "a" refreshed before "c" arrives, so "b" goes
    x = run(p, [("c1", float(i), {"amount": 1, "merchant": m}) for i, m in enumerate(merchants)])
    assert col(p, x, "new_merchant") == [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]


def test_counters_decay_over_event_time() -> None:
    p = TransactionsProfile()
    x = run(p, [("c1", 0.0, {"amount": 1}), ("c1", 3600.0, {"amount": 1}), ("c1", 3600.0, {"amount": 1})])
    c1h = 1 + math.exp(-1)
    c1d = 1 + math.exp(-1 / 24)
    assert col(p, x, "log_count_1h") == pytest.approx([LN2, math.log1p(c1h), math.log1p(c1h + 1)])
    assert col(p, x, "log_count_1d") == pytest.approx([LN2, math.log1p(c1d), math.log1p(c1d + 1)])


def test_gap_and_out_of_order_events() -> None:
    p = TransactionsProfile()
    events = [("c1", 1000.0, {"amount": 1}), ("c1", 1100.0, {"amount": 1}), ("c1", 500.0, {"amount": 1})]
    x = run(p, events)
    assert col(p, x, "log_seconds_since_prev")[1:] == pytest.approx([math.log1p(100), 0.0])
    # The late event counts as if at the latest time: no decay, the counter just grows.
    assert math.expm1(col(p, x, "log_count_1h")[2]) == pytest.approx(1 + math.exp(-100 / 3600) + 1)


@pytest.mark.parametrize(
    ("seconds", "angle"),
    [(0.0, 0.0), (6 * 3600.0, math.pi / 2), (18 * 3600.0, 3 * math.pi / 2), (-3600.0, 23 / 12 * math.pi)],
)
def test_hour_of_day_is_cyclic_utc(seconds: float, angle: float) -> None:
    p = TransactionsProfile(hour="utc")
    x = run(p, [("c1", T0 + seconds, {"amount": 1})])
    assert col(p, x, "hour_sin") == pytest.approx([math.sin(angle)], abs=1e-12)
    assert col(p, x, "hour_cos") == pytest.approx([math.cos(angle)], abs=1e-12)


def test_field_names_are_configurable() -> None:
    p = make_profile("transactions", amount="amt", lat="y", lon="x", merchant="shop", country="cc")
    assert p.parse({"amt": 3, "y": 1.0, "x": 2.0, "shop": "s", "cc": "FR"}) == (3.0, 1.0, 2.0, "s", "FR")
    with pytest.raises(BadRecord, match="'amt'"):
        p.parse({"amount": 3})


def test_parse_extracts_and_absent_optional_fields_are_none() -> None:
    p = TransactionsProfile()
    assert p.parse({"amount": 0}) == (0.0, None, None, None, None)
    assert p.parse({"amount": 2.5, "lat": None, "lon": None, "merchant": None}) == (
        2.5,
        None,
        None,
        None,
        None,
    )
    assert p.parse({"amount": 1, "lat": -90, "lon": 180, "merchant": 12}) == (1.0, -90.0, 180.0, "12", None)


@pytest.mark.parametrize(
    ("doc", "reason", "words"),
    [
        ({}, "missing-field", ["'amount'"]),
        ({"amount": None}, "missing-field", ["'amount'", "null"]),
        ({"amount": "12"}, "not-numeric", ["'amount'", "'12'", "str"]),
        ({"amount": True}, "not-numeric", ["'amount'", "True"]),
        ({"amount": float("nan")}, "not-finite", ["'amount'", "nan"]),
        ({"amount": float("-inf")}, "not-finite", ["'amount'", "-inf"]),
        ({"amount": -1}, "out-of-range", ["'amount'", "-1", ">= 0"]),
        ({"amount": 1e101}, "out-of-range", ["'amount'", "1e+101"]),
        ({"amount": 10**400}, "out-of-range", ["'amount'", "1000000"]),
        ({"amount": 1, "lat": 10.5}, "missing-field", ["'lat'", "10.5", "'lon'"]),
        ({"amount": 1, "lon": 10.5}, "missing-field", ["'lon'", "10.5", "'lat'"]),
        ({"amount": 1, "lat": 91, "lon": 0}, "out-of-range", ["'lat'", "91", "latitude"]),
        ({"amount": 1, "lat": 0, "lon": -181.5}, "out-of-range", ["'lon'", "-181.5", "longitude"]),
        ({"amount": 1, "lat": "48", "lon": 0}, "not-numeric", ["'lat'", "'48'"]),
        ({"amount": 1, "merchant": 3.5}, "wrong-type", ["'merchant'", "3.5", "string"]),
        ({"amount": 1, "country": ["FR"]}, "wrong-type", ["'country'", "['FR']", "list"]),
        ({"amount": 1, "merchant": False}, "wrong-type", ["'merchant'", "False"]),
    ],
)
def test_transactions_bad_records(doc: dict[str, Any], reason: str, words: list[str]) -> None:
    p = TransactionsProfile()
    with pytest.raises(BadRecord) as info:
        p.parse(doc)
    assert info.value.reason == reason
    for word in words:
        assert word in str(info.value)


def test_a_bad_record_leaves_the_state_alone() -> None:
    p = TransactionsProfile()
    run(p, [("c1", 0.0, {"amount": 5, "merchant": "a"})])
    before = p.snapshot()
    with pytest.raises(BadRecord):
        p.parse({"amount": 5, "merchant": ["b"]})
    assert p.snapshot() == before


def test_transform_many_checks_lengths() -> None:
    p = TransactionsProfile()
    with pytest.raises(ValueError, match="2 entities, 1 times"):
        p.transform_many(["a", "b"], [0.0], [(1.0, None, None, None, None)] * 2)


def test_empty_batch_has_the_right_shape() -> None:
    for p in all_profiles():
        assert p.transform_many([], [], []).shape == (0, len(p.feature_names))


# --------------------------------------------------------------------------------------------------
# network, sensor, generic


def test_network_first_event_and_follow_up() -> None:
    p = NetworkProfile()
    flow = {"bytes": 1500, "packets": 3, "duration": 0.2}
    x = run(
        p, [("h", 0.0, flow), ("h", 30.0, flow), ("h", 30.0, {"bytes": 100, "packets": 0, "duration": 0})]
    )
    assert x[0].tolist() == pytest.approx(
        [
            math.log1p(1500),
            math.log1p(3),
            math.log1p(0.2),
            math.log1p(500),
            LN2,
            math.log1p(1500 / 60),
            math.log1p(DAY),
        ]
    )
    decay = math.exp(-0.5)
    assert x[1, 4:].tolist() == pytest.approx(
        [math.log1p(decay + 1), math.log1p((1500 * decay + 1500) / 60), math.log1p(30)]
    )
    assert x[2, 3] == pytest.approx(math.log1p(100))  # no packets: bytes over one packet
    assert x[2, 4:].tolist() == pytest.approx(
        [math.log1p(decay + 2), math.log1p((1500 * decay + 1600) / 60), 0.0]
    )


def test_network_rates_follow_the_window() -> None:
    p = NetworkProfile(rate_window_seconds=120.0)
    flow = {"bytes": 1200, "packets": 1, "duration": 1}
    x = run(p, [("h", 0.0, flow), ("h", 0.0, flow)])
    assert col(p, x, "log_conn_per_min") == pytest.approx([math.log1p(0.5), math.log1p(1.0)])
    assert col(p, x, "log_bytes_per_sec") == pytest.approx([math.log1p(10), math.log1p(20)])


@pytest.mark.parametrize(
    ("doc", "reason", "words"),
    [
        ({"bytes": 1, "packets": -1, "duration": 0}, "out-of-range", ["'packets'", "-1"]),
        ({"bytes": 1, "packets": 1}, "missing-field", ["'duration'"]),
        ({"bytes": "1k", "packets": 1, "duration": 0}, "not-numeric", ["'bytes'", "'1k'"]),
    ],
)
def test_network_bad_records(doc: dict[str, Any], reason: str, words: list[str]) -> None:
    with pytest.raises(BadRecord) as info:
        NetworkProfile().parse(doc)
    assert info.value.reason == reason
    assert all(w in str(info.value) for w in words)


def test_sensor_first_event_and_follow_ups() -> None:
    p = SensorProfile(readings=["temp", "rpm"])
    assert p.feature_names == (
        "temp", "temp_mean", "temp_std", "temp_z", "temp_rate",
        "rpm", "rpm_mean", "rpm_std", "rpm_z", "rpm_rate",
    )  # fmt: skip
    events = [
        ("d", 0.0, {"temp": 20.0, "rpm": 100.0}),
        ("d", 0.0, {"temp": 22.0, "rpm": 100.0}),  # equal time: rate over min_rate_seconds
        ("d", 10.0, {"temp": 21.0, "rpm": 100.0}),
        ("d", 10.0, {"temp": 21.0, "rpm": 101.0}),
    ]
    x = run(p, events)
    assert x[0].tolist() == [20.0, 20.0, 0.0, 0.0, 0.0, 100.0, 100.0, 0.0, 0.0, 0.0]
    assert x[1].tolist() == [22.0, 20.0, 0.0, 0.0, 2.0, 100.0, 100.0, 0.0, 0.0, 0.0]
    # Third: 20 and 22 weigh the same (equal times): mean 21, std 1.
    assert x[2].tolist() == pytest.approx([21.0, 21.0, 1.0, 0.0, -0.1, 100.0, 100.0, 0.0, 0.0, 0.0])
    # Fourth: rpm always 100 so far, std 0, floored at 1 % of the mean: z = 1.
    assert x[3, 5:].tolist() == pytest.approx([101.0, 100.0, 0.0, 1.0, 1.0])


def test_sensor_mean_decays_by_event_time() -> None:
    p = SensorProfile(readings=["v"], half_life_seconds=60.0)
    x = run(p, [("d", 0.0, {"v": 0.0}), ("d", 60.0, {"v": 3.0}), ("d", 60.0, {"v": 0.0})])
    # At t = 60 the reading 0 weighs 0.5 and the reading 3 weighs 1: mean 2.
    assert col(p, x, "v_mean")[2] == pytest.approx(2.0)
    assert col(p, x, "v_std")[2] == pytest.approx(math.sqrt(2.0))


def test_sensor_rate_uses_the_elapsed_floor() -> None:
    p = SensorProfile(readings=["v"], min_rate_seconds=5.0)
    x = run(
        p, [("d", 0.0, {"v": 0.0}), ("d", 2.0, {"v": 10.0}), ("d", 12.0, {"v": 0.0}), ("d", 1.0, {"v": 5.0})]
    )
    assert col(p, x, "v_rate") == [0.0, 2.0, -1.0, 1.0]  # the late event: elapsed 0, floored at 5 s


def test_sensor_needs_every_reading() -> None:
    with pytest.raises(BadRecord) as info:
        SensorProfile(readings=["temp", "rpm"]).parse({"temp": 1.0})
    assert info.value.reason == "missing-field" and "'rpm'" in str(info.value)


def test_generic_fields_as_given_without_state() -> None:
    p = GenericProfile(fields=["b", "a"])
    x = run(p, [("e", 0.0, {"a": 1, "b": 2.5}), ("e", 1.0, {"a": -3, "b": 0})])
    assert x.tolist() == [[2.5, 1.0], [0.0, -3.0]]
    assert p.n_entities == 0


def test_generic_entity_zscores() -> None:
    p = GenericProfile(fields=["v"], entity_zscores=True)
    x = run(
        p, [("e", 0.0, {"v": 1.0}), ("e", 0.0, {"v": 3.0}), ("f", 0.0, {"v": 9.0}), ("e", 0.0, {"v": 5.0})]
    )
    assert x.tolist() == [[1.0, 0.0], [3.0, 0.0], [9.0, 0.0], [5.0, 3.0]]


# --------------------------------------------------------------------------------------------------
# configuration


def test_make_profile_builds_each_profile() -> None:
    assert isinstance(make_profile("transactions"), TransactionsProfile)
    assert isinstance(make_profile("network", bytes="octets"), NetworkProfile)
    assert make_profile("sensor", readings=("hr",)).feature_names == (
        "hr",
        "hr_mean",
        "hr_std",
        "hr_z",
        "hr_rate",
    )
    assert make_profile("generic", fields=["a"], entity_zscores=True).feature_names == ("a", "a_z")
    interactions = make_profile("interactions", item_field="sku")
    assert isinstance(interactions, InteractionsProfile) and interactions.item_field == "sku"


@pytest.mark.parametrize(
    ("name", "options", "words"),
    [
        ("fraud", {}, ["'fraud'", "generic, interactions, network, sensor, transactions"]),
        ("network", {"byte": "x"}, ["'network'", "'byte'", "bytes, packets, duration"]),
        ("sensor", {}, ["'sensor'", "'readings'"]),
        ("sensor", {"readings": "temp"}, ["readings", "'temp'", "list of field names"]),
        ("sensor", {"readings": []}, ["readings", "[]"]),
        ("sensor", {"readings": ["a", "a"]}, ["readings", "distinct"]),
        ("sensor", {"readings": ["a"], "half_life_seconds": -1}, ["half_life_seconds", "-1", "positive"]),
        ("transactions", {"ttl_seconds": math.inf}, ["ttl_seconds", "inf"]),
        ("transactions", {"max_entities": 0}, ["max_entities", "'transactions'", "0"]),
        ("transactions", {"max_seen": 0}, ["max_seen", "0"]),
        ("transactions", {"amount": ""}, ["amount", "''"]),
        ("transactions", {"z_clip": 0}, ["z_clip", "0"]),
        ("transactions", {"z_min_events": 0}, ["z_min_events", "0"]),
        ("generic", {"fields": ["a"], "entity_zscores": "yes"}, ["entity_zscores", "'yes'"]),
        ("generic", {"fields": ["a", "a_z"], "entity_zscores": True}, ["fields", "a_z"]),
        ("generic", {"fields": ["a"], "rel_std_floor": -0.1}, ["rel_std_floor", "-0.1"]),
        ("interactions", {"item_field": ""}, ["item_field", "'interactions'", "''"]),
        ("interactions", {"new_user_events": 0}, ["new_user_events", "0", "whole number"]),
        ("interactions", {"new_user_events": 2.5}, ["new_user_events", "2.5"]),
        ("interactions", {"max_entities": True}, ["max_entities", "True"]),
        ("interactions", {"ttl_seconds": -1.0}, ["ttl_seconds", "-1.0", "positive"]),
        ("interactions", {"item": "sku"}, ["'interactions'", "'item'", "item_field, new_user_events"]),
    ],
)
def test_make_profile_rejects_bad_configuration(name: str, options: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        make_profile(name, **options)
    for word in words:
        assert word in str(info.value)


# --------------------------------------------------------------------------------------------------
# bounded entity state


def test_entity_store_evicts_the_least_recently_used() -> None:
    store = EntityStore(max_entities=2)
    store.insert("a", [0.0])
    store.insert("b", [0.0])
    assert store.lookup("a", 1.0) == [0.0]
    store.insert("c", [1.0])
    assert list(store) == ["a", "c"] and store.evicted == 1
    assert store.lookup("b", 2.0) is None


def test_entity_store_expires_by_event_time() -> None:
    store = EntityStore(ttl_seconds=100.0)
    store.insert("a", [50.0])
    assert store.lookup("a", 150.0) == [50.0]  # exactly the TTL: still alive
    assert store.lookup("a", 0.0) == [50.0]  # an older event never expires anything
    assert store.lookup("a", 150.5) is None
    assert store.expired == 1 and "a" not in store


def test_profile_evicts_the_least_recently_used_entity() -> None:
    p = TransactionsProfile(max_entities=2)
    docs = {"amount": 1, "merchant": "m"}
    x = run(
        p,
        [
            ("a", 0.0, docs),
            ("b", 1.0, docs),
            ("a", 2.0, docs),
            ("c", 3.0, docs),
            ("a", 4.0, docs),
            ("b", 5.0, docs),
        ],
    )
    first_gap = math.log1p(30 * DAY)
    # "b" was evicted by "c" (a was used more recently), so it starts again; "a" kept its history.
    assert col(p, x, "log_seconds_since_prev") == pytest.approx(
        [first_gap, first_gap, math.log1p(2), first_gap, math.log1p(2), first_gap]
    )
    assert p.entities_.evicted == 2 and p.n_entities == 2  # "c" went when "b" came back
    assert list(p.entities_) == ["a", "b"]


def test_profile_resets_an_entity_after_the_ttl() -> None:
    p = TransactionsProfile(ttl_seconds=100.0)
    first = {"amount": 1, "merchant": "a", "lat": PARIS[0], "lon": PARIS[1]}
    other = {"amount": 500, "merchant": "b", "lat": NEW_YORK[0], "lon": NEW_YORK[1]}
    x = run(p, [("c", 0.0, first), ("c", 100.0, first), ("c", 201.0, other)])
    assert x[2].tolist() == run(TransactionsProfile(ttl_seconds=100.0), [("c", 201.0, other)])[0].tolist()
    assert col(p, x, "log_seconds_since_prev")[1] == pytest.approx(math.log1p(100))
    assert p.entities_.expired == 1


@pytest.mark.parametrize(
    "make",
    [lambda: NetworkProfile(ttl_seconds=10.0), lambda: SensorProfile(readings=["bytes"], ttl_seconds=10.0)],
)
def test_other_profiles_reset_after_the_ttl(make: Any) -> None:
    doc = {"bytes": 7.0, "packets": 1, "duration": 1}
    p = make()
    x = run(p, [("h", 0.0, {**doc, "bytes": 1e6}), ("h", 11.0, doc)])
    assert x[1].tolist() == run(make(), [("h", 11.0, doc)])[0].tolist()


# --------------------------------------------------------------------------------------------------
# snapshot and restore


def all_profiles(**store: Any) -> list[FeatureProfile]:
    return [
        make_profile("transactions", **store),
        make_profile("network", **store),
        make_profile("sensor", readings=["amount", "bytes"], **store),
        make_profile("generic", fields=["amount"], entity_zscores=True, **store),
        make_profile("interactions", **store),
    ]


def mixed_events(n: int) -> list[tuple[str, float, dict[str, Any]]]:
    out = []
    for i in range(n):
        doc: dict[str, Any] = {
            "amount": (i * 37) % 101,
            "bytes": i % 7,
            "packets": i % 3,
            "duration": 0.5,
            "item_id": f"i{i * 3 % 5}",
        }
        if i % 3:
            doc.update(lat=(i % 50) - 25.0, lon=(i * 7 % 300) - 150.0, merchant=f"m{i % 5}", country="FR")
        out.append(("abacadb"[i % 7], 1000.0 + 40.0 * i - (i % 5) * 30.0, doc))
    return out


@pytest.mark.parametrize("index", range(5))
def test_snapshot_restore_gives_identical_vectors(index: int) -> None:
    events = mixed_events(60)
    original = all_profiles(max_entities=3)[index]
    run(original, events[:30])
    snap = json.loads(json.dumps(original.snapshot(), allow_nan=False))
    restored = all_profiles(max_entities=3)[index]
    restored.restore(snap)
    assert restored.snapshot() == original.snapshot()
    a, b = run(original, events[30:]), run(restored, events[30:])
    assert np.array_equal(a, b)
    # The check can fail: a profile that did not see the first half gives other vectors.
    assert not np.array_equal(a, run(all_profiles(max_entities=3)[index], events[30:]))


def test_a_snapshot_is_a_copy() -> None:
    p = TransactionsProfile()
    run(p, mixed_events(10))
    snap = p.snapshot()
    frozen = copy.deepcopy(snap)
    run(p, mixed_events(20))
    assert snap == frozen


def test_restore_rejects_another_profiles_snapshot() -> None:
    with pytest.raises(ConfigError, match="'network'"):
        TransactionsProfile().restore(NetworkProfile().snapshot())
    with pytest.raises(ConfigError, match="'temp'"):
        SensorProfile(readings=["rpm"]).restore(SensorProfile(readings=["temp"]).snapshot())


def test_restore_into_a_smaller_store_keeps_the_most_recent() -> None:
    p = TransactionsProfile()
    run(p, [(e, float(i), {"amount": 1}) for i, e in enumerate("abcd")])
    small = TransactionsProfile(max_entities=2)
    small.restore(p.snapshot())
    assert list(small.entities_) == ["c", "d"]


# --------------------------------------------------------------------------------------------------
# properties


def test_haversine_is_safe_for_antipodal_points() -> None:
    for lat in (0.0, 12.3456789, 45.0, 89.9999999, 90.0):
        for lon in (-180.0, -33.3, 0.0, 77.7):
            assert haversine_km(lat, lon, -lat, lon + 180.0) == pytest.approx(math.pi * 6371.0088, rel=1e-6)


TIMES = st.one_of(
    st.sampled_from([0.0, 0.0, 60.0, 3600.0, T0, T0, -1e308, 1e308]),
    st.floats(-1e7, 1e7, allow_nan=False),
)
ENTITIES = st.sampled_from(["a", "b", "c", "d"])
COORD = st.one_of(
    st.sampled_from([(PARIS[0], PARIS[1]), (90.0, 180.0), (-90.0, -180.0), (0.0, 0.0), (0.0, 180.0)]),
    st.tuples(st.floats(-90, 90), st.floats(-180, 180)),
)
SIZE = st.one_of(st.just(0), st.integers(0, 10**6), st.floats(0, 1e100))
READING = st.one_of(st.just(0.0), st.floats(-1e100, 1e100), st.integers(-1000, 1000))


@st.composite
def transaction_docs(draw: st.DrawFn) -> dict[str, Any]:
    doc: dict[str, Any] = {"amount": draw(SIZE)}
    loc = draw(st.none() | COORD)
    if loc is not None:
        doc["lat"], doc["lon"] = loc
    for key in ("merchant", "country"):
        value = draw(st.none() | st.sampled_from(["x", "y", "z", 1]))
        if value is not None:
            doc[key] = value
    return doc


DOCS = {
    "transactions": transaction_docs(),
    "network": st.fixed_dictionaries({"bytes": SIZE, "packets": SIZE, "duration": SIZE}),
    "sensor": st.fixed_dictionaries({"r": READING, "s": READING}),
    "generic": st.fixed_dictionaries({"r": READING, "s": READING}),
    "interactions": st.fixed_dictionaries({"sku": st.sampled_from(["x", "y", "z", 1, "1"])}),
}
OPTIONS: dict[str, dict[str, Any]] = {
    "transactions": {"max_seen": 2},
    "network": {},
    "sensor": {"readings": ["r", "s"]},
    "generic": {"fields": ["r", "s"], "entity_zscores": True},
    "interactions": {"item_field": "sku", "new_user_events": 2},
}


@st.composite
def streams(draw: st.DrawFn) -> tuple[str, dict[str, Any], list[str], list[float], list[dict[str, Any]]]:
    name = draw(st.sampled_from(sorted(DOCS)))
    options = dict(OPTIONS[name])
    options["max_entities"] = draw(st.sampled_from([1, 2, 100]))
    options["ttl_seconds"] = draw(st.sampled_from([50.0, 30 * DAY]))
    n = draw(st.integers(0, 25))
    entities = draw(st.lists(ENTITIES, min_size=n, max_size=n))
    times = draw(st.lists(TIMES, min_size=n, max_size=n))
    docs = draw(st.lists(DOCS[name], min_size=n, max_size=n))
    return name, options, entities, times, docs


@given(stream=streams(), cuts=st.lists(st.integers(0, 25), max_size=4))
def test_vectors_are_finite_and_chunking_does_not_matter(
    stream: tuple[str, dict[str, Any], list[str], list[float], list[dict[str, Any]]], cuts: list[int]
) -> None:
    name, options, entities, times, docs = stream
    whole_profile = make_profile(name, **options)
    values = [whole_profile.parse(d) for d in docs]
    inputs = copy.deepcopy((entities, times, values))
    whole = whole_profile.transform_many(entities, times, values)
    assert (entities, times, values) == inputs
    assert whole.dtype == np.float64 and whole.shape == (len(docs), len(whole_profile.feature_names))
    assert np.isfinite(whole).all()
    # Same vectors in chunks, with the state carried over through a JSON snapshot at each cut.
    bounds = [0, *sorted(c for c in cuts if c < len(docs)), len(docs)]
    profile = make_profile(name, **options)
    pieces = []
    for lo, hi in itertools.pairwise(bounds):
        pieces.append(profile.transform_many(entities[lo:hi], times[lo:hi], values[lo:hi]))
        fresh = make_profile(name, **options)
        fresh.restore(json.loads(json.dumps(profile.snapshot(), allow_nan=False)))
        profile = fresh
    assert np.array_equal(np.concatenate(pieces), whole)
    assert profile.snapshot() == whole_profile.snapshot()
    assert whole_profile.n_entities <= options["max_entities"]


@settings(max_examples=30)
@given(
    docs=st.lists(transaction_docs(), min_size=1, max_size=10),
    times=st.lists(TIMES, min_size=10, max_size=10),
)
def test_numpy_times_give_the_same_vectors(docs: list[dict[str, Any]], times: list[float]) -> None:
    a, b = TransactionsProfile(), TransactionsProfile()
    values = [a.parse(d) for d in docs]
    ts = times[: len(docs)]
    ents = ["e"] * len(docs)
    assert np.array_equal(a.transform_many(ents, ts, values), b.transform_many(ents, np.array(ts), values))
    # State holds Python floats, not numpy scalars.
    assert all(type(rec[0]) is float for _, rec in b.snapshot()["store"]["entities"])


def test_hour_against_the_entity_usual_hour() -> None:
    p = TransactionsProfile()
    # Four purchases at 10:00 on four days, then one at 22:00: half a day from the usual hour.
    events = [("c1", T0 + d * DAY + 10 * 3600, {"amount": 5}) for d in range(4)]
    x = run(p, [*events, ("c1", T0 + 4 * DAY + 22 * 3600, {"amount": 5})])
    assert col(p, x, "hour_vs_usual_cos")[:3] == [1.0, 1.0, 1.0]  # too little history: as usual
    assert col(p, x, "hour_vs_usual_cos")[3] == pytest.approx(1.0)
    assert col(p, x, "hour_vs_usual_cos")[4] == pytest.approx(-1.0)
    assert col(p, x, "hour_vs_usual_sin")[4] == pytest.approx(0.0, abs=1e-9)


def test_new_merchants_and_spend_in_the_last_hour() -> None:
    p = TransactionsProfile()
    history = [("c1", T0 + d * DAY, {"amount": 20, "merchant": "shop"}) for d in range(5)]
    spree = [("c1", T0 + 5 * DAY + 60 * k, {"amount": 200, "merchant": f"new-{k}"}) for k in range(3)]
    x = run(p, [*history, *spree])
    new = [math.expm1(v) for v in col(p, x, "log_new_merchants_1h")]
    assert new[:5] == [0.0] * 5
    assert new[5:] == pytest.approx(
        [1.0, 1 + math.exp(-1 / 60), 1 + math.exp(-1 / 60) * (1 + math.exp(-1 / 60))]
    )
    spend = [math.expm1(v) for v in col(p, x, "log_spend_1h_ratio")]
    assert spend[0] == pytest.approx(1.0)  # first event: its own amount is the typical one
    assert spend[1] == pytest.approx(20 / 20)
    assert spend[5] == pytest.approx(200 / 20)  # ten times the typical amount within the hour
    assert spend[6] > spend[5]  # and the spree adds up
