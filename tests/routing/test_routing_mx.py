"""MX ordering, route specifications, failures and site keys."""

from __future__ import annotations

import random

import pytest

from sluice.routing import (
    DnsFailure,
    FailureKind,
    HostSpec,
    MxAnswer,
    MxHost,
    MxRecord,
    RouteFailure,
    RoutingConfigError,
    hosts_from_mx,
    normalize_name,
    order_mx,
    parse_host_list,
    parse_host_spec,
    site_key,
)
from sluice.routing.mx import rejected_failure


def mx(*pairs: tuple[int, str]) -> tuple[MxRecord, ...]:
    return tuple(MxRecord(preference=p, exchange=x) for p, x in pairs)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[127.0.0.1]:25", HostSpec(name="127.0.0.1", port=25, literal=True)),
        ("[127.0.0.1]", HostSpec(name="127.0.0.1", literal=True)),
        ("127.0.0.1", HostSpec(name="127.0.0.1", literal=True)),
        ("127.0.0.1:2525", HostSpec(name="127.0.0.1", port=2525, literal=True)),
        ("[Relay.Example.COM.]:587", HostSpec(name="relay.example.com", port=587, literal=True)),
        ("hotmail.com", HostSpec(name="hotmail.com")),
        ("hotmail.com:26", HostSpec(name="hotmail.com", port=26)),
        ("[::1]:2525", HostSpec(name="::1", port=2525, literal=True)),
        ("[IPv6:2001:db8::1]", HostSpec(name="2001:db8::1", literal=True)),
        ("2001:db8::1", HostSpec(name="2001:db8::1", literal=True)),
    ],
)
def test_parse_host_spec(text: str, expected: HostSpec) -> None:
    assert parse_host_spec(text) == expected


@pytest.mark.parametrize(
    "text", ["[127.0.0.1", "[1.2.3.4]x", "host:0", "host:99999", "host:port", "bad host!", ""]
)
def test_parse_host_spec_rejects_junk(text: str) -> None:
    with pytest.raises(RoutingConfigError):
        parse_host_spec(text)


def test_parse_host_list_splits_on_commas_and_spaces() -> None:
    assert parse_host_list(" a.test, [127.0.0.2]:26  b.test ") == (
        HostSpec(name="a.test"),
        HostSpec(name="127.0.0.2", port=26, literal=True),
        HostSpec(name="b.test"),
    )
    with pytest.raises(RoutingConfigError):
        parse_host_list("  ")


def test_host_spec_prints_as_configured() -> None:
    assert str(parse_host_spec("[127.0.0.1]:25")) == "[127.0.0.1]:25"
    assert str(parse_host_spec("ok.test")) == "ok.test"


def test_normalize_name() -> None:
    assert normalize_name("MX.Example.COM.") == "mx.example.com"
    assert normalize_name(".") == "."
    assert normalize_name("") == "."


def test_order_mx_sorts_by_preference_and_drops_duplicates_and_root() -> None:
    records = mx((20, "b.test."), (10, "A.test"), (30, "b.test"), (0, "."))
    assert order_mx(records, random.Random(0)) == (
        MxHost(name="a.test", preference=10),
        MxHost(name="b.test", preference=20),
    )


def test_order_mx_shuffles_only_within_a_preference() -> None:
    records = mx((10, "a"), (10, "b"), (10, "c"), (20, "z"), (5, "first"))
    seen = set()
    for seed in range(50):
        hosts = order_mx(records, random.Random(seed))
        assert hosts[0].name == "first"
        assert hosts[-1].name == "z"
        seen.add(tuple(h.name for h in hosts[1:4]))
    assert len(seen) == 6  # every permutation of a, b, c shows up


def test_hosts_from_mx_outcomes() -> None:
    rng = random.Random(0)
    assert hosts_from_mx(MxAnswer(domain="d", failure=DnsFailure.NODATA), rng) is None
    cases = {
        DnsFailure.NXDOMAIN: ("5.1.2", True),
        DnsFailure.SERVFAIL: ("4.4.3", False),
        DnsFailure.TIMEOUT: ("4.4.3", False),
    }
    for failure, (status, permanent) in cases.items():
        found = hosts_from_mx(MxAnswer(domain="d", failure=failure), rng)
        assert isinstance(found, RouteFailure)
        assert (found.status, found.permanent) == (status, permanent)
    null = hosts_from_mx(MxAnswer(domain="d", records=mx((0, "."))), rng)
    assert isinstance(null, RouteFailure)
    assert null.kind is FailureKind.NULL_MX
    assert null.diag().startswith("556 5.1.10 ")


def test_hosts_from_mx_loop_rule_of_rfc_5321() -> None:
    rng = random.Random(0)
    records = mx((10, "a.test"), (20, "me.test"), (20, "b.test"), (30, "c.test"))
    hosts = hosts_from_mx(
        MxAnswer(domain="d", records=records), rng, local_names=frozenset({"me.test"})
    )
    assert hosts == (MxHost(name="a.test", preference=10),)
    only_us = hosts_from_mx(
        MxAnswer(domain="d", records=mx((10, "me.test"))), rng, local_names=frozenset({"me.test"})
    )
    assert isinstance(only_us, RouteFailure)
    assert only_us.status == "5.4.6"


def test_rejected_failure_takes_the_status_from_the_reply() -> None:
    assert rejected_failure(421, "4.7.0 slow down", permanent=False).status == "4.7.0"
    assert rejected_failure(421, "slow down", permanent=False).status == "4.0.0"
    assert rejected_failure(554, "no", permanent=True).status == "5.0.0"
    assert rejected_failure(421, "4.3.2 busy", permanent=True).status == "5.3.2"


def test_site_key_is_canonical() -> None:
    assert site_key([("b.test", None), ("a.test", None), ("b.test", None)]) == "a.test,b.test"
    assert site_key([("127.0.0.2", 2525)]) == "127.0.0.2:2525"
    assert site_key([("a", None), ("b", None)]) == site_key([("b", None), ("a", None)])


def test_answers_must_be_consistent() -> None:
    with pytest.raises(ValueError, match="failure"):
        MxAnswer(domain="d")
    with pytest.raises(ValueError, match="no records"):
        MxAnswer(domain="d", records=mx((1, "a")), failure=DnsFailure.NODATA)
    assert DnsFailure.SERVFAIL.transient
    assert not DnsFailure.NXDOMAIN.transient
