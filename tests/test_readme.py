"""The README's configuration tables are generated from ProcessorConfig and list every setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from anomrec.streaming.config import ProcessorConfig, reference_table

README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("field", dataclasses.fields(ProcessorConfig), ids=lambda f: f.name)
def test_every_setting_is_in_the_readme_table(field: dataclasses.Field[object]) -> None:
    rows = [line for line in README.splitlines() if line.startswith(f"| `{field.name}` |")]
    assert len(rows) == 1, f"README has {len(rows)} configuration rows for {field.name}, not one"
    # The row is generated from the field's metadata, so the help, flag, variable and default
    # cannot drift; a changed field is a changed row, to paste from the message.
    (expected,) = reference_table([field.name]).splitlines()[2:]
    assert rows[0] == expected, f"README's row for {field.name} is out of date; it should read\n{expected}"


def test_the_readme_documents_the_operating_sections() -> None:
    lines = README.splitlines()
    operating = lines.index("## Operating anomrec")
    configuration, security = lines.index("### Configuration"), lines.index("### Security")
    assert operating < configuration < security
    following = [i for i, line in enumerate(lines) if line.startswith("## ") and i > operating]
    assert not following or security < following[0], "Security belongs to Operating anomrec"
