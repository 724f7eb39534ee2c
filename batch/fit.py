"""Fit the models on recorded history, for ``anomrec run --warm-start`` (``anomrec fit``).

The history goes through the same :class:`~anomrec.streaming.core.Processor` as live events, in
order, so the features, the clean windows, the calibration and the recommender come out as a
processor that had run over it would hold them. At the end IsolationForest and LOF are fitted
once more on the latest clean window (:meth:`~anomrec.streaming.core.Processor.refit_now`), so
that the saved models are not up to a refit interval old. The result is a function of the
events and the settings alone.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomrec.streaming.artifacts import save_models
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.core import Processor
from anomrec.streaming.events import Event
from anomrec.streaming.exceptions import ConfigError


@dataclass(slots=True)
class Fitted:
    """What :func:`fit` learned from, and the processor that holds the models."""

    processor: Processor
    source: str
    events: int = 0
    bad_records: Counter[str] = field(default_factory=Counter)
    first: Event | None = None
    last: Event | None = None

    def training(self) -> dict[str, Any]:
        """The manifest's ``training`` entry."""
        return {
            "source": self.source,
            "events": self.events,
            "bad_records": dict(sorted(self.bad_records.items())),
            "first_event": _describe(self.first),
            "last_event": _describe(self.last),
        }

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the models as the next version under ``directory``; return its folder."""
        return save_models(self.processor, directory, self.training())


def fit(
    config: ProcessorConfig,
    batches: Iterable[Iterable[Event]],
    *,
    source: str,
    bad_records: Mapping[str, int] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Fitted:
    """Run ``batches`` of events through a new processor, then refit; the caller closes the processor.

    ``bad_records`` is a live counter of the records the caller could not decode: it is read at
    the end, for the manifest. ``on_batch(n)`` follows progress.

    Raises
    ------
    ConfigError
        Too few events to fit IsolationForest or LOF on.

    Examples
    --------
    >>> from anomrec.streaming.events import EventDecoder
    >>> from anomrec.streaming.sample import generate_transactions
    >>> cfg = ProcessorConfig(first_fit_after=300, refit_every=600, swap_delay=50, window_size=250)
    >>> decoder = EventDecoder(cfg)
    >>> events = [decoder.from_dict(d) for d in generate_transactions(1500, seed=3)]
    >>> fitted = fit(cfg, [events[:1000], events[1000:]], source="sample")
    >>> fitted.events, fitted.processor.model_versions()
    (1500, {'hst': 'hst-50x15-w250-s42', 'iforest': 'iforest-4', 'lof': 'lof-4', 'reco': 'hybrid-1491'})
    >>> fitted.processor.close()
    """
    processor = Processor(config)
    fitted = Fitted(processor=processor, source=source)
    try:
        for batch in batches:
            events = list(batch)
            if not events:
                continue
            processor.process(events)
            fitted.events += len(events)
            fitted.first = fitted.first or events[0]
            fitted.last = events[-1]
            if on_batch is not None:
                on_batch(len(events))
        if fitted.events <= config.first_fit_after:
            raise ConfigError(
                f"{source} holds {fitted.events:,} good events: too few to fit on; the models need more "
                f"than first_fit_after = {config.first_fit_after:,}"
            )
        processor.refit_now()
    except BaseException:
        processor.close()
        raise
    fitted.bad_records.update(bad_records or {})
    return fitted


def _describe(event: Event | None) -> dict[str, Any] | None:
    if event is None:
        return None
    return {"event_id": event.event_id, "entity": event.entity, "event_time": event.event_time}
