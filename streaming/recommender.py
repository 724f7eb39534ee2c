"""Recommendations in the stream: learn each interaction, publish refreshed lists, debounced.

:class:`RecommenderTask` sits after the anomaly engine in :class:`~anomrec.streaming.core.Processor`.
For every event that records an interaction (a user and an item) it

1. skips learning when the anomaly engine alerted on the event (*anomaly-gated learning*,
   ``reco_gating``), so that a bot burst or a fraud spree cannot push items into other users'
   lists; the event is counted as gated;
2. otherwise learns it, and then refreshes the user's top-N list;
3. publishes that list (a :class:`RecommendationUpdate`) only when it differs from the last one
   published for the user, and at most once per ``debounce_seconds`` of event time. A change
   inside the interval waits, and goes out as soon as the stream's event time reaches the end of
   the interval (the list then is the one as of that moment, the trigger the latest interaction);

and every ``similar_every`` events it publishes the neighbour lists of the items learned since
the last time (:class:`NeighbourUpdate`), for a compacted topic keyed by item.

It holds at most ``max_users`` users: when the model forgets the least recently active one to make
room for a new one (:class:`~anomrec.streaming.reco.Interactions`), the task forgets that user's
last published list, its debounce clock and any update it had waiting, so a user who comes back
is new in every respect.

Everything is decided per event, in stream order, from event time: the same events give the same
updates however they are batched.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from .config import ProcessorConfig
from .events import Event, format_time
from .reco import Model, build_model


@dataclass(frozen=True, slots=True)
class RecommendationUpdate:
    """A user's refreshed top-N, as published to the recommendations topic (keyed by user)."""

    user: str
    items: list[tuple[str, float]]
    model_version: str
    event_time: float
    trigger_event_id: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "items": [{"item": item, "score": round(score, 6)} for item, score in self.items],
            "model_version": self.model_version,
            "event_time": format_time(self.event_time),
            "trigger_event_id": self.trigger_event_id,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


@dataclass(frozen=True, slots=True)
class NeighbourUpdate:
    """An item's most similar items, as published to the compacted similar-items topic."""

    item: str
    neighbours: list[tuple[str, float]]
    model_version: str
    event_time: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "neighbours": [{"item": item, "score": round(score, 6)} for item, score in self.neighbours],
            "model_version": self.model_version,
            "event_time": format_time(self.event_time),
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


@dataclass(slots=True)
class RecoStep:
    """What :meth:`RecommenderTask.process` produced for one batch of events."""

    updates: list[RecommendationUpdate] = field(default_factory=list)
    neighbours: list[NeighbourUpdate] = field(default_factory=list)
    learned: int = 0
    gated: int = 0
    below_min_rating: int = 0
    not_interactions: int = 0


class _OneEvent:
    """Reused one-element arrays for learning a single interaction."""

    def __init__(self) -> None:
        self.users = np.zeros(1, np.int32)
        self.items = np.zeros(1, np.int32)
        self.known = np.zeros(1, np.int64)
        self.weights = np.zeros(1)
        self.times = np.zeros(1)


class RecommenderTask:
    """Learns interactions, gates the alerted ones, and decides which lists to publish.

    Parameters
    ----------
    config
        ``reco_model``, ``reco_factors``, ``reco_half_life_seconds``, ``reco_gating``, ``top_n``,
        ``debounce_seconds``, ``similar_every``, ``min_rating``, ``max_users`` and ``seed``.

    Examples
    --------
    >>> from anomrec.streaming.events import Interaction
    >>> task = RecommenderTask(ProcessorConfig(debounce_seconds=60))
    >>> def ev(i, user, item, t):
    ...     return Event(str(i), user, t, (), interaction=Interaction(user, item))
    >>> events = [ev(1, "ann", "tea", 0), ev(2, "bob", "tea", 1), ev(3, "bob", "cup", 2)]
    >>> events += [ev(4, "ann", "jam", 30), ev(5, "cy", "tea", 40), ev(6, "ann", "cup", 50)]
    >>> step = task.process(events, np.zeros(6, bool))
    >>> [(u.user, u.trigger_event_id, [i for i, _ in u.items]) for u in step.updates]
    [('ann', '4', ['cup']), ('cy', '5', ['cup', 'jam'])]

    Ann's list changed at t=50 (she took the cup, so it is now empty), inside her interval (her last
    list went out at t=30); it goes out once the stream's event time reaches t=90:

    >>> step = task.process([ev(7, "bob", "jam", 95)], np.zeros(1, bool))
    >>> [(u.user, u.trigger_event_id, u.event_time, u.items) for u in step.updates]
    [('ann', '6', 90, [])]
    """

    def __init__(self, config: ProcessorConfig) -> None:
        self.config = config
        half_life = config.reco_half_life_seconds or None
        self.model: Model = build_model(
            config.reco_model,
            factors=config.reco_factors,
            half_life=half_life,
            seed=config.seed,
            max_users=config.max_users,
        )
        self.explicit = config.reco_model == "biased-mf"
        self._last_time: dict[str, float] = {}
        self._last_items: dict[str, tuple[str, ...]] = {}
        # Users whose list may have changed inside their debounce interval: (due time, order, user).
        self._due: list[tuple[float, int, str]] = []
        self._waiting: dict[str, str] = {}  # user -> the latest interaction's event id
        self._order = 0
        self._stream_time = -np.inf
        self._events = 0
        self._touched: dict[int, None] = {}
        self.learned = 0
        self.gated = 0
        self._one = _OneEvent()

    def snapshot(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The task's whole state: the model's arrays, and the publishing state as JSON-able data.

        Restoring both into a task built with the same settings (:meth:`restore`) and feeding it
        the rest of the stream gives exactly the updates an uninterrupted task gives.
        """
        meta = {
            "last_time": self._last_time,
            "last_items": {user: list(items) for user, items in self._last_items.items()},
            "due": [list(entry) for entry in self._due],
            "waiting": self._waiting,
            "order": self._order,
            "stream_time": None if self._stream_time == -np.inf else self._stream_time,
            "events": self._events,
            "touched": list(self._touched),
            "learned": self.learned,
            "gated": self.gated,
        }
        return self.model.state_arrays(), orjson.loads(orjson.dumps(meta))

    def restore(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Replace all state with a :meth:`snapshot`'s."""
        self.model.load_state_arrays(arrays)
        self._last_time = {str(u): float(t) for u, t in meta["last_time"].items()}
        self._last_items = {str(u): tuple(items) for u, items in meta["last_items"].items()}
        self._due = [(float(t), int(order), str(user)) for t, order, user in meta["due"]]
        heapq.heapify(self._due)
        self._waiting = {str(u): str(e) for u, e in meta["waiting"].items()}
        self._order = int(meta["order"])
        self._stream_time = -np.inf if meta["stream_time"] is None else float(meta["stream_time"])
        self._events = int(meta["events"])
        self._touched = dict.fromkeys(int(i) for i in meta["touched"])
        self.learned = int(meta["learned"])
        self.gated = int(meta["gated"])

    def process(self, events: Sequence[Event], alerted: np.ndarray) -> RecoStep:
        """Learn ``events`` in order (skipping alerted ones when gating) and return what to publish."""
        cfg = self.config
        step = RecoStep()
        for event, flagged in zip(events, alerted.tolist(), strict=True):
            t = event.event_time
            if t > self._stream_time:
                self._stream_time = t
                self._release(step)
            interaction = event.interaction
            if interaction is None:
                step.not_interactions += 1  # no user or no item: scored for anomalies only
            elif flagged and cfg.reco_gating:
                step.gated += 1
            elif interaction.rating is not None and not self.explicit and interaction.rating < cfg.min_rating:
                step.below_min_rating += 1
            else:
                weight = (
                    interaction.rating
                    if self.explicit and interaction.rating is not None
                    else interaction.weight
                )
                self._learn(interaction.user, interaction.item, weight, t)
                step.learned += 1
                self._offer(interaction.user, event.event_id, t, step)
            self._events += 1
            if self._events % cfg.similar_every == 0 and self.model.has_neighbours:
                self._publish_neighbours(t, step)
        self.learned += step.learned
        self.gated += step.gated
        return step

    def _learn(self, user: str, item: str, weight: float, t: float) -> None:
        data = self.model.data
        evicted = data.evicted
        u, i, known = data.encode_one(user, item)
        if data.evicted != evicted and data.last_evicted is not None:
            self._forget(data.last_evicted)
        # One event at a time, through arrays kept for it: the lists published after an event
        # must reflect exactly the events up to it.
        one = self._one
        one.users[0], one.items[0], one.known[0], one.weights[0], one.times[0] = u, i, known, weight, t
        self.model.learn_encoded(one.users, one.items, one.weights, one.times, one.known)
        self._touched[i] = None

    def _forget(self, user: str) -> None:
        """Drop what the task holds of a user the model forgot: when they come back, they are new."""
        self._last_time.pop(user, None)
        self._last_items.pop(user, None)
        if self._waiting.pop(user, None) is not None:
            # Rare: a user the least recently active of max_users yet inside its debounce interval.
            self._due = [entry for entry in self._due if entry[2] != user]
            heapq.heapify(self._due)

    def _offer(self, user: str, event_id: str, t: float, step: RecoStep) -> None:
        last = self._last_time.get(user)
        if last is None or t >= last + self.config.debounce_seconds:
            self._publish(user, event_id, t, step)
            return
        if user not in self._waiting:
            heapq.heappush(self._due, (last + self.config.debounce_seconds, self._order, user))
            self._order += 1
        self._waiting[user] = event_id

    def _release(self, step: RecoStep) -> None:
        """Publish the waiting users whose debounce interval the stream time has passed."""
        while self._due and self._due[0][0] <= self._stream_time:
            due, _, user = heapq.heappop(self._due)
            event_id = self._waiting.pop(user)
            self._publish(user, event_id, due, step)

    def _publish(self, user: str, event_id: str, t: float, step: RecoStep) -> None:
        items = self.model.rank(user, self.config.top_n)
        ids = tuple(item for item, _ in items)
        if ids == self._last_items.get(user, ()):
            return
        self._last_items[user] = ids
        self._last_time[user] = t
        step.updates.append(
            RecommendationUpdate(
                user=user,
                items=items,
                model_version=self.model.version,
                event_time=t,
                trigger_event_id=event_id,
            )
        )

    def _publish_neighbours(self, t: float, step: RecoStep) -> None:
        ids = self.model.data.item_ids
        version = self.model.version
        for index in sorted(self._touched):
            item = ids[index]
            step.neighbours.append(
                NeighbourUpdate(
                    item=item,
                    neighbours=self.model.similar_items(item, self.config.top_n),
                    model_version=version,
                    event_time=t,
                )
            )
        self._touched.clear()
