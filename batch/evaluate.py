"""Prequential evaluation of the anomaly engine: score every event first, then learn from it.

The stream goes through the same :class:`~anomrec.streaming.core.Processor` the service runs, in
order, in micro-batches; the labels are used for nothing but the metrics. For each detector and
for the ensemble it reports:

* ``roc_auc`` and ``average_precision`` over the events that detector could score;
* ``precision_at_k``, the share of labelled anomalies among the ``k`` highest scores (``k`` is the
  number of labelled anomalies scored, unless given);
* ``recall_at_threshold``, the share of labelled anomalies at or above the operating threshold,
  counting only events after the warm-up, and ``alerts_per_1000``, alerts per 1,000 events after
  the warm-up (for a single detector, its calibrated percentile against the same threshold);
* ``false_alerts_per_1000_normal``: alerts on events labelled normal, per 1,000 such events.

Datasets: ``shuttle`` (River's bundled Shuttle data, 49,097 rows), ``synthetic`` (the labelled card
transactions of :mod:`anomrec.streaming.sample`), or any labelled CSV with rows in stream order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.core import Processor
from anomrec.streaming.events import Event, EventDecoder
from anomrec.streaming.exceptions import ConfigError
from anomrec.streaming.sample import generate_transactions
from sklearn.metrics import average_precision_score, roc_auc_score

DATASETS = ("shuttle", "synthetic")


@dataclass(slots=True)
class StreamScores:
    """Every per-event score of one prequential run, aligned with ``labels``."""

    labels: np.ndarray
    combined: np.ndarray
    raw: dict[str, np.ndarray]
    calibrated: dict[str, np.ndarray]
    alerted: np.ndarray
    warmup_events: int
    threshold: float
    alerts: list[Any] = field(default_factory=list)
    refit_seconds: dict[str, list[float]] = field(default_factory=dict)
    #: Each event's time (epoch seconds, or its row number when the data has no time).
    times: np.ndarray = field(default_factory=lambda: np.empty(0))
    #: Each event's feature vector as the processor computed it, one row per event.
    vectors: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    feature_names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Metrics:
    """Quality of one detector's scores on a labelled stream."""

    name: str
    scored: int
    roc_auc: float
    average_precision: float
    precision_at_k: float
    k: int
    recall_at_threshold: float
    alerts_per_1000: float
    false_alerts_per_1000_normal: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "scored": self.scored,
            "roc_auc": _round(self.roc_auc),
            "average_precision": _round(self.average_precision),
            "precision_at_k": _round(self.precision_at_k),
            "k": self.k,
            "recall_at_threshold": _round(self.recall_at_threshold),
            "alerts_per_1000": _round(self.alerts_per_1000),
            "false_alerts_per_1000_normal": _round(self.false_alerts_per_1000_normal),
        }


def run_prequential(
    config: ProcessorConfig, events: Sequence[Event], labels: np.ndarray, *, batch_size: int = 1000
) -> StreamScores:
    """Run ``events`` through a fresh processor in batches; collect every score.

    Besides the scores it keeps what a report of the run shows: every alert (with its reasons),
    each event's time and feature vector, and the feature names.
    """
    parts: list[Any] = []
    alerts: list[Any] = []
    with Processor(config) as proc:
        for start in range(0, len(events), batch_size):
            step = proc.process(events[start : start + batch_size])
            parts.append(step)
            alerts.extend(step.alerts)
        refit_seconds = {
            d.name: list(getattr(d, "fit_seconds_", [])) for d in proc.detectors if hasattr(d, "fit_seconds_")
        }
        feature_names = proc.feature_names
    names = [d for d in config.detectors]
    return StreamScores(
        labels=np.asarray(labels, dtype=np.int64),
        combined=np.concatenate([p.scores for p in parts]) if parts else np.empty(0),
        raw={n: np.concatenate([p.raw[n] for p in parts]) for n in names},
        calibrated={n: np.concatenate([p.calibrated[n] for p in parts]) for n in names},
        alerted=np.concatenate([p.alerted for p in parts]) if parts else np.empty(0, dtype=bool),
        warmup_events=config.warmup_events,
        threshold=config.threshold,
        alerts=alerts,
        refit_seconds=refit_seconds,
        times=np.array([e.event_time for p in parts for e in p.events], dtype=np.float64),
        vectors=np.concatenate([p.vectors for p in parts]) if parts else np.empty((0, len(feature_names))),
        feature_names=feature_names,
    )


def metrics(
    name: str,
    labels: np.ndarray,
    scores: np.ndarray,
    decisions: np.ndarray,
    *,
    warmup_events: int,
    k: int | None = None,
) -> Metrics:
    """Metrics of one score column; NaN scores (warming up) are left out of the ranking metrics.

    Examples
    --------
    >>> y = np.array([0, 0, 1, 0, 1, 0])
    >>> s = np.array([0.1, 0.2, 0.9, np.nan, 0.8, 0.3])
    >>> m = metrics("demo", y, s, s >= 0.5, warmup_events=0)
    >>> m.roc_auc, m.average_precision, m.precision_at_k, m.recall_at_threshold
    (1.0, 1.0, 1.0, 1.0)
    """
    ok = ~np.isnan(scores)
    y, s = labels[ok], scores[ok]
    both = 0 < y.sum() < len(y)
    auc = float(roc_auc_score(y, s)) if both else math.nan
    ap = float(average_precision_score(y, s)) if both else math.nan
    kk = int(y.sum()) if k is None else min(k, len(s))
    if kk > 0:
        top = np.argsort(-s, kind="stable")[:kk]
        p_at_k = float(y[top].mean())
    else:
        p_at_k = math.nan
    after = np.arange(len(labels)) >= warmup_events
    live_y, live_d = labels[after], decisions[after]
    positives = int(live_y.sum())
    normals = int(len(live_y) - positives)
    recall = float((live_d & (live_y == 1)).sum() / positives) if positives else math.nan
    per_1000 = float(live_d.sum() * 1000 / len(live_y)) if len(live_y) else math.nan
    false_per_1000 = float((live_d & (live_y == 0)).sum() * 1000 / normals) if normals else math.nan
    return Metrics(name, int(ok.sum()), auc, ap, p_at_k, kk, recall, per_1000, false_per_1000)


def evaluate(scores: StreamScores, k: int | None = None) -> list[Metrics]:
    """Metrics for each detector, then for the ensemble."""
    out = []
    for name, raw in scores.raw.items():
        cal = scores.calibrated[name]
        decisions = ~np.isnan(cal) & (cal >= scores.threshold)
        out.append(metrics(name, scores.labels, raw, decisions, warmup_events=scores.warmup_events, k=k))
    out.append(
        metrics(
            "ensemble",
            scores.labels,
            scores.combined,
            scores.alerted,
            warmup_events=scores.warmup_events,
            k=k,
        )
    )
    return out


def format_table(results: Sequence[Metrics]) -> str:
    """An aligned text table of ``results``."""
    header = (
        f"{'detector':<10} {'scored':>7} {'ROC-AUC':>8} {'AP':>7} {'P@k':>7} {'k':>6} "
        f"{'recall@thr':>10} {'alerts/1k':>9} {'false/1k':>9}"
    )
    lines = [header, "-" * len(header)]
    for m in results:
        lines.append(
            f"{m.name:<10} {m.scored:>7} {m.roc_auc:>8.4f} {m.average_precision:>7.4f} "
            f"{m.precision_at_k:>7.4f} {m.k:>6} {m.recall_at_threshold:>10.4f} "
            f"{m.alerts_per_1000:>9.2f} {m.false_alerts_per_1000_normal:>9.2f}"
        )
    return "\n".join(lines)


# -- data sets -----------------------------------------------------------------------------------


def shuttle_frame() -> pd.DataFrame:
    """River's bundled Shuttle data set: features f1..f9 and ``label`` (1 = anomaly), in stream order."""
    from river import datasets  # noqa: PLC0415 - River's data sets load only for Shuttle

    rows = [{**x, "label": int(y)} for x, y in datasets.Shuttle()]
    return pd.DataFrame(rows)


def frame_events(
    frame: pd.DataFrame,
    *,
    label_column: str | None,
    feature_columns: Sequence[str] | None = None,
    entity_column: str | None = None,
    time_column: str | None = None,
    source: str = "the data",
) -> tuple[list[Event], np.ndarray, tuple[str, ...]]:
    """Turn a labelled table, rows in stream order, into events for the ``generic`` profile.

    With ``label_column=None`` (history to fit on, say) every label is 0.

    Raises :class:`ConfigError` naming the column for a missing column, a non-numeric or missing
    feature value, or a label column that is not binary.

    Examples
    --------
    >>> df = pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4], "y": [0, 1]})
    >>> events, labels, names = frame_events(df, label_column="y")
    >>> names, labels.tolist(), events[1].values
    (('a', 'b'), [0, 1], (2.0, 4.0))
    >>> frame_events(df, label_column="y", feature_columns=["a", "c"])
    Traceback (most recent call last):
    ...
    anomrec.streaming.exceptions.ConfigError: feature column 'c' is not in the data: its columns are a, b, y
    """
    columns = list(frame.columns)

    def need(col: str, what: str) -> None:
        if col not in frame.columns:
            raise ConfigError(
                f"{what} {col!r} is not in {source}: its columns are {', '.join(map(str, columns))}"
            )

    if label_column is not None:
        need(label_column, "label column")
    for col in (entity_column, time_column):
        if col is not None:
            need(col, "column")
    if feature_columns is None:
        skip = {label_column, entity_column, time_column}
        feature_columns = [c for c in columns if c not in skip]
        if not feature_columns:
            raise ConfigError(f"{source} has no columns besides the label: nothing to score")
    for col in feature_columns:
        need(col, "feature column")
    labels = (
        np.zeros(len(frame), dtype=np.int64)
        if label_column is None
        else _binary_labels(frame[label_column], label_column, source)
    )
    matrix = np.empty((len(frame), len(feature_columns)))
    for j, col in enumerate(feature_columns):
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ConfigError(
                f"feature column {col!r} is not numeric: row {row + 1} holds {frame[col].iloc[row]!r}; "
                "drop the column or clean the value"
            )
        matrix[:, j] = values.to_numpy(dtype=float)
    entities = frame[entity_column].astype(str).tolist() if entity_column else ["all"] * len(frame)
    times = (
        pd.to_numeric(frame[time_column], errors="raise").astype(float).tolist()
        if time_column
        else [float(i) for i in range(len(frame))]
    )
    rows = matrix.tolist()
    events = [Event(str(i), entities[i], times[i], tuple(rows[i]), int(labels[i])) for i in range(len(frame))]
    return events, labels, tuple(str(c) for c in feature_columns)


def _binary_labels(series: pd.Series, column: str, source: str) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce")
    distinct = sorted({repr(v) for v in series.dropna().unique().tolist()})[:5]
    if values.isna().any() or not values.isin([0, 1]).all():
        raise ConfigError(
            f"label column {column!r} in {source} is not binary: expected only 0 and 1 "
            f"(or true/false), found {', '.join(distinct)}"
        )
    return values.to_numpy(dtype=np.int64)


def read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV with a clear error for a missing, empty or unreadable file."""
    try:
        frame = pd.read_csv(path, true_values=["true", "True"], false_values=["false", "False"])
    except FileNotFoundError:
        raise ConfigError(f"no such CSV file: {str(path)!r}") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {str(path)!r} as CSV: {exc}") from None
    if frame.empty:
        raise ConfigError(f"{str(path)!r} holds no rows")
    return frame


def dataset_stream(
    name: str, config: ProcessorConfig, *, events: int = 60_000, users: int = 600, seed: int = 7
) -> tuple[ProcessorConfig, list[Event], np.ndarray]:
    """A built-in labelled stream and the configuration that fits it."""
    if name == "shuttle":
        frame = shuttle_frame()
        evs, labels, names = frame_events(frame, label_column="label", source="Shuttle")
        return replace(config, profile="generic", features=names), evs, labels
    if name == "synthetic":
        cfg = replace(config, profile="transactions")
        decoder = EventDecoder(cfg)
        evs = [decoder.from_dict(d) for d in generate_transactions(events, n_users=users, seed=seed)]
        return cfg, evs, np.array([e.label or 0 for e in evs], dtype=np.int64)
    raise ConfigError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}, or --csv FILE")


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 5)
