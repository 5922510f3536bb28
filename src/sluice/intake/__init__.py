"""sluice.intake: the SMTP injection path (listener, source policy, header edits, hand-off).

See docs/intake.md. The daemon builds an :class:`Injector` and an :class:`IntakeServer`,
calls ``await server.listen(host, port)`` once per ``smtp-listener`` and
``await server.shutdown()`` on SIGTERM.

Public names: IntakeServer, ListenerLimits, Hooks (listener); Injector, Transaction,
InjectResult, QueueIndex, queues_of, default_queue_for, OnAccepted, OnReceived (inject);
SourcePolicy, SourcePolicyMap (policy); HeaderEdit, edit_headers (headers).
Raises: OSError from ``IntakeServer.listen`` (address in use); ValueError from bad
SourcePolicy/ListenerLimits values or a malformed CIDR.
"""

from __future__ import annotations

from sluice.intake.headers import HeaderEdit, edit_headers
from sluice.intake.inject import (
    Injector,
    InjectResult,
    OnAccepted,
    OnReceived,
    QueueIndex,
    Transaction,
    default_queue_for,
    queues_of,
)
from sluice.intake.listener import Hooks, IntakeServer, ListenerLimits
from sluice.intake.policy import SourcePolicy, SourcePolicyMap

__all__ = [
    "HeaderEdit",
    "Hooks",
    "InjectResult",
    "Injector",
    "IntakeServer",
    "ListenerLimits",
    "OnAccepted",
    "OnReceived",
    "QueueIndex",
    "SourcePolicy",
    "SourcePolicyMap",
    "Transaction",
    "default_queue_for",
    "edit_headers",
    "queues_of",
]
