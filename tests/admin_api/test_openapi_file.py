"""docs/api/openapi.yaml is the management API's schema as the code generates it: a change to
the API that is not regenerated into the file fails here (like makemigrations --check)."""

from __future__ import annotations

from pathlib import Path

from django.core.management import call_command

DOCS = Path(__file__).resolve().parent.parent.parent / "docs" / "api" / "openapi.yaml"


def test_the_published_schema_is_current(tmp_path: Path) -> None:
    fresh = tmp_path / "openapi.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(fresh))
    assert fresh.read_text() == DOCS.read_text(), (
        "docs/api/openapi.yaml is out of date: run "
        "`clawdbot spectacular --validate --file docs/api/openapi.yaml`"
    )
