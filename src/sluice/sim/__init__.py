"""sluice.sim — ISP simulators: loopback SMTP receivers with stateful, documented behaviour.

Used by tests (the truth from the receiver side), benchmarks (a fast plain sink) and
``sluice demo`` (the built-in Microsoft, Gmail, Yahoo and long-tail receivers). The models
and their parameters are described in ``docs/simulators.md``.

Pieces:

- Profiles (pure, driven by ``now``): :class:`PlainProfile`, :class:`MicrosoftProfile`
  (:class:`MicrosoftParams`: hourly budget → ``421 RP-001``, concurrency → ``421 4.3.2``,
  per-minute throttle → ``451 4.7.500``, repeated deferrals → ``550 5.7.1 … (S3150)``),
  :class:`GmailProfile` (``421 4.7.28``), :class:`YahooProfile` (``421 4.7.0 [TSS04]``);
  :func:`make_profile`; :func:`fastest_drain_time` (the Microsoft budget's drain bound).
- :class:`Faults`: ``tNNN-``/``dNNN-``/``hangup-`` local parts, hang-up every N, delayed final
  reply, 421 greeting, tarpit.
- :class:`SimServer` (asyncio Protocols driving ``smtp.Connection(SERVER)``); its
  :meth:`~SimServer.stats` returns :class:`Stats` (per source IP: :class:`SourceStats`;
  concurrency :class:`ConcurrencySample` s; refusal :class:`SimEvent` s); with
  ``record=True`` a :class:`Ledger` of :class:`LedgerEntry` (check with
  :meth:`Ledger.check_messages`, :func:`body_sha256`).
- :class:`SimCluster` (several receivers, one common port, current loop),
  :class:`ThreadedCluster` (the same in a background thread for synchronous code),
  :class:`ReceiverSpec`, :func:`demo_receivers`.
- ``python -m sluice.sim --listen microsoft@127.0.0.20:2526 …`` prints stats on exit.

Raises: ValueError (bad parameters), OSError (an address cannot be bound).
"""

from __future__ import annotations

from sluice.sim._cluster import (
    GMAIL_DOMAINS,
    LONG_TAIL_DOMAINS,
    MICROSOFT_DOMAINS,
    YAHOO_DOMAINS,
    ReceiverSpec,
    SimCluster,
    ThreadedCluster,
    demo_receivers,
    new_event_loop,
)
from sluice.sim._faults import GREETING_421, Faults, RecipientFault, parse_recipient_fault
from sluice.sim._ledger import Ledger, LedgerCheck, LedgerEntry, body_sha256
from sluice.sim._profiles import (
    PROFILE_NAMES,
    TAG_BLOCKED,
    TAG_BUSY,
    TAG_CONNECTIONS,
    TAG_GMAIL_RATE,
    TAG_RATE_LIMIT,
    TAG_YAHOO,
    BudgetModel,
    GmailParams,
    GmailProfile,
    MicrosoftParams,
    MicrosoftProfile,
    MicrosoftState,
    PlainProfile,
    Profile,
    Refusal,
    Stage,
    YahooParams,
    YahooProfile,
    fastest_drain_time,
    make_profile,
    microsoft_reply,
)
from sluice.sim._server import DEFAULT_HOSTNAME, DEFAULT_SAMPLE_INTERVAL, SimServer
from sluice.sim._stats import ConcurrencySample, SimEvent, SourceStats, Stats
from sluice.sim._window import RollingWindow, TokenBucket, greedy_drain_time

__all__ = [
    "DEFAULT_HOSTNAME",
    "DEFAULT_SAMPLE_INTERVAL",
    "GMAIL_DOMAINS",
    "GREETING_421",
    "LONG_TAIL_DOMAINS",
    "MICROSOFT_DOMAINS",
    "PROFILE_NAMES",
    "TAG_BLOCKED",
    "TAG_BUSY",
    "TAG_CONNECTIONS",
    "TAG_GMAIL_RATE",
    "TAG_RATE_LIMIT",
    "TAG_YAHOO",
    "YAHOO_DOMAINS",
    "BudgetModel",
    "ConcurrencySample",
    "Faults",
    "GmailParams",
    "GmailProfile",
    "Ledger",
    "LedgerCheck",
    "LedgerEntry",
    "MicrosoftParams",
    "MicrosoftProfile",
    "MicrosoftState",
    "PlainProfile",
    "Profile",
    "ReceiverSpec",
    "RecipientFault",
    "Refusal",
    "RollingWindow",
    "SimCluster",
    "SimEvent",
    "SimServer",
    "SourceStats",
    "Stage",
    "Stats",
    "ThreadedCluster",
    "TokenBucket",
    "YahooParams",
    "YahooProfile",
    "body_sha256",
    "demo_receivers",
    "fastest_drain_time",
    "greedy_drain_time",
    "make_profile",
    "microsoft_reply",
    "new_event_loop",
    "parse_recipient_fault",
]
