"""anomrec: streaming anomaly detection and recommendations on Kafka."""

from __future__ import annotations

__version__ = "0.1.0"
