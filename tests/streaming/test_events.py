from __future__ import annotations

from typing import Any

import orjson
import pytest
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.events import Event, EventDecoder, format_time
from anomrec.streaming.exceptions import BadRecord
from hypothesis import given
from hypothesis import strategies as st

CFG = ProcessorConfig(profile="generic", features=("amount", "km"))
GOOD = {
    "event_id": "e1",
    "card_id": "c9",
    "ts": "2026-03-01T10:00:00.250Z",
    "amount": 12,
    "km": 0.5,
    "label": 1,
}


def decode(doc: object, **kw: Any) -> Event:
    return EventDecoder(CFG).decode(orjson.dumps(doc), **kw)


def test_decodes_fields_in_configured_order() -> None:
    event = decode({**GOOD, "km": 3.25, "amount": 7})
    assert event.values == (7.0, 3.25)
    assert (event.event_id, event.entity, event.label) == ("e1", "c9", 1)
    assert format_time(event.event_time) == "2026-03-01T10:00:00.250Z"


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2026-03-01T10:00:00Z", 1772359200.0),
        ("2026-03-01T11:00:00+01:00", 1772359200.0),
        ("2026-03-01T10:00:00", 1772359200.0),  # naive means UTC
        (1772359200, 1772359200.0),
        (1772359200.5, 1772359200.5),
    ],
)
def test_event_time_formats(ts: object, expected: float) -> None:
    assert decode({**GOOD, "ts": ts}).event_time == expected


def test_record_timestamp_is_the_fallback_event_time() -> None:
    doc = {k: v for k, v in GOOD.items() if k != "ts"}
    assert decode(doc, timestamp_ms=1_500).event_time == 1.5
    with pytest.raises(BadRecord) as info:
        decode(doc)
    assert info.value.reason == "bad-time"


def test_fallback_id_only_when_the_event_has_none() -> None:
    assert decode(GOOD, fallback_id="events-0@5").event_id == "e1"
    doc = {k: v for k, v in GOOD.items() if k != "event_id"}
    assert decode(doc, fallback_id="events-0@5").event_id == "events-0@5"


@pytest.mark.parametrize(
    ("value", "reason", "says"),
    [
        (b"{not json", "json", "not valid JSON"),
        (None, "null-value", "tombstone"),
        (b"[1, 2]", "not-object", "JSON list"),
        (orjson.dumps({**GOOD, "amount": "12"}), "not-numeric", "'amount'"),
        (orjson.dumps({**GOOD, "amount": True}), "not-numeric", "'amount'"),
        (orjson.dumps({**GOOD, "km": None}), "missing-field", "'km'"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "km"}), "missing-field", "'km'"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "card_id"}), "missing-field", "'card_id'"),
        (orjson.dumps({**GOOD, "ts": "yesterday"}), "bad-time", "'yesterday'"),
        (orjson.dumps({**GOOD, "ts": [1]}), "bad-time", "'ts'"),
        (b'{"amount": 1e999}', "not-finite", "infinity"),
    ],
)
def test_bad_records_say_what_is_wrong(value: bytes | None, reason: str, says: str) -> None:
    with pytest.raises(BadRecord) as info:
        EventDecoder(CFG).decode(value)
    assert info.value.reason == reason
    assert says in str(info.value)


def test_labels_other_than_zero_or_one_are_ignored() -> None:
    assert decode({**GOOD, "label": 0}).label == 0
    assert decode({**GOOD, "label": "fraud"}).label is None
    assert decode({**GOOD, "label": 7}).label is None


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_bad_record(value: bytes) -> None:
    try:
        event = EventDecoder(CFG).decode(value)
    except BadRecord:
        return
    assert len(event.values) == 2


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(["event_id", "card_id", "ts", "amount", "km", "label"]), json_values))
def test_any_json_object_decodes_or_raises_bad_record(doc: dict[str, object]) -> None:
    try:
        event = EventDecoder(CFG).decode(orjson.dumps(doc))
    except BadRecord:
        return
    assert event.values == (float(doc["amount"]), float(doc["km"]))  # type: ignore[arg-type]


# --- the dead-letter catalogue: every kind of bad record, through `decode`, with its own reason ---

STRICT = ProcessorConfig(
    profile="generic",
    features=("amount", "km"),
    require_key=True,
    max_record_bytes=300,
    schema_versions=("1", "2"),
    max_future_seconds=3600.0,
)
TS_MS = 1772359200000  # the record timestamp: 2026-03-01T10:00:00Z, GOOD's event time within 250 ms


def good(**changes: object) -> bytes:
    return orjson.dumps({**GOOD, **changes})


GOOD_BYTES = good()
VERSION = "unknown-schema-version"


def without(name: str) -> bytes:
    return orjson.dumps({k: v for k, v in GOOD.items() if k != name})


CATALOGUE = [
    # (value, key, timestamp_ms, reason, what the message must say)
    pytest.param(b"{not json", b"k", TS_MS, "json", "not valid JSON", id="invalid-json"),
    pytest.param(b"", b"k", TS_MS, "json", "not valid JSON", id="empty-value"),
    pytest.param(b'{"id": "\xff"}', b"k", TS_MS, "json", "UTF-8 (byte 0xff at offset 8)", id="bad-utf8"),
    pytest.param(b'{"id": "\xed\xa0\x80"}', b"k", TS_MS, "json", "not valid UTF-8", id="utf8-surrogate"),
    pytest.param(b'{"amount": NaN}', b"k", TS_MS, "not-finite", "holds NaN at character 11", id="nan"),
    pytest.param(b'{"amount": Infinity}', b"k", TS_MS, "not-finite", "holds Infinity at", id="infinity"),
    pytest.param(b'{"amount": -Infinity}', b"k", TS_MS, "not-finite", "holds -Infinity at", id="-infinity"),
    pytest.param(b'{"amount": -1e999}', b"k", TS_MS, "not-finite", "too large for a double", id="overflow"),
    pytest.param(b"[1, 2]", b"k", TS_MS, "not-object", "a JSON list, expected an object", id="not-object"),
    pytest.param(without("card_id"), b"k", TS_MS, "missing-field", "'card_id'", id="missing-entity"),
    pytest.param(without("km"), b"k", TS_MS, "missing-field", "'km'", id="missing-feature"),
    pytest.param(good(km=None), b"k", TS_MS, "missing-field", "'km'", id="null-feature"),
    pytest.param(good(amount="12"), b"k", TS_MS, "not-numeric", "'amount' is '12'", id="wrong-type-number"),
    pytest.param(good(ts=[1]), b"k", TS_MS, "bad-time", "field 'ts' is [1]", id="wrong-type-time"),
    pytest.param(good(user_id="u", item_id=3.5), b"k", TS_MS, "wrong-type", "is 3.5", id="wrong-type-id"),
    pytest.param(GOOD_BYTES, None, TS_MS, "null-key", "null key", id="null-key"),
    pytest.param(None, b"k", TS_MS, "null-value", "null value (a tombstone)", id="null-value"),
    pytest.param(good(pad="x" * 300), b"k", TS_MS, "oversized", "max_record_bytes=300", id="oversized"),
    pytest.param(
        good(schema_version="3"), b"k", TS_MS, VERSION,
        "is '3': expected one of the schema versions 1, 2", id="unknown-schema-version",
    ),
    pytest.param(good(schema_version=3), b"k", TS_MS, VERSION, "is 3", id="version-int"),
    pytest.param(good(schema_version=True), b"k", TS_MS, VERSION, "is True", id="version-bool"),
    pytest.param(good(schema_version=1.0), b"k", TS_MS, VERSION, "is 1.0", id="version-float"),
    pytest.param(
        good(ts=TS_MS / 1000 + 3600.5), b"k", TS_MS, "future-time",
        "3,600.5 s after the record's timestamp 2026-03-01T10:00:00.000Z: expected at most "
        "max_future_seconds=3600 s ahead", id="future-time",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("value", "key", "timestamp_ms", "reason", "says"), CATALOGUE)
def test_every_bad_record_has_its_own_reason(
    value: bytes | None, key: bytes | None, timestamp_ms: int | None, reason: str, says: str
) -> None:
    with pytest.raises(BadRecord) as info:
        EventDecoder(STRICT).decode(value, key=key, timestamp_ms=timestamp_ms)
    assert info.value.reason == reason
    assert says in str(info.value)


def test_the_catalogue_values_differ_from_a_good_record_only_in_their_fault() -> None:
    event = EventDecoder(STRICT).decode(GOOD_BYTES, key=b"k", timestamp_ms=TS_MS)
    assert event.values == (12.0, 0.5)


def test_a_future_event_time_needs_a_record_timestamp_to_be_judged() -> None:
    # Deterministic: the reference is the record's timestamp, never the wall clock, so with no record
    # timestamp (None, or Kafka's -1) there is nothing to compare with and the event is accepted.
    future = good(ts=TS_MS / 1000 + 10 * 86400)
    for timestamp_ms in (None, -1):
        assert EventDecoder(STRICT).decode(future, key=b"k", timestamp_ms=timestamp_ms).event_time > 0
    at_limit = good(ts=TS_MS / 1000 + 3600)
    assert (
        EventDecoder(STRICT).decode(at_limit, key=b"k", timestamp_ms=TS_MS).event_time == TS_MS / 1000 + 3600
    )
    # Late events are fine: only the future is checked.
    past = good(ts=TS_MS / 1000 - 10 * 86400)
    assert EventDecoder(STRICT).decode(past, key=b"k", timestamp_ms=TS_MS).event_time < TS_MS / 1000
    off = EventDecoder(ProcessorConfig(profile="generic", features=("amount", "km"), max_future_seconds=0))
    assert off.decode(future, timestamp_ms=TS_MS).event_time == TS_MS / 1000 + 10 * 86400


def test_times_beyond_the_datetime_range_are_still_described() -> None:
    with pytest.raises(BadRecord, match=r"field 'ts' is 1e\+20, .* after the record's timestamp 2026-"):
        EventDecoder(STRICT).decode(good(ts=1e20), key=b"k", timestamp_ms=TS_MS)
    with pytest.raises(BadRecord, match="after the record's timestamp 9223372036854775807 ms"):
        EventDecoder(STRICT).decode(good(ts=1e300), key=b"k", timestamp_ms=2**63 - 1)


def test_schema_versions_accepted() -> None:
    decoder = EventDecoder(STRICT)
    for version in ("1", "2", 1, 2, None):
        assert decoder.decode(good(schema_version=version), key=b"k").values == (12.0, 0.5)
    assert decoder.decode(GOOD_BYTES, key=b"k").values == (12.0, 0.5)  # no field: version 1
    only_2 = EventDecoder(ProcessorConfig(profile="generic", features=("amount", "km"), schema_versions="2"))
    with pytest.raises(BadRecord, match="'schema_version' is missing, which means version 1") as info:
        only_2.decode(GOOD_BYTES)
    assert info.value.reason == "unknown-schema-version"
    renamed = ProcessorConfig(profile="generic", features=("amount", "km"), schema_version_field="v")
    assert EventDecoder(renamed).decode(good(schema_version="9")).values == (12.0, 0.5)
    with pytest.raises(BadRecord, match="field 'v' is '9'"):
        EventDecoder(renamed).decode(good(v="9"))


def test_keys_are_checked_only_when_required() -> None:
    assert decode(GOOD).event_id == "e1"  # require_key is off by default; no key is fine
    assert EventDecoder(STRICT).decode(GOOD_BYTES, key=b"").event_id == "e1"  # empty is not null


def test_the_size_limit_is_inclusive_and_zero_lifts_it() -> None:
    exact = GOOD_BYTES.ljust(300)  # JSON allows trailing whitespace
    assert EventDecoder(STRICT).decode(exact, key=b"k").event_id == "e1"
    with pytest.raises(BadRecord, match="value is 301 bytes"):
        EventDecoder(STRICT).decode(GOOD_BYTES.ljust(301), key=b"k")
    big = good(pad="x" * 2_000_000)
    with pytest.raises(BadRecord, match="more than max_record_bytes=1,048,576"):
        EventDecoder(CFG).decode(big)
    unlimited = ProcessorConfig(profile="generic", features=("amount", "km"), max_record_bytes=0)
    assert EventDecoder(unlimited).decode(big).event_id == "e1"


@given(st.binary(max_size=400), st.integers(0, 400))
def test_a_value_is_oversized_exactly_when_longer_than_the_limit(value: bytes, limit: int) -> None:
    cfg = ProcessorConfig(profile="generic", features=("amount", "km"), max_record_bytes=limit)
    try:
        EventDecoder(cfg).decode(value)
    except BadRecord as exc:
        assert (exc.reason == "oversized") == (0 < limit < len(value))
    else:
        assert limit == 0 or len(value) <= limit


@given(
    event_ms=st.integers(0, 4_000_000_000_000),
    record_ms=st.integers(-1, 4_000_000_000_000),
    limit=st.sampled_from([0.0, 0.001, 1.0, 3600.0, 86400.0]),
)
def test_an_event_is_too_far_ahead_exactly_when_its_lead_exceeds_the_limit(
    event_ms: int, record_ms: int, limit: float
) -> None:
    cfg = ProcessorConfig(profile="generic", features=("amount", "km"), max_future_seconds=limit)
    value = good(ts=event_ms / 1000)
    try:
        EventDecoder(cfg).decode(value, timestamp_ms=record_ms)
    except BadRecord as exc:
        assert exc.reason == "future-time"
        assert limit > 0 and record_ms >= 0 and event_ms / 1000 - record_ms / 1000 > limit
    else:
        assert limit == 0 or record_ms < 0 or event_ms / 1000 - record_ms / 1000 <= limit
