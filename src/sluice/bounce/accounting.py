"""The DSN columns of accounting records: dsnAction, dsnStatus, dsnDiag, dsnMta, bounceCat.

PowerMTA writes these five columns (powermta.md §5.2) for ``d``, ``b`` and ``t`` records, e.g.
``relayed``, ``2.0.0 (success)``, ``smtp;250 ok``, ``mx.example.com (192.0.2.1)``,
``success``; or ``failed``, ``5.1.1 (bad destination mailbox address)``,
``smtp;550 5.1.1 user unknown``, …, ``bad-mailbox``. :func:`acct_fields` computes all five from
a :class:`~sluice.bounce.diagnostic.Diagnostic`; the status text comes from
:func:`sluice.acct.records.dsn_status_text`. The attribute names of :class:`AcctDsnFields` are
those of :class:`sluice.acct.records.AcctRecord`.

Public names: AcctDsnFields, acct_fields, dsn_action_for, dsn_diag_text, dsn_mta_text.
Nothing here raises.
"""

from __future__ import annotations

from dataclasses import dataclass

from sluice.acct.records import dsn_status_text
from sluice.bounce.classify import Classifier
from sluice.bounce.diagnostic import Diagnostic, DsnAction

__all__ = ["AcctDsnFields", "acct_fields", "dsn_action_for", "dsn_diag_text", "dsn_mta_text"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AcctDsnFields:
    """The five DSN columns of one accounting record, ready for ``AcctRecord(...)``."""

    dsn_action: str
    dsn_status: str
    dsn_diag: str
    dsn_mta: str
    bounce_cat: str


def dsn_action_for(diag: Diagnostic, *, final: bool, remote_dsn: bool = False) -> DsnAction:
    """``delivered``/``relayed`` for a 2.x.x status (``delivered`` only when the remote MTA
    offered DSN and so reports further, RFC 3464 §2.3.3), ``failed`` for a final failure
    (a ``b`` record), ``delayed`` for a failure that will be retried (a ``t`` record)."""
    if diag.is_success:
        return DsnAction.DELIVERED if remote_dsn else DsnAction.RELAYED
    return DsnAction.FAILED if final else DsnAction.DELAYED


def dsn_diag_text(diag: Diagnostic) -> str:
    """``smtp;550 5.1.1 user unknown``: PowerMTA's dsnDiag (type, ``;``, reply, no space)."""
    return f"smtp;{diag.reply}"


def dsn_mta_text(diag: Diagnostic) -> str:
    """``mx.example.com (192.0.2.1)``, just the name or address when one is missing, or ``""``."""
    host, ip = diag.remote_mta, diag.remote_ip
    if host and ip:
        return f"{host} ({ip})"
    return host or ip


def acct_fields(
    diag: Diagnostic,
    classifier: Classifier,
    *,
    final: bool,
    remote_dsn: bool = False,
) -> AcctDsnFields:
    """All five columns for one recipient's record (see :func:`dsn_action_for` for the
    meaning of ``final`` and ``remote_dsn``)."""
    return AcctDsnFields(
        dsn_action=dsn_action_for(diag, final=final, remote_dsn=remote_dsn).value,
        dsn_status=dsn_status_text(diag.status),
        dsn_diag=dsn_diag_text(diag),
        dsn_mta=dsn_mta_text(diag),
        bounce_cat=diag.classify(classifier).value,
    )
