"""The pure processing core: decoded events in, scores and explained alerts out.

Nothing here touches Kafka, files or the wall clock. The Kafka runner and the embedded runner both
feed :meth:`Processor.process` and differ only in where records come from and where alerts go, so
a recorded stream gives the same alerts wherever it is run.

One event goes through four stages:

1. the **feature profile** turns it, with its entity's state, into a fixed-order vector;
2. each **detector** scores the vector before learning from it;
3. each raw score is **calibrated** to a percentile of that detector's recent scores, and the
   percentiles are **combined** (see :mod:`anomrec.streaming.ensemble`);
4. if the combined score reaches the threshold, an **alert** names the event, every detector's raw
   and calibrated score, the model versions and the features that deviate most from recent normal
   events.

Determinism
-----------
Everything that changes how events are scored happens at fixed positions in the stream, counted in
events: calibration, weights and typical ranges are refreshed every ``refresh_every`` events;
IsolationForest and LOF begin a refit at ``first_fit_after`` and then every ``refit_every`` events,
on the latest ``refit_window`` events that did not alert; and the new model takes over exactly
``swap_delay`` events after its fit began. The fit runs on an executor, off the poll loop; if it is
not done when the stream reaches the swap point, the processor waits for it (or, given a
``wait`` limit, hands back the rest of the batch to be finished later). So the same input always
gives the same output, however it is batched and however slow the fits are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import orjson

from .config import ProcessorConfig
from .detectors import (
    Detector,
    HalfSpaceTreesDetector,
    SklearnDetector,
    isolation_forest,
    local_outlier_factor,
)
from .ensemble import (
    FeatureReference,
    PercentileCalibrator,
    Reason,
    RingBuffer,
    agreement_weights,
    combine,
)
from .events import Event, format_time
from .features import build_profile
from .iforest import CompiledIsolationForest
from .recommender import RecommenderTask, RecoStep


@dataclass(frozen=True, slots=True)
class DetectorView:
    """One detector's opinion of an alerted event."""

    raw: float | None
    calibrated: float | None
    weight: float
    version: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "raw": self.raw,
            "calibrated": self.calibrated,
            "weight": round(self.weight, 4),
            "version": self.version,
        }


@dataclass(frozen=True, slots=True)
class Alert:
    """An event whose combined anomaly score reached the threshold."""

    event_id: str
    entity: str
    event_time: float
    score: float
    threshold: float
    threshold_mode: str
    rule: str
    detectors: dict[str, DetectorView]
    reasons: list[Reason]
    features: dict[str, float]
    profile: str

    @property
    def model_versions(self) -> dict[str, str]:
        return {name: view.version for name, view in self.detectors.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "entity": self.entity,
            "event_time": format_time(self.event_time),
            "score": self.score,
            "threshold": self.threshold,
            "threshold_mode": self.threshold_mode,
            "rule": self.rule,
            "model_versions": self.model_versions,
            "detectors": {name: view.to_dict() for name, view in self.detectors.items()},
            "reasons": [r.to_dict() for r in self.reasons],
            "profile": self.profile,
            "features": self.features,
        }

    def to_json(self) -> bytes:
        """The alert as published: one JSON object, event time in ISO 8601 UTC."""
        return orjson.dumps(self.to_dict())


@dataclass(slots=True)
class Step:
    """What one call of :meth:`Processor.process` produced.

    ``events`` are the events scored by this call, in order: the held-back tail of an earlier call
    first, then the new ones, up to any swap point the processor had to stop at (see ``pending``).
    ``scores`` is the combined score of each (NaN while no detector is ready); ``raw`` and
    ``calibrated`` hold each detector's per-event scores; ``alerted`` is the alert decision.
    ``reco`` holds the recommendation updates the events caused (empty when recommendations are
    off).
    """

    events: list[Event]
    scores: np.ndarray
    raw: dict[str, np.ndarray]
    calibrated: dict[str, np.ndarray]
    alerted: np.ndarray
    alerts: list[Alert]
    pending: int = 0
    vectors: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    reco: RecoStep = field(default_factory=RecoStep)


class Processor:
    """Scores each event before learning from it, and raises explained alerts at the threshold.

    Parameters
    ----------
    config
        Profile, detectors, refit schedule, calibration, combination rule and threshold.
    executor
        Runs the IsolationForest and LOF fits. By default the processor starts one worker thread
        of its own (closed by :meth:`close`); runners with several processors share one.

    Examples
    --------
    >>> from anomrec.streaming.events import EventDecoder
    >>> from anomrec.streaming.sample import generate_transactions
    >>> cfg = ProcessorConfig(first_fit_after=500, refit_every=1000, swap_delay=100, warmup_events=500)
    >>> decoder = EventDecoder(cfg)
    >>> events = [decoder.from_dict(d) for d in generate_transactions(3000, seed=3)]
    >>> with Processor(cfg) as proc:
    ...     step = proc.process(events)
    >>> len(step.scores), bool(np.isnan(step.scores[:250]).all())   # nothing is ready at first
    (3000, True)
    >>> sorted(step.alerts[0].model_versions)
    ['hst', 'iforest', 'lof']
    """

    def __init__(self, config: ProcessorConfig, *, executor: Executor | None = None) -> None:
        self.config = config
        self._own_executor = executor is None
        self.executor: Executor = executor if executor is not None else ThreadPoolExecutor(1)
        self.profile = build_profile(config)
        names = self.profile.feature_names
        self.detectors: list[Detector] = []
        for name in config.detectors:
            if name == "hst":
                self.detectors.append(
                    HalfSpaceTreesDetector(
                        names,
                        n_trees=config.n_trees,
                        height=config.height,
                        window_size=config.window_size,
                        seed=config.seed,
                        implementation=config.hst_implementation,
                    )
                )
            elif name == "iforest":
                factory = partial(isolation_forest, n_estimators=config.iforest_trees)
                self.detectors.append(
                    SklearnDetector(
                        "iforest", factory, executor=self.executor, compile=CompiledIsolationForest
                    )
                )
            else:
                factory = partial(local_outlier_factor, n_neighbors=config.lof_neighbors)
                self.detectors.append(SklearnDetector("lof", factory, executor=self.executor))
        n_det = len(self.detectors)
        self.calibrators = [PercentileCalibrator(window=config.calibration_window) for _ in range(n_det)]
        self.combined_calibrator = PercentileCalibrator(window=config.calibration_window)
        fixed = config.detector_weights()
        self.auto_weights = fixed is None
        self.weights_ = (
            np.full(n_det, 1.0 / n_det)
            if fixed is None
            else np.array([fixed[d.name] for d in self.detectors]) / sum(fixed.values())
        )
        self._agreement = RingBuffer(config.calibration_window, n_det)
        self.clean_ = RingBuffer(config.refit_window, len(names))
        self.reference_ = FeatureReference(names)
        self._reference_rows: np.ndarray | None = None
        self.n_seen_ = 0
        self.next_fit_at_ = config.first_fit_after
        self.swap_at_: int | None = None
        self._pending_events: list[Event] = []
        self._pending_X = np.empty((0, len(names)))
        self.recommender = RecommenderTask(config) if config.recommend else None

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the processor's own fit thread, if it started one."""
        if self._own_executor:
            self.executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Processor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.profile.feature_names

    # -- processing --------------------------------------------------------------------------

    def process(self, events: Sequence[Event], *, wait: float | None = None) -> Step:
        """Score and learn ``events`` in order; return their scores and the alerts they raise.

        Parameters
        ----------
        events
            Decoded events, in stream order.
        wait
            Longest time, in seconds, to wait at a model swap point for a fit that is not done.
            ``None`` waits as long as it takes. When the limit is hit, the events from the swap
            point on are held back (``Step.pending`` says how many) and are processed first by the
            next call, which may pass no new events at all.
        """
        if events:
            X_new = self.profile.transform_many(
                [e.entity for e in events], [e.event_time for e in events], [e.values for e in events]
            )
        else:
            X_new = np.empty((0, len(self.feature_names)))
        if self._pending_events:
            todo = self._pending_events + list(events)
            X = np.concatenate([self._pending_X, X_new])
        else:
            todo, X = list(events), X_new
        n = len(todo)
        det_names = [d.name for d in self.detectors]
        raw_out = {name: np.full(n, np.nan) for name in det_names}
        cal_out = {name: np.full(n, np.nan) for name in det_names}
        combined_out = np.full(n, np.nan)
        alerted_out = np.zeros(n, dtype=bool)
        alerts: list[Alert] = []
        i = 0
        while i < n:
            if self.swap_at_ == self.n_seen_ and not self._finish_fits(wait):
                break
            # Detector models only change at fit and swap points, so the raw scores of the whole
            # stretch up to the next one come from one vectorised call per detector ...
            m = min(n - i, self._until_model_change())
            raw = np.vstack([d.score_learn_many(X[i : i + m]) for d in self.detectors])
            # ... while calibration, weights and reference ranges change every refresh_every events.
            j = 0
            while j < m:
                r = min(m - j, self.config.refresh_every - self.n_seen_ % self.config.refresh_every)
                self._decide(
                    X[i + j : i + j + r],
                    raw[:, j : j + r],
                    todo[i + j : i + j + r],
                    i + j,
                    raw_out=raw_out,
                    cal_out=cal_out,
                    combined_out=combined_out,
                    alerted_out=alerted_out,
                    alerts=alerts,
                )
                j += r
                self._after_segment()
            i += m
        self._pending_events = todo[i:]
        self._pending_X = X[i:]
        # Recommendations learn after the anomaly decision, so that alerted events can be gated.
        reco = self.recommender.process(todo[:i], alerted_out[:i]) if self.recommender else RecoStep()
        return Step(
            events=todo[:i],
            scores=combined_out[:i],
            raw={k: v[:i] for k, v in raw_out.items()},
            calibrated={k: v[:i] for k, v in cal_out.items()},
            alerted=alerted_out[:i],
            alerts=alerts,
            pending=n - i,
            vectors=X[:i],
            reco=reco,
        )

    def _until_model_change(self) -> int:
        limits = [self.next_fit_at_ - self.n_seen_]
        if self.swap_at_ is not None:
            limits.append(self.swap_at_ - self.n_seen_)
        return max(1, min(x for x in limits if x > 0))

    def _decide(
        self,
        seg: np.ndarray,
        raw: np.ndarray,
        seg_events: Sequence[Event],
        offset: int,
        *,
        raw_out: dict[str, np.ndarray],
        cal_out: dict[str, np.ndarray],
        combined_out: np.ndarray,
        alerted_out: np.ndarray,
        alerts: list[Alert],
    ) -> None:
        cfg = self.config
        m = len(seg)
        cal = np.vstack([c.transform(r) for c, r in zip(self.calibrators, raw, strict=True)])
        combined = combine(cal, self.weights_, cfg.combine)
        # The ensemble speaks once every member does: a combination of whichever detectors happen
        # to be ready would change meaning as they come in, and a lone weak one would set it.
        combined[np.isnan(cal).any(axis=0)] = np.nan
        if cfg.threshold_mode == "percentile":
            decision = self.combined_calibrator.transform(combined)
        else:
            decision = combined
        positions = self.n_seen_ + np.arange(m)
        alerted = (positions >= cfg.warmup_events) & ~np.isnan(decision) & (decision >= cfg.threshold)

        for j, d in enumerate(self.detectors):
            raw_out[d.name][offset : offset + m] = raw[j]
            cal_out[d.name][offset : offset + m] = cal[j]
            self.calibrators[j].update(raw[j])
        combined_out[offset : offset + m] = combined
        alerted_out[offset : offset + m] = alerted
        self.combined_calibrator.update(combined)
        complete = ~np.isnan(cal).any(axis=0)
        if complete.any():
            self._agreement.extend(cal[:, complete].T)
        self.clean_.extend(seg[~alerted])

        for k in np.flatnonzero(alerted):
            alerts.append(self._alert(seg_events[int(k)], seg[k], raw[:, k], cal[:, k], float(combined[k])))
        self.n_seen_ += m

    def _alert(self, event: Event, x: np.ndarray, raw: np.ndarray, cal: np.ndarray, score: float) -> Alert:
        cfg = self.config
        views = {
            d.name: DetectorView(
                raw=_maybe(raw[j]),
                calibrated=_maybe(cal[j]),
                weight=float(self.weights_[j]),
                version=d.version,
            )
            for j, d in enumerate(self.detectors)
        }
        if self._reference_rows is not None:
            self.reference_.refresh(self._reference_rows)
            self._reference_rows = None
        reasons = self.reference_.explain(x, cfg.n_reasons) if self.reference_.ready else []
        return Alert(
            event_id=event.event_id,
            entity=event.entity,
            event_time=event.event_time,
            score=round(score, 6),
            threshold=cfg.threshold,
            threshold_mode=cfg.threshold_mode,
            rule=cfg.combine,
            detectors=views,
            reasons=reasons,
            features={name: float(v) for name, v in zip(self.feature_names, x.tolist(), strict=True)},
            profile=cfg.profile,
        )

    def _after_segment(self) -> None:
        cfg = self.config
        if self.n_seen_ % cfg.refresh_every == 0:
            for c in self.calibrators:
                c.refresh()
            self.combined_calibrator.refresh()
            # The typical ranges are only needed to explain an alert: the clean window as it
            # stands here is kept, and its quantiles are worked out at the first alert, if any.
            self._reference_rows = self.clean_.values()
            if self.auto_weights and len(self._agreement) >= min(1000, cfg.calibration_window):
                self.weights_ = agreement_weights(self._agreement.values().T)
        if self.n_seen_ == self.next_fit_at_:
            self.next_fit_at_ += cfg.refit_every
            refittable = [d for d in self.detectors if isinstance(d, SklearnDetector)]
            if refittable:
                train = self.clean_.values()
                fit_index = self.n_seen_ // max(1, cfg.refit_every)
                for d in refittable:
                    rows = train[-cfg.lof_window :] if d.name == "lof" else train
                    d.begin_fit(rows, seed=cfg.seed + fit_index)
                self.swap_at_ = self.n_seen_ + cfg.swap_delay

    def _finish_fits(self, wait: float | None) -> bool:
        for d in self.detectors:
            if isinstance(d, SklearnDetector) and not d.finish_fit(timeout=wait):
                return False
        self.swap_at_ = None
        return True


def _maybe(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)
