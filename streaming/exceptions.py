"""Every error anomrec raises on purpose derives from :class:`AnomrecError`.

The tree::

    AnomrecError
    ├── ConfigError (ValueError)      a bad option: names the option, the value and what is expected
    │   └── ArtifactError             warm-start models that are missing, altered after the fit, or
    │                                 fitted on other features or settings: the run refuses them
    ├── BadRecord (ValueError)        one input record cannot be processed; it is data, not a crash:
    │                                 runners count it, log it and carry on
    ├── DeliveryError                 an output could not be written; the input offsets that led to
    │                                 it are not committed, so a restart produces it again
    ├── CheckpointError               saved processor state cannot be used: a damaged or unknown
    │                                 checkpoint, or state taken under other settings; the message
    │                                 says which, and what to do (reset the state, or the settings)
    ├── TooManyBadRecords             more than ``max_bad_ratio`` of the last ``bad_ratio_window``
    │                                 records were bad: the processor stops rather than go on
    │                                 dead-lettering a stream it cannot read
    ├── RestartRequired               the process cannot go on safely (a transactional call hung, or
    │                                 its producer was fenced): the command line exits with status 3
    │                                 for its supervisor to restart it
    └── Aborted                       (in :mod:`anomrec.streaming.testing`) a test run reached its
                                      source's ABORT marker, as if the process had been killed

A :class:`BadRecord` carries a short machine-readable ``reason`` so that runners can count bad
records by kind and label them on the dead-letter topic, and a human-readable message that says
which field was wrong and how. The reasons:

- the record: ``"null-key"`` (no key, with ``require_key`` on), ``"null-value"`` (a tombstone),
  ``"oversized"`` (a value above ``max_record_bytes``);
- the value: ``"json"`` (not UTF-8 or not JSON), ``"not-finite"`` (``NaN``, ``Infinity`` or a
  number beyond the double range), ``"not-object"`` (JSON, but not an object),
  ``"unknown-schema-version"`` (a version not in ``schema_versions``);
- the fields: ``"missing-field"``, ``"not-numeric"``, ``"out-of-range"``, ``"wrong-type"``,
  ``"bad-kind"`` (an interaction kind ``interaction_weights`` does not name), ``"bad-time"`` (an
  unreadable event time) and ``"future-time"`` (an event time more than ``max_future_seconds``
  after the record's timestamp).
"""

from __future__ import annotations

from functools import partial
from typing import Any


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


class CheckpointError(AnomrecError):
    """Saved processor state cannot be used; the message says why and what to do.

    Raised when a checkpoint file is damaged or of an unknown format, and by
    :meth:`~anomrec.streaming.core.Processor.restore` for state taken under other settings.
    :func:`~anomrec.streaming.checkpoint.load_checkpoint` skips such a checkpoint and falls back
    to an older one.
    """


class ArtifactError(ConfigError):
    """Model artifacts (``anomrec fit``, ``--warm-start``) are missing, altered or do not fit the settings.

    Unlike a bad checkpoint, which is skipped for an older one, a bad warm start stops the run:
    the user asked for those models, and starting without them would quietly be something else.
    """


class TooManyBadRecords(AnomrecError):
    """Too large a share of the recent records was bad; the processor stops.

    Parameters
    ----------
    message
        The share, the window, the settings that govern them and where to look.
    bad
        Bad records among the last ``window``.
    window
        Records the share is measured over.
    """

    def __init__(self, message: str, *, bad: int, window: int) -> None:
        super().__init__(message)
        self.bad = bad
        self.window = window

    def __reduce__(self) -> tuple[Any, ...]:
        # The keyword-only arguments are not in ``args``: rebuild with them so pickling works.
        return partial(type(self), bad=self.bad, window=self.window), (str(self),)


class RestartRequired(AnomrecError):
    """This process must stop and be restarted; its last committed state is intact."""
