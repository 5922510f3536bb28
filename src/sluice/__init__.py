"""Sluice: a high-volume outbound MTA that reads PowerMTA-style configuration.

The package is split by job (DESIGN.md §1): ``config`` (text → typed model), ``smtp``
(sans-IO protocol engine), ``intake`` (injection listener), ``spool`` (durable store),
``sched`` (pure scheduler), ``routing`` (MX → hosts), ``delivery`` (SMTP client edge),
``bounce`` (categories and DSNs), ``acct`` (accounting files), ``mgmt`` (HTTP API and
monitor), ``cli`` and ``daemon``.
"""

from __future__ import annotations

from sluice._version import __version__

__all__ = ["__version__"]
