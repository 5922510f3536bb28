"""Errors raised by the routing package (branches of ``sluice.errors``).

Public names:
    RoutingConfigError  a route, smtp-hosts entry or pool weight cannot be parsed (ConfigError)
    PlanMisuseError     the caller fed an ``AttemptPlan`` a result it did not ask for (our bug)
"""

from __future__ import annotations

from sluice.errors import ConfigError, Fault, SluiceError

__all__ = ["PlanMisuseError", "RoutingConfigError"]


class RoutingConfigError(ConfigError):
    """A routing setting (``route``, ``smtp-hosts``, a pool weight) is malformed."""


class PlanMisuseError(SluiceError):
    """An ``AttemptPlan`` was driven out of order: a local bug, never the peer's fault."""

    fault = Fault.LOCAL
