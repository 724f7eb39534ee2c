"""The prequential evaluation harness and ``anomrec evaluate anomalies``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
from anomrec.batch.evaluate import metrics

from anomrec.cli import main

# Short warm-up so that a few thousand rows are mostly live.
FAST = [
    "--window-size", "250", "--first-fit-after", "500", "--refit-every", "1000", "--swap-delay", "200",
    "--calibration-window", "3000", "--warmup-events", "800",
]  # fmt: skip


def labelled_frame(n: int = 4000, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = (rng.random(n) < 0.03).astype(int)
    X[y == 1, 1] += rng.choice([-7.0, 7.0], size=int(y.sum()))
    return pd.DataFrame({"id": np.arange(n), "a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "is_fraud": y})


def test_metrics_by_hand() -> None:
    y = np.array([0, 1, 0, 0, 1, 0, 1, 0])
    s = np.array([np.nan, 0.9, 0.1, 0.8, 0.7, 0.2, 0.3, 0.4])
    decided = s >= 0.5
    m = metrics("x", y, s, decided, warmup_events=2)
    # Scored: 7 rows, 3 positives; ranking 0.9(1) 0.8(0) 0.7(1) 0.4(0) 0.3(1) 0.2(0) 0.1(0).
    assert m.scored == 7
    assert m.k == 3 and m.precision_at_k == pytest.approx(2 / 3)
    assert m.roc_auc == pytest.approx(9 / 12)  # 9 of the 12 positive-negative pairs ranked right
    # After the warm-up of 2 events: 6 events, 2 positives (rows 4, 6), alerts at rows 3 and 4.
    assert m.recall_at_threshold == pytest.approx(1 / 2)
    assert m.alerts_per_1000 == pytest.approx(2 / 6 * 1000)
    assert m.false_alerts_per_1000_normal == pytest.approx(1 / 4 * 1000)


def test_evaluate_a_csv_prints_a_table_and_writes_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv, out = tmp_path / "stream.csv", tmp_path / "metrics.json"
    frame = labelled_frame()
    frame.to_csv(csv, index=False)
    argv = ["evaluate", "anomalies", "--csv", str(csv), "--label-column", "is_fraud"]
    argv += ["--feature-columns", "a,b,c", "--json-out", str(out), *FAST]
    assert main(argv) == 0
    table = capsys.readouterr().out
    for name in ("hst", "iforest", "lof", "ensemble"):
        assert f"\n{name} " in table
    doc = orjson.loads(out.read_bytes())
    assert doc["events"] == len(frame) and doc["labelled_anomalies"] == int(frame["is_fraud"].sum())
    assert doc["config"]["profile"] == "generic" and doc["config"]["features"] == ["a", "b", "c"]
    ensemble = doc["metrics"]["ensemble"]
    assert ensemble["roc_auc"] > 0.95 and ensemble["average_precision"] > 0.6
    # The ensemble speaks only once every detector is calibrated; IsolationForest from event 700.
    assert doc["metrics"]["iforest"]["scored"] == len(frame) - 700
    assert ensemble["scored"] < doc["metrics"]["iforest"]["scored"]


@pytest.mark.parametrize(
    ("change", "argv", "says"),
    [
        (None, ["--label-column", "label"], "label column 'label' is not in"),
        (None, ["--label-column", "is_fraud", "--feature-columns", "a,zz"], "feature column 'zz' is not in"),
        ("text", ["--label-column", "is_fraud"], "feature column 'b' is not numeric: row 3 holds 'high'"),
        ("labels", ["--label-column", "is_fraud"], "label column 'is_fraud'"),
        (None, [], "--csv needs --label-column"),
    ],
)
def test_bad_csv_input_says_what_is_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: str | None, argv: list[str], says: str
) -> None:
    frame = labelled_frame(50)
    if change == "text":
        frame["b"] = frame["b"].astype(object)
        frame.loc[2, "b"] = "high"
    elif change == "labels":
        frame.loc[5, "is_fraud"] = 2
    csv = tmp_path / "bad.csv"
    frame.to_csv(csv, index=False)
    assert main(["evaluate", "anomalies", "--csv", str(csv), *argv]) == 2
    err = capsys.readouterr().err
    assert says in err
    if change == "labels":
        assert "is not binary: expected only 0 and 1" in err and "2" in err
