"""Fault knobs for the simulators: per-recipient replies by local part, hang-ups, delays.

A recipient's local part may carry an instruction, so one message can mix outcomes:

- ``tNNN-…`` (e.g. ``t450-bob@x``, ``t550-ann@x``): RCPT gets reply code NNN (400–599);
- ``dNNN-…``: RCPT is accepted, but the message gets NNN after the final dot;
- ``hangup-…``: the connection is closed after the final dot without a reply.

:class:`Faults` also holds the server-wide knobs: hang up after every Nth final dot, delay
every final reply, greet with 421, never greet (tarpit).

Public names: Faults, RecipientFault, parse_recipient_fault, fault_reply, GREETING_421.
Raises: ValueError for invalid knob values.
"""

from __future__ import annotations

from dataclasses import dataclass

from sluice.smtp import Reply

__all__ = ["GREETING_421", "Faults", "RecipientFault", "fault_reply", "parse_recipient_fault"]

#: The greeting of ``Faults(greet_421=True)`` (RFC 5321 §3.8; X.3.2 system not accepting).
GREETING_421 = Reply.of(421, "4.3.2", "Service not available, closing transmission channel")

#: Realistic texts for the codes tests ask for most; others get ``X.0.0 Simulated failure``.
_TEXTS: dict[int, tuple[str, str]] = {
    421: ("4.3.2", "Service not available, closing transmission channel"),
    450: ("4.2.1", "Mailbox temporarily unavailable, try again later"),
    451: ("4.3.0", "Local error in processing, try again later"),
    452: ("4.2.2", "Mailbox over quota, try again later"),
    550: ("5.1.1", "Recipient address rejected: user unknown"),
    551: ("5.1.6", "User not local"),
    552: ("5.2.2", "Mailbox full"),
    553: ("5.1.3", "Mailbox name not allowed"),
    554: ("5.7.1", "Message rejected"),
}
_cache: dict[int, Reply] = {}


def fault_reply(code: int) -> Reply:
    """The reply a ``tNNN-``/``dNNN-`` instruction produces (cached per code)."""
    reply = _cache.get(code)
    if reply is None:
        enhanced, text = _TEXTS.get(code, (f"{code // 100}.0.0", "Simulated failure"))
        reply = _cache[code] = Reply.of(code, enhanced, f"{text} (simulated)")
    return reply


@dataclass(frozen=True, slots=True, kw_only=True)
class RecipientFault:
    """What a recipient's local part asks for."""

    #: Reply code for the RCPT itself; None: accept the RCPT.
    rcpt_code: int | None = None
    #: Reply code for the whole message after the final dot.
    data_code: int | None = None
    #: Close after the final dot without replying.
    hangup: bool = False


_HANGUP = RecipientFault(hangup=True)


def parse_recipient_fault(address: str) -> RecipientFault | None:
    """The instruction in ``address``'s local part, or None for an ordinary recipient."""
    first = address[:1]
    if first in ("t", "d"):
        if len(address) > 5 and address[4] == "-" and address[1:4].isdigit():
            code = int(address[1:4])
            if 400 <= code <= 599:
                if first == "t":
                    return RecipientFault(rcpt_code=code)
                return RecipientFault(data_code=code)
        return None
    if first == "h" and address.startswith("hangup-"):
        return _HANGUP
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """Server-wide fault knobs (all off by default, except the local-part instructions)."""

    #: Obey ``tNNN-``, ``dNNN-`` and ``hangup-`` local parts.
    recipient_instructions: bool = True
    #: Hang up after the final dot of every Nth message (0: never).
    hangup_every: int = 0
    #: Seconds to wait before the reply to the final dot.
    final_reply_delay: float = 0.0
    #: Greet with ``421 4.3.2`` and close.
    greet_421: bool = False
    #: Never greet: keep the connection open and ignore what the client sends.
    tarpit: bool = False

    def __post_init__(self) -> None:
        if self.hangup_every < 0 or self.final_reply_delay < 0:
            raise ValueError("hangup_every and final_reply_delay must be >= 0")
