"""The README's configuration table names every setting, with its flag, variable and default."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from anomrec.streaming.config import ProcessorConfig

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("field", dataclasses.fields(ProcessorConfig), ids=lambda f: f.name)
def test_every_setting_is_in_the_readme_table(field: dataclasses.Field[object]) -> None:
    flag = "--" + field.name.replace("_", "-")
    rows = [line for line in README.splitlines() if line.startswith(f"| `{flag}` |")]
    assert len(rows) == 1, f"README has no configuration row for {flag}"
    row = rows[0]
    assert f"`{ProcessorConfig.env_var(field.name)}`" in row
    default = field.default
    if isinstance(default, tuple):
        default = ",".join(default)
    if default not in (None, ""):
        assert f"`{default}`" in row, f"README gives another default for {flag}"
