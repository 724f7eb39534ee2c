"""Dependencies point one way: batch/ may import streaming/, never the reverse.

The command-line front end (anomrec/cli.py) is the one place that wires both; neither package may
import it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path, package: str) -> set[str]:
    """Absolute names of every module ``path`` imports, with relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    parts = package.split(".")
    if path.name != "__init__.py":
        parts.append(path.stem)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def forbidden(names: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize(
    ("folder", "package", "banned"),
    [
        ("streaming", "anomrec.streaming", ("anomrec.batch", "anomrec.cli", "batch")),
        ("batch", "anomrec.batch", ("anomrec.cli",)),
    ],
)
def test_package_does_not_import_against_the_direction(
    folder: str, package: str, banned: tuple[str, ...]
) -> None:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    offences = {
        str(f.relative_to(ROOT)): bad
        for f in files
        if (bad := forbidden(imported_modules(f, package), banned))
    }
    assert offences == {}


def test_the_checker_sees_relative_imports_that_climb_out(tmp_path: Path) -> None:
    bad = tmp_path / "core.py"
    bad.write_text("from ..batch import report\nimport anomrec.cli\n")
    names = imported_modules(bad, "anomrec.streaming")
    assert forbidden(names, ("anomrec.batch", "anomrec.cli")) == [
        "anomrec.batch",
        "anomrec.batch.report",
        "anomrec.cli",
    ]
