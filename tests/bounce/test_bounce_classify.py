"""Bounce classification: built-in rules, status defaults, configured patterns."""

from __future__ import annotations

import re

import pytest

from sluice.bounce import (
    DEFAULT_RULES,
    STATUS_CONNECTION_LOST,
    STATUS_DNS_TEMPFAIL,
    STATUS_NO_ANSWER,
    STATUS_NO_SUCH_DOMAIN,
    STATUS_NULL_MX,
    STATUS_ROUTING_LOOP,
    Category,
    Classifier,
    Diagnostic,
    Phase,
    dsn_status_for,
    normalize_status,
)

C = Category

GMAIL_NO_SUCH_USER = (
    "550-5.1.1 The email account that you tried to reach does not exist. Please try\r\n"
    "550-5.1.1 double-checking the recipient's email address for typos or\r\n"
    "550 5.1.1 unnecessary spaces. For more information, go to\r\n"
    "550 5.1.1  https://support.google.com/mail/?p=NoSuchUser d2-20020a05 - gsmtp"
)
MICROSOFT_S3150 = (
    "550 5.7.1 Unfortunately, messages from [192.0.2.10] weren't sent. Please contact your "
    "Internet service provider since part of their network is on our block list (S3150). "
    "You can also refer your provider to http://mail.live.com/mail/troubleshooting.aspx#errors."
)

#: (reply as the scheduler keeps it, phase, expected status, expected category)
REMOTE_CASES: list[tuple[str, Phase, str, Category]] = [
    # bad-mailbox
    (GMAIL_NO_SUCH_USER, Phase.RCPT, "5.1.1", C.BAD_MAILBOX),
    ("550 5.1.1 <x@example.test>: Recipient address rejected: User unknown in virtual "
     "mailbox table", Phase.RCPT, "5.1.1", C.BAD_MAILBOX),
    ("550 No such user here", Phase.RCPT, "5.1.1", C.BAD_MAILBOX),
    ("550 Requested action not taken", Phase.RCPT, "5.1.1", C.BAD_MAILBOX),
    ("550 5.5.0 Requested action not taken: mailbox unavailable (S2017062302)", Phase.RCPT,
     "5.5.0", C.BAD_MAILBOX),
    ("511 sorry, no mailbox here by that name (#5.1.1)", Phase.RCPT, "5.0.0", C.BAD_MAILBOX),
    ("554 delivery error: dd This user doesn't have a yahoo.com account (x@yahoo.com) [0] - "
     "mta1.mail.yahoo.com", Phase.DOT, "5.0.0", C.BAD_MAILBOX),
    # inactive-mailbox
    ("550-5.2.1 The email account that you tried to reach is disabled. Learn more at\n"
     "550 5.2.1 https://support.google.com/mail/?p=DisabledUser z1 - gsmtp",
     Phase.RCPT, "5.2.1", C.INACTIVE_MAILBOX),
    ("550 5.2.1 Mailbox disabled for this recipient", Phase.RCPT, "5.2.1",
     C.INACTIVE_MAILBOX),
    # quota-issues
    ("452-4.2.2 The email account that you tried to reach is over quota. Please direct\n"
     "452 4.2.2 the recipient to https://support.google.com/mail/?p=OverQuotaTemp - gsmtp",
     Phase.RCPT, "4.2.2", C.QUOTA_ISSUES),
    ("552 5.2.2 Mailbox full", Phase.RCPT, "5.2.2", C.QUOTA_ISSUES),
    ("552 Requested mail action aborted", Phase.RCPT, "5.2.2", C.QUOTA_ISSUES),
    ("452 4.3.1 Insufficient system storage", Phase.DOT, "4.3.1", C.QUOTA_ISSUES),
    # spam-related
    ("554 5.7.1 Service unavailable; Client host [192.0.2.10] blocked using zen.spamhaus.org",
     Phase.RCPT, "5.7.1", C.SPAM_RELATED),
    ("550 5.7.350 Remote server returned message detected as spam", Phase.DOT, "5.7.350",
     C.SPAM_RELATED),
    ("550-5.7.26 This mail has been blocked because the sender is unauthenticated.",
     Phase.DOT, "5.7.26", C.SPAM_RELATED),
    ("554 Your IP is listed on a realtime blackhole list", Phase.GREETING, "5.3.2",
     C.SPAM_RELATED),
    ("550 Message refused: UCE", Phase.DOT, "5.0.0", C.SPAM_RELATED),
    # policy-related: S3150 says "block list", which the stock order does not count as spam,
    # so its 5.7.1 decides.
    (MICROSOFT_S3150, Phase.RCPT, "5.7.1", C.POLICY_RELATED),
    ("550 5.7.1 Message rejected due to local policy", Phase.DOT, "5.7.1", C.POLICY_RELATED),
    ("550 5.7.606 Access denied, banned sending IP [192.0.2.10]", Phase.RCPT, "5.7.606",
     C.POLICY_RELATED),
    ("550 5.7.64 TenantAttribution; Relay Access Denied", Phase.RCPT, "5.7.64",
     C.RELAYING_ISSUES),
    ("421 4.7.0 [TSS04] Messages from 192.0.2.10 temporarily deferred due to unexpected "
     "volume or user complaints", Phase.RCPT, "4.7.0", C.POLICY_RELATED),
    # virus-related, content-related
    ("550 5.7.0 Virus detected: Eicar-Test-Signature", Phase.DOT, "5.7.0", C.VIRUS_RELATED),
    ("550 5.7.1 Message content rejected, id=1234", Phase.DOT, "5.7.1", C.CONTENT_RELATED),
    ("554 5.6.0 Malformed MIME header", Phase.DOT, "5.6.0", C.CONTENT_RELATED),
    # relaying-issues
    ("554 5.7.1 <x@example.test>: Relay access denied", Phase.RCPT, "5.7.1",
     C.RELAYING_ISSUES),
    ("550 relaying not permitted", Phase.RCPT, "5.1.1", C.RELAYING_ISSUES),
    # bad-domain
    ("550 5.1.2 Host unknown (Name server: nowhere.test: host not found)", Phase.RCPT,
     "5.1.2", C.BAD_DOMAIN),
    ("550 5.1.2 <x@nowhere.test>: Recipient address rejected: Domain not found",
     Phase.RCPT, "5.1.2", C.BAD_DOMAIN),
    ("554 domain is no longer in use", Phase.RCPT, "5.0.0", C.BAD_DOMAIN),
    # invalid-sender
    ("553 5.1.8 <a@x.test>: Sender address rejected: Domain not found", Phase.MAIL, "5.1.8",
     C.INVALID_SENDER),
    ("550 5.1.7 Unverified return path", Phase.MAIL, "5.1.7", C.INVALID_SENDER),
    ("550 Return path rejected", Phase.MAIL, "5.1.8", C.POLICY_RELATED),
    # protocol-errors
    ("503 5.5.1 Bad sequence of commands", Phase.DATA, "5.5.1", C.PROTOCOL_ERRORS),
    ("501 Syntax error in parameters or arguments", Phase.MAIL, "5.5.4", C.PROTOCOL_ERRORS),
    ("500 5.5.2 Unrecognized command", Phase.HELO, "5.5.2", C.PROTOCOL_ERRORS),
    # routing-errors, bad-configuration, message-expired
    ("554 5.4.4 Unable to route", Phase.RCPT, "5.4.4", C.ROUTING_ERRORS),
    ("554 5.4.6 Hop count exceeded - possible mail loop", Phase.DOT, "5.4.6",
     C.ROUTING_ERRORS),
    ("554 5.3.5 System incorrectly configured", Phase.RCPT, "5.3.5", C.BAD_CONFIGURATION),
    ("451 4.4.7 Delivery time expired", Phase.DOT, "4.4.7", C.MESSAGE_EXPIRED),
    # other
    ("421 4.7.0 Too many invalid recipients, closing connection", Phase.RCPT, "4.7.0",
     C.OTHER),
    ("550 5.0.0 Something odd happened", Phase.DOT, "5.0.0", C.OTHER),
    ("451 Try again later", Phase.DOT, "4.3.0", C.OTHER),
    # success
    ("250 2.0.0 OK 1681081256 o17-20020a05622a0451 - gsmtp", Phase.DOT, "2.0.0", C.SUCCESS),
    ("250 ok dirdel", Phase.DOT, "2.0.0", C.SUCCESS),
    ("250 2.6.0 Queued; spam score 0.0", Phase.DOT, "2.6.0", C.SUCCESS),
]  # fmt: skip


@pytest.mark.parametrize(
    ("reply", "phase", "status", "category"),
    REMOTE_CASES,
    ids=[f"{c[3].value}-{i}" for i, c in enumerate(REMOTE_CASES)],
)
def test_remote_replies_classify_like_the_stock_list(
    reply: str, phase: Phase, status: str, category: Category
) -> None:
    diag = Diagnostic.from_text(reply, phase, local_status="4.0.0", remote_mta="mx.test")
    assert diag.is_remote
    assert diag.status == status
    assert diag.classify(Classifier.default()) is category


def test_every_category_is_covered_by_some_case() -> None:
    covered = {c[3] for c in REMOTE_CASES} | {c[2] for c in LOCAL_CASES}
    assert covered == set(Category)


#: (local status, description, expected category) for verdicts reached without a reply.
LOCAL_CASES: list[tuple[str, str, Category]] = [
    (STATUS_NO_ANSWER, "connect to 127.0.0.9:25: connection timed out", C.NO_ANSWER_FROM_HOST),
    (STATUS_CONNECTION_LOST, "lost connection with mx.test while sending RCPT TO",
     C.BAD_CONNECTION),
    (STATUS_DNS_TEMPFAIL, "DNS lookup of MX for servfail.test: SERVFAIL", C.OTHER),
    (STATUS_NO_SUCH_DOMAIN, "Host or domain name not found (NXDOMAIN nx.test)", C.BAD_DOMAIN),
    (STATUS_NULL_MX, "nullmx.test publishes a null MX", C.BAD_DOMAIN),
    (STATUS_ROUTING_LOOP, "MX for loop.test points back at this host", C.ROUTING_ERRORS),
]  # fmt: skip


@pytest.mark.parametrize(("status", "text", "category"), LOCAL_CASES)
def test_local_verdicts(status: str, text: str, category: Category) -> None:
    diag = Diagnostic.local(status, text)
    assert not diag.is_remote
    assert diag.classify(Classifier.default()) is category
    assert diag.reply.startswith(f"{'554' if status[0] == '5' else '451'} {status} [internal] ")


def test_expiry_is_message_expired_whatever_the_last_error_said() -> None:
    last = Diagnostic.from_text(
        "450 4.7.1 Client host rejected: blocked by policy", Phase.RCPT, local_status="4.0.0",
        remote_mta="mx.test", remote_ip="127.0.0.2",
    )  # fmt: skip
    assert last.classify(Classifier.default()) is C.SPAM_RELATED
    expired = Diagnostic.expired(last)
    assert expired.status == "4.4.7"
    assert expired.classify(Classifier.default()) is C.MESSAGE_EXPIRED
    assert "450 4.7.1 Client host rejected" in expired.text
    assert (expired.remote_mta, expired.remote_ip) == ("mx.test", "127.0.0.2")
    bare = Diagnostic.expired()
    assert bare.classify(Classifier.default()) is C.MESSAGE_EXPIRED
    assert bare.reply == "451 4.4.7 [internal] message expired before it could be delivered"


# --- status defaults ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "enhanced", "phase", "expected"),
    [
        (550, None, Phase.RCPT, "5.1.1"),
        (553, None, Phase.RCPT, "5.1.1"),
        (551, None, Phase.RCPT, "5.1.6"),
        (552, None, Phase.RCPT, "5.2.2"),
        (452, None, Phase.RCPT, "4.5.3"),
        (450, None, Phase.RCPT, "4.2.0"),
        (550, None, Phase.MAIL, "5.1.8"),
        (553, None, Phase.MAIL, "5.1.7"),
        (552, None, Phase.DOT, "5.3.4"),
        (554, None, Phase.DOT, "5.0.0"),
        (554, None, Phase.GREETING, "5.3.2"),
        (421, None, Phase.GREETING, "4.3.2"),
        (421, None, Phase.RCPT, "4.3.2"),
        (503, None, Phase.DATA, "5.5.1"),
        (250, None, Phase.DOT, "2.0.0"),
        (250, "2.6.0", Phase.DOT, "2.6.0"),
        (550, "5.7.1", Phase.RCPT, "5.7.1"),
        (550, "4.1.1", Phase.RCPT, "5.1.1"),  # class follows the reply code (RFC 3463 §2)
        (550, "5.1", Phase.RCPT, "5.1.1"),  # not a status: the default applies
        (550, "5.01.001", Phase.RCPT, "5.1.1"),
        (499, None, Phase.DOT, "4.0.0"),
    ],
)
def test_dsn_status_for(code: int, enhanced: str | None, phase: Phase, expected: str) -> None:
    assert dsn_status_for(code, enhanced, phase) == expected


def test_553_without_code_is_a_syntax_problem_when_the_knob_is_off() -> None:
    assert dsn_status_for(553, None, Phase.RCPT, smtp_553_means_invalid_mailbox=False) == "5.1.3"
    diag = Diagnostic.from_reply(
        553, None, ["mailbox name invalid"], Phase.RCPT, smtp_553_means_invalid_mailbox=False
    )
    assert diag.status == "5.1.3"


@pytest.mark.parametrize("code", [199, 354, 600, 0, -1])
def test_dsn_status_for_rejects_codes_without_a_status(code: int) -> None:
    with pytest.raises(ValueError, match="no delivery status"):
        dsn_status_for(code, None, Phase.RCPT)


@pytest.mark.parametrize(
    ("text", "code", "expected"),
    [
        ("5.1.1", None, "5.1.1"),
        (" 5.1.1 (bad destination mailbox address)", None, "5.1.1"),
        ("5.1.1x", None, None),
        ("", None, None),
        (None, None, None),
        ("5.7.1", 451, "4.7.1"),
        ("2.0.0", 250, "2.0.0"),
        ("abc", None, None),
    ],
)
def test_normalize_status(text: str | None, code: int | None, expected: str | None) -> None:
    assert normalize_status(text, code) == expected


def test_from_text_reads_multiline_replies() -> None:
    diag = Diagnostic.from_text(GMAIL_NO_SUCH_USER, Phase.RCPT, local_status="4.0.0")
    assert diag.code == 550
    assert diag.status == "5.1.1"
    assert "\n" not in diag.text
    assert "\r" not in diag.text
    assert "5.1.1" not in diag.text  # the repeated enhanced code is stripped from each line
    assert diag.text.startswith("The email account that you tried to reach does not exist.")
    assert diag.text.endswith("NoSuchUser d2-20020a05 - gsmtp")


def test_from_text_without_a_code_is_local() -> None:
    diag = Diagnostic.from_text("connection refused", Phase.CONNECT, local_status="4.4.1")
    assert diag.code is None
    assert diag.status == "4.4.1"
    assert Diagnostic.from_text("", Phase.CONNECT, local_status="4.4.2").status == "4.4.2"


def test_diagnostic_validates_its_status() -> None:
    with pytest.raises(ValueError, match="RFC 3463"):
        Diagnostic(status="5.1")
    with pytest.raises(ValueError, match="RFC 3463"):
        Diagnostic(status="5.1.1 (bad)")
    with pytest.raises(ValueError, match="no delivery status"):
        Diagnostic(status="5.1.1", code=354)


# --- configured patterns ---------------------------------------------------------------------


def test_config_patterns_go_before_the_built_ins() -> None:
    classifier = Classifier.from_config([("/S3150/", "spam-related")])
    assert classifier.classify(MICROSOFT_S3150, "5.7.1") is C.SPAM_RELATED
    # everything else still reaches the built-in rules
    assert classifier.classify("550 5.1.1 user unknown", "5.1.1") is C.BAD_MAILBOX
    assert len(classifier.rules) == len(DEFAULT_RULES) + 1


def test_config_list_ending_in_catch_all_replaces_the_built_ins() -> None:
    classifier = Classifier.from_config(
        [(re.compile(r"user unknown"), "bad-mailbox"), ("//", "other")]
    )
    assert classifier.classify("550 5.1.1 user unknown", "5.1.1") is C.BAD_MAILBOX
    assert classifier.classify("554 5.7.1 listed at spamhaus", "5.7.1") is C.OTHER


def test_config_status_patterns_match_the_status() -> None:
    classifier = Classifier.from_config([(r"^[45]\.7\.1", "content-related")])
    assert classifier.classify("550 5.7.1 go away", "5.7.1") is C.CONTENT_RELATED
    # without a status, the one after the reply code in the text is used
    assert classifier.classify("550 5.7.1 go away") is C.CONTENT_RELATED
    assert classifier.classify("550 go away") is C.OTHER


def test_config_patterns_are_case_sensitive_as_written() -> None:
    classifier = Classifier([]).with_patterns([("/SPAM/", "spam-related")])
    assert classifier.classify("550 this is spam") is C.OTHER  # no rule matched at all
    assert classifier.classify("550 this is SPAM") is C.SPAM_RELATED
    insensitive = Classifier([]).with_patterns([("(?i)spam", "spam-related")])
    assert insensitive.classify("550 this is Spam") is C.SPAM_RELATED


def test_later_with_patterns_go_first() -> None:
    base = Classifier.from_config([("/greylist/", "other")])
    both = base.with_patterns([("/greylist/", "policy-related")])
    assert base.classify("450 greylisted") is C.OTHER
    assert both.classify("450 greylisted") is C.POLICY_RELATED


@pytest.mark.parametrize("name", ["server-busy", "", "spam"])
def test_unknown_category_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown bounce category"):
        Classifier.from_config([("/x/", name)])


def test_category_names_are_case_insensitive() -> None:
    assert Category.parse(" Bad-Mailbox ") is C.BAD_MAILBOX


def test_broken_regex_is_refused() -> None:
    with pytest.raises(ValueError, match="does not compile"):
        Classifier.from_config([("/(unclosed/", "other")])


def test_patterns_from_a_loaded_configuration() -> None:
    from sluice.config import load_config_text

    config = load_config_text(
        "<bounce-category-patterns>\n"
        " /S3150/ spam-related\n"
        " /^[45]\\.1\\.1/ bad-mailbox\n"
        "</bounce-category-patterns>\n",
        "test.conf",
    )
    classifier = Classifier.from_config(
        (p.pattern, p.category) for p in config.bounce_category_patterns
    )
    assert classifier.classify(MICROSOFT_S3150, "5.7.1") is C.SPAM_RELATED
    assert classifier.classify("550 5.1.1 blah", "5.1.1") is C.BAD_MAILBOX
