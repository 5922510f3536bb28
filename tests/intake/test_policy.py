"""Source policy: CIDR matching and the pure MAIL/RCPT/size/VMTA decisions (test-plan A3, A7)."""

from __future__ import annotations

import pytest

from sluice.intake.policy import (
    NO_DOMAIN,
    REFUSE_SERVICE,
    RELAY_DENIED,
    RELAY_TRICK,
    TOO_BIG,
    TOO_MANY_RCPTS,
    SourcePolicy,
    SourcePolicyMap,
    check_connect,
    check_mail,
    check_rcpt,
    check_size,
    check_vmta,
    rcpt_domain,
)

#: test-plan A3: the relay-tester address forms.
A3_ADDRESSES = [
    "v@ext.test",
    "v%ext.test@us.test",
    "v%ext.test@[127.0.0.1]",
    "ext.test!v",
    "ext.test!v@us.test",
    "@us.test:v@ext.test",
    "@us.test,@ext.test:v@ext.test",
    '"v@ext.test"',
    '"v@ext.test"@us.test',
    "v@ext.test@us.test",
    "v@[127.0.0.3]",
    "v@ext.test.",
    "V@EXT.TEST",
]


def test_default_map_lets_only_loopback_relay() -> None:
    m = SourcePolicyMap()
    assert m.lookup("127.0.0.1").always_allow_relaying
    assert m.lookup("127.0.0.66").always_allow_relaying
    assert m.lookup("::1").always_allow_relaying
    assert m.lookup("::ffff:127.0.0.1").always_allow_relaying
    assert not m.lookup("10.0.0.1").always_allow_relaying
    assert not m.lookup("2001:db8::1").always_allow_relaying
    assert not m.lookup("not-an-ip").always_allow_relaying


def test_most_specific_cidr_wins() -> None:
    trusted = SourcePolicy(always_allow_relaying=True, max_rcpt_per_message=5)
    closed = SourcePolicy(always_allow_relaying=False)
    mid = SourcePolicy(always_allow_relaying=False, max_message_size=100)
    m = SourcePolicyMap(
        [("0/0", closed), ("127.0.0.1", trusted), ("10.1.0/24", mid), ("10.1.0.0/16", closed)]
    )
    assert m.lookup("127.0.0.1") is trusted
    assert m.lookup("127.0.0.66") is closed  # 0/0 matches: the loopback fallback does not apply
    assert m.lookup("10.1.0.9") is mid
    assert m.lookup("10.1.7.9") is closed
    assert m.lookup("2001:db8::1") is closed  # 0/0 covers IPv6 too
    assert m.lookup("10.1.0.9") is mid  # cached answer is the same


def test_explicit_fallback_applies_to_everyone() -> None:
    fb = SourcePolicy(smtp_service=False)
    m = SourcePolicyMap([], fallback=fb)
    assert m.lookup("127.0.0.1") is fb
    assert check_connect(fb) == REFUSE_SERVICE
    assert check_connect(SourcePolicy()) is None


def test_bad_cidr_and_bad_policy_values() -> None:
    with pytest.raises(ValueError, match="does not appear"):
        SourcePolicyMap([("10.0.0.300/8", SourcePolicy())])
    with pytest.raises(ValueError, match="max_message_size"):
        SourcePolicy(max_message_size=-1)
    with pytest.raises(ValueError, match="max_rcpt"):
        SourcePolicy(max_rcpt_per_message=0)
    with pytest.raises(ValueError, match="jobid_header"):
        SourcePolicy(jobid_header="X-Job:")


@pytest.mark.parametrize("address", A3_ADDRESSES)
def test_untrusted_gets_5xx_for_every_a3_form(address: str) -> None:
    # us.test is even a local domain here: the tricks must still be refused.
    policy = SourcePolicy(relay_domains=frozenset({"us.test"}))
    hint = check_rcpt(policy, address, 0)
    assert hint is not None
    assert hint.code == 550
    assert hint.enhanced == "5.7.1"


def test_untrusted_may_send_to_relay_domains_only() -> None:
    policy = SourcePolicy(relay_domains=frozenset({"us.test"}))
    assert check_rcpt(policy, "v@us.test", 0) is None
    assert check_rcpt(policy, "v@US.test.", 0) is None
    assert check_rcpt(policy, "v@ext.test", 0) == RELAY_DENIED
    assert check_rcpt(policy, "v%x@us.test", 0) == RELAY_TRICK


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("v%ext.test@us.test", "us.test"),
        ("ext.test!v@us.test", "us.test"),
        ("@us.test:v@ext.test", "ext.test"),
        ("@us.test,@other.test:v@ext.test", "ext.test"),
        ('"v@ext.test"@us.test', "us.test"),
        ("v@ext.test.", "ext.test"),
        ("V@EXT.TEST", "ext.test"),
        ("v@[127.0.0.3]", "[127.0.0.3]"),
    ],
)
def test_trusted_routes_literally(address: str, domain: str) -> None:
    policy = SourcePolicy(always_allow_relaying=True)
    assert check_rcpt(policy, address, 0) is None
    assert rcpt_domain(address) == domain


def test_trusted_address_without_domain() -> None:
    policy = SourcePolicy(always_allow_relaying=True)
    assert check_rcpt(policy, "ext.test!v", 0) == NO_DOMAIN
    assert rcpt_domain("v@") is None


def test_recipient_limit() -> None:
    policy = SourcePolicy(always_allow_relaying=True, max_rcpt_per_message=3)
    assert check_rcpt(policy, "a@b.test", 2) is None
    assert check_rcpt(policy, "a@b.test", 3) == TOO_MANY_RCPTS
    assert TOO_MANY_RCPTS.code == 452
    assert TOO_MANY_RCPTS.enhanced == "4.5.3"


def test_size_checks() -> None:
    unlimited = SourcePolicy()
    limited = SourcePolicy(max_message_size=1000)
    assert check_mail(unlimited, 10**12) is None
    assert check_mail(limited, None) is None
    assert check_mail(limited, 1000) is None
    assert check_mail(limited, 1001) == TOO_BIG
    assert check_size(limited, 1001) == TOO_BIG
    assert check_size(unlimited, 1001) is None
    assert (TOO_BIG.code, TOO_BIG.enhanced) == (552, "5.3.4")


def test_vmta_check() -> None:
    assert check_vmta("anything", None) is None
    assert check_vmta("vmta1", frozenset({"vmta1", "pool1"})) is None
    hint = check_vmta("nope\r\nInjected: x", frozenset({"vmta1"}))
    assert hint is not None
    assert (hint.code, hint.enhanced) == (550, "5.7.1")
    assert "\r" not in hint.text
    assert "\n" not in hint.text
