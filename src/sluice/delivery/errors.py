"""Errors of the delivery edge (the ``DeliveryError`` branch of sluice.errors).

Delivery reports failures of remote servers as outcomes, never as exceptions; what is raised
is misuse by the caller.

Public names: DeliveryMisuseError.
"""

from __future__ import annotations

from sluice.errors import DeliveryError, Fault

__all__ = ["DeliveryMisuseError"]


class DeliveryMisuseError(DeliveryError):
    """The caller broke the session's contract (e.g. two ``deliver`` calls at once)."""

    fault = Fault.LOCAL
