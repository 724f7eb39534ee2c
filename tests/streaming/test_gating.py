"""Anomaly-gated learning: a bot burst must not push its target into normal users' lists.

The burst: 300 brand-new accounts within ten minutes, each clicking one obscure target item and
viewing the stream's most popular item, so that a co-occurrence recommender links the target to
an item many users have. The anomaly engine (profile ``interactions``) flags most of these
events; with gating on, the flagged interactions are not learned.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from anomrec.streaming.config import ProcessorConfig
from anomrec.streaming.core import Processor
from anomrec.streaming.events import EventDecoder
from anomrec.streaming.recommender import RecommendationUpdate
from anomrec.streaming.sample import generate_interactions, inject_bot_burst


@pytest.fixture(scope="module")
def burst() -> tuple[list[dict], str, list[str]]:
    honest = generate_interactions(20_000, seed=7)
    counts = Counter(e["item_id"] for e in honest)
    # An item with a handful of honest interactions: the kind a seller would want to push.
    target = sorted(counts, key=lambda item: (counts[item], item))[len(counts) // 4]
    decoys = [item for item, _ in counts.most_common(1)]
    stream = inject_bot_burst(honest, target_item=target, n_bots=300, extra_items=1, decoy_pool=1)
    return stream, target, decoys


def run(stream: list[dict], gating: bool) -> tuple[Processor, list[RecommendationUpdate], int, float]:
    config = ProcessorConfig(profile="interactions", entity_field="user_id", reco_gating=gating)
    decoder = EventDecoder(config)
    events = [decoder.from_dict(d) for d in stream]
    updates: list[RecommendationUpdate] = []
    gated = 0
    with Processor(config) as processor:
        for start in range(0, len(events), 500):
            step = processor.process(events[start : start + 500])
            updates += step.reco.updates
            gated += step.reco.gated
    burst_start = min(e.event_time for e in events if e.label == 1)
    return processor, updates, gated, burst_start


def lists_with(target: str, updates: list[RecommendationUpdate], since: float) -> set[str]:
    return {
        u.user
        for u in updates
        if u.event_time >= since and not u.user.startswith("bot-") and target in {i for i, _ in u.items}
    }


def test_with_gating_on_the_target_stays_out_of_normal_users_lists(burst: tuple) -> None:
    stream, target, decoys = burst
    processor, updates, gated, since = run(stream, gating=True)
    assert processor.recommender is not None
    model = processor.recommender.model
    print(f"gated {gated} interactions; {len(updates)} updates")
    assert gated >= 550  # most of the 600 bot interactions (and some honest ones), counted
    assert processor.recommender.gated == gated
    assert lists_with(target, updates, since) == set()
    assert target not in {i for i, _ in model.rank("a user never seen", 10)}
    for decoy in decoys:
        assert target not in {i for i, _ in model.similar_items(decoy, 10)}


def test_with_gating_off_the_burst_pushes_the_target_in(burst: tuple) -> None:
    stream, target, decoys = burst
    processor, updates, gated, since = run(stream, gating=False)
    assert processor.recommender is not None
    model = processor.recommender.model
    pushed = lists_with(target, updates, since)
    print(f"{len(pushed)} normal users were shown the target")
    assert gated == 0
    assert len(pushed) >= 3
    assert target in {i for i, _ in model.rank("a user never seen", 10)}
    assert any(target in {i for i, _ in model.similar_items(decoy, 10)} for decoy in decoys)
    assert np.isfinite(model.score("u00001", target))
