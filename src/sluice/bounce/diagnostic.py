"""What happened to one recipient, as DSNs and accounting records report it.

A :class:`Diagnostic` is the verdict of a delivery attempt (or of expiry) on one recipient: the
RFC 3463 status, the reply line, whether the reply came from the remote MTA, and which MTA that
was. DSNs (``dsn.py``) and accounting fields (``accounting.py``) are both written from it, and
the :class:`~sluice.bounce.classify.Classifier` turns it into a bounce category.
:class:`DsnAction` is RFC 3464's Action field.

Public names: DsnAction, Diagnostic (``from_reply``, ``from_text``, ``local``, ``expired``,
``reply``, ``category``), LOCAL_REPLY_CODE.
Raises: ValueError (a status that is not RFC 3463, a reply code outside 2xx/4xx/5xx).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sluice.bounce.classify import (
    STATUS_EXPIRED,
    Category,
    Classifier,
    Phase,
    dsn_status_for,
    normalize_status,
)

__all__ = ["LOCAL_REPLY_CODE", "Diagnostic", "DsnAction"]


class DsnAction(enum.Enum):
    """RFC 3464 §2.3.3 Action values (also PowerMTA's ``dsnAction`` column)."""

    #: Permanently undeliverable, or expired.
    FAILED = "failed"
    #: Not delivered yet; still being retried.
    DELAYED = "delayed"
    #: Delivered to an MTA that accepted responsibility and speaks DSN (it reports further).
    DELIVERED = "delivered"
    #: Handed to an MTA that does not offer DSN: no further reports will come.
    RELAYED = "relayed"


#: The reply code written in front of a verdict Sluice reached itself (expiry, DNS, connect
#: failure), so that ``dsnDiag`` always reads ``smtp;CODE STATUS text`` like a remote reply:
#: RFC 5321 §4.2.3 554 "transaction failed" and 451 "local error in processing".
LOCAL_REPLY_CODE: dict[int, int] = {2: 250, 4: 451, 5: 554}
#: The marker that shows a reply line was made up locally, not received.
_LOCAL_MARK = "[internal]"

#: ``CODE[-| ]text`` at the start of a reply line as the scheduler keeps it.
_REPLY_LINE_RE = re.compile(r"([245]\d\d)(?:[ -]|$)")
_ENHANCED_RE = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)")
_SPACE_RE = re.compile(r"[\x00-\x20\x7f]+")


def _one_line(text: str) -> str:
    """Collapse CR, LF, tabs, NUL and runs of spaces into single spaces."""
    return _SPACE_RE.sub(" ", text).strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnostic:
    """The verdict on one recipient: RFC 3463 status plus the reply that led to it.

    ``text`` is the reply text on one line, without reply code or enhanced code. ``code`` is
    the remote's reply code, or None when Sluice decided without a reply (the diagnostic is
    then *local*). ``category`` forces a bounce category (expiry sets message-expired).
    """

    status: str
    text: str = ""
    code: int | None = None
    remote_mta: str = ""
    remote_ip: str = ""
    category: Category | None = None

    def __post_init__(self) -> None:
        bare = normalize_status(self.status)
        if bare is None or bare != self.status:
            raise ValueError(f"not an RFC 3463 status: {self.status!r}")
        if self.code is not None and not (
            200 <= self.code <= 599 and self.code // 100 in (2, 4, 5)
        ):
            raise ValueError(f"reply code {self.code} has no delivery status")

    # --- construction ------------------------------------------------------------------------

    @classmethod
    def from_reply(
        cls,
        code: int,
        enhanced: str | None,
        lines: str | Sequence[str],
        phase: Phase,
        *,
        remote_mta: str = "",
        remote_ip: str = "",
        smtp_553_means_invalid_mailbox: bool = True,
    ) -> Diagnostic:
        """A remote reply: ``code``, its enhanced code (or None) and text line(s) without codes.

        The status is the enhanced code, or :func:`~sluice.bounce.classify.dsn_status_for`'s
        default for the phase. Several lines are joined with single spaces.
        """
        text = lines if isinstance(lines, str) else " ".join(lines)
        status = dsn_status_for(
            code,
            enhanced,
            phase,
            smtp_553_means_invalid_mailbox=smtp_553_means_invalid_mailbox,
        )
        return cls(
            status=status,
            text=_one_line(text),
            code=code,
            remote_mta=remote_mta,
            remote_ip=remote_ip,
        )

    @classmethod
    def from_text(
        cls,
        reply: str,
        phase: Phase,
        *,
        local_status: str,
        remote_mta: str = "",
        remote_ip: str = "",
        smtp_553_means_invalid_mailbox: bool = True,
    ) -> Diagnostic:
        """Parse a reply as text (``550 5.1.1 user unknown``, multi-line with CRLF/LF, or
        ``550-5.1.1 a\\n550 5.1.1 b``); text that does not start with a reply code is a local
        description (``connection refused``) and gets ``local_status``.
        """
        raw_lines = [ln for ln in reply.replace("\r", "\n").split("\n") if ln.strip()]
        first = _REPLY_LINE_RE.match(raw_lines[0].strip()) if raw_lines else None
        if first is None:
            return cls.local(local_status, reply, remote_mta=remote_mta, remote_ip=remote_ip)
        code = int(first.group(1))
        texts: list[str] = []
        enhanced: str | None = None
        for i, raw in enumerate(raw_lines):
            line = raw.strip()
            m = _REPLY_LINE_RE.match(line)
            body = line[m.end() :] if m is not None and int(m.group(1)) == code else line
            e = _ENHANCED_RE.match(body)
            if e is not None and (i == 0 or e.group(1) == enhanced):
                if i == 0:
                    enhanced = e.group(1)
                body = body[e.end() :]
            texts.append(body)
        return cls.from_reply(
            code,
            enhanced,
            texts,
            phase,
            remote_mta=remote_mta,
            remote_ip=remote_ip,
            smtp_553_means_invalid_mailbox=smtp_553_means_invalid_mailbox,
        )

    @classmethod
    def local(
        cls,
        status: str,
        text: str,
        *,
        remote_mta: str = "",
        remote_ip: str = "",
        category: Category | None = None,
    ) -> Diagnostic:
        """A verdict Sluice reached without a reply: DNS failure, refused connection, null MX."""
        return cls(
            status=status,
            text=_one_line(text),
            remote_mta=remote_mta,
            remote_ip=remote_ip,
            category=category,
        )

    @classmethod
    def expired(cls, last: Diagnostic | None = None) -> Diagnostic:
        """Expiry (``bounce-after``): status 4.4.7, category message-expired, naming the last
        error seen (and its MTA) when there was one."""
        text = "message expired before it could be delivered"
        if last is not None and (last.text or last.code is not None):
            text = f"{text}; last error: {last.reply}"
        return cls(
            status=STATUS_EXPIRED,
            text=text,
            remote_mta=last.remote_mta if last is not None else "",
            remote_ip=last.remote_ip if last is not None else "",
            category=Category.MESSAGE_EXPIRED,
        )

    # --- views -------------------------------------------------------------------------------

    @property
    def is_remote(self) -> bool:
        """True when the status and text come from a reply of the remote MTA."""
        return self.code is not None

    @property
    def is_success(self) -> bool:
        return self.status.startswith("2.")

    @property
    def is_permanent(self) -> bool:
        return self.status.startswith("5.")

    @property
    def reply(self) -> str:
        """One line ``CODE STATUS text``: the remote reply, or a local one made up as
        ``554 5.1.2 [internal] text`` (:data:`LOCAL_REPLY_CODE`)."""
        if self.code is not None:
            return f"{self.code} {self.status} {self.text}".rstrip()
        code = LOCAL_REPLY_CODE[int(self.status[0])]
        return f"{code} {self.status} {_LOCAL_MARK} {self.text}".rstrip()

    def classify(self, classifier: Classifier) -> Category:
        """The bounce category: a forced one (expiry), ``success`` for a 2.x.x status, else the
        classifier's verdict on :attr:`reply` and :attr:`status`."""
        if self.category is not None:
            return self.category
        if self.is_success:
            return Category.SUCCESS
        return classifier.classify(self.reply, self.status)
