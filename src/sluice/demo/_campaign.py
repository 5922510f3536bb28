"""The demo's mixed campaign: password resets through ``transactional``, a newsletter through
the ``marketing`` pool, one recipient per message, spread over the simulated ISPs.

Every tenth message is a password reset (``X-Virtual-MTA: transactional``), interleaved with
the newsletter (``X-Virtual-MTA: marketing``) as a shop's mail would be. Recipients are drawn
from weighted domains (Microsoft's four, Gmail, Yahoo, the long tail) with a fixed seed, so
two runs send the same campaign. Each address is unique (a serial number in the local part),
so the accounting file can be checked recipient by recipient. A small share of the
newsletter list is dead (``t550-…``: the simulators answer ``550 5.1.1 user unknown``), as a
real list is: those bounce and earn a DSN to the sender.

Public names: Kind, DemoMessage, SENDERS, DOMAIN_WEIGHTS, campaign, render.
Raises: ValueError (``campaign``: a negative size or a share outside 0..1).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

__all__ = ["DOMAIN_WEIGHTS", "SENDERS", "DemoMessage", "Kind", "campaign", "render"]

#: One message in this many is a password reset.
RESET_EVERY = 10
#: Recipient domains and their weights (roughly a consumer list's mix).
DOMAIN_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("hotmail.com", 15),
    ("outlook.com", 11),
    ("live.com", 5),
    ("msn.com", 4),
    ("gmail.com", 30),
    ("yahoo.com", 15),
    ("example.org", 8),
    ("example.net", 7),
    ("longtail.test", 5),
)
_FIRST = ("olivia", "liam", "emma", "noah", "ava", "mateo", "sofia", "lucas", "mia", "leo")
_LAST = ("garcia", "smith", "muller", "rossi", "kowalski", "dubois", "silva", "tanaka")
_SEED = 20260801


class Kind(enum.Enum):
    """The two streams of the seed's story."""

    #: A password reset: must never wait behind marketing mail.
    RESET = "reset"
    #: The newsletter: bulk, through the marketing pool.
    NEWSLETTER = "newsletter"


#: Envelope sender and virtual MTA (the ``X-Virtual-MTA`` header) of each stream. The
#: senders' domain is served by the long-tail simulator, so DSNs are delivered too.
SENDERS: dict[Kind, tuple[str, str]] = {
    Kind.RESET: ("no-reply@example.net", "transactional"),
    Kind.NEWSLETTER: ("news@example.net", "marketing"),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoMessage:
    """One message of the campaign."""

    seq: int
    kind: Kind
    sender: str
    rcpt: str
    vmta: str

    @property
    def domain(self) -> str:
        return self.rcpt.rpartition("@")[2]


def campaign(size: int, *, dead_share: float = 0.01, seed: int = _SEED) -> list[DemoMessage]:
    """``size`` messages, the same for the same arguments."""
    if size < 0:
        raise ValueError("the campaign size cannot be negative")
    if not 0.0 <= dead_share <= 1.0:
        raise ValueError("the dead-address share must be between 0 and 1")
    rng = random.Random(seed)
    domains = [d for d, _ in DOMAIN_WEIGHTS]
    weights = [w for _, w in DOMAIN_WEIGHTS]
    out: list[DemoMessage] = []
    for seq in range(size):
        kind = Kind.RESET if seq % RESET_EVERY == RESET_EVERY - 1 else Kind.NEWSLETTER
        domain = rng.choices(domains, weights)[0]
        local = f"{rng.choice(_FIRST)}.{rng.choice(_LAST)}.{seq}"
        if kind is Kind.NEWSLETTER and rng.random() < dead_share:
            local = f"t550-{local}"
        sender, vmta = SENDERS[kind]
        out.append(
            DemoMessage(seq=seq, kind=kind, sender=sender, rcpt=f"{local}@{domain}", vmta=vmta)
        )
    return out


_RESET_BODY = (
    "Hello,\r\n\r\n"
    "Someone (hopefully you) asked to reset the password of your Example account.\r\n"
    "Use this link within 30 minutes to choose a new one:\r\n\r\n"
    "  https://example.net/reset?token={token}\r\n\r\n"
    "If you did not ask for this, ignore this message; your password stays the same.\r\n"
)
_NEWS_PARAGRAPH = (
    "Our summer concert series opens on Friday at the riverside stage, with doors at 18:00.\r\n"
    "Members get early entry and a free drink; bring this mail or show it on your phone.\r\n"
)
_NEWS_BODY = (
    "Hi,\r\n\r\n"
    + _NEWS_PARAGRAPH * 16
    + "\r\nTo stop receiving the newsletter: https://example.net/unsubscribe?u={token}\r\n"
)


def render(msg: DemoMessage, *, date: str) -> bytes:
    """The message as injected: headers (with ``X-Virtual-MTA``) and a CRLF body."""
    token = f"{msg.seq:08x}"
    if msg.kind is Kind.RESET:
        subject, body = "Reset your password", _RESET_BODY.format(token=token)
        sender_name = "Example Accounts"
    else:
        subject, body = "Summer concerts: doors at 18:00", _NEWS_BODY.format(token=token)
        sender_name = "Example News"
    headers = (
        f"From: {sender_name} <{msg.sender}>\r\n"
        f"To: <{msg.rcpt}>\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {date}\r\n"
        f"Message-ID: <demo.{msg.seq}.{msg.kind.value}@example.net>\r\n"
        f"X-Virtual-MTA: {msg.vmta}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
    )
    return (headers + "\r\n" + body).encode("ascii")
