"""The end-to-end ledger: numbered test messages, acknowledgements, and the loss/dup check.

Every test message carries ``Message-ID: <seq-N@test>`` and ``X-Test-Seq: N``. An injector
records N as *acknowledged* only after it has read a 2xx reply to the final dot (test-plan
§6.1). The checker takes deliveries from any receiver (Postfix Maildir, smtp-sink dumps, a
simulator) and computes, per (seq, recipient):

    acked_lost  acked pairs neither delivered nor bounced          (must be 0)
    dup         Σ max(0, deliveries − 1)
    truncated   deliveries whose body SHA-256 differs from the injected body
    phantom     deliveries that match no injected (seq, recipient) — smuggled or misrouted

Public names:
    TestMessage, Delivery, LedgerReport, Ledger — see each docstring.
    parse_delivery(raw, recipients, source) -> list[Delivery]   one Delivery per recipient
    body_digest(body) -> str       SHA-256 of a body after line-ending normalisation
    make_body(seq, size) -> bytes  deterministic CRLF body of about ``size`` octets
Nothing here raises except ``Ledger.make``/``record_*`` (ValueError on an unknown seq).
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Delivery",
    "Ledger",
    "LedgerReport",
    "TestMessage",
    "body_digest",
    "make_body",
    "parse_delivery",
]

#: RFC 5322 §2.1.1: at most 998 characters per line; ours stay well below.
BODY_LINE_LEN = 76
_POOL_LINES = 4096
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "


def _make_pool() -> list[bytes]:
    rnd = random.Random(20261128)
    lines = []
    for i in range(_POOL_LINES):
        text = "".join(rnd.choice(_ALPHABET) for _ in range(BODY_LINE_LEN - 8))
        # Every 64th line starts with a dot so that dot-stuffing is always exercised.
        lead = "." if i % 64 == 7 else "L"
        lines.append(f"{lead}{i:06d} {text}\r\n".encode("ascii"))
    return lines


_POOL = _make_pool()


def make_body(seq: int, size: int) -> bytes:
    """A deterministic CRLF body of about ``size`` octets (at least one line) for ``seq``."""
    parts = [f"Test message body for seq {seq}.\r\n".encode("ascii")]
    total = len(parts[0])
    i = seq * 7919
    while total < size:
        line = _POOL[i % _POOL_LINES]
        parts.append(line)
        total += len(line)
        i += 1
    return b"".join(parts)


def body_digest(body: bytes) -> str:
    """SHA-256 of ``body`` with CRLF turned into LF and trailing newlines removed.

    Receivers store mail differently (Postfix's Maildir and smtp-sink's dump use LF and the dump
    adds an empty line), so both sides of the comparison are normalised the same way.
    """
    return hashlib.sha256(body.replace(b"\r\n", b"\n").rstrip(b"\n")).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class TestMessage:
    """One numbered message: envelope plus CRLF wire data (not dot-stuffed)."""

    __test__ = False  # not a pytest test class

    seq: int
    sender: str
    recipients: tuple[str, ...]
    data: bytes
    body_sha256: str

    @property
    def message_id(self) -> str:
        return f"<seq-{self.seq}@test>"


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One copy of a message as a receiver holds it, for one envelope recipient."""

    source: str  #: where it was found (e.g. "postfix:127.0.0.2", "sink:127.0.0.3")
    recipient: str  #: envelope recipient, lower-cased, without angle brackets
    seq: int | None  #: X-Test-Seq, or None when the message carries none (a phantom)
    message_id: str | None
    body_sha256: str
    headers: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str | None:
        """The first header ``name`` (case-insensitive), unfolded, or None."""
        low = name.lower()
        for key, value in self.headers:
            if key.lower() == low:
                return value
        return None


def _split_message(raw: bytes) -> tuple[tuple[tuple[str, str], ...], bytes]:
    text = raw.replace(b"\r\n", b"\n")
    head, sep, body = text.partition(b"\n\n")
    if not sep:
        head, body = text, b""
    headers: list[tuple[str, str]] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and headers:
            key, prev = headers[-1]
            headers[-1] = (key, prev + " " + line.strip().decode("utf-8", "replace"))
            continue
        name, colon, value = line.partition(b":")
        if colon:
            headers.append(
                (name.decode("ascii", "replace"), value.strip().decode("utf-8", "replace"))
            )
    return tuple(headers), body


def parse_delivery(raw: bytes, recipients: Sequence[str], source: str) -> list[Delivery]:
    """Deliveries (one per recipient) of the RFC 5322 message ``raw``."""
    headers, body = _split_message(raw)
    seq: int | None = None
    message_id: str | None = None
    for key, value in headers:
        low = key.lower()
        if low == "x-test-seq" and seq is None:
            try:
                seq = int(value)
            except ValueError:
                seq = None
        elif low == "message-id" and message_id is None:
            message_id = value
    digest = body_digest(body)
    return [
        Delivery(
            source=source,
            recipient=_norm_addr(rcpt),
            seq=seq,
            message_id=message_id,
            body_sha256=digest,
            headers=headers,
        )
        for rcpt in recipients
    ]


def _norm_addr(addr: str) -> str:
    return addr.strip().strip("<>").lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerReport:
    """The outcome of ``Ledger.check``; ``ok`` means no acked loss, truncation or phantom."""

    injected: int  #: messages made by the ledger
    acked: int  #: (seq, recipient) pairs acknowledged with 2xx to the final dot
    delivered: int  #: deliveries seen at the receivers (all copies)
    bounced: int  #: acked pairs reported bounced by the caller
    acked_lost: int
    dup: int
    truncated: int
    phantom: int
    unacked_delivered: int  #: delivered pairs never acknowledged (allowed, e.g. a cut after .)
    lost_pairs: tuple[tuple[int, str], ...] = ()
    dup_pairs: tuple[tuple[int, str], ...] = ()

    @property
    def ok(self) -> bool:
        return self.acked_lost == 0 and self.truncated == 0 and self.phantom == 0

    def summary(self) -> str:
        return (
            f"ledger: injected={self.injected} acked={self.acked} delivered={self.delivered}"
            f" bounced={self.bounced} acked_lost={self.acked_lost} dup={self.dup}"
            f" truncated={self.truncated} phantom={self.phantom}"
            f" unacked_delivered={self.unacked_delivered}"
        )


@dataclass(slots=True)
class _Entry:
    message: TestMessage
    acked_rcpts: set[str] = field(default_factory=set)
    replies: list[tuple[int, float]] = field(default_factory=list)


class Ledger:
    """Makes numbered messages, records replies (thread-safe), and checks deliveries.

    ``path``, when given, gets one ``seq,code,unix-time`` line per reply to the final dot,
    flushed at once, so a record survives the death of anything but the test process.
    """

    def __init__(self, *, sender: str = "ledger@src.test", path: Path | None = None) -> None:
        self.sender = sender
        self._entries: dict[int, _Entry] = {}
        self._next = 1
        self._lock = threading.Lock()
        self._file = path.open("a", encoding="ascii") if path is not None else None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- making messages ------------------------------------------------------------------

    def make(
        self,
        recipients: Sequence[str],
        *,
        size: int = 1024,
        sender: str | None = None,
        subject: str | None = None,
        extra_headers: Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> TestMessage:
        """A new message numbered with the next seq; ``body`` overrides the generated one."""
        with self._lock:
            seq = self._next
            self._next += 1
        text = body if body is not None else make_body(seq, size)
        lines = [
            f"From: <{sender or self.sender}>",
            "To: " + ", ".join(f"<{r}>" for r in recipients),
            f"Subject: {subject or f'ledger test {seq}'}",
            f"Message-ID: <seq-{seq}@test>",
            f"X-Test-Seq: {seq}",
            *(f"{k}: {v}" for k, v in extra_headers),
        ]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + text
        message = TestMessage(
            seq=seq,
            sender=sender or self.sender,
            recipients=tuple(recipients),
            data=data,
            body_sha256=body_digest(text),
        )
        with self._lock:
            self._entries[seq] = _Entry(message)
        return message

    def make_many(
        self, count: int, recipients: Sequence[str], *, size: int = 1024
    ) -> list[TestMessage]:
        return [self.make(recipients, size=size) for _ in range(count)]

    # -- recording replies ----------------------------------------------------------------

    def record_reply(self, seq: int, code: int, recipients: Iterable[str] | None = None) -> None:
        """Record the reply ``code`` that ended an attempt to send ``seq`` (normally the
        reply to the final dot; a 4xx/5xx to MAIL, RCPT or DATA also ends an attempt).

        Only a 2xx — which injectors pass only for the final dot — marks ``recipients``
        (default: all of the message's) as acknowledged.
        """
        now = time.time()
        with self._lock:
            entry = self._entries.get(seq)
            if entry is None:
                raise ValueError(f"seq {seq} was not made by this ledger")
            entry.replies.append((code, now))
            if 200 <= code < 300:
                rcpts = entry.message.recipients if recipients is None else recipients
                entry.acked_rcpts.update(_norm_addr(r) for r in rcpts)
            if self._file is not None:
                self._file.write(f"{seq},{code},{now:.6f}\n")
                self._file.flush()

    def record_ack(self, seq: int, recipients: Iterable[str] | None = None) -> None:
        self.record_reply(seq, 250, recipients)

    # -- queries ----------------------------------------------------------------------------

    @property
    def messages(self) -> list[TestMessage]:
        with self._lock:
            return [e.message for e in self._entries.values()]

    def is_acked(self, seq: int) -> bool:
        with self._lock:
            entry = self._entries.get(seq)
            return bool(entry and entry.acked_rcpts)

    def acked_seqs(self) -> list[int]:
        with self._lock:
            return sorted(s for s, e in self._entries.items() if e.acked_rcpts)

    def unacked(self) -> list[TestMessage]:
        with self._lock:
            return [e.message for e in self._entries.values() if not e.acked_rcpts]

    def replies(self, seq: int) -> list[tuple[int, float]]:
        with self._lock:
            return list(self._entries[seq].replies)

    # -- the check -------------------------------------------------------------------------

    def check(
        self,
        deliveries: Iterable[Delivery],
        *,
        bounced: Iterable[tuple[int, str]] = (),
        echo: bool = True,
    ) -> LedgerReport:
        """Compare ``deliveries`` (from every receiver) with the ledger; print one summary line.

        ``bounced`` lists (seq, recipient) pairs the MTA reported as permanently failed
        (accounting ``b`` records or DSNs); they count as accounted for, not lost.
        """
        with self._lock:
            entries = dict(self._entries)
        injected_pairs = {
            (seq, _norm_addr(r)) for seq, e in entries.items() for r in e.message.recipients
        }
        acked_pairs = {(seq, r) for seq, e in entries.items() for r in e.acked_rcpts}
        bounced_pairs = {(s, _norm_addr(r)) for s, r in bounced}
        counts: Counter[tuple[int, str]] = Counter()
        truncated = phantom = delivered = 0
        for d in deliveries:
            delivered += 1
            if d.seq is None or (d.seq, d.recipient) not in injected_pairs:
                phantom += 1
                continue
            counts[(d.seq, d.recipient)] += 1
            if d.body_sha256 != entries[d.seq].message.body_sha256:
                truncated += 1
        lost = sorted(p for p in acked_pairs if p not in counts and p not in bounced_pairs)
        dups = sorted(p for p, n in counts.items() if n > 1)
        report = LedgerReport(
            injected=len(entries),
            acked=len(acked_pairs),
            delivered=delivered,
            bounced=len(bounced_pairs & acked_pairs),
            acked_lost=len(lost),
            dup=sum(n - 1 for n in counts.values() if n > 1),
            truncated=truncated,
            phantom=phantom,
            unacked_delivered=sum(1 for p in counts if p not in acked_pairs),
            lost_pairs=tuple(lost),
            dup_pairs=tuple(dups),
        )
        if echo:
            print(report.summary())
        return report
