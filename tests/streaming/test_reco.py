"""The recommendation models: the shared protocol, and each model against a plain reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from anomrec.streaming import _reco_kernels as kernels
from anomrec.streaming.exceptions import ConfigError
from anomrec.streaming.reco import (
    BPR,
    ISGD,
    MODELS,
    BiasedMF,
    Hybrid,
    Interactions,
    ItemItem,
    Popularity,
    build_model,
)


def taste_stream(
    n_events: int, *, n_users: int = 60, n_items: int = 80, seed: int = 0
) -> list[tuple[str, str]]:
    """Users in four taste groups, each drawing mostly from its quarter of the catalogue."""
    rng = np.random.default_rng(seed)
    group_of_user = rng.integers(0, 4, n_users)
    out = []
    for _ in range(n_events):
        u = int(rng.integers(n_users))
        if rng.random() < 0.85:
            quarter = n_items // 4
            i = int(group_of_user[u]) * quarter + int(rng.integers(quarter))
        else:
            i = int(rng.integers(n_items))
        out.append((f"u{u}", f"i{i}"))
    return out


@pytest.fixture(scope="module")
def stream() -> list[tuple[str, str]]:
    return taste_stream(3000)


@pytest.mark.parametrize("name", MODELS)
def test_rank_never_returns_an_item_the_user_has_seen(name: str, stream: list[tuple[str, str]]) -> None:
    model = build_model(name)
    users, items = zip(*stream, strict=True)
    model.learn_many(list(users), list(items))
    for user in ("u1", "u7", "u33"):
        seen = {i for u, i in stream if u == user}
        ranked = model.rank(user, 10)
        assert len(ranked) == 10
        assert not seen & {item for item, _ in ranked}
        scores = [s for _, s in ranked]
        assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("name", MODELS)
def test_new_users_and_items_arrive_at_any_time(name: str) -> None:
    model = build_model(name)
    model.learn_many(["a", "b"], ["x", "y"])
    for n in range(200):  # many growths of every array, mixed with ranking
        model.learn_one(f"user{n}", f"item{n}")
        model.learn_one(f"user{n}", "x")
        assert f"item{n}" not in {i for i, _ in model.rank(f"user{n}", 5)}
    assert model.data.n_users == 202 and model.data.n_items == 202
    assert math.isfinite(model.score("user5", "item9"))
    assert math.isnan(model.score("user5", "no such item"))


@pytest.mark.parametrize("name", MODELS)
def test_learn_many_equals_learning_one_at_a_time(name: str, stream: list[tuple[str, str]]) -> None:
    batch, single = build_model(name), build_model(name)
    users, items = zip(*stream[:800], strict=True)
    times = np.arange(800) * 3600.0
    batch.learn_many(list(users), list(items), None, times)
    for (u, i), t in zip(stream[:800], times, strict=True):
        single.learn_one(u, i, 1.0, float(t))
    for user in ("u2", "u9"):
        assert batch.rank(user, 10) == single.rank(user, 10)


def test_an_unknown_user_gets_the_popularity_list_and_an_unknown_item_no_neighbours() -> None:
    model = build_model("hybrid")
    model.learn_many(["a", "b", "c", "c"], ["x", "x", "x", "y"])
    assert [i for i, _ in model.rank("stranger", 2)] == ["x", "y"]
    assert model.similar_items("no such item") == []


def test_the_same_seed_gives_the_same_model_and_another_seed_another(stream: list[tuple[str, str]]) -> None:
    users, items = zip(*stream, strict=True)

    def factors(seed: int) -> np.ndarray:
        model = BPR(seed=seed)
        model.learn_many(list(users), list(items))
        return model.Q[: model.data.n_items].copy()

    assert np.array_equal(factors(1), factors(1))
    assert not np.array_equal(factors(1), factors(2))


def test_item_item_counts_and_cosine_match_a_dense_reference() -> None:
    """Random stream, tiny windows so rows grow and move in the pool many times."""
    rng = np.random.default_rng(3)
    n_items, window, pair_decay = 300, 6, 0.7
    users = rng.integers(0, 40, 4000)
    items = rng.integers(0, n_items, 4000)
    weights = rng.choice([1.0, 2.0, 5.0], 4000)
    model = ItemItem(window=window, pair_decay=pair_decay, history=4, recency_decay=0.5)
    assert window < 40  # users repeat items inside their windows, so repeats are exercised
    model.learn_many([f"u{u}" for u in users], [f"i{i}" for i in items], weights)

    # The reference, written the obvious way on item ids: each user's window holds distinct items
    # with the highest weight seen for them; a pair weighs sqrt(w_i · w_j) · decay**distance.
    counts = np.zeros((n_items, n_items))
    degree = np.zeros(n_items)
    recent: dict[int, list[list]] = {}  # per user: [item, weight], oldest first
    for u, i, w in zip(users.tolist(), items.tolist(), weights.tolist(), strict=True):
        ring = recent.setdefault(u, [])[-window:]
        recent[u] = ring
        newest_first = ring[::-1]
        where = [r for r, (j, _) in enumerate(newest_first) if j == i]
        if where and newest_first[where[0]][1] >= w:
            continue
        at = where[0] if where else None
        old = newest_first[at][1] if at is not None else 0.0
        degree[i] += w - old
        for r, (j, wj) in enumerate(newest_first):
            if r == at:
                continue
            distance = r if at is None else abs(r - at) - 1
            g = (np.sqrt(w * wj) - np.sqrt(old * wj)) * pair_decay**distance
            counts[i, j] += g
            counts[j, i] += g
        if at is None:
            ring.append([i, w])
        else:
            newest_first[at][1] = w
    index = model.data.item_index
    for item in (0, 17, 123, 299):
        expected = counts[item] / np.sqrt(degree[item] * np.maximum(degree, 1e-300))
        got = dict(model.similar_items(f"i{item}", n_items))
        for j in range(n_items):
            if f"i{j}" in index and expected[j] > 0:
                assert got[f"i{j}"] == pytest.approx(expected[j], rel=1e-9)
        assert len(got) == int((expected > 0).sum())
    # A user's score: recency-weighted sum of cosines to their last 4 items.
    user = 5
    last = [j for j, _ in recent[user][-4:][::-1]]
    cosine = counts / np.sqrt(np.outer(degree, degree).clip(1e-300))
    expected_scores = sum(0.5**r * cosine[h] for r, h in enumerate(last))
    for j in range(0, n_items, 7):
        if f"i{j}" in index:
            assert model.score(f"u{user}", f"i{j}") == pytest.approx(expected_scores[j], rel=1e-9, abs=1e-12)
    assert model.n_pairs == int((counts > 0).sum())


def test_time_decay_weighs_events_by_their_age_and_survives_rescaling() -> None:
    half_life = 100.0
    model = Popularity(half_life=half_life)
    # Times far enough apart that the stored multipliers are rescaled several times.
    times = [0.0, 10.0, 30_000.0, 30_050.0, 90_000.0, 90_000.0]
    items = ["a", "b", "a", "b", "c", "b"]
    model.learn_many(["u"] * 6, items, None, times)
    now = 90_000.0
    expected = {
        item: sum(2 ** ((t - now) / half_life) for t, i in zip(times, items, strict=True) if i == item)
        for item in "abc"
    }
    got = {i: model.score("someone", i) for i in "abc"}
    scale = got["c"] / expected["c"]
    for item in "ab":
        assert got[item] / scale == pytest.approx(expected[item], rel=1e-9, abs=1e-300)
    assert [i for i, _ in model.rank("someone", 3)] == ["b", "c", "a"]


def test_top_n_matches_a_full_sort_with_ties_broken_by_index() -> None:
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 300))
        scores = rng.integers(0, 20, n).astype(float)  # many ties
        exclude = rng.choice(n, int(rng.integers(0, n)), replace=True).astype(np.int32)
        top = int(rng.integers(1, 15))
        out_i, out_s = np.zeros(top, np.int64), np.zeros(top)
        m = kernels.top_n(scores, exclude, top, out_i, out_s)
        allowed = [j for j in range(n) if j not in set(exclude.tolist())]
        expected = sorted(allowed, key=lambda j: (-scores[j], j))[:top]
        assert out_i[:m].tolist() == expected, trial
        assert out_s[:m].tolist() == [scores[j] for j in expected]


def test_bpr_learns_taste_beyond_popularity(stream: list[tuple[str, str]]) -> None:
    """Held-out next items fall in the user's taste group far more often than chance."""
    train = taste_stream(6000, n_items=400, seed=1)
    model = BPR(factors=8, negatives=3)
    users, items = zip(*train, strict=True)
    for _ in range(3):
        model.learn_many(list(users), list(items))
    group_of_user = np.random.default_rng(1).integers(0, 4, 60)  # taste_stream's first draw
    in_group = 0
    for u in range(60):
        top = [int(i[1:]) for i, _ in model.rank(f"u{u}", 5)]
        in_group += sum(t // 100 == group_of_user[u] for t in top)
    assert in_group / (60 * 5) > 0.6  # chance is 0.25


def test_isgd_and_biased_mf_learn() -> None:
    train = taste_stream(6000, n_items=400, seed=1)
    group_of_user = np.random.default_rng(1).integers(0, 4, 60)
    model = ISGD(factors=8)
    users, items = zip(*train, strict=True)
    for _ in range(3):
        model.learn_many(list(users), list(items))
    hits = sum(int(i[1:]) // 100 == group_of_user[u] for u in range(60) for i, _ in model.rank(f"u{u}", 5))
    assert hits / 300 > 0.5
    # Ratings: 5 inside the user's taste group, 1 outside; the model must tell them apart.
    mf = BiasedMF(factors=8, learning_rate=0.05)
    ratings = [5.0 if int(i[1:]) // 100 == group_of_user[int(u[1:])] else 1.0 for u, i in train]
    for _ in range(10):
        mf.learn_many(list(users), list(items), ratings)
    errors = [mf.predict(u, i) - r for (u, i), r in zip(train[:2000], ratings[:2000], strict=True)]
    baseline = np.std(ratings[:2000])
    assert np.sqrt(np.mean(np.square(errors))) < 0.3 * baseline  # 0.22 of it when measured


def test_hybrid_blends_min_max_scaled_components() -> None:
    data = Interactions()
    pop = Popularity(data)
    item_item = ItemItem(data)
    hybrid = Hybrid([(item_item, 1.0), (pop, 0.5)], data)
    hybrid.learn_many(["a", "a", "b", "b", "c", "c", "c", "d"], ["x", "y", "x", "y", "z", "w", "q", "z"])
    # For d (seen z): item-item ranks w and q (co-bought with z) at 0.5 cosine, x, y at 0;
    # popularity is 2 for x, y and 1 for w, q.
    got = dict(hybrid.rank("d", 4))
    item_scores = {j: item_item.score("d", j) for j in "xywq"}
    pop_scores = {j: pop.score("d", j) for j in "xywq"}

    def scaled(scores: dict[str, float], j: str) -> float:
        lo, hi = min(scores.values()), max(scores.values())
        return (scores[j] - lo) / (hi - lo)

    for j in "xywq":
        assert got[j] == pytest.approx(scaled(item_scores, j) + 0.5 * scaled(pop_scores, j))


def test_models_built_on_another_id_space_are_refused_and_bad_settings_named() -> None:
    with pytest.raises(ConfigError, match="Interactions"):
        Hybrid([(ItemItem(), 1.0)], Interactions())
    with pytest.raises(ConfigError, match="unknown model 'svd'"):
        build_model("svd")
    with pytest.raises(ConfigError, match=r"recency_decay=1\.5"):
        ItemItem(recency_decay=1.5)
    with pytest.raises(ConfigError, match="hybrid weights name"):
        build_model("hybrid", hybrid_weights={"svd": 1.0})


@pytest.mark.parametrize("name", MODELS)
def test_a_restored_model_carries_on_exactly_as_the_original(
    name: str, stream: list[tuple[str, str]], tmp_path: Path
) -> None:
    """Learn half, save to .npz (no pickle), restore into a fresh model, learn the rest in both."""
    users, items = (list(x) for x in zip(*stream, strict=True))
    times = np.arange(len(users)) * 600.0
    weights = np.where(np.arange(len(users)) % 3 == 0, 5.0, 1.0)
    half = len(users) // 2
    original = build_model(name, half_life=86_400.0)
    original.learn_many(users[:half], items[:half], weights[:half], times[:half])
    np.savez(tmp_path / "state.npz", **original.state_arrays())
    with np.load(tmp_path / "state.npz", allow_pickle=False) as saved:
        arrays = dict(saved)
    restored = build_model(name, half_life=86_400.0)
    restored.load_state_arrays(arrays)
    for model in (original, restored):
        model.learn_many(users[half:], items[half:], weights[half:], times[half:])
    for user in ("u0", "u3", "u17", "nobody"):
        assert restored.rank(user, 10) == original.rank(user, 10)
    assert restored.similar_items("i5", 5) == original.similar_items("i5", 5)
    after, before = restored.state_arrays(), original.state_arrays()
    assert after.keys() == before.keys()
    for key in before:
        assert np.array_equal(after[key], before[key]), key


def test_state_from_a_model_with_other_settings_is_refused(stream: list[tuple[str, str]]) -> None:
    model = ItemItem(window=10)
    model.learn_many(["a", "a"], ["x", "y"])
    with pytest.raises(ConfigError, match=r"learned by 'itemitem\(window=10.*not 'itemitem\(window=50"):
        ItemItem().load_state_arrays(model.state_arrays())
    with pytest.raises(ConfigError, match="learned by 'hybrid"):
        build_model("hybrid", factors=12).load_state_arrays(build_model("hybrid").state_arrays())


def test_the_hybrids_one_pass_ranking_equals_blending_then_selecting(stream: list[tuple[str, str]]) -> None:
    model = build_model("hybrid")
    users, items = zip(*stream, strict=True)
    model.learn_many(list(users), list(items))
    for user in range(0, model.data.n_users, 7):
        fast_items, fast_scores = model.rank_index(user, 10)
        scores = model.scores_of(user).copy()
        out_i, out_s = np.zeros(10, np.int64), np.zeros(10)
        m = kernels.top_n(scores, model.data.seen(user), 10, out_i, out_s)
        assert fast_items.tolist() == out_i[:m].tolist()
        assert fast_scores.tolist() == out_s[:m].tolist()  # to the last bit
