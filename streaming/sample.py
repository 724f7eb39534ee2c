"""A deterministic stream of card transactions with labelled fraud, for demos and tests.

The same ``seed`` always gives the same events, byte for byte. Each card has a home, a typical
purchase amount and a habit of shopping near home; the labelled frauds break those habits in the
ways card fraud does: a purchase far larger than the card's usual, a purchase far from home, or an
account takeover that does a little of both.

Fields of each event: ``event_id``, ``card_id``, ``ts`` (ISO 8601 UTC), ``amount``, ``merchant``,
``country``, ``lat``, ``lon``, ``distance_from_home_km``, ``ratio_to_median_amount``, ``label``
(1 = fraud) and ``fraud_type`` (empty for normal events).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

# (country, latitude, longitude) of the cities cards live in.
_CITIES = (
    ("FR", 48.857, 2.352),
    ("DE", 52.520, 13.405),
    ("ES", 40.417, -3.704),
    ("IT", 41.903, 12.496),
    ("GB", 51.507, -0.128),
    ("NL", 52.370, 4.895),
    ("PL", 52.230, 21.012),
    ("PT", 38.722, -9.139),
)
# Far-away places a stolen card number turns up in.
_FAR = (("US", 40.713, -74.006), ("BR", -23.551, -46.633), ("SG", 1.352, 103.820), ("NG", 6.524, 3.379))
FRAUD_TYPES = ("large-amount", "far-away", "takeover")
EARTH_RADIUS_KM = 6371.0088


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres.

    Examples
    --------
    >>> round(haversine_km(48.857, 2.352, 51.507, -0.128))
    343
    """
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))


def generate_transactions(
    n: int,
    *,
    anomaly_rate: float = 0.02,
    n_cards: int = 500,
    seed: int = 7,
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC),
    mean_gap_seconds: float = 3.0,
    travel_rate: float = 0.02,
) -> Iterator[dict[str, Any]]:
    """Yield ``n`` card transactions in event-time order.

    Parameters
    ----------
    n
        Number of events.
    anomaly_rate
        Expected share of fraudulent events, labelled ``label=1``.
    n_cards
        Number of distinct cards.
    seed
        Seeds every random draw; the same seed gives the same stream.
    start
        Event time of the first transaction.
    mean_gap_seconds
        Mean of the exponential gaps between consecutive events.
    travel_rate
        Share of honest purchases made in another of the home cities (normal, but unusual).

    Examples
    --------
    >>> events = list(generate_transactions(1000, seed=1))
    >>> events == list(generate_transactions(1000, seed=1))
    True
    >>> sorted(events[0])[:4]
    ['amount', 'card_id', 'country', 'distance_from_home_km']
    >>> 5 <= sum(e["label"] for e in events) <= 40
    True
    """
    if n < 0:
        raise ValueError(f"n={n}: expected a count >= 0")
    if not 0 <= anomaly_rate <= 1:
        raise ValueError(f"anomaly_rate={anomaly_rate}: expected a share in [0, 1]")
    rng = np.random.default_rng(seed)
    homes = rng.integers(len(_CITIES), size=n_cards)
    medians = np.round(rng.lognormal(mean=3.3, sigma=0.6, size=n_cards), 2)
    t = start
    for i in range(n):
        t += timedelta(seconds=float(rng.exponential(mean_gap_seconds)))
        card = int(rng.integers(n_cards))
        country, home_lat, home_lon = _CITIES[homes[card]]
        lat, lon = home_lat, home_lon
        ratio = float(rng.lognormal(mean=0.0, sigma=0.45))
        fraud = ""
        if rng.random() < anomaly_rate:
            fraud = FRAUD_TYPES[int(rng.integers(len(FRAUD_TYPES)))]
        if fraud in ("far-away", "takeover"):
            country, lat, lon = _FAR[int(rng.integers(len(_FAR)))]
        elif rng.random() < travel_rate:  # an honest trip to another city
            country, lat, lon = _CITIES[int(rng.integers(len(_CITIES)))]
        if fraud == "large-amount":
            ratio *= float(rng.uniform(8.0, 30.0))
        elif fraud == "takeover":
            ratio *= float(rng.uniform(3.0, 8.0))
        # Shops are spread around the place the card is used, a few kilometres out.
        lat += float(rng.normal(0.0, 0.03))
        lon += float(rng.normal(0.0, 0.03))
        amount = round(float(medians[card]) * ratio, 2)
        yield {
            "event_id": f"tx-{i:07d}",
            "card_id": f"card-{card:05d}",
            "ts": t.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "amount": amount,
            "merchant": f"m-{int(rng.integers(2000)):04d}",
            "country": country,
            "lat": round(lat, 5),
            "lon": round(lon, 5),
            "distance_from_home_km": round(haversine_km(home_lat, home_lon, lat, lon), 3),
            "ratio_to_median_amount": round(amount / float(medians[card]), 4),
            "label": 1 if fraud else 0,
            "fraud_type": fraud,
        }
