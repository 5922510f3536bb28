"""Issue 5's campaign: the seed's configuration against the Microsoft simulator earns no S3150
block and finishes within 10 % of the fastest time the simulator's budget allows
(``sluice.sim.fastest_drain_time`` of the simulator's parameters). The simulator and why it
makes that bound fair are in campaign.py.

The 20,000-message campaign takes 16 hours of config time (2.6 minutes at ×360): it runs
with SLUICE_SLOW=1 and in bench/bench_shaping.py. The default run sends 6,000 messages on the
same simulator and configuration (4 hours of config time: the first RP-001 and four
backoffs, 27 s at ×540); its bound is shorter, so what the end of a campaign costs weighs
more, but stays below 4 % of it (campaign.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.shaping_e2e.campaign import RP001_CAP, run_campaign

pytestmark = pytest.mark.interop

#: The issue's target.
TOLERANCE = 0.10

SLOW = pytest.mark.skipif(
    os.environ.get("SLUICE_SLOW") != "1", reason="20,000 messages: set SLUICE_SLOW=1"
)


@pytest.mark.parametrize(
    ("messages", "scale"),
    [
        pytest.param(6000, 540.0, id="6000"),
        pytest.param(20000, 360.0, id="20000", marks=[pytest.mark.slow, SLOW]),
    ],
)
def test_campaign_no_block_within_10_percent_of_bound(
    tmp_path: Path, messages: int, scale: float
) -> None:
    result = run_campaign(tmp_path, messages, time_scale=scale)
    print("\n" + result.report())
    assert result.s3150 == 0, result.report()
    assert result.delivered == messages, result.report()
    assert result.bounces == 0, result.report()
    # Only the budget's refusal: no 4.3.2 (sessions) and no 4.7.500 (per-minute throttle).
    assert set(result.tags) <= {"RP-001"}, result.report()
    # The budget was the binding limit: Sluice met it and backed off.
    assert result.tags.get("RP-001", 0) >= 1, result.report()
    for phase in result.phases:
        assert phase.max_sessions <= RP001_CAP, result.report()
    assert result.drain <= result.bound * (1 + TOLERANCE), result.report()
