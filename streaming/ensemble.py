"""From raw detector scores to one calibrated score, an alert decision and its reasons.

Detectors disagree about scale: HalfSpaceTrees gives a mass ratio in [0, 1], IsolationForest a
path-length score around 0.5, LOF a density ratio around 1. So each detector's raw score is first
**calibrated** to its percentile among that detector's own recent scores, and only percentiles are
combined.

Everything here changes state only at *refresh points*, which are fixed positions in the stream
(every ``refresh_every`` events). Between two refresh points a calibrator is a fixed lookup table,
so a batch can be scored in one vectorised call and the result never depends on how the stream was
cut into batches.

Combination rules
-----------------
``max``
    The largest percentile. Sensitive, but one noisy detector makes every event look bad.
``mean``
    The plain mean of the percentiles.
``weighted``
    A weighted mean of the percentiles.
``fisher`` (default)
    A weighted geometric mean of the tail probabilities ``1 - p``, turned back into a percentile:
    ``1 - prod((1 - p_i) ** w_i)``. This is Fisher's way of combining p-values; unlike the mean, an
    event that one detector places in its top 0.1 % stays high even when another is lukewarm.

Weights are either fixed per detector, or ``auto``: each detector is weighted by how well its top
2 % of recent events agrees with the top of the other detectors' consensus,
above what chance gives. A detector that ranks at random (LOF on some data sets) gets a weight near
zero and cannot drag the ensemble below its strong members.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

RULES = ("fisher", "mean", "weighted", "max")


class RingBuffer:
    """The last ``capacity`` rows of a 2-D float array, oldest first on read.

    Examples
    --------
    >>> ring = RingBuffer(3, 1)
    >>> ring.extend(np.array([[1.0], [2.0]]))
    >>> ring.extend(np.array([[3.0], [4.0]]))
    >>> ring.values().ravel().tolist()
    [2.0, 3.0, 4.0]
    """

    def __init__(self, capacity: int, width: int) -> None:
        self.capacity = capacity
        self.width = width
        self._data = np.empty((capacity, width), dtype=np.float64)
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def extend(self, rows: np.ndarray) -> None:
        rows = rows[-self.capacity :]
        n = len(rows)
        if n == 0:
            return
        end = self._next + n
        if end <= self.capacity:
            self._data[self._next : end] = rows
        else:
            split = self.capacity - self._next
            self._data[self._next :] = rows[:split]
            self._data[: n - split] = rows[split:]
        self._next = end % self.capacity
        self._size = min(self.capacity, self._size + n)

    def values(self) -> np.ndarray:
        """A copy of the held rows, oldest first."""
        if self._size < self.capacity:
            return self._data[: self._size].copy()
        return np.concatenate([self._data[self._next :], self._data[: self._next]])


class PercentileCalibrator:
    """Maps a raw score to its percentile among the detector's recent scores.

    The reference is the sorted last ``window`` non-missing scores as of the latest refresh point.
    A score's percentile is the share of the reference at or below it, over ``len + 1``, so it lies
    in [0, 1) and its tail probability ``1 - p`` is never zero. Until the reference holds
    ``min_reference`` scores the calibrated value is NaN: the detector is still warming up.

    Examples
    --------
    >>> cal = PercentileCalibrator(window=100, min_reference=10)
    >>> cal.transform(np.array([0.5])).tolist()         # no reference yet
    [nan]
    >>> cal.update(np.arange(99, dtype=float)); cal.refresh()
    >>> cal.transform(np.array([-1.0, 49.0, 1000.0])).round(2).tolist()
    [0.0, 0.5, 0.99]
    """

    def __init__(self, *, window: int = 5000, min_reference: int = 200) -> None:
        self.window = window
        self.min_reference = min_reference
        self._history = RingBuffer(window, 1)
        self.reference_: np.ndarray = np.empty(0)

    @property
    def ready(self) -> bool:
        return len(self.reference_) >= self.min_reference

    def transform(self, raw: np.ndarray) -> np.ndarray:
        """Percentiles of ``raw`` against the current reference; NaN where raw is NaN or not ready."""
        if not self.ready:
            return np.full(len(raw), np.nan)
        ref = self.reference_
        out = np.searchsorted(ref, raw, side="right") / (len(ref) + 1.0)
        out[np.isnan(raw)] = np.nan
        return out

    def update(self, raw: np.ndarray) -> None:
        """Remember the non-missing scores of ``raw``; they enter the reference at the next refresh."""
        self._history.extend(raw[~np.isnan(raw)].reshape(-1, 1))

    def refresh(self) -> None:
        self.reference_ = np.sort(self._history.values().ravel(), kind="stable")


def combine(percentiles: np.ndarray, weights: np.ndarray, rule: str) -> np.ndarray:
    """Combine a (detectors, events) array of percentiles into one score per event.

    NaN entries (a detector still warming up) are left out and the remaining weights renormalised;
    an event with no available detector gets NaN.

    Examples
    --------
    >>> p = np.array([[0.999, 0.5], [0.5, np.nan]])
    >>> w = np.array([0.5, 0.5])
    >>> combine(p, w, "mean").round(4).tolist()
    [0.7495, 0.5]
    >>> combine(p, w, "fisher").round(4).tolist()
    [0.9776, 0.5]
    >>> combine(p, w, "max").tolist()
    [0.999, 0.5]
    """
    available = ~np.isnan(percentiles)
    any_available = available.any(axis=0)
    filled = np.where(available, percentiles, 0.0)
    if rule == "max":
        out = np.where(available, percentiles, -np.inf).max(axis=0)
        return np.where(any_available, out, np.nan)
    w = weights[:, None] if rule != "mean" else np.ones((len(weights), 1))
    w = np.where(available, w, 0.0)
    total = w.sum(axis=0)
    safe_total = np.where(total > 0, total, 1.0)
    if rule in ("mean", "weighted"):
        out = (w * filled).sum(axis=0) / safe_total
    elif rule == "fisher":
        surprise = -np.log1p(-np.minimum(filled, 1.0 - 1e-12))
        out = -np.expm1(-(w * surprise).sum(axis=0) / safe_total)
    else:
        raise ValueError(f"unknown rule {rule!r}: expected one of {', '.join(RULES)}")
    return np.where(total > 0, out, np.nan)


def agreement_weights(percentiles: np.ndarray, quantile: float = 0.02, power: float = 2.0) -> np.ndarray:
    """Weight each detector by how much its top events agree with the other detectors' top events.

    ``percentiles`` is (detectors, events) with no NaN. For detector ``i``, take the events in its top
    ``quantile`` and the top ``quantile`` of the mean of the others; their overlap is ``quantile``
    by chance alone. The weight is the overlap above chance, scaled to [0, 1] and raised to
    ``power``, then normalised to sum to one. If no detector agrees with any other the weights are
    equal.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> signal = rng.random(20_000)
    >>> P = np.vstack([signal, signal + 0.01 * rng.random(20_000), rng.random(20_000)])
    >>> agreement_weights(P).round(1).tolist()     # the third ranks at random
    [0.5, 0.5, 0.0]
    """
    n_det, n = percentiles.shape
    if n_det < 2 or n == 0:
        return np.full(n_det, 1.0 / n_det)
    k = max(1, int(quantile * n))
    # The top k of each row; argpartition is deterministic for a given input, which is all that
    # replay needs, and far cheaper than a full sort of a 20,000-score window.
    top = np.argpartition(-percentiles, k - 1, axis=1)[:, :k]
    total_all = percentiles.sum(axis=0)
    raw = np.empty(n_det)
    for i in range(n_det):
        others = (total_all - percentiles[i]) / (n_det - 1)
        top_others = np.argpartition(-others, k - 1)[:k]
        overlap = np.intersect1d(top[i], top_others, assume_unique=True).size / k
        raw[i] = max(0.0, (overlap - quantile) / (1.0 - quantile)) ** power
    total = raw.sum()
    return raw / total if total > 0 else np.full(n_det, 1.0 / n_det)


@dataclass(frozen=True, slots=True)
class Reason:
    """One feature that sets an alerted event apart from the recent normal events."""

    feature: str
    value: float
    typical_low: float
    typical_high: float
    deviation: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "value": self.value,
            "typical": [self.typical_low, self.typical_high],
            "deviation": round(self.deviation, 3),
        }


class FeatureReference:
    """Per-feature typical ranges of the recent non-alerted events, for explaining alerts.

    The typical range of a feature is its 5th to 95th percentile over the reference rows, and a
    value's deviation is its distance from the median in units of that range's width divided by
    3.29, the width of a normal distribution's central 90 % (so deviations read like z-scores).
    A feature that is constant over that range but not always (a distance beyond reach, 0 but for
    a few trips) is measured in its standard deviation instead; one that never varies (a flag that
    is always 0) gets a small floor on its width, so that a 1 stands out.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> ref = FeatureReference(("amount_z", "new_merchant"))
    >>> ref.refresh(np.column_stack([rng.normal(size=1000), np.zeros(1000)]))
    >>> [r.feature for r in ref.explain(np.array([0.1, 1.0]), 1)]
    ['new_merchant']
    >>> r = ref.explain(np.array([6.0, 0.0]), 1)[0]
    >>> r.feature, round(r.typical_low, 1), round(r.typical_high, 1), bool(r.deviation > 5)
    ('amount_z', -1.6, 1.6, True)
    """

    def __init__(self, feature_names: Sequence[str]) -> None:
        self.feature_names = tuple(feature_names)
        d = len(self.feature_names)
        self.low_ = np.zeros(d)
        self.median_ = np.zeros(d)
        self.high_ = np.zeros(d)
        self.scale_ = np.ones(d)
        self.ready = False

    def refresh(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        self.low_, self.median_, self.high_ = np.quantile(rows, [0.05, 0.5, 0.95], axis=0)
        floor = 1e-3 * (np.abs(self.median_) + 1.0)
        width = (self.high_ - self.low_) / 3.29
        self.scale_ = np.maximum(np.where(width > 0, width, rows.std(axis=0)), floor)
        self.ready = True

    def explain(self, x: np.ndarray, n: int) -> list[Reason]:
        """The ``n`` features of ``x`` furthest from their typical value, furthest first."""
        dev = (x - self.median_) / self.scale_
        order = np.argsort(-np.abs(dev), kind="stable")[:n]
        return [
            Reason(
                feature=self.feature_names[j],
                value=_clean(x[j]),
                typical_low=_clean(self.low_[j]),
                typical_high=_clean(self.high_[j]),
                deviation=float(dev[j]),
            )
            for j in order
        ]


def _clean(value: float) -> float:
    """A float fit for JSON: rounded to 6 significant digits."""
    v = float(value)
    return v if v == 0 or not math.isfinite(v) else float(f"{v:.6g}")
