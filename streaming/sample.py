"""Deterministic, labelled streams of card transactions and of user-item interactions.

For demos, tests and benchmarks: :func:`generate_transactions` for the anomaly engine,
:func:`generate_interactions` (and :func:`inject_bot_burst`) for the recommender.

The same arguments give the same events, byte for byte once JSON-encoded: every random draw comes
from ``numpy.random.default_rng(seed)`` and nothing reads the wall clock or global state.

The simulation
--------------
*Cardholders* (users) live in one of the cities of :data:`CITIES`, most of them in Europe. Each
has a home point in the city, a spending habit (a lognormal amount distribution around the user's
own typical amount), an activity rate (a few users shop many times a day, most a few times a week)
that follows a daily cycle in local time, one card (some users have two), a handful of favourite
merchants near home where most purchases happen, and now and then a new merchant nearby. Several
purchases on one outing are made at shops close to one another. Some users travel: a trip takes
them to another city of the same continent or to another continent for a few days, and the time
between their last purchase at home and their first one away is at least the flight time, so a
far-away purchase alone is not fraud (and no honest purchase implies a speed above 1,000 km/h
from the card's previous honest one). Now and then a user makes an honest purchase of 3 to 8 times
their usual amount.

Every purchase buys one item of a catalogue (:func:`item_catalogue`): items belong to
:data:`N_CATEGORIES` categories and their popularity has a long tail. Each user has one to three
favourite categories and buys mostly from them, and often buys again an item bought before, so a
recommender has something real to learn.

*Fraud* comes as incidents placed at random times on random established cards (at least five
purchases before), while their owner is at home; every event of an incident is labelled
``label=1`` with the incident's ``fraud_type``. "Typical amount" below is the median of the
cardholder's honest purchases:

``card-testing``
    A burst of 5 to 20 tiny amounts (0.50 to 5.00) within a few minutes, each at a merchant the
    card never used, in the cardholder's city or in another country: a stolen card number being
    checked before it is sold or used.
``impossible-travel``
    A purchase on another continent (over 3,000 km away) 3 minutes to 4 hours after a purchase at
    home, at about 2.5 times the typical amount: the implied speed from the card's previous
    purchase is above 1,500 km/h.
``large-purchase``
    One purchase of 10 to 50 times the cardholder's typical amount, in a shop new to the card, in
    opening hours.
``new-merchant-spree``
    3 to 8 purchases within an hour, each at a merchant new to the card, each 4 to 15 times the
    cardholder's typical amount, in opening hours: a stolen card emptied in town.

The share of fraudulent events is ``fraud_rate``, rounded to a whole number of events. About 15%
of incidents are card tests, 30% impossible travel, 35% large purchases and 20% sprees; by events,
at 1% fraud in 100,000, that is roughly 470, 75, 100 and 350.

Fields
------
Every event is a JSON-ready dict with exactly the keys of :data:`FIELDS`:

``event_id``
    ``"tx-0000001"`` and up, in event-time order.
``card_id``, ``user_id``
    ``"card-000123"``, ``"user-00042"``; a user may have two cards.
``ts``
    Event time, ISO 8601 UTC with milliseconds and ``Z``: ``"2026-01-01T08:15:02.113Z"``.
``amount``
    A float with two decimals, in the card's currency.
``lat``, ``lon``
    The merchant's position, four decimals.
``merchant``, ``country``
    ``"m-01234"`` and the merchant's two-letter country code.
``item_id``
    ``"item-00042"``, an index into :func:`item_catalogue`.
``label``, ``fraud_type``
    1 and one of :data:`FRAUD_TYPES` for fraud; 0 and ``None`` for honest purchases.

Interactions
------------
:func:`generate_interactions` simulates users browsing and buying the same catalogue, in sessions
over days: views, clicks, add-to-carts and purchases of items, mostly in each user's one to three
favourite categories, often of items related to the one just seen. Every event has the keys of
:data:`INTERACTION_FIELDS`: ``event_id`` (``"ix-0000001"`` and up), ``user_id`` (``"u00001"``),
``item_id``, ``kind`` (one of :data:`KINDS`), ``ts``, ``label`` and ``fraud_type``, all honest
(0 and ``None``). :func:`inject_bot_burst` adds what poisons a recommender: a few minutes in which
hundreds of brand-new accounts each interact with one target item and a couple of popular ones
(``label=1``, ``fraud_type`` ``"bot-burst"``).
"""

from __future__ import annotations

import bisect
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from .exceptions import ConfigError

FRAUD_TYPES: tuple[str, ...] = ("card-testing", "impossible-travel", "large-purchase", "new-merchant-spree")
"""The ``fraud_type`` values of fraudulent events."""

FIELDS: tuple[str, ...] = (
    "event_id",
    "card_id",
    "user_id",
    "ts",
    "amount",
    "lat",
    "lon",
    "merchant",
    "country",
    "item_id",
    "label",
    "fraud_type",
)
"""The keys of every event, in order."""

N_CATEGORIES = 20
"""Number of item categories (fewer when the catalogue has fewer items)."""

EARTH_RADIUS_KM = 6371.0088
_KM_PER_DEG = math.pi * EARTH_RADIUS_KM / 180.0
_DAY = 86_400.0
_HOUR = 3_600.0


class City(NamedTuple):
    """A city cardholders live in or travel to.

    Examples
    --------
    >>> from anomrec.streaming.sample import CITIES
    >>> paris = CITIES[0]
    >>> paris.name, paris.country, paris.continent, paris.utc_offset
    ('Paris', 'FR', 'EU', 0.0)
    """

    name: str
    country: str
    lat: float
    lon: float
    continent: str
    weight: float
    """How many cardholders live there, relative to the other cities."""

    @property
    def utc_offset(self) -> float:
        """Hours ahead of UTC, from the longitude (no daylight saving): local time for the daily cycle."""
        return float(round(self.lon / 15.0))


CITIES: tuple[City, ...] = (
    City("Paris", "FR", 48.8566, 2.3522, "EU", 6.0),
    City("Lyon", "FR", 45.7640, 4.8357, "EU", 2.0),
    City("Berlin", "DE", 52.5200, 13.4050, "EU", 5.0),
    City("Munich", "DE", 48.1372, 11.5756, "EU", 3.0),
    City("Hamburg", "DE", 53.5511, 9.9937, "EU", 2.5),
    City("Madrid", "ES", 40.4168, -3.7038, "EU", 4.0),
    City("Barcelona", "ES", 41.3851, 2.1734, "EU", 3.0),
    City("Rome", "IT", 41.9028, 12.4964, "EU", 3.5),
    City("Milan", "IT", 45.4642, 9.1900, "EU", 3.0),
    City("London", "GB", 51.5074, -0.1278, "EU", 6.0),
    City("Manchester", "GB", 53.4808, -2.2426, "EU", 2.0),
    City("Amsterdam", "NL", 52.3676, 4.9041, "EU", 2.5),
    City("Brussels", "BE", 50.8503, 4.3517, "EU", 2.0),
    City("Vienna", "AT", 48.2082, 16.3738, "EU", 2.0),
    City("Zurich", "CH", 47.3769, 8.5417, "EU", 1.5),
    City("Warsaw", "PL", 52.2297, 21.0122, "EU", 2.5),
    City("Prague", "CZ", 50.0755, 14.4378, "EU", 1.5),
    City("Stockholm", "SE", 59.3293, 18.0686, "EU", 1.5),
    City("Dublin", "IE", 53.3498, -6.2603, "EU", 1.5),
    City("Lisbon", "PT", 38.7223, -9.1393, "EU", 2.0),
    City("New York", "US", 40.7128, -74.0060, "NA", 2.0),
    City("Chicago", "US", 41.8781, -87.6298, "NA", 1.0),
    City("San Francisco", "US", 37.7749, -122.4194, "NA", 1.0),
    City("Toronto", "CA", 43.6532, -79.3832, "NA", 1.0),
    City("Mexico City", "MX", 19.4326, -99.1332, "NA", 1.0),
    City("Sao Paulo", "BR", -23.5505, -46.6333, "SA", 1.0),
    City("Buenos Aires", "AR", -34.6037, -58.3816, "SA", 0.8),
    City("Tokyo", "JP", 35.6762, 139.6503, "AS", 1.0),
    City("Singapore", "SG", 1.3521, 103.8198, "AS", 0.8),
    City("Dubai", "AE", 25.2048, 55.2708, "AS", 0.8),
    City("Mumbai", "IN", 19.0760, 72.8777, "AS", 0.8),
    City("Bangkok", "TH", 13.7563, 100.5018, "AS", 0.8),
    City("Lagos", "NG", 6.5244, 3.3792, "AF", 0.6),
    City("Johannesburg", "ZA", -26.2041, 28.0473, "AF", 0.6),
    City("Casablanca", "MA", 33.5731, -7.5898, "AF", 0.6),
    City("Sydney", "AU", -33.8688, 151.2093, "OC", 0.8),
)
"""Where cardholders live and travel, with their share of cardholders (``weight``)."""

# Relative purchase intensity by local hour: quiet nights, busy middays and early evenings.
_HOURLY = np.array(
    [0.12, 0.07, 0.04, 0.03, 0.03, 0.06, 0.20, 0.50, 0.80, 0.95, 1.00, 1.10,  # 0-11 h
     1.30, 1.20, 1.00, 0.95, 1.00, 1.15, 1.25, 1.15, 0.90, 0.65, 0.40, 0.22]  # 12-23 h
)  # fmt: skip
# Share of incidents of each fraud type (in FRAUD_TYPES order); bursts and sprees hold several events.
_INCIDENT_MIX = np.array([0.15, 0.30, 0.35, 0.20])
_MIN_GAP = 60.0  # seconds between two purchases of one person
_OUTING = 20 * 60.0  # purchases closer in time than this are made in neighbouring shops
_NEIGHBOURS = 6  # shops counted as neighbouring, the shop itself included
_MIN_HISTORY = 5  # purchases a card has made before fraud can hit it
_SPLURGE_RATE = 0.004  # honest purchases that are 3-8 times the user's typical amount
_ZIPF = 1.05  # item popularity within a category falls as 1 / rank**_ZIPF


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres.

    Examples
    --------
    >>> from anomrec.streaming.sample import haversine_km
    >>> round(haversine_km(48.857, 2.352, 51.507, -0.128))
    343
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


def _haversine_np(lat1: Any, lon1: Any, lat2: Any, lon2: Any) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dp, dl = p2 - p1, np.radians(np.asarray(lon2) - np.asarray(lon1))
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return np.asarray(2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0))))


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the catalogue and for the people, both from ``default_rng(seed)``."""
    catalogue, people = np.random.default_rng(seed).spawn(2)
    return catalogue, people


@dataclass(frozen=True, eq=False)
class ItemCatalogue:
    """The items purchases buy: a category and a popularity per item.

    Attributes
    ----------
    category
        Category (``0 .. n_categories - 1``) of each item; item ``i`` is ``item_id(i)``.
    popularity
        Share of each item among the purchases of a shopper with no preferences; sums to 1 and
        falls steeply (a long tail) within every category.

    Examples
    --------
    >>> from anomrec.streaming.sample import item_catalogue
    >>> cat = item_catalogue(1000, seed=3)
    >>> cat.n_items, cat.n_categories, cat.item_id(42)
    (1000, 20, 'item-00042')
    >>> top = np.sort(cat.popularity)[::-1]
    >>> bool(top[:100].sum() > 0.5)   # a tenth of the items make most of the sales
    True
    """

    category: np.ndarray
    popularity: np.ndarray

    @property
    def n_items(self) -> int:
        """Number of items."""
        return len(self.category)

    @property
    def n_categories(self) -> int:
        """Number of categories."""
        return int(self.category.max()) + 1

    @staticmethod
    def item_id(index: int) -> str:
        """The ``item_id`` of item ``index``."""
        return f"item-{index:05d}"

    @cached_property
    def _tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Items grouped by category, where each group ends, within-category CDFs, the global CDF."""
        by_cat = np.argsort(self.category, kind="stable")
        cats = self.category[by_cat]
        ends = np.searchsorted(cats, np.arange(self.n_categories), side="right")
        pop = self.popularity[by_cat]
        cat_total = np.bincount(cats, weights=pop, minlength=self.n_categories)
        # Within-category CDFs laid end to end: category c spans [c, c + 1).
        within = np.empty(len(pop))
        starts = np.concatenate(([0], ends[:-1]))
        for c, (lo, hi) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            within[lo:hi] = c + np.cumsum(pop[lo:hi]) / cat_total[c]
        cdf = np.cumsum(self.popularity)
        return by_cat, ends, within, cdf / cdf[-1]

    def _draw(self, categories: np.ndarray | None, u: np.ndarray) -> np.ndarray:
        """Items drawn by popularity, within ``categories`` (one per draw) or from the whole catalogue."""
        by_cat, ends, within, cdf = self._tables
        if categories is None:
            return np.minimum(np.searchsorted(cdf, u, side="right"), self.n_items - 1)
        pos = np.searchsorted(within, categories + u, side="right")
        return np.asarray(by_cat[np.minimum(pos, ends[categories] - 1)])


def item_catalogue(n_items: int = 5000, *, seed: int = 7) -> ItemCatalogue:
    """The item catalogue :func:`generate_transactions` uses for these ``n_items`` and ``seed``.

    Category sizes and popularities are uneven, and within a category popularity falls as a power
    of the item's rank, so a few items make most of the sales.

    Parameters
    ----------
    n_items
        Number of items.
    seed
        The stream's seed.

    Examples
    --------
    >>> from anomrec.streaming.sample import item_catalogue
    >>> cat = item_catalogue(50, seed=1)
    >>> int(np.bincount(cat.category).min()) >= 1, round(float(cat.popularity.sum()), 9)
    (True, 1.0)
    """
    _check_count("n_items", n_items, minimum=1)
    rng, _ = _streams(seed)
    n_cat = min(N_CATEGORIES, n_items)
    ranks = np.arange(1, n_cat + 1, dtype=float)
    sizes = 1 + rng.multinomial(n_items - n_cat, ranks**-0.6 / (ranks**-0.6).sum())
    cat_share = rng.permutation(ranks**-0.8 / (ranks**-0.8).sum())
    order = rng.permutation(n_items)  # item ids carry no hint of category or rank
    category = np.empty(n_items, dtype=np.int64)
    popularity = np.empty(n_items)
    offset = 0
    for c, size in enumerate(sizes.tolist()):
        members = order[offset : offset + size]
        offset += size
        weights = np.arange(1, size + 1, dtype=float) ** -_ZIPF
        category[members] = c
        popularity[members] = cat_share[c] * weights / weights.sum()
    return ItemCatalogue(category=category, popularity=popularity / popularity.sum())


def generate_transactions(
    n: int,
    *,
    seed: int = 7,
    fraud_rate: float = 0.01,
    n_users: int = 2000,
    n_items: int = 5000,
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC),
    anomaly_rate: float | None = None,
) -> list[dict[str, Any]]:
    """``n`` card transactions in event-time order, with labelled fraud.

    The stream spans as many days as the users need to make ``n`` purchases at their own rates
    (about 45 days for 100,000 events and 2,000 users). Cards need a history for per-card features
    to mean anything: give ``n`` of at least 20 to 50 times ``n_users``.

    Parameters
    ----------
    n
        Number of events.
    seed
        Seeds every random draw: the same arguments give the same events.
    fraud_rate
        Share of fraudulent events (``label=1``), in [0, 1).
    n_users
        Number of cardholders.
    n_items
        Number of items in the catalogue (see :func:`item_catalogue`).
    start
        Time the stream starts at (timezone-aware); the first event comes a little later.
    anomaly_rate
        Deprecated alias of ``fraud_rate``, for older callers; wins when given.

    Returns
    -------
    list of dict
        One dict per event with the keys of :data:`FIELDS`; see the module docstring.

    Raises
    ------
    ConfigError
        An argument is out of range; the message names it, with the value.

    Examples
    --------
    >>> from anomrec.streaming.sample import generate_transactions
    >>> events = generate_transactions(2000, seed=1, n_users=50)
    >>> events == generate_transactions(2000, seed=1, n_users=50)
    True
    >>> list(events[0]) == list(FIELDS)
    True
    >>> events[0]["event_id"], events[0]["ts"] < events[-1]["ts"]
    ('tx-0000001', True)
    >>> sum(e["label"] for e in events)   # 1% of 2,000
    20
    >>> generate_transactions(10, fraud_rate=1.5)
    Traceback (most recent call last):
    ...
    anomrec.streaming.exceptions.ConfigError: fraud_rate=1.5 is out of range: expected a share in [0, 1)
    """
    return list(
        iter_transactions(
            n,
            seed=seed,
            fraud_rate=fraud_rate,
            n_users=n_users,
            n_items=n_items,
            start=start,
            anomaly_rate=anomaly_rate,
        )
    )


def iter_transactions(
    n: int,
    *,
    seed: int = 7,
    fraud_rate: float = 0.01,
    n_users: int = 2000,
    n_items: int = 5000,
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC),
    anomaly_rate: float | None = None,
) -> Iterator[dict[str, Any]]:
    """The events of :func:`generate_transactions`, one at a time.

    The simulation runs in full on the first ``next()`` and holds its columns in numpy arrays
    (about 100 bytes an event); the dicts are built as they are consumed, so writing millions of
    events to a file or a topic does not hold them all as Python objects.

    Examples
    --------
    >>> from anomrec.streaming.sample import iter_transactions
    >>> events = iter_transactions(500, seed=2, n_users=20)
    >>> [e["event_id"] for e in events][-1]
    'tx-0000500'
    """
    if anomaly_rate is not None:
        fraud_rate = anomaly_rate
    _check_count("n", n, minimum=0)
    _check_count("n_users", n_users, minimum=1)
    _check_count("n_items", n_items, minimum=1)
    _check_count("seed", seed, minimum=0)
    if not (isinstance(fraud_rate, int | float) and 0 <= fraud_rate < 1):
        raise ConfigError(f"fraud_rate={fraud_rate!r} is out of range: expected a share in [0, 1)")
    if start.tzinfo is None:
        raise ConfigError(f"start={start!r} has no timezone: expected an aware datetime, e.g. tzinfo=UTC")
    return _events(
        n,
        seed=seed,
        fraud_rate=float(fraud_rate),
        n_users=n_users,
        n_items=n_items,
        start=start.astimezone(UTC),
    )


def _check_count(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name}={value!r} is out of range: expected a whole number >= {minimum}")


def _events(
    n: int, *, seed: int, fraud_rate: float, n_users: int, n_items: int, start: datetime
) -> Iterator[dict[str, Any]]:
    if n == 0:
        return
    sim = _Simulation(n, seed=seed, fraud_rate=fraud_rate, n_users=n_users, n_items=n_items, start=start)
    cols = sim.run()
    world = sim.world
    merchant_ids = [f"m-{m:05d}" for m in range(len(world.m_city))]
    country = [CITIES[c].country for c in world.m_city.tolist()]
    lat = np.round(world.m_lat, 4).tolist()
    lon = np.round(world.m_lon, 4).tolist()
    card_ids = [f"card-{c:06d}" for c in sim.card_label.tolist()]
    user_ids = [f"user-{u:05d}" for u in range(n_users)]
    origin = np.datetime64(start.replace(tzinfo=None), "ms")
    ts = np.datetime_as_string(origin + cols.t_ms.astype("timedelta64[ms]"), unit="ms").tolist()
    amount = np.round(cols.amount, 2).tolist()
    item_ids = [ItemCatalogue.item_id(i) for i in range(n_items)]
    # Indexed by kind, where -1 (honest) picks the last entry.
    names: list[str | None] = [*FRAUD_TYPES, None]
    labels = [1] * len(FRAUD_TYPES) + [0]
    for i, card, user, m, item, kind in zip(
        range(n),
        cols.card.tolist(),
        cols.user.tolist(),
        cols.merchant.tolist(),
        cols.item.tolist(),
        cols.kind.tolist(),
        strict=True,
    ):
        yield {
            "event_id": f"tx-{i + 1:07d}",
            "card_id": card_ids[card],
            "user_id": user_ids[user],
            "ts": ts[i] + "Z",
            "amount": amount[i],
            "lat": lat[m],
            "lon": lon[m],
            "merchant": merchant_ids[m],
            "country": country[m],
            "item_id": item_ids[item],
            "label": labels[kind],
            "fraud_type": names[kind],
        }


@dataclass(frozen=True)
class _Columns:
    """The simulated stream, one array per column, in event-time order."""

    t_ms: np.ndarray
    user: np.ndarray
    card: np.ndarray
    merchant: np.ndarray
    item: np.ndarray
    amount: np.ndarray
    kind: np.ndarray  # index into FRAUD_TYPES, -1 for an honest purchase


class _World:
    """Cities and their merchants: positions, and each merchant's nearest neighbours."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.c_lat = np.array([c.lat for c in CITIES])
        self.c_lon = np.array([c.lon for c in CITIES])
        self.c_weight = np.array([c.weight for c in CITIES]) / sum(c.weight for c in CITIES)
        sizes = [40 + round(110 * c.weight) for c in CITIES]
        self.c_start = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        self.c_size = np.array(sizes, dtype=np.int64)
        self.m_city = np.repeat(np.arange(len(CITIES)), sizes)
        # Shops scatter around the centre, a few kilometres out, some in the suburbs.
        km = rng.normal(0.0, 1.0, size=(len(self.m_city), 2)) * rng.choice(
            [3.0, 8.0], p=[0.7, 0.3], size=(len(self.m_city), 1)
        )
        self.m_lat = self.c_lat[self.m_city] + km[:, 0] / _KM_PER_DEG
        self.m_lon = self.c_lon[self.m_city] + km[:, 1] / (
            _KM_PER_DEG * np.cos(np.radians(self.c_lat[self.m_city]))
        )
        self.m_x, self.m_y = self._km(self.m_lat, self.m_lon, self.m_city)
        knn = np.empty((len(self.m_city), _NEIGHBOURS), dtype=np.int64)
        for lo, size in zip(self.c_start.tolist(), sizes, strict=True):
            x, y = self.m_x[lo : lo + size], self.m_y[lo : lo + size]
            d2 = (x[:, None] - x[None, :]) ** 2 + (y[:, None] - y[None, :]) ** 2
            knn[lo : lo + size] = lo + np.argpartition(d2, _NEIGHBOURS - 1, axis=1)[:, :_NEIGHBOURS]
        self.knn = knn.tolist()
        self.pairs: dict[tuple[int, int], float] = {}

    def _km(self, lat: Any, lon: Any, city: Any) -> tuple[np.ndarray, np.ndarray]:
        """Kilometres east and north of the city centre (flat within a city)."""
        y = (np.asarray(lat) - self.c_lat[city]) * _KM_PER_DEG
        x = (np.asarray(lon) - self.c_lon[city]) * _KM_PER_DEG * np.cos(np.radians(self.c_lat[city]))
        return x, y

    def near(
        self,
        rng: np.random.Generator,
        city: int,
        lat: np.ndarray,
        lon: np.ndarray,
        *,
        k: int,
        scale_km: float,
    ) -> np.ndarray:
        """For each point, ``k`` distinct merchants of ``city`` drawn with weight falling with distance.

        Returns an array of shape ``(len(lat), min(k, merchants in the city))``, nearest-drawn first.
        """
        lo, size = int(self.c_start[city]), int(self.c_size[city])
        x, y = self._km(lat, lon, city)
        d = np.hypot(self.m_x[None, lo : lo + size] - x[:, None], self.m_y[None, lo : lo + size] - y[:, None])
        # Gumbel top-k: k distinct draws with probability proportional to exp(-d / scale) + 1e-4.
        keys = np.log(np.exp(-d / scale_km) + 1e-4) + rng.gumbel(size=d.shape)
        k = min(k, size)
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
        ranked = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1), axis=1)
        return np.asarray(lo + ranked)

    def city_dist_km(self, a: int, b: int) -> float:
        key = (min(a, b), max(a, b))
        if key not in self.pairs:
            self.pairs[key] = haversine_km(CITIES[a].lat, CITIES[a].lon, CITIES[b].lat, CITIES[b].lon)
        return self.pairs[key]


@dataclass
class _Trip:
    depart: float  # leaves home
    arrive: float  # lands at the destination
    leave: float  # leaves the destination
    back: float  # lands at home
    city: int
    shops: list[int]
    used: list[int]


class _Simulation:
    """One run: the world, the people, their honest purchases, then the fraud incidents."""

    def __init__(
        self, n: int, *, seed: int, fraud_rate: float, n_users: int, n_items: int, start: datetime
    ) -> None:
        self.n = n
        self.n_fraud = min(n, round(fraud_rate * n))
        self.n_users = n_users
        # The catalogue draws from a stream of its own, so that it depends on n_items and seed only.
        self.rng = _streams(seed)[1]
        self.catalogue = item_catalogue(n_items, seed=seed)
        midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
        self.start_hour = (start - midnight) / timedelta(hours=1)
        self.world = _World(self.rng)
        self.card_label = np.empty(0, dtype=np.int64)

    # -- people ------------------------------------------------------------------------------------

    def _people(self) -> None:
        rng, world, U = self.rng, self.world, self.n_users
        self.home = rng.choice(len(CITIES), size=U, p=world.c_weight)
        cos = np.cos(np.radians(world.c_lat[self.home]))
        self.h_lat = world.c_lat[self.home] + rng.normal(0.0, 4.0, U) / _KM_PER_DEG
        self.h_lon = world.c_lon[self.home] + rng.normal(0.0, 4.0, U) / (_KM_PER_DEG * cos)
        self.typical = np.exp(rng.normal(math.log(30.0), 0.55, U))
        self.sigma = rng.uniform(0.35, 0.75, U)
        self.rate = np.exp(rng.normal(math.log(0.75), 0.85, U))  # purchases a day
        offsets = np.array([c.utc_offset for c in CITIES])
        self.local = offsets[self.home] + rng.normal(0.0, 1.0, U)  # early birds and night owls
        self.p_fav = rng.beta(7.0, 2.0, U)
        n_fav = rng.integers(3, 11, U)
        self.p_primary = rng.uniform(0.55, 0.9, U)
        two_cards = rng.random(U) < 0.12
        self.trip_rate = np.exp(rng.normal(math.log(4.0 / 365.0), 0.9, U))  # trips a day
        # Items: one to three favourite categories, how loyal to them, how often buying again.
        cat = self.catalogue
        share = np.bincount(cat.category, weights=cat.popularity, minlength=cat.n_categories)
        n_favcat = rng.integers(1, min(3, cat.n_categories) + 1, U)
        self.p_incat = rng.beta(9.0, 1.5, U)
        self.p_rebuy = rng.beta(2.0, 5.0, U)
        # Each user's shops: favourites first, then the other shops of the neighbourhood.
        shops = np.zeros((U, 60), dtype=np.int64)
        for city in np.unique(self.home).tolist():
            who = np.flatnonzero(self.home == city)
            shops[who] = world.near(rng, city, self.h_lat[who], self.h_lon[who], k=60, scale_km=2.5)
        fav_w = np.where(np.arange(10) < n_fav[:, None], rng.gamma(1.2, size=(U, 10)), 0.0)
        fav_cum = np.cumsum(-np.sort(-fav_w, axis=1), axis=1)
        fav_cum /= fav_cum[:, -1:]
        self.favs = [row[:k] for row, k in zip(shops.tolist(), n_fav.tolist(), strict=True)]
        self.fav_cum = [row[:k] for row, k in zip(fav_cum.tolist(), n_fav.tolist(), strict=True)]
        self.nearby = [row[k:] for row, k in zip(shops.tolist(), n_fav.tolist(), strict=True)]
        # Favourite categories: drawn without replacement, leaning to the popular ones.
        keys = 0.5 * np.log(share)[None, :] + rng.gumbel(size=(U, cat.n_categories))
        top = np.argsort(-keys, axis=1)[:, :3]
        self.favcat = np.pad(top, ((0, 0), (0, 3 - top.shape[1])), mode="edge")
        cat_w = np.where(np.arange(3) < n_favcat[:, None], rng.gamma(1.5, size=(U, 3)), 0.0)
        self.favcat_cum = np.cumsum(cat_w, axis=1) / cat_w.sum(axis=1, keepdims=True)
        self.favcat_cum[:, -1] = 1.0
        n_cards = 1 + two_cards.astype(np.int64)
        self.first_card = np.concatenate(([0], np.cumsum(n_cards)[:-1]))
        self.n_cards = n_cards
        self.card_label = rng.permutation(int(n_cards.sum()))
        self.card_user = np.repeat(np.arange(U), n_cards)

    def _trips(self, horizon: float) -> list[list[_Trip]]:
        rng, world = self.rng, self.world
        trips: list[list[_Trip]] = [[] for _ in range(self.n_users)]
        counts = rng.poisson(self.trip_rate * horizon / _DAY)
        continent = np.array([c.continent for c in CITIES])
        for u in np.flatnonzero(counts).tolist():
            home = int(self.home[u])
            departs = np.sort(rng.uniform(0.0, horizon, int(counts[u])))
            free_from = -math.inf
            for depart in departs.tolist():
                same = continent == continent[home]
                pool = same if rng.random() < 0.65 else ~same
                pool[home] = False
                if not pool.any():
                    pool = np.arange(len(CITIES)) != home
                p = world.c_weight * pool
                city = int(rng.choice(len(CITIES), p=p / p.sum()))
                flight = (1.5 + world.city_dist_km(home, city) / 750.0) * _HOUR
                stay = max(1.0, float(np.exp(rng.normal(math.log(3.5), 0.6)))) * _DAY
                if depart < free_from:
                    continue
                hotel_lat = CITIES[city].lat + rng.normal(0.0, 3.0) / _KM_PER_DEG
                hotel_lon = CITIES[city].lon + rng.normal(0.0, 3.0) / (
                    _KM_PER_DEG * math.cos(math.radians(CITIES[city].lat))
                )
                shops = world.near(
                    rng, city, np.array([hotel_lat]), np.array([hotel_lon]), k=25, scale_km=1.5
                )[0].tolist()
                trip = _Trip(
                    depart=depart,
                    arrive=depart + flight,
                    leave=depart + flight + stay,
                    back=depart + 2 * flight + stay,
                    city=city,
                    shops=shops,
                    used=[],
                )
                trips[u].append(trip)
                free_from = trip.back + _DAY
        return trips

    # -- honest purchases --------------------------------------------------------------------------

    def _honest(self, n_legit: int) -> dict[str, np.ndarray]:
        rng, U = self.rng, self.n_users
        total_rate = float(self.rate.sum())
        horizon = max(n_legit, 1) / total_rate * _DAY
        self.horizon = horizon
        counts = rng.multinomial(n_legit, self.rate / total_rate)
        user = np.repeat(np.arange(U), counts)
        t = self._daily(user, horizon)
        order = np.lexsort((t, user))
        t = t[order]
        # Outings: some purchases follow another one of the same person within minutes.
        follow = (rng.random(n_legit) < 0.12) & (user == np.roll(user, 1))
        if n_legit:
            follow[0] = False
        idx = np.flatnonzero(follow)
        t[idx] = t[idx - 1] + 90.0 + rng.exponential(900.0, len(idx))
        t = t[np.lexsort((t, user))]
        trips = self._trips(horizon)
        self.trips = trips

        # Everything random below is drawn up front, in bulk; the loop only picks.
        u_card = rng.random(n_legit).tolist()
        u_a = rng.random(n_legit).tolist()
        u_b = rng.random(n_legit).tolist()
        landing = (300.0 + np.minimum(rng.exponential(1.5 * _HOUR, n_legit), 3 * _HOUR)).tolist()
        u_rebuy = rng.random(n_legit).tolist()
        u_pick = rng.random(n_legit).tolist()
        which = (rng.random(n_legit)[:, None] > self.favcat_cum[user]).sum(axis=1)
        in_cat = rng.random(n_legit) < self.p_incat[user]
        u_item = rng.random(n_legit)
        fresh = np.where(
            in_cat,
            self.catalogue._draw(self.favcat[user, np.minimum(which, 2)], u_item),
            self.catalogue._draw(None, u_item),
        ).tolist()

        t_out = np.empty(n_legit)
        card_out = np.empty(n_legit, dtype=np.int64)
        m_out = np.empty(n_legit, dtype=np.int64)
        item_out = np.empty(n_legit, dtype=np.int64)
        away = np.zeros(n_legit, dtype=bool)
        self.visited: list[set[int]] = [set() for _ in range(len(self.card_user))]
        knn = self.world.knn
        t_base = t.tolist()
        bounds = np.concatenate(([0], np.cumsum(counts))).tolist()
        for u in range(U):
            lo, hi = bounds[u], bounds[u + 1]
            if lo == hi:
                continue
            u_trips = trips[u]
            tp = 0
            t_prev, prev_m, prev_trip = -math.inf, -1, -1
            favs, fav_cum, nearby = self.favs[u], self.fav_cum[u], self.nearby[u]
            p_fav, p_rebuy, p_primary = float(self.p_fav[u]), float(self.p_rebuy[u]), float(self.p_primary[u])
            card0, two = int(self.first_card[u]), self.n_cards[u] > 1
            bought: list[int] = []
            for i in range(lo, hi):
                ti = max(t_base[i], t_prev + _MIN_GAP)
                while tp < len(u_trips) and ti >= u_trips[tp].back:
                    tp += 1
                trip = -1
                if tp < len(u_trips) and ti >= u_trips[tp].depart:
                    cur = u_trips[tp]
                    if ti < cur.arrive:  # in the air: the purchase waits for the landing
                        ti = cur.arrive + landing[i]
                        trip = tp
                    elif ti < cur.leave:
                        trip = tp
                    else:  # flying home
                        ti = cur.back + landing[i]
                        tp += 1
                if ti - t_prev < _OUTING and prev_trip == trip:
                    m = knn[prev_m][int(u_a[i] * _NEIGHBOURS)]
                elif trip >= 0:
                    used = u_trips[trip].used
                    if used and u_a[i] < 0.4:
                        m = used[int(u_b[i] * len(used))]
                    else:
                        shops = u_trips[trip].shops
                        m = shops[int(u_b[i] * len(shops))]
                        used.append(m)
                elif u_a[i] < p_fav:
                    m = favs[min(bisect.bisect_right(fav_cum, u_b[i]), len(favs) - 1)]
                else:
                    m = nearby[int(u_b[i] * len(nearby))]
                card = card0 + 1 if two and u_card[i] >= p_primary else card0
                rebuy = bought and u_rebuy[i] < p_rebuy
                item = bought[int(u_pick[i] * len(bought))] if rebuy else fresh[i]
                bought.append(item)
                self.visited[card].add(m)
                t_out[i], card_out[i], m_out[i], item_out[i], away[i] = ti, card, m, item, trip >= 0
                t_prev, prev_m, prev_trip = ti, m, trip

        z = rng.standard_normal(n_legit)
        splurge = np.where(
            rng.random(n_legit) < _SPLURGE_RATE, np.exp(rng.uniform(math.log(3), math.log(8), n_legit)), 1.0
        )
        amount = self.typical[user] * np.exp(self.sigma[user] * z) * splurge * np.where(away, 1.3, 1.0)
        return {
            "t": t_out,
            "user": user,
            "card": card_out,
            "merchant": m_out,
            "item": item_out,
            "amount": np.maximum(amount, 0.3),
            "kind": np.full(n_legit, -1, dtype=np.int64),
            "away": away,
        }

    def _daily(self, user: np.ndarray, horizon: float) -> np.ndarray:
        """Uniform times over the horizon, thinned to the daily cycle in each user's local time."""
        rng = self.rng
        t = rng.uniform(0.0, horizon, len(user))
        pending = np.arange(len(user))
        accept_p = _HOURLY / _HOURLY.max()
        while len(pending):
            hour = (
                np.floor(self.start_hour + t[pending] / _HOUR + self.local[user[pending]]).astype(np.int64)
                % 24
            )
            rejected = pending[rng.random(len(pending)) >= accept_p[hour]]
            t[rejected] = rng.uniform(0.0, horizon, len(rejected))
            pending = rejected
        return t

    # -- fraud -------------------------------------------------------------------------------------

    def _incident_sizes(self) -> list[tuple[int, int]]:
        rng = self.rng
        incidents: list[tuple[int, int]] = []
        remaining = self.n_fraud
        while remaining > 0:
            kind = int(rng.choice(len(FRAUD_TYPES), p=_INCIDENT_MIX))
            size = {0: int(rng.integers(5, 21)), 1: 1, 2: 1, 3: int(rng.integers(3, 9))}[kind]
            minimum = {0: 5, 1: 1, 2: 1, 3: 3}[kind]
            if size > remaining:
                if remaining >= minimum:
                    size = remaining
                else:
                    kind, size = (1 if rng.random() < 0.5 else 2), 1
            incidents.append((kind, size))
            remaining -= size
        return incidents

    def _fraud(self, honest: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rng = self.rng
        incidents = self._incident_sizes()
        # A user's typical amount, as anyone reading the stream would see it: their median honest one.
        self.median = self.typical.copy()
        cents = np.round(honest["amount"], 2)
        by_user = np.lexsort((cents, honest["user"]))
        starts = np.searchsorted(honest["user"][by_user], np.arange(self.n_users))
        counts = np.bincount(honest["user"], minlength=self.n_users)
        has = counts > 0
        below, above = starts[has] + (counts[has] - 1) // 2, starts[has] + counts[has] // 2
        self.median[has] = (cents[by_user][below] + cents[by_user][above]) / 2
        order = np.lexsort((honest["t"], honest["card"]))
        card_sorted = honest["card"][order]
        n_cards = len(self.card_user)
        edges = np.searchsorted(card_sorted, np.arange(n_cards + 1))
        history = np.diff(edges)
        need = _MIN_HISTORY if (history > _MIN_HISTORY).any() else 1
        eligible = np.flatnonzero(history >= need)
        pool: list[int] = []
        busy: dict[int, list[tuple[float, float]]] = {}
        out: dict[str, list[Any]] = {
            k: [] for k in ("t", "user", "card", "merchant", "item", "amount", "kind")
        }
        t_all, away_all = honest["t"][order], honest["away"][order]
        resale = np.array([0, 1])[: self.catalogue.n_categories]

        for kind, size in incidents:
            placed: tuple[int, list[float], list[int], list[float]] | None = None
            for attempt in range(300):
                if not len(eligible):
                    break
                if not pool:
                    pool = rng.permutation(eligible).tolist()
                card = pool.pop()
                lo, hi = int(edges[card]), int(edges[card + 1])
                j = lo + int(rng.integers(need - 1, hi - lo))
                t_a = float(t_all[j])
                t_next = float(t_all[j + 1]) if j + 1 < hi else t_a + 2 * _DAY
                if attempt < 250 and (away_all[j] or (j + 1 < hi and away_all[j + 1])):
                    continue
                placed = self._place(
                    kind, size, card=card, t_a=t_a, t_next=t_next, busy=busy, strict=attempt < 250
                )
                if placed is not None:
                    break
            if placed is None:  # no history at all (a tiny stream): anywhere, any card
                card = int(rng.integers(n_cards))
                t0 = float(rng.uniform(0.0, self.horizon))
                placed = self._place(kind, size, card=card, t_a=t0, t_next=t0 + _DAY, busy=busy, strict=False)
                assert placed is not None
            card, times, shops, amounts = placed
            user = int(self.card_user[card])
            busy.setdefault(card, []).append((times[0] - _HOUR, times[-1] + _HOUR))
            items = self.catalogue._draw(rng.choice(resale, size=len(times)), rng.random(len(times)))
            out["t"] += times
            out["user"] += [user] * len(times)
            out["card"] += [card] * len(times)
            out["merchant"] += shops
            out["item"] += items.tolist()
            out["amount"] += amounts
            out["kind"] += [kind] * len(times)
        return {
            "t": np.array(out["t"], dtype=float),
            "user": np.array(out["user"], dtype=np.int64),
            "card": np.array(out["card"], dtype=np.int64),
            "merchant": np.array(out["merchant"], dtype=np.int64),
            "item": np.array(out["item"], dtype=np.int64),
            "amount": np.array(out["amount"], dtype=float),
            "kind": np.array(out["kind"], dtype=np.int64),
        }

    def _new_shops(self, card: int, city: int, k: int) -> list[int]:
        """``k`` distinct merchants of ``city`` that ``card`` has never used."""
        lo, size = int(self.world.c_start[city]), int(self.world.c_size[city])
        seen = self.visited[card]
        fresh = [m for m in range(lo, lo + size) if m not in seen]
        picked = self.rng.choice(fresh, size=k, replace=len(fresh) < k)
        seen.update(picked.tolist())
        return [int(m) for m in picked]

    def _local_hour(self, user: int, t: float) -> float:
        return (self.start_hour + t / _HOUR + float(self.local[user])) % 24

    def _place(
        self,
        kind: int,
        size: int,
        *,
        card: int,
        t_a: float,
        t_next: float,
        busy: dict[int, list[tuple[float, float]]],
        strict: bool,
    ) -> tuple[int, list[float], list[int], list[float]] | None:
        """Times, merchants and amounts of one incident on ``card`` between two of its purchases.

        ``strict`` asks that the card's owner be at home and the incident fit between the two
        purchases without overlapping another incident; without it (tiny streams) anything goes.
        """
        rng, world = self.rng, self.world
        user = int(self.card_user[card])
        home = int(self.home[user])
        typical = float(self.median[user])
        gap = t_next - t_a
        if kind == 1:  # impossible travel: another continent, minutes to hours after a purchase at home
            far = [
                c
                for c in range(len(CITIES))
                if CITIES[c].continent != CITIES[home].continent and world.city_dist_km(home, c) > 3000
            ]
            city = far[int(rng.integers(len(far)))]
            dist = world.city_dist_km(home, city)
            latest = min(4 * _HOUR, dist / 1500.0 * _HOUR, gap - 10 * 60) if strict else 4 * _HOUR
            earliest = 3 * 60.0
            if latest <= earliest:
                return None
            times = [t_a + float(np.exp(rng.uniform(math.log(earliest), math.log(latest))))]
            amounts = [typical * float(np.exp(rng.normal(math.log(2.5), 0.5)))]
            shops_city = city
        else:
            if kind == 0:  # card testing: a burst of tiny amounts, every few seconds
                offsets = np.cumsum(3.0 + rng.exponential(12.0, size))
                offsets -= offsets[0]
                amounts = np.round(rng.uniform(0.5, 5.0, size), 2).tolist()
                if rng.random() < 0.5:
                    shops_city = home
                else:
                    foreign = [c for c in range(len(CITIES)) if CITIES[c].country != CITIES[home].country]
                    p = world.c_weight[foreign] / world.c_weight[foreign].sum()
                    shops_city = int(rng.choice(foreign, p=p))
            elif kind == 2:  # one purchase of 10 to 50 times the typical amount
                offsets = np.zeros(1)
                amounts = [typical * float(np.exp(rng.uniform(math.log(10), math.log(50))))]
                shops_city = home
            else:  # spree: 3 to 8 big purchases in new shops within the hour
                span = rng.uniform(15.0, 60.0) * 60.0
                offsets = np.sort(rng.uniform(0.0, span - (size - 1) * 120.0, size)) + np.arange(size) * 120.0
                offsets -= offsets[0]
                amounts = (typical * np.exp(rng.uniform(math.log(4), math.log(15), size))).tolist()
                shops_city = home
            span = float(offsets[-1])
            room = gap - span - 20 * 60
            if strict and room <= 0:
                return None
            t0 = t_a + 10 * 60 + float(rng.uniform(0.0, max(room, 0.0)))
            if strict and kind in (2, 3) and not 9 <= self._local_hour(user, t0) < 21:
                return None
            times = (t0 + offsets).tolist()
        if strict:
            lo, hi = times[0] - _HOUR, times[-1] + _HOUR
            if any(a < hi and lo < b for a, b in busy.get(card, [])):
                return None
            if any(trip.depart - _DAY < hi and lo < trip.back + _DAY for trip in self.trips[user]):
                return None
        shops = self._new_shops(card, shops_city, len(times))
        # Whole cents, rounded up so that "ten times typical" stays so (1.23 * 100 is 123.00000000000001).
        return card, times, shops, [max(0.01, math.ceil(a * 100 - 1e-6) / 100) for a in amounts]

    # -- the whole stream --------------------------------------------------------------------------

    def run(self) -> _Columns:
        self._people()
        honest = self._honest(self.n - self.n_fraud)
        fraud = self._fraud(honest)
        keys = ("t", "user", "card", "merchant", "item", "amount", "kind")
        merged = {k: np.concatenate((honest[k], fraud[k])) for k in keys}
        t_ms = np.floor(merged["t"] * 1000.0).astype(np.int64)
        order = np.lexsort((np.arange(len(t_ms)), t_ms))
        return _Columns(
            t_ms=t_ms[order],
            user=merged["user"][order],
            card=merged["card"][order],
            merchant=merged["merchant"][order],
            item=merged["item"][order],
            amount=merged["amount"][order],
            kind=merged["kind"][order],
        )


# --------------------------------------------------------------------------------------------------
# Interactions: users browsing and buying the catalogue, for the recommender

KINDS: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase")
"""The ``kind`` values of interactions, from the most to the least frequent by default."""

KIND_SHARES: Mapping[str, float] = MappingProxyType(
    {"view": 0.62, "click": 0.24, "add_to_cart": 0.09, "purchase": 0.05}
)
"""Default share of each kind among interactions."""

INTERACTION_FIELDS: tuple[str, ...] = ("event_id", "user_id", "item_id", "kind", "ts", "label", "fraud_type")
"""The keys of every interaction, in order."""

BOT_BURST = "bot-burst"
"""The ``fraud_type`` of the interactions :func:`inject_bot_burst` adds."""

_SESSION_EVENTS = 6.0  # mean interactions per session
_SESSION_BREAK = 10 * 60.0  # least time between a user's sessions
_CLICK_GAP = 40.0  # mean seconds between two interactions of a session, beyond a 5 s minimum
_P_RELATED = 0.45  # next interaction: an item related to the previous one
_P_BACK = 0.15  # ... or an item seen earlier in the session
_P_RETURN = 0.2  # a session opens on an item the user met before
_RELATED = 4  # related items per item: its neighbours in a ring of its category


def _interaction_stream(seed: int) -> np.random.Generator:
    """The generator of the interactions' users and sessions: independent of the catalogue's."""
    return np.random.default_rng(seed).spawn(3)[2]


def generate_interactions(
    n: int,
    *,
    seed: int = 7,
    n_users: int = 500,
    n_items: int = 2000,
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC),
    kinds: Mapping[str, float] = KIND_SHARES,
) -> list[dict[str, Any]]:
    """``n`` user-item interactions in event-time order, all honest (``label=0``).

    Users browse the catalogue of :func:`item_catalogue` (the one :func:`generate_transactions`
    buys from, for the same ``n_items`` and ``seed``) in sessions spread over days, following a
    daily cycle. Each user has one to three favourite categories and mostly interacts with their
    items, by popularity. Within a session the next item is often related to the previous one (a
    neighbour in its category) or one seen earlier in the session, and a session often opens on an
    item the user met before: an item-item recommender can predict a user's next item far better
    than chance. Activity is uneven: a few users make many of the interactions. The stream spans
    about ``n / n_users / 12`` days (three days or so for 20,000 interactions of 500 users).

    Parameters
    ----------
    n
        Number of interactions.
    seed
        Seeds every random draw: the same arguments give the same events.
    n_users
        Number of users.
    n_items
        Number of items in the catalogue.
    start
        Time the stream starts at (timezone-aware); the first event comes a little later.
    kinds
        Share of each ``kind`` of interaction (normalised), drawn independently per interaction;
        by default :data:`KIND_SHARES`.

    Returns
    -------
    list of dict
        One dict per event with the keys of :data:`INTERACTION_FIELDS`: ``event_id``
        (``"ix-0000001"`` and up, in event-time order), ``user_id`` (``"u00001"``), ``item_id``
        (``"item-00042"``), ``kind``, ``ts`` (ISO 8601 UTC with milliseconds, non-decreasing),
        ``label`` 0 and ``fraud_type`` ``None``.

    Raises
    ------
    ConfigError
        An argument is out of range; the message names it, with the value.

    Examples
    --------
    >>> from anomrec.streaming.sample import generate_interactions
    >>> events = generate_interactions(2000, seed=1, n_users=50, n_items=300)
    >>> events == generate_interactions(2000, seed=1, n_users=50, n_items=300)
    True
    >>> events[0]  # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
    {'event_id': 'ix-0000001', 'user_id': 'u...', 'item_id': 'item-00...', 'kind': '...',
     'ts': '2026-01-01T...Z', 'label': 0, 'fraud_type': None}
    >>> all(a["ts"] <= b["ts"] for a, b in zip(events, events[1:]))
    True
    >>> generate_interactions(10, kinds={"view": 1.0, "like": -1.0})
    Traceback (most recent call last):
    ...
    anomrec.streaming.exceptions.ConfigError: kinds={'view': 1.0, 'like': -1.0}: expected ...
    """
    _check_count("n", n, minimum=0)
    _check_count("n_users", n_users, minimum=1)
    _check_count("n_items", n_items, minimum=1)
    _check_count("seed", seed, minimum=0)
    if start.tzinfo is None:
        raise ConfigError(f"start={start!r} has no timezone: expected an aware datetime, e.g. tzinfo=UTC")
    names, shares = _check_kinds(kinds)
    if n == 0:
        return []
    t_ms, user, item, kind = _simulate_interactions(
        n, seed=seed, n_users=n_users, n_items=n_items, start=start.astimezone(UTC), shares=shares
    )
    origin = np.datetime64(start.astimezone(UTC).replace(tzinfo=None), "ms")
    ts = np.datetime_as_string(origin + t_ms.astype("timedelta64[ms]"), unit="ms").tolist()
    user_ids = [f"u{u + 1:05d}" for u in range(n_users)]
    item_ids = [ItemCatalogue.item_id(i) for i in range(n_items)]
    return [
        {
            "event_id": f"ix-{i + 1:07d}",
            "user_id": user_ids[u],
            "item_id": item_ids[j],
            "kind": names[k],
            "ts": ts[i] + "Z",
            "label": 0,
            "fraud_type": None,
        }
        for i, u, j, k in zip(range(n), user.tolist(), item.tolist(), kind.tolist(), strict=True)
    ]


def _check_kinds(kinds: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
    """The kind names and their cumulative shares, ending at exactly 1."""
    ok = isinstance(kinds, Mapping) and len(kinds) > 0
    if ok:
        names = list(kinds)
        values = list(kinds.values())
        ok = all(isinstance(k, str) and k for k in names) and all(
            not isinstance(v, bool) and isinstance(v, int | float) and 0 <= v < math.inf for v in values
        )
        ok = ok and sum(values) > 0
    if not ok:
        raise ConfigError(
            f"kinds={kinds!r}: expected a mapping of kind names to shares >= 0, not all 0, "
            "e.g. {'view': 0.7, 'purchase': 0.3}"
        )
    cum = np.cumsum(np.array(values, dtype=float))
    cum /= cum[-1]
    cum[-1] = 1.0
    return names, cum


def _simulate_interactions(
    n: int, *, seed: int, n_users: int, n_items: int, start: datetime, shares: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Event times (ms after ``start``), users, items and kinds, in event-time order."""
    rng = _interaction_stream(seed)
    cat = item_catalogue(n_items, seed=seed)
    U = n_users
    # Users: favourite categories (leaning to the popular ones), loyalty to them, activity.
    share = np.bincount(cat.category, weights=cat.popularity, minlength=cat.n_categories)
    n_favcat = rng.integers(1, min(3, cat.n_categories) + 1, U)
    keys = 0.5 * np.log(share)[None, :] + rng.gumbel(size=(U, cat.n_categories))
    top = np.argsort(-keys, axis=1)[:, :3]
    favcat = np.pad(top, ((0, 0), (0, 3 - top.shape[1])), mode="edge")
    cat_w = np.where(np.arange(3) < n_favcat[:, None], rng.gamma(1.5, size=(U, 3)), 0.0)
    favcat_cum = np.cumsum(cat_w, axis=1) / cat_w.sum(axis=1, keepdims=True)
    p_incat = rng.beta(6.0, 2.0, U)
    rate = np.exp(rng.normal(math.log(8.0), 0.8, U))  # interactions a day
    local = rng.normal(1.0, 1.5, U)  # hours ahead of UTC: mostly European users
    # Related items: each item's neighbours on a random ring of the items of its category.
    ring = np.lexsort((rng.random(n_items), cat.category))
    ring_cat = cat.category[ring]
    lo = np.searchsorted(ring_cat, ring_cat, side="left")
    size = np.searchsorted(ring_cat, ring_cat, side="right") - lo
    pos = np.arange(n_items) - lo
    related = np.empty((n_items, _RELATED), dtype=np.int64)
    for k, step in enumerate((-2, -1, 1, 2)):
        related[ring, k] = ring[lo + (pos + step) % size]
    # Who interacts how often, and where sessions begin.
    counts = rng.multinomial(n, rate / rate.sum())
    horizon = n / float(rate.sum()) * _DAY
    user = np.repeat(np.arange(U), counts)
    opens = rng.random(n) < 1.0 / _SESSION_EVENTS
    opens[np.concatenate(([0], np.cumsum(counts)[:-1]))[counts > 0]] = True
    session = np.cumsum(opens) - 1
    s_user = user[opens]
    s_start = rng.uniform(0.0, horizon, len(s_user))
    midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
    start_hour = (start - midnight) / timedelta(hours=1)
    pending = np.arange(len(s_user))
    accept = _HOURLY / _HOURLY.max()
    while len(pending):  # thinned to the daily cycle in each user's local time
        hour = np.floor(start_hour + s_start[pending] / _HOUR + local[s_user[pending]]).astype(np.int64) % 24
        pending = pending[rng.random(len(pending)) >= accept[hour]]
        s_start[pending] = rng.uniform(0.0, horizon, len(pending))
    s_start = s_start[np.lexsort((s_start, s_user))]  # each user's sessions in time order
    # Everything random below is drawn up front, in bulk; the loop only picks.
    which = np.minimum((rng.random(n)[:, None] > favcat_cum[user]).sum(axis=1), 2)
    in_cat = rng.random(n) < p_incat[user]
    u_item = rng.random(n)
    fresh = np.where(in_cat, cat._draw(favcat[user, which], u_item), cat._draw(None, u_item)).tolist()
    gap = (5.0 + rng.exponential(_CLICK_GAP, n)).tolist()
    u_a, u_b = rng.random(n).tolist(), rng.random(n).tolist()
    kind = np.searchsorted(shares, rng.random(n), side="right")
    rel = related.tolist()
    t_out = np.empty(n)
    item_out = np.empty(n, dtype=np.int64)
    t_open = s_start.tolist()
    opens_l, session_l = opens.tolist(), session.tolist()
    bounds = np.concatenate(([0], np.cumsum(counts))).tolist()
    for u in range(U):
        t = -math.inf
        met: list[int] = []  # items the user interacted with, in order
        seen: list[int] = []  # ... in the current session
        for i in range(bounds[u], bounds[u + 1]):
            a = u_a[i]
            if opens_l[i]:
                t = max(t_open[session_l[i]], t + _SESSION_BREAK)
                j = met[int(u_b[i] * len(met))] if met and a < _P_RETURN else fresh[i]
                seen = []
            else:
                t += gap[i]
                if a < _P_RELATED:
                    j = rel[seen[-1]][int(u_b[i] * _RELATED)]
                elif a < _P_RELATED + _P_BACK:
                    j = seen[int(u_b[i] * len(seen))]
                else:
                    j = fresh[i]
            seen.append(j)
            met.append(j)
            t_out[i] = t
            item_out[i] = j
    t_ms = np.floor(t_out * 1000.0).astype(np.int64)
    order = np.lexsort((np.arange(n), t_ms))
    return t_ms[order], user[order], item_out[order], kind[order]


def inject_bot_burst(
    events: Sequence[Mapping[str, Any]],
    *,
    target_item: str,
    n_bots: int = 300,
    at: datetime | None = None,
    duration_seconds: float = 600.0,
    extra_items: int = 2,
    decoy_pool: int = 20,
    seed: int = 11,
) -> list[dict[str, Any]]:
    """``events`` with a burst of fake accounts promoting ``target_item`` merged in, sorted by time.

    ``n_bots`` brand-new accounts (``"bot-00001"`` and up) each interact once with
    ``target_item`` (a ``click``) and once with each of ``extra_items`` distinct items among the
    stream's ``decoy_pool`` most popular (``view``), in a random order, seconds apart, all within
    ``[at, at + duration_seconds]`` (to the millisecond). The decoys make a co-occurrence
    recommender link the target to popular items, which is what such a burst is for. Bot events
    have ``label`` 1, ``fraud_type`` :data:`BOT_BURST` and the keys of :data:`INTERACTION_FIELDS`.

    Bot and event ids continue after any already in ``events`` (``"bot-NNNNN"`` users,
    ``"bx-NNNNNNN"`` events), so that bursts can be stacked and every id stays unique.

    Parameters
    ----------
    events
        Interactions with ``ts``, ``item_id`` and ``user_id`` fields, e.g. from
        :func:`generate_interactions`. They are copied, never changed.
    target_item
        The item the bots promote.
    n_bots
        Number of fake accounts.
    at
        When the burst starts (timezone-aware); by default the time of the event 70% of the way
        through ``events``, so that the target has a history before it and the stream goes on
        after it.
    duration_seconds
        Length of the burst.
    extra_items
        Decoy items per bot.
    decoy_pool
        The decoys are drawn from this many of the stream's most popular items; a small pool
        concentrates the burst's co-occurrence on a few items, the most effective attack on an
        item-item recommender.
    seed
        Seeds the burst's random draws.

    Returns
    -------
    list of dict
        Copies of ``events`` and the bot events, sorted by ``ts`` (stable: at equal times the
        events keep their order, the given ones before the bots).

    Examples
    --------
    >>> from anomrec.streaming.sample import generate_interactions, inject_bot_burst
    >>> events = generate_interactions(3000, seed=1, n_users=60, n_items=300)
    >>> mixed = inject_bot_burst(events, target_item="item-00123", n_bots=40)
    >>> len(mixed) - len(events), sum(e["label"] for e in mixed)   # 40 bots, 3 events each
    (120, 120)
    >>> bot = next(e for e in mixed if e["label"])
    >>> bot["user_id"], bot["fraud_type"]
    ('bot-00001', 'bot-burst')
    """
    _check_count("n_bots", n_bots, minimum=1)
    _check_count("extra_items", extra_items, minimum=0)
    _check_count("decoy_pool", decoy_pool, minimum=1)
    _check_count("seed", seed, minimum=0)
    if not isinstance(target_item, str) or not target_item:
        raise ConfigError(f"target_item={target_item!r}: expected a non-empty item id")
    if (
        isinstance(duration_seconds, bool)
        or not isinstance(duration_seconds, int | float)
        or not 0 < duration_seconds < math.inf
    ):
        raise ConfigError(f"duration_seconds={duration_seconds!r}: expected a positive number of seconds")
    if not events:
        raise ConfigError("events is empty: a bot burst needs a stream to hide in")
    if at is not None and at.tzinfo is None:
        raise ConfigError(f"at={at!r} has no timezone: expected an aware datetime, e.g. tzinfo=UTC")
    times_us = [_epoch_us(e["ts"]) for e in events]
    at_us = _epoch_us(at) if at is not None else times_us[int(0.7 * (len(events) - 1))]
    popular = [
        item
        for item, _ in Counter(e["item_id"] for e in events if e["item_id"] != target_item).most_common(
            decoy_pool
        )
    ]
    if len(popular) < extra_items:
        raise ConfigError(
            f"extra_items={extra_items} but the events hold only {len(popular)} items besides "
            f"{target_item!r}: lower extra_items"
        )
    first_bot = 1 + max(
        (int(m[1]) for e in events if (m := _BOT_USER.fullmatch(str(e["user_id"])))), default=0
    )
    first_id = 1 + max(
        (int(m[1]) for e in events if (m := _BOT_EVENT.fullmatch(str(e["event_id"])))), default=0
    )
    rng = np.random.default_rng(seed)
    k = 1 + extra_items
    # Each bot: k interactions 2 s or more apart (17 s on average), starting at a random time that
    # leaves room for them in the burst; the bots are numbered in the order they start.
    steps = 2.0 + rng.exponential(15.0, (n_bots, k))
    steps[:, 0] = 0.0
    offsets = np.cumsum(steps, axis=1)
    room = np.maximum(duration_seconds - offsets[:, -1], 0.0)
    begin = np.sort(rng.uniform(0.0, 1.0, n_bots) * room)
    first_ms = -(-at_us // 1000)
    last_ms = (at_us + round(duration_seconds * 1e6)) // 1000
    t_ms = np.minimum(first_ms + np.floor((begin[:, None] + offsets) * 1000.0).astype(np.int64), last_ms)
    decoys = np.argsort(rng.random((n_bots, len(popular))), axis=1)[:, :extra_items].tolist()
    target_at = rng.integers(0, k, n_bots).tolist()
    ts = np.datetime_as_string(t_ms.astype("datetime64[ms]"), unit="ms").tolist()
    bots: list[dict[str, Any]] = []
    for b in range(n_bots):
        items = [popular[d] for d in decoys[b]]
        items.insert(target_at[b], target_item)
        user = f"bot-{first_bot + b:05d}"
        for j, item in enumerate(items):
            bots.append(
                {
                    "event_id": f"bx-{first_id + len(bots):07d}",
                    "user_id": user,
                    "item_id": item,
                    "kind": "click" if item == target_item else "view",
                    "ts": ts[b][j] + "Z",
                    "label": 1,
                    "fraud_type": BOT_BURST,
                }
            )
    times_us += (t_ms.ravel() * 1000).tolist()
    merged = [dict(e) for e in events] + bots
    order = sorted(range(len(merged)), key=times_us.__getitem__)
    return [merged[i] for i in order]


_BOT_USER = re.compile(r"bot-(\d+)")
_BOT_EVENT = re.compile(r"bx-(\d+)")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_us(when: str | datetime) -> int:
    """Whole microseconds since the epoch of an aware datetime or an ISO 8601 time (no zone: UTC)."""
    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when)
        except ValueError:
            raise ConfigError(f"ts={when!r} is not an ISO 8601 time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // timedelta(microseconds=1)
