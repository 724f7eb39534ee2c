"""The pure processing core: decoded events in, scores and alerts out.

Nothing here touches Kafka, files, threads or the wall clock. The Kafka runner and the embedded
runner both feed :meth:`Processor.process` and differ only in where records come from and where
alerts go, so that a recorded stream gives the same alerts wherever it is run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from .config import ProcessorConfig
from .detectors import Detector, RiverHalfSpaceTrees
from .events import Event, format_time


@dataclass(frozen=True, slots=True)
class Alert:
    """An event whose anomaly score reached the threshold."""

    event_id: str
    entity: str
    event_time: float
    score: float
    threshold: float
    detector: str
    features: dict[str, float]

    def to_json(self) -> bytes:
        """The alert as published: one JSON object, event time in ISO 8601 UTC."""
        return orjson.dumps(
            {
                "event_id": self.event_id,
                "entity": self.entity,
                "event_time": format_time(self.event_time),
                "score": self.score,
                "threshold": self.threshold,
                "detector": self.detector,
                "features": self.features,
            }
        )


@dataclass(frozen=True, slots=True)
class Step:
    """What one call of :meth:`Processor.process` produced: a score per event, and the alerts."""

    scores: list[float]
    alerts: list[Alert]


class Processor:
    """Scores each event before learning from it, and raises an alert at the threshold.

    Parameters
    ----------
    config
        Feature names, threshold and detector settings.
    detector
        Defaults to River's HalfSpaceTrees with a MinMax scaler, built from ``config``.

    Examples
    --------
    >>> from anomrec.streaming.events import Event, EventDecoder
    >>> from anomrec.streaming.sample import generate_transactions
    >>> cfg = ProcessorConfig()
    >>> decoder = EventDecoder(cfg)
    >>> history = [decoder.from_dict(d) for d in generate_transactions(3000, anomaly_rate=0.0)]
    >>> proc = Processor(cfg)
    >>> step = proc.process(history)
    >>> len(step.scores), step.scores[:3]   # the first window only fills the trees
    (3000, [0.0, 0.0, 0.0])
    >>> fraud = Event("x", "card-00001", 1.8e9, (9000.0, 8000.0, 300.0))
    >>> [(a.event_id, a.score > 0.99) for a in proc.process([fraud]).alerts]
    [('x', True)]
    """

    def __init__(self, config: ProcessorConfig, detector: Detector | None = None) -> None:
        self.config = config
        self.detector = (
            detector
            if detector is not None
            else RiverHalfSpaceTrees(
                config.features,
                n_trees=config.n_trees,
                height=config.height,
                window_size=config.window_size,
                seed=config.seed,
            )
        )

    def process(self, events: Sequence[Event]) -> Step:
        """Score and learn ``events`` in order; return their scores and the alerts they raise."""
        scores = self.detector.score_learn_many([e.features for e in events])
        threshold = self.config.threshold
        names = self.config.features
        alerts = [
            Alert(
                event_id=e.event_id,
                entity=e.entity,
                event_time=e.event_time,
                score=s,
                threshold=threshold,
                detector="hst",
                features=dict(zip(names, e.features, strict=True)),
            )
            for e, s in zip(events, scores, strict=True)
            if s >= threshold
        ]
        return Step(scores=scores, alerts=alerts)
