"""docs/config-reference.md is generated from the directive table and must be current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sluice.config.reference import render_reference
from sluice.config.schema import default_table

REPO = Path(__file__).resolve().parents[2]


def test_checked_in_reference_is_current() -> None:
    current = (REPO / "docs" / "config-reference.md").read_text(encoding="utf-8")
    assert current == render_reference(default_table()), "run scripts/gen-config-reference"


def test_every_directive_is_documented() -> None:
    text = render_reference(default_table())
    for spec in default_table():
        assert f"| `{spec.name}`" in text


def test_generator_check_mode_passes() -> None:
    script = REPO / "scripts" / "gen-config-reference"
    result = subprocess.run(
        [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
