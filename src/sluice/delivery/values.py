"""The values delivery takes and gives: what to send, and what became of each recipient.

In: :class:`Transfer` (one message and the recipients to send it to on this connection, built
from the spool's envelope with :meth:`Transfer.from_envelope`), :class:`TransferRcpt`.

Out: :class:`TransferReport` per transfer, holding ``sched.Result`` values whose outcome is a
:class:`DeliveryOutcome` — a ``sched.Outcome`` (kind, scope, text) that also carries the
reply code, the enhanced status, the :class:`Phase` it came from and ``possible_duplicate``
(the connection died after the final dot was sent, before its reply: the message may have
arrived; it is retried anyway, at-least-once). :class:`ConnectFailure` is what
``open_session`` returns when no session could be opened. :class:`SessionInfo` describes the
connection for accounting (``dsnMta``, ``dlvSourceIp``, ``dlvDestinationIp``,
``dlvEsmtpAvailable``).

The builders (``reply_outcome``, ``local_outcome``, ``route_outcome``) turn replies and routing
failures into outcomes; they never raise.

Public names: Phase, DeliveryOutcome, TransferRcpt, Transfer, SessionInfo, TransferReport,
ConnectFailure, reply_outcome, local_outcome, route_outcome, reply_line, dot_voided. Nothing
here raises
except the dataclass checks (ValueError for an empty Transfer).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from sluice.message.envelope import Envelope, Notify
from sluice.routing import FallbackEvent, RouteFailure
from sluice.routing.mx import FailureKind
from sluice.sched.outcome import Outcome, OutcomeKind, Result, Scope
from sluice.smtp import Reply

__all__ = [
    "ConnectFailure",
    "DeliveryOutcome",
    "Phase",
    "SessionInfo",
    "Transfer",
    "TransferRcpt",
    "TransferReport",
    "dot_voided",
    "local_outcome",
    "reply_line",
    "reply_outcome",
    "route_outcome",
]


class Phase(enum.Enum):
    """Where in the attempt an outcome was decided (for bounce classification and logs)."""

    #: Before any byte was sent: a refused message (NUL, 8-bit, SMTPUTF8, SIZE).
    LOCAL = "local"
    #: Name resolution (null MX, NXDOMAIN, SERVFAIL, timeout, no address, MX loop).
    DNS = "dns"
    #: Making the TCP connection.
    CONNECT = "connect"
    #: The server's greeting, EHLO or HELO.
    GREETING = "greeting"
    #: The reply to MAIL FROM.
    MAIL = "mail"
    #: The reply to RCPT TO.
    RCPT = "rcpt"
    #: The reply to DATA.
    DATA = "data"
    #: Sending the message content (before the final dot was handed to the kernel).
    CONTENT = "content"
    #: The reply to the final dot (or its absence).
    DOT = "dot"
    #: Between transactions (RSET), or the session was gone before this transfer began.
    SESSION = "session"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryOutcome(Outcome):
    """A ``sched.Outcome`` with the details delivery knows (see the module docstring)."""

    #: The SMTP reply code (0 when there was no reply: connection lost, timeout).
    code: int = 0
    #: RFC 3463 status: the reply's own, else derived from its class (``4.0.0``), or ours.
    status: str = ""
    phase: Phase = Phase.LOCAL
    #: The final dot was sent and no reply came: the message may have been delivered.
    possible_duplicate: bool = False

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step with
    # these fields and Outcome's (which come first).
    def __init__(
        self,
        *,
        kind: OutcomeKind,
        scope: Scope = Scope.RECIPIENT,
        text: str = "",
        dns_error: bool = False,
        code: int = 0,
        status: str = "",
        phase: Phase = Phase.LOCAL,
        possible_duplicate: bool = False,
    ) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "scope", scope)
        object.__setattr__(self, "text", text)
        object.__setattr__(self, "dns_error", dns_error)
        object.__setattr__(self, "code", code)
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "phase", phase)
        object.__setattr__(self, "possible_duplicate", possible_duplicate)

    def __hash__(self) -> int:  # as Outcome's (dataclass would generate one per class)
        return hash(self.text)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferRcpt:
    """One recipient of a transfer: its index in the envelope, address and DSN parameters."""

    index: int
    address: str
    notify: Notify = Notify.NONE
    orcpt: str | None = None

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(
        self, *, index: int, address: str, notify: Notify = Notify.NONE, orcpt: str | None = None
    ) -> None:
        object.__setattr__(self, "index", index)
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "notify", notify)
        object.__setattr__(self, "orcpt", orcpt)


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer:
    """One message to send on a session, to ``rcpts``.

    ``body`` is the message as stored (header and body; any line endings: the engine sends
    canonical CRLF and stuffs dots). ``smtputf8`` / ``eight_bit`` come from intake's MAIL
    parameters; delivery also detects 8-bit content itself.
    """

    msg_id: int
    sender: str
    rcpts: tuple[TransferRcpt, ...]
    body: bytes
    envid: str | None = None
    ret: str | None = None
    smtputf8: bool = False
    eight_bit: bool = False

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(
        self,
        *,
        msg_id: int,
        sender: str,
        rcpts: tuple[TransferRcpt, ...],
        body: bytes,
        envid: str | None = None,
        ret: str | None = None,
        smtputf8: bool = False,
        eight_bit: bool = False,
    ) -> None:
        object.__setattr__(self, "msg_id", msg_id)
        object.__setattr__(self, "sender", sender)
        object.__setattr__(self, "rcpts", rcpts)
        object.__setattr__(self, "body", body)
        object.__setattr__(self, "envid", envid)
        object.__setattr__(self, "ret", ret)
        object.__setattr__(self, "smtputf8", smtputf8)
        object.__setattr__(self, "eight_bit", eight_bit)
        self.__post_init__()

    def __post_init__(self) -> None:
        if not self.rcpts:
            raise ValueError("a transfer needs at least one recipient")

    @classmethod
    def from_envelope(
        cls, msg_id: int, envelope: Envelope, rcpt_indexes: Iterable[int], body: bytes
    ) -> Transfer:
        """The transfer of ``body`` to the envelope recipients at ``rcpt_indexes``."""
        recipients = envelope.recipients
        rcpts: list[TransferRcpt] = []
        for i in rcpt_indexes:
            r = recipients[i]
            rcpts.append(TransferRcpt(index=i, address=r.address, notify=r.notify, orcpt=r.orcpt))
        return cls(
            msg_id=msg_id,
            sender=envelope.sender,
            rcpts=tuple(rcpts),
            body=body,
            envid=envelope.env_id,
            ret=envelope.ret,
            smtputf8=envelope.smtputf8,
            eight_bit=envelope.body_8bit,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionInfo:
    """The connection a session runs on, for accounting and logs."""

    #: The MX host name (or the literal route host).
    remote_host: str
    remote_address: str
    remote_port: int
    local_address: str
    local_port: int
    #: The EHLO name we sent.
    helo_name: str
    #: EHLO was accepted (``dlvEsmtpAvailable`` lists the keywords; empty after HELO).
    esmtp: bool
    #: EHLO keywords (upper-cased) → parameters, as the server advertised them.
    extensions: tuple[tuple[str, str], ...]
    #: The server's greeting line(s).
    greeting: str = ""

    @property
    def mta(self) -> str:
        """``dsnMta`` as PowerMTA writes it: ``host (ip)``."""
        return f"{self.remote_host} ({self.remote_address})"

    @property
    def esmtp_available(self) -> str:
        """``dlvEsmtpAvailable``: the advertised keywords, comma-separated."""
        return ",".join(k for k, _ in self.extensions)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferReport:
    """What became of one transfer: outcomes for all its recipients (each exactly once)."""

    msg_id: int
    results: tuple[Result, ...]
    #: The content was sent up to the final dot (``dlvSize`` applies).
    data_sent: bool = False
    #: Sent, then no reply to the dot: retried, and may arrive twice.
    possible_duplicate: bool = False
    #: The session it ran on (None when it never reached a server).
    info: SessionInfo | None = None

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(
        self,
        *,
        msg_id: int,
        results: tuple[Result, ...],
        data_sent: bool = False,
        possible_duplicate: bool = False,
        info: SessionInfo | None = None,
    ) -> None:
        object.__setattr__(self, "msg_id", msg_id)
        object.__setattr__(self, "results", results)
        object.__setattr__(self, "data_sent", data_sent)
        object.__setattr__(self, "possible_duplicate", possible_duplicate)
        object.__setattr__(self, "info", info)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectFailure:
    """``open_session`` found no usable server: the outcome for the whole queue attempt."""

    outcome: DeliveryOutcome
    #: The routing failure behind it (DNS, connection, greeting), if any.
    failure: RouteFailure | None
    #: Every host given up for the next one (log them when ``log-fallback-failures`` is on).
    fallbacks: tuple[FallbackEvent, ...] = ()
    #: TCP connections attempted (0 for DNS failures and null MX).
    connect_attempts: int = 0


# ---------------------------------------------------------------------------------------------
# Builders


def _joined(reply: Reply) -> str:
    lines = reply.lines
    if len(lines) == 1:  # the usual reply: its one line, as the join would give it
        return lines[0]
    return " ".join(line for line in lines if line)


def reply_line(reply: Reply) -> str:
    """A reply as one line of text: ``550 5.1.1 text of every line``."""
    if reply.enhanced is not None:
        return f"{reply.code} {reply.enhanced} {_joined(reply)}".rstrip()
    return f"{reply.code} {_joined(reply)}".rstrip()


_KIND_OF_CLASS = {2: OutcomeKind.DELIVERED, 3: OutcomeKind.DELIVERED, 4: OutcomeKind.TRANSIENT}


def reply_outcome(reply: Reply, scope: Scope, phase: Phase) -> DeliveryOutcome:
    """The outcome a reply decides: 2xx delivered, 4xx transient, 5xx permanent."""
    code = reply.code
    klass = code // 100
    kind = _KIND_OF_CLASS.get(klass, OutcomeKind.PERMANENT)
    if reply.enhanced is not None:
        status = str(reply.enhanced)
        text = f"{code} {status} {_joined(reply)}".rstrip()  # reply_line, status made once
    else:
        status = f"{min(klass, 5)}.0.0"
        text = f"{code} {_joined(reply)}".rstrip()
    return DeliveryOutcome(
        kind=kind,
        scope=scope,
        text=text,
        code=code,
        status=status,
        phase=phase,
    )


def local_outcome(
    kind: OutcomeKind,
    scope: Scope,
    status: str,
    text: str,
    phase: Phase,
    *,
    code: int = 0,
    possible_duplicate: bool = False,
) -> DeliveryOutcome:
    """An outcome Sluice decided itself (no reply, or a refusal before sending)."""
    line = f"{code} {status} {text}" if code else f"{status} {text}"
    return DeliveryOutcome(
        kind=kind,
        scope=scope,
        text=line,
        code=code,
        status=status,
        phase=phase,
        possible_duplicate=possible_duplicate,
    )


def dot_voided(report: TransferReport, why: str) -> TransferReport:
    """``report`` with the verdict it took from the reply to its final dot replaced by a
    possible duplicate (``why``: the reason that reply cannot be trusted); the outcomes
    decided before the dot (refused recipients) are kept."""
    kept: list[Result] = []
    rcpts: list[int] = []
    for r in report.results:
        o = r.outcome
        if isinstance(o, DeliveryOutcome) and o.phase is Phase.DOT:
            rcpts += r.rcpts
        else:
            kept.append(r)
    outcome = local_outcome(
        OutcomeKind.TRANSIENT,
        Scope.MESSAGE,
        "4.4.2",
        f"{why}; possible duplicate",
        Phase.DOT,
        possible_duplicate=True,
    )
    kept.append(Result(msg_id=report.msg_id, rcpts=tuple(rcpts), outcome=outcome))
    return TransferReport(
        msg_id=report.msg_id,
        results=tuple(kept),
        data_sent=True,
        possible_duplicate=True,
        info=report.info,
    )


_PHASE_OF_FAILURE = {
    FailureKind.CONNECT_FAILED: Phase.CONNECT,
    FailureKind.REJECTED: Phase.GREETING,
}


def route_outcome(failure: RouteFailure) -> DeliveryOutcome:
    """The outcome of a routing failure: site scope; DNS trouble is marked ``dns_error``."""
    kind = OutcomeKind.PERMANENT if failure.permanent else OutcomeKind.TRANSIENT
    return DeliveryOutcome(
        kind=kind,
        scope=Scope.SITE,
        text=failure.diag(),
        dns_error=failure.kind is FailureKind.DNS_TEMPORARY,
        code=failure.code,
        status=failure.status,
        phase=_PHASE_OF_FAILURE.get(failure.kind, Phase.DNS),
    )
