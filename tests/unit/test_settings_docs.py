"""docs/settings.md shows the settings as the code has them: generated, never drifting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from streams.settings import (
    TABLE_BEGIN,
    TABLE_END,
    Settings,
    environment_variables,
    main,
    settings_markdown,
    with_settings_table,
)

SETTINGS_DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def _table_in(document: str) -> str:
    begin = document.index(TABLE_BEGIN) + len(TABLE_BEGIN)
    return document[begin : document.index(TABLE_END)].strip("\n") + "\n"


def test_the_documented_table_is_the_generated_one() -> None:
    documented = _table_in(SETTINGS_DOC.read_text(encoding="utf-8"))
    assert documented == settings_markdown(), (
        "docs/settings.md is out of date: run"
        " `python -m streams.settings --write docs/settings.md`"
    )


def test_every_variable_has_a_row_with_its_default_and_a_meaning() -> None:
    rows = settings_markdown().splitlines()[2:]
    assert [row.split(" | ")[0] for row in rows] == [
        f"| `{var}`" for var in environment_variables()
    ]
    for field in dataclasses.fields(Settings):
        assert field.metadata.get("doc", "").strip(), f"{field.name} has no description"
    cells = {row.split(" | ")[0][3:-1]: row.split(" | ")[1] for row in rows}
    assert cells["MAX_OUTBOUND_CALLS_PER_BUSINESS"] == "`3`"
    assert cells["TOPIC_PREFIX"] == "empty"
    assert cells["WORKER_INSTANCE_ID"] == "—"
    assert cells["LEAD_RETENTION_SECONDS"] == "`604800`"


def test_write_replaces_only_the_table(tmp_path: Path) -> None:
    doc = tmp_path / "settings.md"
    doc.write_text(f"# Settings\n\nintro\n{TABLE_BEGIN}\n| stale |\n{TABLE_END}\n\noutro\n")
    assert main(["--write", str(doc)]) == 0
    written = doc.read_text()
    assert written.startswith(f"# Settings\n\nintro\n{TABLE_BEGIN}\n")
    assert written.endswith(f"{TABLE_END}\n\noutro\n")
    assert _table_in(written) == settings_markdown()
    assert with_settings_table(written) == written


def test_write_refuses_a_document_without_markers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "settings.md"
    doc.write_text("# Settings\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["--write", str(doc)])
    assert exit_info.value.code == 2
    assert "no settings table markers" in capsys.readouterr().err
    assert doc.read_text() == "# Settings\n"
