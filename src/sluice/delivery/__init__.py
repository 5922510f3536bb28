"""sluice.delivery: the delivery edge — outbound SMTP sessions on asyncio Protocols.

``open_session(domain, settings, resolver, rng)`` resolves the route (``routing.AttemptPlan``
through ``net.dns.drive_dns``), connects from the source address, reads the greeting, says
EHLO and returns a :class:`Session` (or a :class:`ConnectFailure` with the outcome for the
queue). ``await session.deliver([Transfer, ...])`` runs transactions, pipelined when the
server allows, and returns a :class:`TransferReport` per transfer whose ``results`` are
``sched.Result`` values for the scheduler's ``report``. ``await session.close()`` says QUIT.
See docs/delivery.md.

Modules: ``settings`` (DeliverySettings), ``values`` (Transfer, TransferReport, outcomes,
SessionInfo, ConnectFailure), ``session`` (open_session, Session), ``_prepare`` (what a
transfer becomes on one server: its events, or why it cannot be sent), ``_protocol`` (the
asyncio Protocol), ``errors``.

Raises: DeliveryMisuseError (a ``DeliveryError``) for misuse only.
"""

from __future__ import annotations

from sluice.delivery.errors import DeliveryMisuseError
from sluice.delivery.session import Session, open_session
from sluice.delivery.settings import DeliverySettings
from sluice.delivery.values import (
    ConnectFailure,
    DeliveryOutcome,
    Phase,
    SessionInfo,
    Transfer,
    TransferRcpt,
    TransferReport,
)

__all__ = [
    "ConnectFailure",
    "DeliveryMisuseError",
    "DeliveryOutcome",
    "DeliverySettings",
    "Phase",
    "Session",
    "SessionInfo",
    "Transfer",
    "TransferRcpt",
    "TransferReport",
    "open_session",
]
