"""Every error anomrec raises on purpose derives from :class:`AnomrecError`.

The tree::

    AnomrecError
    ├── ConfigError (ValueError)      a bad option: names the option, the value and what is expected
    ├── BadRecord (ValueError)        one input record cannot be processed; it is data, not a crash:
    │                                 runners count it, log it and carry on
    └── DeliveryError                 an output could not be written; the input offsets that led to
                                      it are not committed, so a restart produces it again

A :class:`BadRecord` carries a short machine-readable ``reason`` (``"json"``, ``"not-object"``,
``"missing-field"``, ``"not-numeric"``, ``"not-finite"``, ``"out-of-range"``, ``"wrong-type"``,
``"bad-time"``) so that runners can count bad records by kind, and a human-readable message that
says which field was wrong and how.
"""

from __future__ import annotations


class AnomrecError(Exception):
    """Root of the errors anomrec raises on purpose."""


class ConfigError(AnomrecError, ValueError):
    """An option or a file is wrong; the message says which, with the value, and what to do."""


class BadRecord(AnomrecError, ValueError):
    """An input record that cannot be decoded or scored.

    Parameters
    ----------
    reason
        Short category used as a counter label, e.g. ``"json"`` or ``"missing-field"``.
    message
        What was wrong, naming the field and the offending value.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DeliveryError(AnomrecError):
    """An output (alert or file line) could not be delivered; its input is not committed."""
