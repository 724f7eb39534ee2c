from __future__ import annotations

import io
import logging

import orjson
import pytest
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.runners import run_embedded
from anomrec.streaming.sample import generate_transactions

CFG = ProcessorConfig(
    window_size=100, first_fit_after=300, refit_every=1000, swap_delay=100, calibration_window=2000,
    warmup_events=500,
)  # fmt: skip
BAD = [b"{oops", b"[]", b'{"event_id": "x", "card_id": "c", "ts": 0, "amount": "NaN"}', b""]


def clean_values() -> list[bytes]:
    return [orjson.dumps(e) for e in generate_transactions(2000, n_users=50, seed=5)]


def test_embedded_run_writes_alerts_and_scores_them_against_labels() -> None:
    out = io.BytesIO()
    stats = run_embedded(CFG, clean_values(), out)
    alerts = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert stats.events == 2000 and stats.alerts == len(alerts) > 0
    labels = {e["event_id"]: e["label"] for e in generate_transactions(2000, n_users=50, seed=5)}
    assert stats.true_alerts == sum(labels[a["event_id"]] for a in alerts)
    assert stats.labelled_anomalies == sum(labels.values())
    assert stats.precision == stats.true_alerts / stats.alerts
    assert "precision" in stats.summary() and "recall" in stats.summary()


def test_bad_records_are_counted_logged_and_do_not_touch_the_model(caplog: pytest.LogCaptureFixture) -> None:
    clean = clean_values()
    dirty = []
    for i, value in enumerate(clean):
        dirty.append(value)
        if i % 300 == 0:
            dirty.append(BAD[(i // 300) % len(BAD)])
    expected, got = io.BytesIO(), io.BytesIO()
    run_embedded(CFG, clean, expected)
    with caplog.at_level(logging.WARNING):
        stats = run_embedded(CFG, dirty, got)
    assert got.getvalue() == expected.getvalue()
    assert stats.events == len(clean)
    assert sum(stats.bad_records.values()) == len(dirty) - len(clean) == 7
    assert stats.bad_records == {"json": 3, "not-object": 2, "not-numeric": 2}
    assert len([r for r in caplog.records if "skipped bad record" in r.getMessage()]) == 7


def test_progress_callback_sees_every_record() -> None:
    seen: list[int] = []
    run_embedded(
        CFG,
        [*clean_values()[:1234], b"{"],
        io.BytesIO(),
        batch_size=500,
        on_batch=lambda s, n: seen.append(n),
    )
    assert seen == [500, 500, 235]
