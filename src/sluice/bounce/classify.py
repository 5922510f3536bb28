"""Bounce classification: an SMTP reply (text and RFC 3463 status) → a PowerMTA bounce category.

A :class:`Classifier` holds an ordered list of :class:`Rule` (compiled regex → category). As in
PowerMTA's ``<bounce-category-patterns>`` (powermta.md §4.3) the rules are tried top-down and
the first rule whose regex is found in the diagnostic text *or* in the status code wins; the
last built-in rule is the catch-all ``//`` → ``other``. The built-in rules follow the order of
PowerMTA's stock list: reply-text rules first (spam, virus, content, quota, inactive mailbox,
bad mailbox, relaying, bad domain, policy, protocol, routing), then status-code rules
(``^5\\.1\\.1`` …), then the catch-all. They are Sluice's own regexes and match regardless of
case; rules from the configuration are used exactly as written (case-sensitive unless the
pattern says ``(?i)``) and go *before* the built-ins, so a configured list ending in ``//``
replaces them entirely, as in PowerMTA.

Also here: :class:`Phase` (where in the SMTP dialogue a reply came) and
:func:`dsn_status_for`, the RFC 3463 status to report when the remote gave no enhanced code.

Public names: Category, Phase, Rule, Classifier, DEFAULT_RULES, dsn_status_for,
normalize_status, and the local status constants STATUS_*.
Raises: ValueError (unknown category name, a pattern that does not compile, a reply code
outside 2xx/4xx/5xx).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "DEFAULT_RULES",
    "STATUS_CONNECTION_LOST",
    "STATUS_DNS_TEMPFAIL",
    "STATUS_EXPIRED",
    "STATUS_NO_ANSWER",
    "STATUS_NO_SUCH_DOMAIN",
    "STATUS_NULL_MX",
    "STATUS_ROUTING_LOOP",
    "Category",
    "Classifier",
    "Phase",
    "Rule",
    "dsn_status_for",
    "normalize_status",
]


class Category(enum.Enum):
    """PowerMTA's bounce categories (powermta.md §4.2), valued by their configuration names."""

    #: Remote host misconfigured (X.3.5).
    BAD_CONFIGURATION = "bad-configuration"
    #: Connection problems with the remote host (X.4.2).
    BAD_CONNECTION = "bad-connection"
    #: Recipient domain invalid or non-existent (X.1.2, null MX).
    BAD_DOMAIN = "bad-domain"
    #: Recipient address bad, invalid or non-existent (X.1.1).
    BAD_MAILBOX = "bad-mailbox"
    #: Refused for the message's content.
    CONTENT_RELATED = "content-related"
    #: Recipient mailbox disabled, expired or inactive.
    INACTIVE_MAILBOX = "inactive-mailbox"
    #: The sender's domain or address is invalid (X.1.7, X.1.8).
    INVALID_SENDER = "invalid-sender"
    #: Not delivered before ``bounce-after`` (X.4.7).
    MESSAGE_EXPIRED = "message-expired"
    #: The remote host did not answer (X.4.1).
    NO_ANSWER_FROM_HOST = "no-answer-from-host"
    #: Anything no rule recognised.
    OTHER = "other"
    #: Refused for a general policy reason (X.7.1).
    POLICY_RELATED = "policy-related"
    #: SMTP syntax or sequence errors.
    PROTOCOL_ERRORS = "protocol-errors"
    #: Mailbox over quota or full.
    QUOTA_ISSUES = "quota-issues"
    #: The remote refuses to relay.
    RELAYING_ISSUES = "relaying-issues"
    #: The recipient domain's mail routing is broken (X.4.4, X.4.6).
    ROUTING_ERRORS = "routing-errors"
    #: Refused as spam, or because of a block list.
    SPAM_RELATED = "spam-related"
    #: Refused because of a virus.
    VIRUS_RELATED = "virus-related"
    #: Not a bounce: a 2.x.x status (what ``d`` records carry).
    SUCCESS = "success"

    @classmethod
    def parse(cls, name: str) -> Category:
        """The category named ``name`` (case-insensitive). Raises ValueError if unknown."""
        try:
            return cls(name.strip().lower())
        except ValueError:
            known = ", ".join(c.value for c in cls)
            raise ValueError(f"unknown bounce category {name!r}; one of: {known}") from None


class Phase(enum.Enum):
    """The point of the SMTP dialogue (RFC 5321 §3) at which a reply or failure arrived."""

    #: Opening the connection or TLS; there is no reply.
    CONNECT = "connect"
    #: The 220 greeting.
    GREETING = "greeting"
    #: EHLO / HELO (and STARTTLS, AUTH).
    HELO = "helo"
    #: MAIL FROM.
    MAIL = "mail"
    #: RCPT TO.
    RCPT = "rcpt"
    #: DATA (the 354 step) or BDAT.
    DATA = "data"
    #: The reply to the final dot (or the last BDAT): the message as a whole.
    DOT = "dot"


# --- RFC 3463 statuses for failures Sluice decides itself -----------------------------------

#: RFC 3463 §3.5 X.4.1: no answer from host (connect refused or timed out).
STATUS_NO_ANSWER = "4.4.1"
#: RFC 3463 §3.5 X.4.2: bad connection (lost mid-session).
STATUS_CONNECTION_LOST = "4.4.2"
#: RFC 3463 §3.5 X.4.3: routing server failure (DNS SERVFAIL or timeout).
STATUS_DNS_TEMPFAIL = "4.4.3"
#: RFC 3463 §3.2 X.1.2: bad destination system address (NXDOMAIN).
STATUS_NO_SUCH_DOMAIN = "5.1.2"
#: RFC 7505 §4.2: the domain publishes a null MX.
STATUS_NULL_MX = "5.1.10"
#: RFC 3463 §3.5 X.4.6: routing loop detected (MX points back at us, hop limit).
STATUS_ROUTING_LOOP = "5.4.6"
#: RFC 3463 §3.5 X.4.7: delivery time expired (``bounce-after``).
STATUS_EXPIRED = "4.4.7"

#: RFC 3463 §2: class "." subject "." detail, each subject/detail 1-3 digits.
_STATUS_RE = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})")

#: A reply line that starts with its code and an enhanced status: ``550 5.1.1 ...``.
_REPLY_STATUS_RE = re.compile(r"\s*[245]\d\d[ -]([245]\.\d{1,3}\.\d{1,3})(?:\s|$)")

#: Statuses for a reply without an enhanced code, by (phase, reply code). Sluice's choice, after
#: RFC 3463 §3 and the meanings RFC 5321 §4.2.2-§4.2.3 give the codes; anything not listed
#: gets ``class.0.0``.
_DEFAULT_STATUS: dict[tuple[Phase, int], str] = {
    # The greeting: 421/554 mean "this system is not accepting network messages".
    (Phase.GREETING, 421): "4.3.2",
    (Phase.GREETING, 554): "5.3.2",
    # MAIL FROM: problems with the sender's address.
    (Phase.MAIL, 550): "5.1.8",
    (Phase.MAIL, 553): "5.1.7",
    (Phase.MAIL, 452): "4.3.1",
    (Phase.MAIL, 552): "5.3.4",
    # RCPT TO: problems with the recipient's mailbox.
    (Phase.RCPT, 450): "4.2.0",
    (Phase.RCPT, 451): "4.3.0",
    (Phase.RCPT, 452): "4.5.3",  # RFC 5321 §4.5.3.1.10: 452 = too many recipients
    (Phase.RCPT, 550): "5.1.1",
    (Phase.RCPT, 551): "5.1.6",
    (Phase.RCPT, 552): "5.2.2",
    (Phase.RCPT, 553): "5.1.3",  # 5.1.1 when smtp-553-means-invalid-mailbox (the default)
    # After the data: the message as a whole.
    (Phase.DATA, 552): "5.3.4",
    (Phase.DOT, 552): "5.3.4",
    (Phase.DOT, 451): "4.3.0",
    (Phase.DOT, 452): "4.3.1",
}

#: RFC 3463 §3.6: protocol errors, whatever the phase.
_PROTOCOL_STATUS: dict[int, str] = {
    500: "5.5.2",
    501: "5.5.4",
    502: "5.5.1",
    503: "5.5.1",
    504: "5.5.4",
    421: "4.3.2",
}


def normalize_status(status: str | None, reply_code: int | None = None) -> str | None:
    """The bare ``c.s.d`` at the start of ``status`` (``5.1.1 (bad ...)`` → ``5.1.1``), or None.

    With ``reply_code`` (2xx, 4xx or 5xx), a status whose class disagrees with the code's class
    takes the code's class (RFC 3463 §2: the class must match the reply).
    """
    if not status:
        return None
    m = _STATUS_RE.match(status.strip())
    if m is None:
        return None
    rest = status.strip()[m.end() :]
    if rest and not rest[0].isspace():
        return None
    klass = m.group(1)
    if reply_code is not None and reply_code // 100 in (2, 4, 5):
        klass = str(reply_code // 100)
    return f"{klass}.{int(m.group(2))}.{int(m.group(3))}"


def dsn_status_for(
    reply_code: int,
    enhanced: str | None,
    phase: Phase,
    *,
    smtp_553_means_invalid_mailbox: bool = True,
) -> str:
    """The RFC 3463 status to report for a reply: its own enhanced code when it has one.

    Without one, a default chosen by phase and code: 550 at RCPT → 5.1.1, 553 at RCPT →
    5.1.1 (``smtp-553-means-invalid-mailbox``, default yes; else 5.1.3), 552 at RCPT → 5.2.2,
    452 at RCPT → 4.5.3, 550 at MAIL → 5.1.8, 5xx greeting → 5.3.2, 500-504 → 5.5.x, any
    other → ``class.0.0``. Raises ValueError for a code outside 200-299, 400-599.
    """
    klass = reply_code // 100
    if klass not in (2, 4, 5) or not 200 <= reply_code <= 599:
        raise ValueError(f"reply code {reply_code} has no delivery status")
    given = normalize_status(enhanced, reply_code)
    if given is not None:
        return given
    if klass == 2:
        return "2.0.0"
    if phase is Phase.RCPT and reply_code == 553 and smtp_553_means_invalid_mailbox:
        return "5.1.1"
    status = _DEFAULT_STATUS.get((phase, reply_code)) or _PROTOCOL_STATUS.get(reply_code)
    return status or f"{klass}.0.0"


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """One ``/regex/ category`` line: the regex is searched in the text and in the status."""

    pattern: re.Pattern[str]
    category: Category

    def matches(self, text: str, status: str) -> bool:
        return self.pattern.search(text) is not None or (
            bool(status) and self.pattern.search(status) is not None
        )


def _rules(flags: int, table: Iterable[tuple[str, Category]]) -> tuple[Rule, ...]:
    return tuple(Rule(pattern=re.compile(rx, flags), category=cat) for rx, cat in table)


_C = Category
#: Reply-text rules, in the stock order (powermta.md §4.3 step 1); matched ignoring case.
_TEXT_RULES: tuple[tuple[str, Category], ...] = (
    # spam and block lists
    (r"spam", _C.SPAM_RELATED),
    (r"junk[\s-]*(?:e-?)?mail", _C.SPAM_RELATED),
    (r"black[\s-]?list", _C.SPAM_RELATED),
    (r"\bblocked\b", _C.SPAM_RELATED),
    (r"(?-i:\bU\.?C\.?E\b)", _C.SPAM_RELATED),
    (r"\badv(?:ertisements?|ertising)?\b", _C.SPAM_RELATED),
    (r"unsolicited", _C.SPAM_RELATED),
    (r"\b(?:open|dns)?rbl\b", _C.SPAM_RELATED),
    (r"real[\s-]?time\s+black[\s-]?hole", _C.SPAM_RELATED),
    # viruses
    (r"\bvirus(?:es)?\b|\bmalware\b", _C.VIRUS_RELATED),
    # content
    (r"message\s+content|content\s+(?:was\s+)?rejected", _C.CONTENT_RELATED),
    # quota
    (r"quota", _C.QUOTA_ISSUES),
    (r"limit\s+(?:has\s+been\s+)?exceeded", _C.QUOTA_ISSUES),
    (r"mail\s*box\s+(?:is\s+)?(?:full|over)", _C.QUOTA_ISSUES),
    (r"\bstorage\b", _C.QUOTA_ISSUES),
    # disabled, expired, inactive mailboxes
    (
        r"\b(?:mail\s*box|account|user|address|recipient)\b[^.;]{0,60}?"
        r"\b(?:disabled|inactive|deactivated|suspended|expired|closed)\b",
        _C.INACTIVE_MAILBOX,
    ),
    (
        r"\b(?:disabled|inactive|deactivated|suspended|expired|closed)\s+"
        r"(?:mail\s*box|account|user|address|recipient)",
        _C.INACTIVE_MAILBOX,
    ),
    # "too many invalid recipients" is about the session, not one mailbox
    (
        r"too\s+many\s+(?:bad|invalid|unknown|illegal|unavailable|non-?existent)\s+"
        r"(?:users?|mail\s*box(?:es)?|recipients?|rcpts?|addresses)",
        _C.OTHER,
    ),
    # the sender's own address or domain is at fault
    (
        r"\bsender\b[^.;]{0,40}?(?:domain\s+(?:not\s+found|(?:is\s+)?unknown|"
        r"does\s*n[o']t\s+exist)|unresolvable|unverifiable|no\s+(?:mx|dns)\b)",
        _C.INVALID_SENDER,
    ),
    # "domain not found" would otherwise read as a bad mailbox below ("address ... not found")
    (r"domain\s+(?:name\s+)?(?:not\s+found|does\s*n[o']t\s+exist)", _C.BAD_DOMAIN),
    # bad mailboxes
    (
        r"\b(?:no\s+such|bad|invalid|unknown|illegal|unavailable|non-?existent)\s+"
        r"(?:local\s+)?(?:user|mail\s*box|recipient|rcpt|address|account|e-?mail)",
        _C.BAD_MAILBOX,
    ),
    (
        r"\b(?:user|mail\s*box|recipient|rcpt|address|account)\b[^.;]{0,60}?"
        r"(?:not\s+found|does\s*n[o']t\s+exist|not\s+exist|\bunknown\b|\bunavailable\b)",
        _C.BAD_MAILBOX,
    ),
    (r"no\s+mail\s*box\s+here\s+by\s+that\s+name", _C.BAD_MAILBOX),
    (r"does\s*(?:n[o']t|\s+not)\s+have\s+an?\s+(?:[\w.-]+\s+)?account", _C.BAD_MAILBOX),
    (r"not\s+our\s+customer", _C.BAD_MAILBOX),
    (r"no\s+longer\s+(?:valid|available)", _C.BAD_MAILBOX),
    # relaying
    (r"\brelay(?:ing)?\b", _C.RELAYING_ISSUES),
    # bad domains
    (
        r"domain\s+(?:name\s+)?(?:is\s+)?(?:retired|bad|invalid|unknown|illegal|unavailable)",
        _C.BAD_DOMAIN,
    ),
    (r"domain\s+(?:is\s+)?no\s+longer\s+in\s+use", _C.BAD_DOMAIN),
    (r"domain\b[^.;]{0,40}?\bobsolete", _C.BAD_DOMAIN),
    (r"no\s+such\s+domain", _C.BAD_DOMAIN),
    # policy
    (
        r"\b(?:denied|prohibit(?:ed)?|reject(?:ed)?|refused|allowed|banned|polic(?:y|ies)|"
        r"suspicious\s+activity)\b",
        _C.POLICY_RELATED,
    ),
    # protocol
    (r"bad\s+sequence|out\s+of\s+sequence|syntax\s+error", _C.PROTOCOL_ERRORS),
    # routing
    (r"\b(?:route|unroutable|unrouteable)\b", _C.ROUTING_ERRORS),
)

#: Status-code rules (powermta.md §4.3 step 2 and its common extensions); anchored at the start
#: so they only fire on the status, never inside the reply text (which begins with the code).
_STATUS_RULES: tuple[tuple[str, Category], ...] = (
    (r"^2\.\d{1,3}\.\d{1,3}", _C.SUCCESS),
    (r"^[45]\.1\.1(?!\d)", _C.BAD_MAILBOX),
    (r"^[45]\.1\.(?:2|10)(?!\d)", _C.BAD_DOMAIN),
    (r"^[45]\.1\.[78](?!\d)", _C.INVALID_SENDER),
    (r"^[45]\.1\.\d", _C.BAD_MAILBOX),
    (r"^[45]\.2\.1(?!\d)", _C.INACTIVE_MAILBOX),
    (r"^[45]\.2\.[2-9]", _C.QUOTA_ISSUES),
    (r"^[45]\.3\.5(?!\d)", _C.BAD_CONFIGURATION),
    (r"^[45]\.4\.1(?!\d)", _C.NO_ANSWER_FROM_HOST),
    (r"^[45]\.4\.2(?!\d)", _C.BAD_CONNECTION),
    (r"^[45]\.4\.[46](?!\d)", _C.ROUTING_ERRORS),
    (r"^[45]\.4\.7(?!\d)", _C.MESSAGE_EXPIRED),
    (r"^[45]\.5\.[0125](?!\d)", _C.PROTOCOL_ERRORS),
    (r"^[45]\.6\.\d", _C.CONTENT_RELATED),
    (r"^[45]\.7\.\d", _C.POLICY_RELATED),
)

#: The built-in rule set: text rules, status rules, then ``//`` → other.
DEFAULT_RULES: tuple[Rule, ...] = (
    *_rules(re.IGNORECASE, _TEXT_RULES),
    *_rules(0, _STATUS_RULES),
    Rule(pattern=re.compile(""), category=Category.OTHER),
)


class Classifier:
    """An ordered rule list; :meth:`classify` returns the category of the first rule that matches.

    Immutable: :meth:`with_patterns` returns a new classifier.
    """

    __slots__ = ("_rules",)

    def __init__(self, rules: Iterable[Rule] = DEFAULT_RULES) -> None:
        self._rules = tuple(rules)

    @property
    def rules(self) -> tuple[Rule, ...]:
        return self._rules

    @classmethod
    def default(cls) -> Classifier:
        """The built-in rules only."""
        return _DEFAULT

    @classmethod
    def from_config(cls, patterns: Iterable[tuple[re.Pattern[str] | str, str]]) -> Classifier:
        """The configured ``<bounce-category-patterns>`` followed by the built-in rules."""
        return _DEFAULT.with_patterns(patterns)

    def with_patterns(self, patterns: Iterable[tuple[re.Pattern[str] | str, str]]) -> Classifier:
        """A classifier with ``(regex, category-name)`` rules put in front of this one's.

        A string regex may be written bare or as ``/regex/`` and is compiled as is
        (case-sensitive). Raises ValueError for an unknown category or a regex that does not
        compile.
        """
        added: list[Rule] = []
        for pattern, name in patterns:
            added.append(Rule(pattern=_compile(pattern), category=Category.parse(name)))
        return Classifier((*added, *self._rules))

    def classify(self, text: str, status: str | None = None) -> Category:
        """The category for a reply ``text`` (e.g. ``550 5.1.1 user unknown``) and ``status``.

        Without ``status``, the enhanced code after the reply code in ``text`` is used, if any.
        Never raises; with no rule matching (a list without the catch-all) the answer is
        ``other``.
        """
        bare = normalize_status(status)
        if bare is None:
            m = _REPLY_STATUS_RE.match(text)
            bare = normalize_status(m.group(1)) if m is not None else None
        for rule in self._rules:
            if rule.matches(text, bare or ""):
                return rule.category
        return Category.OTHER


def _compile(pattern: re.Pattern[str] | str) -> re.Pattern[str]:
    if isinstance(pattern, re.Pattern):
        return pattern
    text = pattern.strip()
    if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
        text = text[1:-1]
    try:
        return re.compile(text)
    except (re.error, RecursionError, OverflowError) as exc:
        raise ValueError(f"bounce pattern /{text}/ does not compile: {exc}") from None


_DEFAULT = Classifier(DEFAULT_RULES)
