from __future__ import annotations

import pickle
from importlib.metadata import version

import pytest
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.deadletter import (
    APP_VERSION,
    ERROR_STAGES,
    MAX_MESSAGE_CHARS,
    BadRecordGuard,
    DeadLetter,
    parse_headers,
)
from anomrec.streaming.events import EventDecoder
from anomrec.streaming.exceptions import BadRecord, ConfigError, TooManyBadRecords
from hypothesis import given
from hypothesis import strategies as st

BINARY = bytes(range(256))  # every byte value, including invalid UTF-8 and NUL


def letter(**changes: object) -> DeadLetter:
    fields: dict[str, object] = {
        "value": BINARY,
        "key": b"\x00\xffkey",
        "source_topic": "events",
        "source_partition": 3,
        "source_offset": 1234567890123,
        "source_timestamp_ms": 1767225600000,
        "error_class": "anomrec.streaming.exceptions.BadRecord",
        "reason": "json",
        "message": "value is not valid JSON: expected a JSON object: b'\\x00\\x01' — über ✓\nsecond line",
        "stage": "decode",
        **changes,
    }
    return DeadLetter(**fields)


def test_headers_have_the_documented_names_in_order() -> None:
    assert [name for name, _ in letter().headers()] == [
        "anomrec.dlq.source.topic",
        "anomrec.dlq.source.partition",
        "anomrec.dlq.source.offset",
        "anomrec.dlq.source.timestamp",
        "anomrec.dlq.error.class",
        "anomrec.dlq.error.reason",
        "anomrec.dlq.error.message",
        "anomrec.dlq.stage",
        "anomrec.dlq.app.version",
    ]
    headers = dict(letter().headers())
    assert headers["anomrec.dlq.source.offset"] == b"1234567890123"
    assert headers["anomrec.dlq.error.message"].decode("utf-8") == letter().message
    assert all(isinstance(value, bytes) for value in headers.values())


def test_a_letter_round_trips_through_its_record_with_binary_bytes_intact() -> None:
    original = letter()
    back = DeadLetter.from_record(original.key, original.value, original.headers())
    assert back == original
    assert back.value == BINARY and back.key == b"\x00\xffkey"
    fields = parse_headers(original.headers())
    assert fields["source_partition"] == 3 and fields["source_timestamp_ms"] == 1767225600000
    assert fields["source_topic"] == "events" and fields["source_offset"] == 1234567890123


def test_a_tombstone_without_key_or_timestamp_round_trips() -> None:
    original = letter(value=None, key=None, source_timestamp_ms=None, reason="null-value")
    names = [name for name, _ in original.headers()]
    assert "anomrec.dlq.source.timestamp" not in names and len(names) == 8
    assert DeadLetter.from_record(None, None, original.headers()) == original


def test_other_headers_are_ignored_and_missing_or_bad_ones_named() -> None:
    headers = [("traceparent", b"00-abc"), *letter().headers(), ("anomrec.dlq.future", b"?")]
    assert parse_headers(headers) == parse_headers(letter().headers())
    without_stage = [(n, v) for n, v in letter().headers() if n != "anomrec.dlq.stage"]
    with pytest.raises(ValueError, match=r"'anomrec\.dlq\.stage' is missing"):
        parse_headers(without_stage)
    bad_offset = [(n, b"x" if n == "anomrec.dlq.source.offset" else v) for n, v in letter().headers()]
    with pytest.raises(ValueError, match=r"'anomrec\.dlq\.source\.offset' is b'x': expected an integer"):
        parse_headers(bad_offset)


def test_long_messages_are_cut() -> None:
    long = letter(message="é" * 5000)
    assert len(long.message) == MAX_MESSAGE_CHARS and long.message.endswith("…")
    assert DeadLetter.from_record(long.key, long.value, long.headers()) == long
    assert letter(message="x" * MAX_MESSAGE_CHARS).message == "x" * MAX_MESSAGE_CHARS


def test_the_stage_is_checked() -> None:
    assert ERROR_STAGES == ("decode", "features", "process")
    with pytest.raises(ValueError, match="stage='parse' is not one of: decode, features, process"):
        letter(stage="parse")


def test_from_a_decoder_failure() -> None:
    decoder = EventDecoder(ProcessorConfig(profile="generic", features=("amount",)))
    value = b'{"card_id": "c1", "amount": NaN}'
    with pytest.raises(BadRecord) as info:
        decoder.decode(value, timestamp_ms=-1)
    got = DeadLetter.from_bad_record(
        info.value,
        value=value,
        key=None,
        topic="events",
        partition=0,
        offset=9,
        timestamp_ms=-1,  # Kafka's "no timestamp"
        stage="decode",
    )
    assert got.value == value and got.source_timestamp_ms is None
    assert (got.source_topic, got.source_partition, got.source_offset) == ("events", 0, 9)
    assert (got.error_class, got.reason) == ("anomrec.streaming.exceptions.BadRecord", "not-finite")
    assert got.message == str(info.value) and got.app_version == APP_VERSION == version("anomrec")
    assert parse_headers(got.headers())["reason"] == "not-finite"


def test_any_error_can_be_dead_lettered() -> None:
    got = DeadLetter.from_bad_record(
        ZeroDivisionError("division by zero"),
        value=b"{}",
        key=b"k",
        topic="events",
        partition=1,
        offset=2,
        timestamp_ms=3,
        stage="process",
    )
    assert (got.error_class, got.reason, got.message) == (
        "builtins.ZeroDivisionError",
        "error",
        "division by zero",
    )


letters = st.builds(
    DeadLetter,
    value=st.none() | st.binary(max_size=300),
    key=st.none() | st.binary(max_size=50),
    source_topic=st.from_regex(r"[A-Za-z0-9._-]{1,249}", fullmatch=True),
    source_partition=st.integers(0, 2**31 - 1),
    source_offset=st.integers(0, 2**63 - 1),
    source_timestamp_ms=st.none() | st.integers(0, 2**63 - 1),
    error_class=st.just("x.Error"),
    reason=st.text(min_size=1, max_size=30),
    message=st.text(max_size=1500),
    stage=st.sampled_from(ERROR_STAGES),
)


@given(letters)
def test_any_letter_round_trips(original: DeadLetter) -> None:
    assert DeadLetter.from_record(original.key, original.value, original.headers()) == original
    assert len(original.message) <= MAX_MESSAGE_CHARS


# --- the bad-record guard ---


def test_the_guard_trips_when_the_window_fills_and_not_before() -> None:
    guard = BadRecordGuard(max_bad_ratio=0.5, window=10)
    for _ in range(9):
        guard.observe(True)  # 9 of 9 bad, but the window is not full yet
    assert (guard.seen_, guard.bad_) == (9, 9)
    with pytest.raises(TooManyBadRecords) as info:
        guard.observe(True)
    assert (info.value.bad, info.value.window) == (10, 10)


def test_the_guard_trips_only_above_the_ratio_and_forgets_old_records() -> None:
    guard = BadRecordGuard(max_bad_ratio=0.3, window=10)
    for i in range(1000):
        guard.observe(i % 10 < 3)  # exactly 3 in every 10: at the limit, never above it
    assert guard.bad_ == 3 and guard.ratio == 0.3
    for _ in range(6):
        guard.observe(False)  # the window slides: old bad records drop out
    assert guard.bad_ == 0
    for _ in range(3):
        guard.observe(True)
    with pytest.raises(TooManyBadRecords, match="4 of the last 10 records were bad"):
        guard.observe(True)


def test_a_disabled_guard_never_trips() -> None:
    guard = BadRecordGuard(max_bad_ratio=1.0, window=5)
    for _ in range(10_000):
        guard.observe(True)
    assert guard.ratio == 1.0


def test_a_zero_ratio_trips_on_one_bad_record_in_a_full_window() -> None:
    guard = BadRecordGuard(max_bad_ratio=0.0, window=3)
    guard.observe(True)
    guard.observe(False)
    with pytest.raises(TooManyBadRecords):
        guard.observe(False)


def test_the_error_says_what_to_do() -> None:
    cfg = ProcessorConfig(max_bad_ratio=0.25, bad_ratio_window=4, dead_letter_topic="tx-dlq")
    guard = BadRecordGuard.from_config(cfg)
    for bad in (True, False, False):
        guard.observe(bad)
    with pytest.raises(TooManyBadRecords) as info:
        guard.observe(True)
    message = str(info.value)
    assert "2 of the last 4 records were bad (50.0%), more than max_bad_ratio=0.25" in message
    assert "dead-letter topic 'tx-dlq'" in message
    assert "max_bad_ratio (1 never stops) or bad_ratio_window" in message
    again = pickle.loads(pickle.dumps(info.value))
    assert (str(again), again.bad, again.window) == (message, 2, 4)


def test_the_guard_needs_a_window() -> None:
    with pytest.raises(ConfigError, match="bad_ratio_window=0"):
        BadRecordGuard(window=0)


@given(
    verdicts=st.lists(st.booleans(), max_size=200),
    window=st.integers(1, 30),
    ratio=st.sampled_from([0.0, 0.1, 0.25, 1 / 3, 0.5, 0.9, 1.0]),
)
def test_the_guard_trips_at_the_first_full_window_above_the_ratio(
    verdicts: list[bool], window: int, ratio: float
) -> None:
    expected = next(
        (
            i
            for i in range(window - 1, len(verdicts))
            if sum(verdicts[i + 1 - window : i + 1]) / window > ratio
        ),
        None,
    )
    guard = BadRecordGuard(max_bad_ratio=ratio, window=window)
    tripped = None
    for i, bad in enumerate(verdicts):
        try:
            guard.observe(bad)
        except TooManyBadRecords:
            tripped = i
            break
    assert tripped == expected
