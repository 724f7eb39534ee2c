"""Anomaly detectors behind one small protocol.

Every detector maps a fixed-order feature vector to a score where **higher means more anomalous**,
and learns from the same vectors. Detectors are used prequentially: each event is scored by a model
that has learnt from every earlier event and not from itself, so a score never depends on how the
stream was cut into batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from river import anomaly, compose, preprocessing


@runtime_checkable
class Detector(Protocol):
    """What the processing core needs of a detector."""

    def score_one(self, x: Sequence[float]) -> float:
        """Anomaly score of ``x``; higher is more anomalous."""
        ...

    def learn_one(self, x: Sequence[float]) -> None:
        """Update the model with ``x``."""
        ...

    def score_learn_many(self, xs: Sequence[Sequence[float]]) -> list[float]:
        """Score each row, then learn it, in order; equal to alternating the two ``_one`` calls."""
        ...


class RiverHalfSpaceTrees:
    """River's HalfSpaceTrees with an online MinMax scaler in front.

    HalfSpaceTrees expects features in [0, 1]; the scaler learns each feature's range from the
    stream. Until the first ``window_size`` events have been learnt the trees hold no reference
    mass and every score is 0, so nothing alerts during that warm-up.

    Parameters
    ----------
    feature_names
        Names of the vector's positions, in order.
    n_trees, height, window_size
        HalfSpaceTrees settings.
    seed
        Seeds the random split points.

    Examples
    --------
    >>> det = RiverHalfSpaceTrees(("amount",), n_trees=5, height=6, window_size=10, seed=1)
    >>> scores = det.score_learn_many([[v] for v in [10.0, 11.0, 9.5, 10.2] * 5])
    >>> scores[:10] == [0.0] * 10   # first window: no reference mass yet
    True
    >>> det.score_one([500.0]) > max(scores)
    True
    """

    def __init__(
        self,
        feature_names: Sequence[str],
        *,
        n_trees: int = 25,
        height: int = 15,
        window_size: int = 250,
        seed: int = 42,
    ) -> None:
        self.feature_names = tuple(feature_names)
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.seed = seed
        self.model_ = compose.Pipeline(
            preprocessing.MinMaxScaler(),
            anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed),
        )

    def _dict(self, x: Sequence[float]) -> dict[str, float]:
        return dict(zip(self.feature_names, x, strict=True))

    def score_one(self, x: Sequence[float]) -> float:
        return float(self.model_.score_one(self._dict(x)))

    def learn_one(self, x: Sequence[float]) -> None:
        self.model_.learn_one(self._dict(x))

    def score_learn_many(self, xs: Sequence[Sequence[float]]) -> list[float]:
        model = self.model_
        scores = []
        for x in xs:
            d = self._dict(x)
            scores.append(float(model.score_one(d)))
            model.learn_one(d)
        return scores
