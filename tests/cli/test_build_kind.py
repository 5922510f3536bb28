"""`sluice --version` names the build, and the test run checks the build it was promised.

scripts/test installs Sluice compiled (setup.py's mypyc step) and sets
SLUICE_EXPECT_BUILD=compiled, so a build that silently fell back to pure Python fails here
instead of being tested (and benchmarked) as if it were the product.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sluice.cli.main import build_kind


def test_version_names_the_build() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "sluice", "--version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.startswith("sluice ")
    assert f"({build_kind()})" in out


def test_the_promised_build_is_the_one_under_test() -> None:
    expected = os.environ.get("SLUICE_EXPECT_BUILD", "")
    if not expected:
        pytest.skip("SLUICE_EXPECT_BUILD not set (scripts/test sets it)")
    import sluice.smtp._server as engine

    compiled = not engine.__file__.endswith(".py")
    assert build_kind() == ("compiled with mypyc" if compiled else "pure Python")
    assert expected == ("compiled" if compiled else "pure"), (
        f"expected the {expected} build, found {build_kind()} ({engine.__file__})"
    )
