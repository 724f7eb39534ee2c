from __future__ import annotations

import orjson
import pytest
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.events import EventDecoder, format_time
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


def decode(doc: object, **kw: object) -> object:
    return EventDecoder(CFG).decode(orjson.dumps(doc), **kw)  # type: ignore[arg-type]


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
        (None, "json", "tombstone"),
        (b"[1, 2]", "not-object", "JSON list"),
        (orjson.dumps({**GOOD, "amount": "12"}), "not-numeric", "'amount'"),
        (orjson.dumps({**GOOD, "amount": True}), "not-numeric", "'amount'"),
        (orjson.dumps({**GOOD, "km": None}), "missing-field", "'km'"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "km"}), "missing-field", "'km'"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "card_id"}), "missing-field", "'card_id'"),
        (orjson.dumps({**GOOD, "ts": "yesterday"}), "bad-time", "'yesterday'"),
        (orjson.dumps({**GOOD, "ts": [1]}), "bad-time", "'ts'"),
        (b'{"amount": 1e999}', "json", "infinity"),
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
