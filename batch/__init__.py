"""Offline tools built on :mod:`anomrec.streaming`: fitting, evaluation and reports."""
