"""sluice.demo — ``sluice demo``: Sluice on the seed's configuration against simulated ISPs.

One command, no network, no set-up: loopback receivers standing in for Microsoft, Gmail,
Yahoo and a long tail of domains (``sluice.sim``), a loopback DNS server pointing the demo
domains at them, Sluice itself on the seed configuration shipped in the package, and a mixed
campaign (password resets through ``transactional``, a newsletter through the ``marketing``
pool) shown queue by queue while it is delivered, then summarised: what arrived where, from
which source IP, and whether the accounting file and the receivers agree. Described in
``docs/demo.md``.

Public names: DemoOptions, run_demo, DemoSummary, Story, Injector, campaign,
seed_text, and the defaults DEFAULT_MESSAGES, DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT,
DEFAULT_TIME_SCALE.
Raises: see :func:`run_demo` (ConfigError, OSError).
"""

from __future__ import annotations

from sluice.demo._campaign import DemoMessage, Kind, campaign
from sluice.demo._inject import Injector, InjectStats
from sluice.demo._run import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MESSAGES,
    DEFAULT_TIME_SCALE,
    DEFAULT_TIMEOUT,
    DemoOptions,
    run_demo,
)
from sluice.demo._summary import AcctRecords, DemoSummary, read_acct
from sluice.demo._world import Story, demo_config_text, seed_text

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_MESSAGES",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TIME_SCALE",
    "AcctRecords",
    "DemoMessage",
    "DemoOptions",
    "DemoSummary",
    "InjectStats",
    "Injector",
    "Kind",
    "Story",
    "campaign",
    "demo_config_text",
    "read_acct",
    "run_demo",
    "seed_text",
]
