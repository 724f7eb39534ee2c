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
    MAX_HISTORY,
    MODELS,
    BiasedMF,
    Hybrid,
    Interactions,
    ItemItem,
    Model,
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


@pytest.mark.parametrize("max_users", [None, 7])
@pytest.mark.parametrize("name", MODELS)
def test_learn_many_equals_learning_one_at_a_time(
    name: str, max_users: int | None, stream: list[tuple[str, str]]
) -> None:
    """Also with a tiny ``max_users``: 60 users through 7 slots, a forgotten user every few events."""
    batch, single = build_model(name, max_users=max_users), build_model(name, max_users=max_users)
    users, items = zip(*stream[:800], strict=True)
    times = np.arange(800) * 3600.0
    batch.learn_many(list(users), list(items), None, times)
    for (u, i), t in zip(stream[:800], times, strict=True):
        single.learn_one(u, i, 1.0, float(t))
    for user in ("u2", "u9", *batch.data.user_index):
        assert batch.rank(user, 10) == single.rank(user, 10)
    assert list(batch.data.user_index.items()) == list(single.data.user_index.items())
    assert batch.data.evicted == single.data.evicted
    assert (batch.data.evicted > 100) == (max_users is not None)


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


@pytest.mark.parametrize("max_users", [None, 15])
@pytest.mark.parametrize("name", MODELS)
def test_a_restored_model_carries_on_exactly_as_the_original(
    name: str, max_users: int | None, stream: list[tuple[str, str]], tmp_path: Path
) -> None:
    """Learn half, save to .npz (no pickle), restore into a fresh model, learn the rest in both.

    With ``max_users=15`` (60 users), users are forgotten throughout: the order of the users and
    the count of users ever added travel with the state.
    """
    users, items = (list(x) for x in zip(*stream, strict=True))
    times = np.arange(len(users)) * 600.0
    weights = np.where(np.arange(len(users)) % 3 == 0, 5.0, 1.0)
    half = len(users) // 2
    original = build_model(name, half_life=86_400.0, max_users=max_users)
    original.learn_many(users[:half], items[:half], weights[:half], times[:half])
    np.savez(tmp_path / "state.npz", **original.state_arrays())
    with np.load(tmp_path / "state.npz", allow_pickle=False) as saved:
        arrays = dict(saved)
    restored = build_model(name, half_life=86_400.0, max_users=max_users)
    restored.load_state_arrays(arrays)
    for model in (original, restored):
        model.learn_many(users[half:], items[half:], weights[half:], times[half:])
    assert (original.data.evicted > 1000) == (max_users is not None)
    for user in ("u0", "u3", "u17", "nobody", *original.data.user_index):
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


# --------------------------------------------------------------------------------------------------
# a bounded number of users


def per_user_rows(model: Model) -> dict[str, int]:
    """The rows of every per-user array of ``model`` (of its components, for a hybrid)."""
    rows: dict[str, int] = {}
    for part in getattr(model, "components", [model]):
        for attr in ("_recent", "_recent_w", "_recent_len", "P", "user_bias"):
            if hasattr(part, attr):
                rows[f"{part.name}.{attr}"] = getattr(part, attr).shape[0]
    data = part.data
    rows["data.user_ids"] = len(data.user_ids)
    rows["data.user_index"] = len(data.user_index)
    rows["data._history"] = len(data._history)
    return rows


@pytest.mark.parametrize("name", MODELS)
def test_users_beyond_max_users_are_forgotten_and_their_slots_reused(name: str) -> None:
    """Ten times ``max_users`` distinct users: the per-user arrays stop growing at the cap."""
    max_users = 20
    model = build_model(name, max_users=max_users)
    for n in range(10 * max_users):
        model.learn_many([f"user{n}", f"user{n}"], [f"item{n % 30}", f"item{(n + 1) % 30}"])
        held = min(n + 1, max_users)
        assert len(model.data.user_index) == model.data.n_users == held
        assert model.data.evicted == n + 1 - held
        if n >= max_users:
            assert model.data.last_evicted == f"user{n - max_users}"  # the least recently active
    assert set(model.data.user_index) == {f"user{n}" for n in range(9 * max_users, 10 * max_users)}
    assert sorted(model.data.user_index.values()) == list(range(max_users))
    assert model.data.created == 10 * max_users
    rows = per_user_rows(model)
    assert max(rows.values()) <= max_users, rows
    assert model.data.n_items == 30  # items are not bounded, and not forgotten


def test_the_least_recently_active_user_goes_first_in_event_order() -> None:
    model = build_model("itemitem", max_users=3)
    model.learn_many(["a", "b", "c", "a", "b"], ["x", "y", "z", "y", "x"])  # c is now the oldest
    model.learn_one("d", "z")
    assert model.data.last_evicted == "c"
    assert list(model.data.user_index) == ["a", "b", "d"]
    assert model.data.user_index["d"] == 2  # c's slot


def test_a_forgotten_users_rows_are_reset_as_a_new_users_would_be() -> None:
    """The user who takes a forgotten user's slot gets exactly the rows it would get in a fresh slot.

    The same events go into a model holding 2 users and into one holding them all; the item side
    learns the same in both, so the newcomer's rows must match to the bit.
    """

    def hybrid(max_users: int | None) -> tuple[Hybrid, ItemItem, BPR, BiasedMF]:
        data = Interactions(max_users)
        parts = ItemItem(data), BPR(data, seed=3), BiasedMF(data, seed=3)
        return Hybrid([(parts[0], 1.0), (parts[1], 0.1), (parts[2], 0.1)], data), *parts

    bounded, item_item, bpr, mf = hybrid(2)
    everyone, item_item_all, bpr_all, mf_all = hybrid(None)
    users, items = ["a", "a", "a", "b", "b"], ["x", "y", "z", "x", "w"]
    weights = [1.0, 5.0, 2.0, 1.0, 3.0]
    for model in (bounded, everyone):
        model.learn_many(users, items, weights)
    data = bounded.data
    slot = data.user_index["a"]
    assert item_item._recent_len[slot] == 3 and mf.user_bias[slot] != 0.0
    for model in (bounded, everyone):
        model.learn_many(["c", "c"], ["q", "x"], [4.0, 2.0])  # c takes a's slot
    assert data.user_index["c"] == slot and "a" not in data.user_index and data.last_evicted == "a"
    assert data.seen(slot).tolist() == [data.item_index["q"], data.item_index["x"]]
    new = everyone.data.user_index["c"]
    assert new == 2 != slot
    assert np.array_equal(item_item._recent[slot], item_item_all._recent[new])
    assert np.array_equal(item_item._recent_w[slot], item_item_all._recent_w[new])
    assert item_item._recent_len[slot] == item_item_all._recent_len[new] == 2
    assert np.array_equal(bpr.P[slot], bpr_all.P[new])
    assert np.array_equal(mf.P[slot], mf_all.P[new])
    assert mf.user_bias[slot] == mf_all.user_bias[new]
    assert bounded.rank("c", 5) == everyone.rank("c", 5)


@pytest.mark.parametrize("name", MODELS)
def test_a_forgotten_user_who_comes_back_is_a_new_user(name: str) -> None:
    model = build_model(name, max_users=3)
    model.learn_many(["a", "a", "b", "c", "d"], ["x", "y", "x", "z", "z"])
    assert "a" not in model.data.user_index
    cold = model.rank("nobody", 5)
    assert model.rank("a", 5) == cold  # the popularity list, x and y included
    model.learn_one("a", "w")
    assert model.data.seen(model.data.user_index["a"]).tolist() == [model.data.item_index["w"]]
    assert {"x", "y"} <= {item for item, _ in model.rank("a", 5)}


@pytest.mark.parametrize("name", ["hybrid", "biased-mf"])
def test_with_forgetting_the_same_stream_gives_the_same_model(name: str) -> None:
    stream = taste_stream(3000, n_users=200)
    users, items = (list(x) for x in zip(*stream, strict=True))

    def state() -> dict[str, np.ndarray]:
        model = build_model(name, max_users=25)
        for start in range(0, len(users), 97):
            model.learn_many(users[start : start + 97], items[start : start + 97])
        assert model.data.evicted > 2000
        return model.state_arrays()

    first, second = state(), state()
    assert first.keys() == second.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)  # NaN == NaN here


def test_encoding_a_batch_with_more_users_than_the_cap_is_refused_and_learn_many_splits_it() -> None:
    model = build_model("bpr", max_users=2)
    with pytest.raises(ConfigError, match=r"max_users=2 can hold at once \(the first 2 were encoded\)"):
        Interactions(max_users=2).encode(["a", "b", "c"], ["x", "x", "x"])
    model.learn_many(["a", "b", "c", "a"], ["x", "y", "z", "w"])
    assert list(model.data.user_index) == ["c", "a"] and model.data.evicted == 2
    with pytest.raises(ConfigError, match="max_users=0"):
        Interactions(max_users=0)


def test_state_learned_with_another_max_users_is_refused() -> None:
    model = build_model("itemitem", max_users=10)
    model.learn_one("a", "x")
    with pytest.raises(ConfigError, match="learned with max_users=10, not None"):
        build_model("itemitem").load_state_arrays(model.state_arrays())


def test_a_users_history_is_compacted_to_its_latest_distinct_items() -> None:
    """A bot clicking the same few items forever holds at most MAX_HISTORY entries."""
    model = build_model("itemitem")
    model.learn_many(["bot"] * 3, ["early", "x", "y"])
    clicks = [f"i{n % 7}" for n in range(3 * MAX_HISTORY)]
    model.learn_many(["bot"] * len(clicks), clicks)
    seen = model.data.seen(0)
    assert len(seen) <= MAX_HISTORY
    assert {model.data.item_ids[j] for j in seen.tolist()} == {"early", "x", "y", *clicks[:7]}
    model.learn_many(["other", "other"], ["early", "z"])
    assert [item for item, _ in model.rank("bot", 3)] == ["z"]
