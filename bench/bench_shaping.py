"""Benchmark of issue 5's campaign: the seed's configuration against the Microsoft simulator.

Runs ``tests/shaping_e2e/campaign.py``'s campaign (the simulator's choice is explained
there: a bucket of 1,200 messages an hour per source IP) with N messages on a clock F times
fast, and prints the drain time against the fastest time the simulator's budget allows
(``sluice.sim.fastest_drain_time``), the S3150 blocks, the rate held in each backoff against
the seed's 1000/h, and the backoff reaction (RP-001 replies received between the first one
and the drop to 5 sessions).

    python bench/bench_shaping.py [-n 20000] [--time-scale 360] [--keep DIR]

Exit status 0 when the campaign earned no S3150 and finished within 10 % of the bound.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.shaping_e2e.campaign import run_campaign

#: The issue's target: within 10 % of the bound.
TOLERANCE = 0.10


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--messages", type=int, default=20000)
    ap.add_argument(
        "--time-scale",
        type=float,
        default=360.0,
        help="config seconds per real second (360: the seed's hour lasts 10 s)",
    )
    ap.add_argument("--keep", metavar="DIR", help="keep the working directory here")
    args = ap.parse_args()
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-shaping-"))
    try:
        result = run_campaign(workdir, args.messages, time_scale=args.time_scale)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(result.report())
    ok = result.s3150 == 0 and result.delivered == args.messages
    ok = ok and result.over_bound <= TOLERANCE
    print("PASS" if ok else "FAIL", f"(target: no S3150, within {TOLERANCE:.0%} of the bound)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
