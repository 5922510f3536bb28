"""Reply rules: what a queue does when a remote reply or a connection failure matches.

PowerMTA's ``<smtp-pattern-list>`` (``reply /re/ mode=backoff …``, powermta.md §3.2) and the
seed's inline rules (``421 RP-001 *, 1h, 5, 1000``, §12) are both a :class:`ReplyRule`; the
daemon builds them from the configuration model (this package never reads the configuration)
and puts them, in file order, in ``QueueSettings.reply_rules``. The scheduler runs them on
every reply text that ``report`` and ``connection_failed`` see: the first rule that matches
wins and its actions apply at once.

Matching: a rule with ``code`` and ``literal`` (the seed's form) matches a reply that starts
with the code and contains the literal after it (case-sensitive); otherwise its ``pattern`` is
searched in the reply text (code included, e.g. ``421 RP-001 …``, or a local text such as
``connection refused``).

Public names: ReplyRule, first_match. ``ReplyRule`` raises ``ValueError`` when it has neither
a pattern nor a code and literal, or impossible numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sluice.sched.throttle import RateLimit

__all__ = ["ReplyRule", "first_match"]

#: ``never`` as a duration.
NEVER = float("inf")


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplyRule:
    """One reply rule and its actions.

    ``mode`` is ``"backoff"``, ``"normal"`` or None (no mode change). For ``mode="backoff"``,
    ``to_normal_after`` (seconds, ``inf`` = never) replaces the queue's
    ``backoff-to-normal-after``, and ``max_smtp_out`` / ``max_msg_rate`` replace its
    ``backoff-max-smtp-out`` / ``backoff-max-msg-rate`` while this rule keeps the queue in
    backoff. ``disable_source_ip`` stops the queue using the connection's source IP for
    ``reenable_after`` seconds (else the queue's ``reenable-source-ip-after``).
    """

    #: Regular expression searched in the reply (``reply /re/``).
    pattern: re.Pattern[str] | None = None
    #: The seed's form: reply code (``421``) and literal text after it (``RP-001``).
    code: str | None = None
    literal: str | None = None
    mode: str | None = None
    to_normal_after: float | None = None
    max_smtp_out: int | None = None
    max_msg_rate: RateLimit | None = None
    disable_source_ip: bool = False
    reenable_after: float | None = None
    #: The rule as written, for the monitor ("421 RP-001 *, 1h, 5, 1000").
    text: str = ""

    def __post_init__(self) -> None:
        if self.pattern is None and (self.code is None or self.literal is None):
            raise ValueError("a reply rule needs a pattern, or a code and a literal")
        if self.mode not in (None, "backoff", "normal"):
            raise ValueError("mode is 'backoff', 'normal' or None")
        for name, value in (
            ("to_normal_after", self.to_normal_after),
            ("reenable_after", self.reenable_after),
            ("max_smtp_out", self.max_smtp_out),
        ):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0")

    def matches(self, reply: str) -> bool:
        """True when ``reply`` (code included) matches this rule."""
        if self.code is not None and self.literal is not None:
            return reply.startswith(self.code) and self.literal in reply[len(self.code) :]
        assert self.pattern is not None
        return self.pattern.search(reply) is not None

    def describe(self) -> str:
        """The actions, as the monitor shows them."""
        parts: list[str] = []
        if self.mode is not None:
            parts.append(f"mode={self.mode}")
        if self.to_normal_after is not None:
            parts.append(f"backoff-to-normal-after={_dur(self.to_normal_after)}")
        if self.max_smtp_out is not None:
            parts.append(f"max-smtp-out={self.max_smtp_out}")
        if self.max_msg_rate is not None:
            parts.append(f"max-msg-rate={self.max_msg_rate}")
        if self.disable_source_ip:
            parts.append("disable-source-ip")
            if self.reenable_after is not None:
                parts.append(f"reenable-after={_dur(self.reenable_after)}")
        return " ".join(parts)


def _dur(seconds: float) -> str:
    return "never" if seconds == NEVER else f"{seconds:g}s"


def first_match(rules: Iterable[ReplyRule], reply: str) -> ReplyRule | None:
    """The first rule matching ``reply``, or None (an empty reply matches nothing)."""
    if not reply:
        return None
    for rule in rules:
        if rule.matches(reply):
            return rule
    return None
