"""Every Examples block in the packages runs, and must pass, as a doctest.

The modules are imported under their installed names (``anomrec.streaming...``), not collected
from the folders, so that each runs once and exception names read as users see them.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import anomrec.batch
import anomrec.streaming
import pytest

import anomrec

PACKAGES = (anomrec, anomrec.streaming, anomrec.batch)


def modules() -> list[str]:
    names = {p.__name__ for p in PACKAGES}
    for package in PACKAGES:
        names.update(m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + "."))
    names.discard("anomrec.__main__")
    return sorted(names)


@pytest.mark.parametrize("name", modules())
def test_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} examples failed in {name}; see the output above"
    )


def test_the_walk_reaches_both_packages() -> None:
    names = modules()
    assert "anomrec.streaming.core" in names and "anomrec.batch" in names
