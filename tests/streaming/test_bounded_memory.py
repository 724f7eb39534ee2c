"""Bounded memory (issue 5): a million distinct entities, and resident memory stays put.

Two streams: a million cards seen once each through the whole processor (feature state bounded by
``max_entities``), and a million users seen once each through the recommender (its state bounded
by ``max_users``).

The stream runs in a fresh interpreter (this file, run as a script), so that nothing the test
session imported or allocated before shows in its resident set size (RSS, ``VmRSS`` in
``/proc/self/status``). The child prints what it measured as one JSON object; the test checks it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.core import Processor
from anomrec.streaming.events import Event, EventDecoder, Interaction
from anomrec.streaming.features import TransactionsProfile
from anomrec.streaming.recommender import RecommenderTask

MAX_ENTITIES = 50_000
MAX_USERS = 50_000
#: Items the users of the recommender stream pick from: few, so that ranking (one pass over every
#: item, for every new user's first list) stays cheap and the run short.
N_ITEMS = 100
N_EVENTS = 1_000_000
BATCH = 5_000
#: IsolationForest and LOF refit every 25,000 events instead of 5,000: 40 refits still churn the
#: allocator as a long run does, in 40 % less time.
REFIT_EVERY = 25_000
MIB = 1024 * 1024
#: The stated cost of one entity's feature state, checked by
#: :func:`test_an_entity_costs_at_most_the_budget`. A card of the events below measures about
#: 1,050 bytes: its record (a list of 18 slots, a dozen floats, two one-key dicts), its id,
#: merchant and country strings, and its slot in the store's OrderedDict.
ENTITY_BYTES = 2048
#: The stated cost of one user's recommender state, checked by
#: :func:`test_a_user_costs_at_most_the_budget`. A user of the stream below measures about 1,200
#: bytes: its id and slot in the id map and the LRU order, its history array, its item-item window
#: (50 item slots and weights: 600 bytes), its BPR row, and its last published list and time.
USER_BYTES = 2048
#: How far the peak may exceed the plateau: the state of 48,000 entities at the budget (about
#: 90,000 at the measured cost), a tenth of the 950,000 the store must evict.
MARGIN = 48_000 * ENTITY_BYTES
#: Growth allowed from the second quarter of the stream to the last: under 90 bytes per event.
GROWTH_LIMIT = 64 * MIB
#: A backstop whatever the plateau.
ABSOLUTE_CAP = 1024 * MIB
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
COUNTRIES = ("FR", "DE", "ES", "IT", "NL", "BE", "PT")

on_linux = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads resident memory from /proc (Linux)"
)


def _status_kib(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/self/status")


def transaction(i: int) -> dict[str, Any]:
    """Event ``i``: a card transaction on a card seen nowhere else, 10 ms after event ``i - 1``."""
    return {
        "event_id": f"tx-{i:07d}",
        "card_id": f"card-{i:07d}",
        "ts": T0 + i * 0.01,
        "amount": round(5.0 + (i * 7919) % 50_000 / 100.0, 2),
        "lat": 36.0 + (i % 1700) * 0.01,
        "lon": -9.0 + (i % 2300) * 0.01,
        "merchant": f"m-{(i * 31) % 20_000:05d}",
        "country": COUNTRIES[i % len(COUNTRIES)],
    }


def stream_distinct_entities(n_events: int, max_entities: int, batch: int) -> dict[str, Any]:
    """Stream ``n_events`` transactions through a processor; sample RSS after every batch.

    Runs in the child. Events are made a batch at a time and take the runners' path: JSON bytes,
    :meth:`EventDecoder.decode`, :meth:`Processor.process`.
    """
    # Recommendations off: these events name no user (the recommender's users have their own
    # stream, :func:`stream_distinct_users`).
    config = ProcessorConfig(max_entities=max_entities, recommend=False, refit_every=REFIT_EVERY)
    decoder = EventDecoder(config)
    samples: list[tuple[int, int]] = []
    start_kib = _status_kib("VmRSS")
    began = time.perf_counter()
    with Processor(config) as processor:
        for first in range(0, n_events, batch):
            last = min(first + batch, n_events)
            events = [decoder.decode(orjson.dumps(transaction(i))) for i in range(first, last)]
            step = processor.process(events)
            assert step.pending == 0
            samples.append((last, _status_kib("VmRSS")))
        elapsed = time.perf_counter() - began
        store = processor.profile.entities_
        return {
            "start_kib": start_kib,
            "samples": samples,
            "hwm_kib": _status_kib("VmHWM"),
            "entities": len(store),
            "evicted": store.evicted,
            "expired": store.expired,
            "elapsed": elapsed,
        }


def interaction(i: int) -> Event:
    """Event ``i``: user ``i``'s one interaction, with one of :data:`N_ITEMS` items, 10 ms after ``i - 1``."""
    user = f"user-{i:07d}"
    return Event(
        f"ix-{i:07d}",
        user,
        T0 + i * 0.01,
        (),
        interaction=Interaction(user, f"item-{(i * 7919) % N_ITEMS:03d}"),
    )


def stream_distinct_users(n_events: int, max_users: int, batch: int) -> dict[str, Any]:
    """Stream ``n_events`` interactions of as many users through a recommender; sample RSS per batch.

    Runs in the child. The events go straight to :class:`RecommenderTask` (the default hybrid, one
    published list per event), not through the processor: its anomaly engine has its own bounded
    state (the test above), and would double the run time.
    """
    config = ProcessorConfig(profile="interactions", entity_field="user_id", max_users=max_users)
    task = RecommenderTask(config)
    alerted = np.zeros(batch, bool)
    samples: list[tuple[int, int]] = []
    updates = 0
    start_kib = _status_kib("VmRSS")
    began = time.perf_counter()
    for first in range(0, n_events, batch):
        last = min(first + batch, n_events)
        step = task.process([interaction(i) for i in range(first, last)], alerted[: last - first])
        updates += len(step.updates)
        samples.append((last, _status_kib("VmRSS")))
    elapsed = time.perf_counter() - began
    data = task.model.data
    rows = {
        f"{part.name}.{attr}": getattr(part, attr).shape[0]
        for part in getattr(task.model, "components", [task.model])
        for attr in ("P", "_recent")
        if hasattr(part, attr)
    }
    return {
        "start_kib": start_kib,
        "samples": samples,
        "hwm_kib": _status_kib("VmHWM"),
        "entities": len(data.user_index),
        "slots": data.n_users,
        "evicted": data.evicted,
        "expired": 0,
        "task_users": max(len(task._last_items), len(task._last_time), len(task._waiting)),
        "rows": rows,
        "updates": updates,
        "items": data.n_items,
        "elapsed": elapsed,
    }


def check_bounded(result: dict[str, Any], max_entities: int, n_events: int) -> None:
    """The assertions on a child's result (apart, so that a scratch run can reuse them)."""
    samples = [(done, kib * 1024) for done, kib in result["samples"]]
    assert result["entities"] == max_entities
    assert result["evicted"] == n_events - max_entities and result["expired"] == 0
    # RSS ebbs and flows by up to 60 MiB with the refit cycle (old models freed, new ones built on
    # the fit thread), so levels are the highs of stretches spanning several cycles. The plateau:
    # from 2 * max_entities events, when the store is full and every model fitted, to a quarter.
    plateau = max(rss for done, rss in samples if 2 * max_entities <= done <= n_events // 4)
    peak = max(result["hwm_kib"] * 1024, *(rss for _, rss in samples))
    assert peak <= plateau + MARGIN, f"peak {peak / MIB:.0f} MiB, plateau {plateau / MIB:.0f} MiB"
    assert peak <= ABSOLUTE_CAP, f"peak {peak / MIB:.0f} MiB"
    # A leak is steady growth once everything is warm: the last quarter against the second.
    second = max(rss for done, rss in samples if n_events // 4 < done <= n_events // 2)
    fourth = max(rss for done, rss in samples if done > 3 * n_events // 4)
    assert fourth - second <= GROWTH_LIMIT, f"{(fourth - second) / MIB:.0f} MiB more in the last quarter"


@on_linux
def test_a_million_distinct_entities_stay_within_the_memory_cap() -> None:
    """1,000,000 cards seen once each, through the whole processor, at ``max_entities=50_000``.

    Measured on a 2-core machine, two runs: 20,500-21,000 events/s (48 s in the child). RSS is
    232 MiB before the stream, 530-551 MiB at the plateau and 532-558 MiB at the peak (2-6 MiB over
    the plateau, against a margin of 94 MiB); the last quarter's high is within 6 MiB of the
    second's (limit 64 MiB). With eviction off (``max_entities=2_000_000``) RSS climbs about
    108 MiB per 100,000 events, 1.1 kB per entity, to 1,582 MiB: 843 MiB over the plateau, 571 MiB
    of growth from the second quarter to the last, and over the 1 GiB backstop.
    """
    done = subprocess.run(
        [sys.executable, __file__, "entities", str(N_EVENTS), str(MAX_ENTITIES), str(BATCH)],
        capture_output=True,
        timeout=500,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    check_bounded(json.loads(done.stdout), MAX_ENTITIES, N_EVENTS)


def test_an_entity_costs_at_most_the_budget() -> None:
    """A card's feature state, as tracemalloc counts it, is within :data:`ENTITY_BYTES` (about 1,050)."""
    n = 20_000
    profile = TransactionsProfile(max_entities=n)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        docs = [orjson.loads(orjson.dumps(transaction(i))) for i in range(n)]
        profile.transform_many(
            [doc["card_id"] for doc in docs], [doc["ts"] for doc in docs], [profile.parse(d) for d in docs]
        )
        del docs  # the store keeps what it needs: the ids, the records and the strings in them
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert profile.n_entities == n
    assert 500 <= held / n <= ENTITY_BYTES, held / n


@on_linux
def test_a_million_distinct_users_stay_within_the_memory_cap() -> None:
    """1,000,000 users seen once each, through the recommender, at ``max_users=50_000``.

    Each event is a new user, so from the 50,001st on every event forgets the least recently
    active user, and every event publishes that user's first list. Measured on a 2-core machine:
    41-46 s in the child (about 22,000 events/s). RSS is 233 MiB before the stream, 370 MiB at the
    plateau and 372 MiB at the peak, flat from 105,000 events on. With eviction off
    (``max_users=2_000_000``) RSS climbs to 1,587 MiB, about 1.4 kB per user: 1.2 GiB over the
    plateau, and over the 1 GiB backstop.
    """
    done = subprocess.run(
        [sys.executable, __file__, "users", str(N_EVENTS), str(MAX_USERS), str(BATCH)],
        capture_output=True,
        timeout=500,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    result = json.loads(done.stdout)
    check_bounded(result, MAX_USERS, N_EVENTS)
    assert result["slots"] == MAX_USERS and result["task_users"] <= MAX_USERS
    assert result["rows"] == {"itemitem._recent": MAX_USERS, "bpr.P": MAX_USERS}  # stopped at the cap
    # Every user's first list goes out, but the very first user's, which is empty: one item known.
    assert result["updates"] == N_EVENTS - 1 and result["items"] == N_ITEMS


def test_a_user_costs_at_most_the_budget() -> None:
    """A user's recommender state, as tracemalloc counts it, is within :data:`USER_BYTES` (about 1,200)."""
    n = 20_000
    task = RecommenderTask(ProcessorConfig(max_users=n))
    task.process([interaction(i) for i in range(N_ITEMS)], np.zeros(N_ITEMS, bool))  # every item known
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        task.process([interaction(i) for i in range(N_ITEMS, n)], np.zeros(n - N_ITEMS, bool))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert task.model.data.n_users == n and task.model.data.evicted == 0
    assert 500 <= held / (n - N_ITEMS) <= USER_BYTES, held / (n - N_ITEMS)


def test_the_recommender_forgets_users_beyond_max_users() -> None:
    config = ProcessorConfig(profile="interactions", entity_field="user_id", max_users=1_000)
    task = RecommenderTask(config)
    events = [interaction(i) for i in range(5_000)]
    task.process(events, np.zeros(len(events), dtype=bool))
    assert task.model.data.n_users == len(task.model.data.user_index) == config.max_users
    assert task.model.data.evicted == 4_000 and len(task._last_items) <= config.max_users


if __name__ == "__main__":
    n, limit, size = (int(arg) for arg in sys.argv[2:5])
    stream = stream_distinct_users if sys.argv[1] == "users" else stream_distinct_entities
    print(json.dumps(stream(n, limit, size)))
