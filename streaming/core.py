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

State
-----
:meth:`Processor.state` gives everything that shapes future outputs as a JSON-able dict and named
plain arrays, with no pickled object in either (:mod:`anomrec.streaming.checkpoint` writes them
to a file); :meth:`Processor.restore` continues from them exactly, score for score. IsolationForest
and LOF are saved as the rows and seed they were fitted on and fitted again on restore: the fit is
a deterministic function of both. State is refused under settings other than those it was taken
under (every setting but the :data:`RUNTIME_SETTINGS`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import orjson
import sklearn

from .config import CONNECTION_SETTINGS, ProcessorConfig
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
from .exceptions import CheckpointError
from .features import build_profile
from .iforest import CompiledIsolationForest
from .lof import CompiledLOF
from .recommender import RecommenderTask, RecoStep

#: Version of the layout of :meth:`Processor.state`; restore refuses any other.
STATE_FORMAT = 1

#: The settings that change neither the learned state nor the scores computed from it: where
#: records come from and go to, how they are batched, committed and checkpointed, and what an alert
#: shows. State taken under any other setting's different value is refused by
#: :meth:`Processor.restore`, so a setting added later counts as model-affecting until listed here.
#: Added to the seed of :meth:`Processor.refit_now`'s fit (see there).
_FINAL_FIT_SEED_OFFSET = 1_000_003

RUNTIME_SETTINGS = frozenset(
    {
        "bootstrap_servers",
        "input_topic",
        "alerts_topic",
        "dead_letter_topic",
        "recommendations_topic",
        "similar_items_topic",
        "group_id",
        "instance_id",
        "warm_start",
        "metrics_port",
        "metrics_host",
        "id_field",
        "label_field",
        "schema_version_field",
        "schema_versions",
        "require_key",
        "max_record_bytes",
        "max_future_seconds",
        "max_bad_ratio",
        "bad_ratio_window",
        "n_reasons",
        "max_poll_records",
        "delivery",
        "state_dir",
        "checkpoint_every_events",
        "checkpoint_every_seconds",
        "auto_offset_reset",
        "commit_timeout_seconds",
        "session_timeout_ms",
    }
    | CONNECTION_SETTINGS
)


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
                self.detectors.append(
                    SklearnDetector("lof", factory, executor=self.executor, compile=CompiledLOF)
                )
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

    @property
    def has_pending(self) -> bool:
        """Whether events are held back at a model swap point (see ``wait`` in :meth:`process`).

        Their features are already computed, so the state cannot be taken until a call of
        :meth:`process` (with no new events, if need be) has scored them.
        """
        return bool(self._pending_events)

    def model_versions(self) -> dict[str, str]:
        """The version of each detector's current model, and of the recommender's (``"reco"``) if on."""
        versions = {d.name: d.version for d in self.detectors}
        if self.recommender is not None:
            versions["reco"] = self.recommender.model.version
        return versions

    # -- state -------------------------------------------------------------------------------

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Everything that shapes future outputs: a JSON-able dict and named plain arrays (copies).

        :meth:`restore` (or :meth:`from_state`) continues from it exactly as this processor would.
        Neither part holds a pickled object: IsolationForest and LOF are saved as the rows and seed
        of their current model and of a fit in progress, and are fitted again on restore.

        Raises
        ------
        RuntimeError
            Events are held back at a model swap point (:attr:`has_pending`): call
            :meth:`process` until none are, then take the state.
        CheckpointError
            ``hst_implementation`` is ``"river"``, whose River objects have no plain-data form; use
            ``"numpy"``, which gives the same scores.

        Examples
        --------
        >>> from anomrec.streaming.events import EventDecoder
        >>> from anomrec.streaming.sample import generate_transactions
        >>> cfg = ProcessorConfig(
        ...     first_fit_after=300, refit_every=600, swap_delay=50, window_size=250, refresh_every=250
        ... )
        >>> decoder = EventDecoder(cfg)
        >>> events = [decoder.from_dict(d) for d in generate_transactions(1500, seed=3)]
        >>> with Processor(cfg) as whole:
        ...     expected = whole.process(events).scores
        >>> with Processor(cfg) as first:
        ...     head = first.process(events[:700]).scores
        ...     meta, arrays = first.state()
        >>> with Processor.from_state(cfg, meta, arrays) as second:
        ...     tail = second.process(events[700:]).scores
        >>> np.array_equal(np.concatenate([head, tail]), expected, equal_nan=True)
        True
        >>> bool(np.isfinite(tail[50:]).all())   # every detector is calibrated from event 750 on
        True
        """
        if self._pending_events:
            raise RuntimeError(
                f"{len(self._pending_events)} events are held back at a model swap point and their "
                "features are already computed, so the state cannot be taken now: call process() "
                "(with no new events if need be) until has_pending is False, then take it"
            )
        arrays: dict[str, np.ndarray] = {}
        detectors: list[dict[str, Any]] = []
        for d in self.detectors:
            prefix = f"detectors.{d.name}"
            if isinstance(d, SklearnDetector):
                fit_meta, fit_arrays = d.fit_state()
                detectors.append({"name": d.name, **fit_meta})
                arrays.update({f"{prefix}.{k}": v for k, v in fit_arrays.items()})
            elif isinstance(d, HalfSpaceTreesDetector) and d.implementation == "numpy":
                detectors.append({"name": d.name, "snapshot": _split_arrays(d.snapshot(), prefix, arrays)})
            else:
                raise CheckpointError(
                    f"detector {d.name!r} ({type(d).__name__}, hst_implementation="
                    f"{self.config.hst_implementation!r}) holds objects that have no plain-data form, so "
                    "its state cannot be saved: use hst_implementation='numpy' (the same scores)"
                )
        names = [d.name for d in self.detectors]
        for name, cal in zip(names, self.calibrators, strict=True):
            _save_calibrator(cal, f"calibrators.{name}", arrays)
        _save_calibrator(self.combined_calibrator, "combined", arrays)
        arrays["weights.weights"] = np.array(self.weights_, dtype=np.float64)
        arrays["weights.agreement"] = self._agreement.values()
        arrays["clean.rows"] = self.clean_.values()
        ref = self.reference_
        for attr in ("low", "median", "high", "scale"):
            arrays[f"reference.{attr}"] = np.array(getattr(ref, attr + "_"), dtype=np.float64)
        if self._reference_rows is not None:
            arrays["reference.rows"] = self._reference_rows.copy()
        reco_meta: dict[str, Any] | None = None
        if self.recommender is not None:
            reco_arrays, reco_meta = self.recommender.snapshot()
            arrays.update({f"recommender.{k}": np.array(v, copy=True) for k, v in reco_arrays.items()})
        meta = {
            "format": STATE_FORMAT,
            "settings": _settings_fingerprint(self.config),
            "libraries": {"scikit-learn": sklearn.__version__},
            "feature_names": list(self.feature_names),
            "schedule": {"n_seen": self.n_seen_, "next_fit_at": self.next_fit_at_, "swap_at": self.swap_at_},
            "profile": self.profile.snapshot(),
            "detectors": detectors,
            "calibrators": names,
            "reference": {"ready": self.reference_.ready, "rows_pending": self._reference_rows is not None},
            "recommender": reco_meta,
            "model_versions": self.model_versions(),
        }
        # Through JSON and back: a copy that later events cannot change, and exactly what a
        # checkpoint file gives back (tuples become lists, numpy scalars plain numbers).
        return _plain(meta), arrays

    def restore(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        """Replace all state with that of :meth:`state`, taken from a processor with the same settings.

        Fits that were in progress are begun again on this processor's executor, and the current
        IsolationForest and LOF models are fitted again here, from their saved rows and seeds. If
        this raises, the processor is left as it was.

        Raises
        ------
        CheckpointError
            The state was taken under other settings (the message names each one that differs,
            with both values), with another scikit-learn version while IsolationForest or LOF is
            on, in an unknown layout, or is incomplete or inconsistent.
        """
        fmt = meta.get("format")
        if fmt != STATE_FORMAT:
            raise CheckpointError(
                f"processor state has layout {fmt!r}, not {STATE_FORMAT}: it was saved by another "
                "version of anomrec; reset the state (delete the state folder) to start afresh, or run "
                "the version that saved it"
            )
        self._check_settings(meta)
        # Loaded into a twin first, so that a failure halfway leaves this processor untouched.
        twin = Processor(self.config, executor=self.executor)
        try:
            twin._load_state(meta, arrays)
        except CheckpointError:
            raise
        except (AttributeError, KeyError, IndexError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"processor state is incomplete or inconsistent ({type(exc).__name__}: {exc}); reset "
                "the state (delete the state folder) to start afresh"
            ) from exc
        own_executor = self._own_executor
        vars(self).update(vars(twin))
        self._own_executor = own_executor

    @classmethod
    def from_state(
        cls,
        config: ProcessorConfig,
        meta: Mapping[str, Any],
        arrays: Mapping[str, np.ndarray],
        *,
        executor: Executor | None = None,
    ) -> Processor:
        """A processor built from ``config`` that continues from :meth:`state`'s output (see :meth:`restore`).

        Used as ``Processor(config, executor=executor)`` followed by ``restore(meta, arrays)``.
        """
        proc = cls(config, executor=executor)
        try:
            proc.restore(meta, arrays)
        except BaseException:
            proc.close()
            raise
        return proc

    def _check_settings(self, meta: Mapping[str, Any]) -> None:
        saved = meta.get("settings")
        if not isinstance(saved, dict):
            raise CheckpointError(
                "processor state names no settings; reset the state (delete the state folder)"
            )
        current = _settings_fingerprint(self.config)
        missing = "(not set)"
        differ = [
            f"{name}={current.get(name, missing)!r} (the state's: {saved.get(name, missing)!r})"
            for name in sorted(set(saved) | set(current))
            if saved.get(name, missing) != current.get(name, missing)
        ]
        if differ:
            raise CheckpointError(
                "the state was taken under other settings, so it cannot continue exactly: "
                + ", ".join(differ)
                + ". Either reset the state (delete the state folder, e.g. with "
                "anomrec.streaming.checkpoint.reset_state) to start afresh with these settings, or "
                "go back to the state's settings"
            )
        if any(isinstance(d, SklearnDetector) for d in self.detectors):
            libraries = meta.get("libraries")
            version = libraries.get("scikit-learn") if isinstance(libraries, dict) else None
            if version != sklearn.__version__:
                raise CheckpointError(
                    f"the state was taken with scikit-learn {version}, this is {sklearn.__version__}: "
                    "IsolationForest and LOF are fitted again on restore and might not come out the "
                    "same. Either reset the state (delete the state folder) or install scikit-learn "
                    f"{version}"
                )

    def _load_state(self, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        """Load :meth:`state`'s output into this freshly built processor (see :meth:`restore`)."""
        names = list(self.feature_names)
        if meta["feature_names"] != names:
            raise ValueError(f"state has features {meta['feature_names']!r}, expected {names!r}")
        d = len(names)
        schedule = meta["schedule"]
        self.n_seen_ = int(schedule["n_seen"])
        self.next_fit_at_ = int(schedule["next_fit_at"])
        self.swap_at_ = None if schedule["swap_at"] is None else int(schedule["swap_at"])
        self.profile.restore(dict(meta["profile"]))
        det_names = [det.name for det in self.detectors]
        if list(meta["calibrators"]) != det_names:
            raise ValueError(f"state has calibrators {meta['calibrators']!r}, expected {det_names!r}")
        for name, cal in zip(det_names, self.calibrators, strict=True):
            _load_calibrator(cal, f"calibrators.{name}", arrays)
        _load_calibrator(self.combined_calibrator, "combined", arrays)
        weights = np.array(arrays["weights.weights"], dtype=np.float64)
        if weights.shape != (len(det_names),):
            raise ValueError(f"weights have shape {weights.shape}, expected ({len(det_names)},)")
        self.weights_ = weights
        self._agreement = _load_ring(arrays["weights.agreement"], self._agreement)
        self.clean_ = _load_ring(arrays["clean.rows"], self.clean_)
        for attr in ("low", "median", "high", "scale"):
            value = np.array(arrays[f"reference.{attr}"], dtype=np.float64)
            if value.shape != (d,):
                raise ValueError(f"reference.{attr} has shape {value.shape}, expected ({d},)")
            setattr(self.reference_, attr + "_", value)
        self.reference_.ready = bool(meta["reference"]["ready"])
        self._reference_rows = None
        if meta["reference"]["rows_pending"]:
            rows = np.array(arrays["reference.rows"], dtype=np.float64)
            if rows.ndim != 2 or rows.shape[1] != d:
                raise ValueError(f"reference.rows has shape {rows.shape}, expected (n, {d})")
            self._reference_rows = rows
        if self.recommender is not None:
            prefix = "recommender."
            reco_arrays = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            self.recommender.restore(reco_arrays, meta["recommender"])
        # The detectors last: refitting is the slow part, and a pending fit goes to the executor.
        entries = list(meta["detectors"])
        if [e["name"] for e in entries] != det_names:
            raise ValueError(f"state has detectors {[e['name'] for e in entries]!r}, expected {det_names!r}")
        for det, entry in zip(self.detectors, entries, strict=True):
            prefix = f"detectors.{det.name}."
            if isinstance(det, SklearnDetector):
                own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
                det.load_fit_state(entry, own)
            else:
                det.restore_state(_join_arrays(entry["snapshot"], arrays))

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

    def _refresh(self) -> None:
        """Calibration, weights and typical ranges catch up with the recent events."""
        for c in self.calibrators:
            c.refresh()
        self.combined_calibrator.refresh()
        # The typical ranges are only needed to explain an alert: the clean window as it stands
        # here is kept, and its quantiles are worked out at the first alert, if any.
        self._reference_rows = self.clean_.values()
        if self.auto_weights and len(self._agreement) >= min(1000, self.config.calibration_window):
            self.weights_ = agreement_weights(self._agreement.values().T)

    def _after_segment(self) -> None:
        cfg = self.config
        if self.n_seen_ % cfg.refresh_every == 0:
            self._refresh()
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

    def refit_now(self) -> None:
        """Fit IsolationForest and LOF on the clean window as it stands, swap them in, and wait.

        For the end of a batch fit (``anomrec fit``): the saved models then reflect the latest
        data instead of a fit up to ``refit_every + swap_delay`` events old. A fit already in
        progress is finished and swapped in first. Calibration, weights and reference ranges are
        refreshed too, and the next scheduled refit is ``refit_every`` events away. Deterministic:
        the seed follows the number of events seen, as scheduled refits' seeds do.

        Raises
        ------
        RuntimeError
            Events are held back at a model swap point (:attr:`has_pending`), or fewer clean rows
            than there are features are available to fit on.
        """
        if self._pending_events:
            raise RuntimeError("events are held back at a model swap point: call process() until none are")
        cfg = self.config
        self._finish_fits(None)
        refittable = [d for d in self.detectors if isinstance(d, SklearnDetector)]
        if refittable:
            train = self.clean_.values()
            if len(train) <= len(self.feature_names):
                raise RuntimeError(
                    f"only {len(train)} clean events to fit on; fit on more data (at least "
                    f"{cfg.first_fit_after:,} events)"
                )
            # Offset from the scheduled refits' seeds (seed + fit index), so that this final fit
            # never repeats the random draws of the scheduled fit at the same stream position.
            seed = cfg.seed + self.n_seen_ // max(1, cfg.refit_every) + _FINAL_FIT_SEED_OFFSET
            for d in refittable:
                d.begin_fit(train[-cfg.lof_window :] if d.name == "lof" else train, seed=seed)
            self._finish_fits(None)
            self.next_fit_at_ = self.n_seen_ + cfg.refit_every
        self._refresh()

    def _finish_fits(self, wait: float | None) -> bool:
        for d in self.detectors:
            if isinstance(d, SklearnDetector) and not d.finish_fit(timeout=wait):
                return False
        self.swap_at_ = None
        return True


def _maybe(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 6)


# -- state helpers ---------------------------------------------------------------------------------

_ARRAY = "__array__"


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-able: {value!r}")


def _plain(value: Any) -> Any:
    """``value`` through JSON and back (NaN and infinities kept, as Python's json module does)."""
    return json.loads(json.dumps(value, default=_json_default))


def _settings_fingerprint(config: ProcessorConfig) -> dict[str, Any]:
    """The settings state depends on, as JSON-able values: every one but :data:`RUNTIME_SETTINGS`."""
    return _plain(
        {
            f.name: getattr(config, f.name)
            for f in dataclasses.fields(config)
            if f.name not in RUNTIME_SETTINGS
        }
    )


def _split_arrays(value: Any, name: str, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` with each numpy array moved into ``arrays`` under a dotted name and referenced."""
    if isinstance(value, np.ndarray):
        arrays[name] = value.copy()
        return {_ARRAY: name}
    if isinstance(value, Mapping):
        return {str(k): _split_arrays(v, f"{name}.{k}", arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_split_arrays(v, f"{name}.{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _join_arrays(value: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    """The inverse of :func:`_split_arrays`."""
    if isinstance(value, dict):
        if set(value) == {_ARRAY}:
            return arrays[value[_ARRAY]]
        return {k: _join_arrays(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_arrays(v, arrays) for v in value]
    return value


def _save_calibrator(cal: PercentileCalibrator, name: str, arrays: dict[str, np.ndarray]) -> None:
    arrays[f"{name}.history"] = cal._history.values()
    arrays[f"{name}.reference"] = cal.reference_.copy()


def _load_calibrator(cal: PercentileCalibrator, name: str, arrays: Mapping[str, np.ndarray]) -> None:
    history = _load_ring(arrays[f"{name}.history"], cal._history)
    reference = np.array(arrays[f"{name}.reference"], dtype=np.float64)
    if reference.ndim != 1:
        raise ValueError(f"{name}.reference has shape {reference.shape}, expected (n,)")
    cal._history, cal.reference_ = history, reference


def _load_ring(rows: np.ndarray, like: RingBuffer) -> RingBuffer:
    """A ring buffer shaped like ``like`` that holds ``rows`` (oldest first), as ``values()`` gave them.

    A ring buffer's behaviour depends only on the rows it holds, not on where its write position
    happens to be, so this one continues exactly as the saved one would.
    """
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != like.width or len(rows) > like.capacity:
        raise ValueError(
            f"saved window has shape {rows.shape}, expected at most ({like.capacity}, {like.width})"
        )
    ring = RingBuffer(like.capacity, like.width)
    ring.extend(rows)
    return ring
