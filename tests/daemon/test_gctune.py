"""tune_gc: start-up objects frozen, young generation collected less often (in a child
interpreter, so this test process keeps its own settings)."""

from __future__ import annotations

import subprocess
import sys

from sluice.daemon.gctune import GEN0_THRESHOLD


def test_tune_gc_freezes_and_raises_the_young_threshold() -> None:
    code = (
        "import gc\n"
        "from sluice.daemon.gctune import tune_gc\n"
        "before = gc.get_threshold()\n"
        "tune_gc()\n"
        "after = gc.get_threshold()\n"
        "print(before[0], after[0], after[1:] == before[1:], gc.get_freeze_count() > 0)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["700", str(GEN0_THRESHOLD), "True", "True"]
