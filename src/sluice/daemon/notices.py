"""Accounting records and DSNs: what the delivery manager reports about each outcome.

The bounce(8)/defer(8)/trace(8) job of Postfix's split. :class:`Notices` turns the
scheduler's verdicts into PowerMTA accounting records (``d``, ``b``, ``t``, ``tq``) and owes
RFC 3464 DSNs (failures, and relays under NOTIFY=SUCCESS when the next hop lacks DSN). It
only collects: the manager's flush writes the records after the spool marks they describe
and stores the DSNs before the originals are removed (docs/architecture.md).

Public names: Notices, DsnJob.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from sluice.acct.records import AcctRecord, RecordType
from sluice.bounce import Diagnostic, DsnAction, DsnEntry, acct_fields, build_dsn, dsn_recipients
from sluice.bounce import Phase as BouncePhase
from sluice.config import parse_queue_name
from sluice.delivery.values import SessionInfo
from sluice.errors import SpoolError
from sluice.message import MessageId, Notify
from sluice.sched import Bounce, BounceReason, Defer, Delivered

if TYPE_CHECKING:
    from sluice.daemon.lifecycle import Daemon

__all__ = ["DsnJob", "Notices"]

log = logging.getLogger("sluice.delivery")
#: NOTIFY=SUCCESS as an int (tested with ``_value_``: Flag's ``&`` and ``bool`` are Python code).
_NOTIFY_SUCCESS: int = Notify.SUCCESS._value_

#: A DSN owed: the message, the recipient indexes it reports on, the verdict, the action.
DsnJob = tuple[MessageId, tuple[int, ...], Diagnostic, DsnAction]


class Notices:
    """Accounting records and DSNs for one daemon, collected until the manager flushes."""

    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        #: Accounting records of this turn, written after the spool marks they describe.
        self.records: list[AcctRecord] = []
        #: DSNs owed, built and stored before their originals may be removed.
        self.dsn_jobs: list[DsnJob] = []
        #: Size in octets of messages handed to delivery (``dlvSize``), until they finish.
        self.sizes: dict[MessageId, int] = {}
        self._dsn_serial = 0

    def diagnostic(self, kind: RecordType, text: str, info: SessionInfo | None) -> Diagnostic:
        local = {RecordType.DELIVERY: "2.0.0", RecordType.BOUNCE: "5.0.0"}.get(kind, "4.0.0")
        return Diagnostic.from_text(
            text or local,
            BouncePhase.RCPT,
            local_status=local,
            remote_mta=info.remote_host if info is not None else "",
            remote_ip=info.remote_address if info is not None else "",
        )

    def record(
        self,
        kind: RecordType,
        action: Delivered | Defer | Bounce,
        info: SessionInfo | None,
        diag: Diagnostic | None = None,
    ) -> None:
        queue, msg_id, rcpts, text = action.queue, action.msg_id, action.rcpts, action.text
        acct = self.d.acct
        envelope = self.d.envelopes.get(msg_id)
        if acct is None or envelope is None:
            return
        now = self.d.clock.wall()
        _, vmta = parse_queue_name(queue)
        if diag is None:
            diag = self.diagnostic(kind, text, info)
        fields = acct_fields(diag, self.d.classifier, final=kind is not RecordType.TRANSIENT)
        pool = envelope.vmta if envelope.vmta and envelope.vmta in self.d.config.pools else ""
        for index in rcpts:
            rcpt = envelope.recipients[index]
            self.records.append(
                AcctRecord(
                    type=kind,
                    time_logged=now,
                    time_queued=envelope.arrival,
                    orig=envelope.sender,
                    rcpt=rcpt.address,
                    orcpt=rcpt.orcpt or "",
                    dsn_action=fields.dsn_action,
                    dsn_status=fields.dsn_status,
                    dsn_diag=fields.dsn_diag,
                    dsn_mta=fields.dsn_mta,
                    bounce_cat=fields.bounce_cat,
                    src_type=envelope.source_type,
                    src_mta=envelope.source_helo,
                    dlv_type="smtp" if info is not None else "",
                    dlv_source_ip=info.local_address if info is not None else "",
                    dlv_destination_ip=info.remote_address if info is not None else "",
                    dlv_esmtp_available=info.esmtp_available if info is not None else "",
                    dlv_size=self.sizes.get(msg_id) if info is not None else None,
                    vmta=vmta,
                    job_id=envelope.job_id or "",
                    env_id=envelope.env_id or "",
                    queue=queue,
                    vmta_pool=pool,
                )
            )

    def record_queue(self, queue: str, text: str, source_ip: str | None, remote_ip: str) -> None:
        """A ``tq`` record: the whole queue failed temporarily (DNS, connection, greeting),
        or a host was skipped for the next MX (``log-fallback-failures``)."""
        acct = self.d.acct
        if acct is None:
            return
        _, vmta = parse_queue_name(queue)
        diag = self.diagnostic(RecordType.TRANSIENT_QUEUE, text, None)
        fields = acct_fields(diag, self.d.classifier, final=False)
        self.records.append(
            AcctRecord(
                type=RecordType.TRANSIENT_QUEUE,
                time_logged=self.d.clock.wall(),
                dsn_action=fields.dsn_action,
                dsn_status=fields.dsn_status,
                dsn_diag=fields.dsn_diag,
                bounce_cat=fields.bounce_cat,
                dlv_type="smtp",
                dlv_source_ip=source_ip or "",
                dlv_destination_ip=remote_ip,
                vmta=vmta,
                queue=queue,
            )
        )

    def success_dsn(self, action: Delivered, info: SessionInfo | None) -> None:
        """NOTIFY=SUCCESS: a ``relayed`` DSN when the next hop does not offer DSN (RFC 3461
        §6.2: a DSN-capable next hop received NOTIFY and reports the delivery itself)."""
        if info is not None and any(k == "DSN" for k, _ in info.extensions):
            return
        envelope = self.d.envelopes.get(action.msg_id)
        if envelope is None or not any(
            envelope.recipients[i].notify._value_ & _NOTIFY_SUCCESS for i in action.rcpts
        ):
            return
        owed = dsn_recipients(envelope, action.rcpts, DsnAction.RELAYED)
        if owed:
            diag = self.diagnostic(RecordType.DELIVERY, action.text, info)
            self.dsn_jobs.append((action.msg_id, owed, diag, DsnAction.RELAYED))

    def bounce(self, action: Bounce, info: SessionInfo | None) -> None:
        diag = self.diagnostic(RecordType.BOUNCE, action.text, info)
        if action.reason is BounceReason.EXPIRED:
            diag = Diagnostic.expired(diag if action.text else None)
        self.record(RecordType.BOUNCE, action, info, diag)
        envelope = self.d.envelopes.get(action.msg_id)
        if envelope is not None:
            owed = dsn_recipients(envelope, action.rcpts, DsnAction.FAILED)
            if owed:
                self.dsn_jobs.append((action.msg_id, owed, diag, DsnAction.FAILED))

    async def send_dsns(self, jobs: list[DsnJob]) -> list[DsnJob]:
        """Build and queue the DSNs owed; runs before the originals may be removed.
        Returns the jobs whose DSN could not be stored (tried again next turn)."""
        failed: list[DsnJob] = []
        spool = self.d.spool
        assert spool is not None
        now = self.d.clock.wall()
        for msg_id, indexes, diag, kind in jobs:
            envelope = self.d.envelopes.get(msg_id)
            if envelope is None:
                continue
            try:
                original = await spool.load_body(msg_id)
            except SpoolError as exc:
                log.error("message %d: cannot load it to build its DSN: %s", msg_id, exc)
                original = b""
            self._dsn_serial += 1
            dsn_id = f"<dsn.{int(now)}.{self._dsn_serial}@{self.d.hostname}>"
            dsn = build_dsn(
                envelope=envelope,
                entries=[DsnEntry(index=i, action=kind, diagnostic=diag) for i in indexes],
                original=original,
                reporting_mta=self.d.hostname,
                postmaster=self.d.postmaster,
                now=now,
                make_id=functools.partial(str, dsn_id),
            )
            dsn_envelope = dsn.envelope(arrival=now)
            try:
                new_id = await spool.store(dsn_envelope, dsn.data)
            except SpoolError as exc:
                log.error("message %d: DSN not queued yet, retrying: %s", msg_id, exc)
                failed.append((msg_id, indexes, diag, kind))
                continue
            log.info("message %d: DSN to <%s> queued as %d", msg_id, envelope.sender, new_id)
            self.d.accept_local(new_id, dsn_envelope, len(dsn.data))
        return failed
