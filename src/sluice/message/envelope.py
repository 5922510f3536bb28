"""The envelope of a queued message: sender, recipients with DSN parameters, routing tags.

This is the one shape intake builds, the spool stores, the scheduler queues and delivery
sends. It is pure data: frozen, slotted dataclasses, no I/O. Per-recipient *progress*
(attempts, next retry, final outcome) is not part of the envelope; the spool records it
beside the envelope as :class:`RcptState` updates.

Public names: MessageId, Notify, RcptState, Recipient, Envelope.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = ["Envelope", "MessageId", "Notify", "RcptState", "Recipient"]

#: A spool-assigned message id: a positive integer, unique within one spool.
MessageId = int


class Notify(enum.Flag):
    """RFC 3461 §4.1 NOTIFY values; an empty flag means the parameter was absent."""

    NONE = 0
    #: NOTIFY=NEVER: never send a DSN for this recipient.
    NEVER = enum.auto()
    #: NOTIFY=SUCCESS: report delivery.
    SUCCESS = enum.auto()
    #: NOTIFY=FAILURE: report failure (the default when NOTIFY is absent).
    FAILURE = enum.auto()
    #: NOTIFY=DELAY: report delays.
    DELAY = enum.auto()


class RcptState(enum.IntEnum):
    """Where one recipient stands; only QUEUED is not final."""

    #: Waiting for (another) delivery attempt.
    QUEUED = 0
    #: Accepted by the remote MTA (2xx after the final dot).
    DELIVERED = 1
    #: Failed permanently, or expired: a DSN is owed unless NOTIFY says otherwise.
    BOUNCED = 2
    #: Removed by an operator (``sluice delete``); no DSN.
    DELETED = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipient:
    """One RCPT TO, with its RFC 3461 parameters."""

    address: str
    notify: Notify = Notify.NONE
    #: ORCPT=addr-type;xtext as received (decoded), or None.
    orcpt: str | None = None

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(
        self, *, address: str, notify: Notify = Notify.NONE, orcpt: str | None = None
    ) -> None:
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "notify", notify)
        object.__setattr__(self, "orcpt", orcpt)


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """Everything about a message except its bytes and its per-recipient progress."""

    #: MAIL FROM address; "" is the null reverse-path of a bounce.
    sender: str
    recipients: tuple[Recipient, ...]
    #: Virtual MTA or pool chosen at intake (X-Virtual-MTA, default-virtual-mta, pattern list),
    #: or None for the default VMTA.
    vmta: str | None = None
    #: Job id (X-Job or jobid-header), or None.
    job_id: str | None = None
    #: RFC 3461 ENVID (or X-Envid), or None.
    env_id: str | None = None
    #: RFC 3461 RET: "FULL", "HDRS" or None.
    ret: str | None = None
    #: Address and HELO name of the injecting client, and how it came ("smtp" or "api").
    source_ip: str = ""
    source_helo: str = ""
    source_type: str = "smtp"
    #: Authenticated SMTP user, if any.
    auth_user: str | None = None
    #: Wall-clock arrival time (seconds since the epoch), stamped by intake.
    arrival: float = 0.0
    #: MAIL FROM had SMTPUTF8 / BODY=8BITMIME.
    smtputf8: bool = False
    body_8bit: bool = False
    #: Extra routing tags for later parts (e.g. "queue-domain" overrides); kept small.
    tags: tuple[tuple[str, str], ...] = field(default=())

    # Written out rather than generated: compiled by mypyc, a hand-written __init__ is a
    # native constructor (~10x faster); tests/test_dataclass_inits.py keeps it in step.
    def __init__(
        self,
        *,
        sender: str,
        recipients: tuple[Recipient, ...],
        vmta: str | None = None,
        job_id: str | None = None,
        env_id: str | None = None,
        ret: str | None = None,
        source_ip: str = "",
        source_helo: str = "",
        source_type: str = "smtp",
        auth_user: str | None = None,
        arrival: float = 0.0,
        smtputf8: bool = False,
        body_8bit: bool = False,
        tags: tuple[tuple[str, str], ...] = (),
    ) -> None:
        object.__setattr__(self, "sender", sender)
        object.__setattr__(self, "recipients", recipients)
        object.__setattr__(self, "vmta", vmta)
        object.__setattr__(self, "job_id", job_id)
        object.__setattr__(self, "env_id", env_id)
        object.__setattr__(self, "ret", ret)
        object.__setattr__(self, "source_ip", source_ip)
        object.__setattr__(self, "source_helo", source_helo)
        object.__setattr__(self, "source_type", source_type)
        object.__setattr__(self, "auth_user", auth_user)
        object.__setattr__(self, "arrival", arrival)
        object.__setattr__(self, "smtputf8", smtputf8)
        object.__setattr__(self, "body_8bit", body_8bit)
        object.__setattr__(self, "tags", tags)
        self.__post_init__()

    def __post_init__(self) -> None:
        if not self.recipients:
            raise ValueError("an envelope needs at least one recipient")
