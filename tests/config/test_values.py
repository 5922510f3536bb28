"""Value kinds: parse, canonical format, round trips (Hypothesis for durations, rates, sizes)."""

from __future__ import annotations

import ipaddress
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.config.values import (
    DomainKey,
    HostPort,
    HttpAccess,
    Listen,
    Rate,
    RecordFields,
    SourceHost,
    ValueFormError,
    VolumeRate,
    format_duration,
    format_rate,
    format_size,
    format_value,
    kind_is_known,
    parse_duration,
    parse_rate,
    parse_regex,
    parse_size,
    parse_value,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("4d12h", 388800), ("30m", 1800), ("45s", 45), ("0", 0), ("1h30m", 5400), ("2M", 120)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "1x", "h", "-5m", "1.5h", "never", "4d 12h"])
def test_bad_durations_name_the_form(text: str) -> None:
    with pytest.raises(ValueFormError, match="duration such as 30m"):
        parse_duration(text)


def test_duration_or_never_and_lists() -> None:
    assert parse_value("duration-or-never", "never") is None
    assert parse_value("duration-or-never", "2h") == 7200
    assert parse_value("duration-list", "10m,20m, 1h") == (600, 1200, 3600)
    assert format_value("duration-list", (600, 1200, 3600)) == "10m,20m,1h"
    with pytest.raises(ValueFormError):
        parse_value("duration-list", "10m,,1h")


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("1000/h", Rate(count=1000, seconds=3600)),
        ("3/5m", Rate(count=3, seconds=300)),
        ("200/s", Rate(count=200, seconds=1)),
        ("10/min", Rate(count=10, seconds=60)),
        ("1/20m", Rate(count=1, seconds=1200)),
        ("50/day", Rate(count=50, seconds=86400)),
        ("unlimited", None),
        ("0", None),
    ],
)
def test_rates(text: str, rate: Rate | None) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["0/h", "5/0m", "5000/fortnight", "5000", "/h", "1/h/2"])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueFormError, match="rate"):
        parse_rate(text)


def test_rate_formats() -> None:
    assert format_rate(Rate(count=5000, seconds=3600)) == "5000/h"
    assert format_rate(Rate(count=3, seconds=300)) == "3/5m"
    assert format_rate(Rate(count=7, seconds=90)) == "7/90s"
    assert format_rate(None) == "unlimited"


def test_sizes() -> None:
    assert parse_size("50M") == 50 * 1024 * 1024
    assert parse_size("1g") == 1024**3
    assert parse_size("4096") == 4096
    assert parse_size("unlimited") is None
    assert parse_size("0") == 0
    assert format_size(50 * 1024 * 1024) == "50M"
    assert format_size(1000) == "1000"
    with pytest.raises(ValueFormError, match="size"):
        parse_size("50 MB")


def test_addresses_and_cidrs() -> None:
    assert parse_value("cidr", "0/0") == ipaddress.ip_network("0.0.0.0/0")
    assert parse_value("cidr", "10.1.0/24") == ipaddress.ip_network("10.1.0.0/24")
    assert parse_value("cidr", "127.0.0.1") == ipaddress.ip_network("127.0.0.1/32")
    assert parse_value("cidr", "::1") == ipaddress.ip_network("::1/128")
    assert format_value("cidr", parse_value("cidr", "10.1.0/24")) == "10.1.0.0/24"
    for bad in ("10.1.0", "300.1.1.1", "10.0.0.0/33", "host"):
        with pytest.raises(ValueFormError):
            parse_value("cidr", bad)
    assert parse_value("address", "::1") == ipaddress.ip_address("::1")


def test_listen_and_host_ports() -> None:
    assert parse_value("listen", "0/0:25") == Listen(address=None, port=25)
    assert parse_value("listen", "127.0.0.1:2525") == Listen(
        address=ipaddress.ip_address("127.0.0.1"), port=2525
    )
    six = parse_value("listen", "[::1]:25")
    assert format_value("listen", six) == "[::1]:25"
    with pytest.raises(ValueFormError, match="ADDRESS:PORT"):
        parse_value("listen", "127.0.0.1")
    with pytest.raises(ValueFormError, match="port"):
        parse_value("listen", "127.0.0.1:70000")
    assert parse_value("host-port", "[127.0.0.1]:25") == HostPort(
        host="127.0.0.1", port=25, literal=True
    )
    assert parse_value("host-port", "mx.example.com:2525") == HostPort(
        host="mx.example.com", port=2525
    )
    assert parse_value("host-list", "hotmail.com, [192.0.2.1]:25") == (
        HostPort(host="hotmail.com"),
        HostPort(host="192.0.2.1", port=25, literal=True),
    )


def test_compound_kinds() -> None:
    assert parse_value("source-host", "127.0.0.2 tx.example.test") == SourceHost(
        first=ipaddress.ip_address("127.0.0.2"),
        last=ipaddress.ip_address("127.0.0.2"),
        hostname="tx.example.test",
    )
    rng = parse_value("source-host", "192.0.2.1-192.0.2.4 m.example.com")
    assert format_value("source-host", rng) == "192.0.2.1-192.0.2.4 m.example.com"
    assert parse_value("domain-key", "s1, example.com, /etc/k.pem") == DomainKey(
        selector="s1", domain="example.com", path="/etc/k.pem"
    )
    assert parse_value("record-fields", "d *,header_X-Campaign-ID") == RecordFields(
        record="d", fields=("*", "header_X-Campaign-ID")
    )
    assert parse_value("record-list", "d,b,t,tq,rb") == ("d", "b", "t", "tq", "rb")
    assert parse_value("http-access", "0/0 monitor") == HttpAccess(
        network=ipaddress.ip_network("0.0.0.0/0"), level="monitor"
    )
    assert parse_value("cidr-int", "10.0.0.0/24 5")[1] == 5  # type: ignore[index]
    assert parse_value("cidr-rate", "10.0.0.0/24 100/h")[1] == Rate(count=100, seconds=3600)  # type: ignore[index]
    assert parse_value("volume-rate", "10M/h") == VolumeRate(size=10 * 1024**2, seconds=3600)
    assert parse_value("daily-limit", "500/day") == 500
    assert parse_value("email-list", "a@x.com, b@y.org") == ("a@x.com", "b@y.org")
    assert parse_value("header-name", "X-Job") == "X-Job"
    assert isinstance(parse_value("regex", "/^421 .*/"), re.Pattern)
    with pytest.raises(ValueFormError, match="does not compile"):
        parse_value("regex", "/([/")


def test_bools_enums_and_bounded_ints() -> None:
    for word, value in (("yes", True), ("TRUE", True), ("no", False), ("false", False)):
        assert parse_value("bool", word) is value
    with pytest.raises(ValueFormError, match="yes, no, true or false"):
        parse_value("bool", "maybe")
    assert parse_value("enum:yes|no|if-x-dkim-options-present", "true") == "yes"
    assert parse_value("enum:smtp|pipe", "pipe") == "pipe"
    with pytest.raises(ValueFormError, match="one of smtp, pipe"):
        parse_value("enum:smtp|pipe", "ftp")
    assert parse_value("int:0..100", "90") == 90
    with pytest.raises(ValueFormError, match="0-100"):
        parse_value("int:0..100", "101")
    assert parse_value("int-or-unlimited", "unlimited") is None
    assert parse_value("percent", "90%") == 90
    assert parse_value("duration-or-bool", "never") is None
    assert parse_value("duration-or-bool", "yes") is True
    assert parse_value("duration-or-bool", "2h") == 7200


def test_kind_vocabulary() -> None:
    assert kind_is_known("enum:a|b")
    assert kind_is_known("int:1..5")
    assert not kind_is_known("enum:")
    assert not kind_is_known("float")
    assert not kind_is_known("rate:x")


# ------------------------------------------------------------ round trips

durations = st.integers(min_value=0, max_value=10**9)
rates = st.builds(
    Rate,
    count=st.integers(min_value=1, max_value=10**9),
    seconds=st.integers(min_value=1, max_value=10**7),
)
sizes = st.one_of(st.none(), st.integers(min_value=0, max_value=2**50))


@given(durations)
def test_duration_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.lists(durations, min_size=1, max_size=8).map(tuple))
def test_duration_list_round_trip(values: tuple[int, ...]) -> None:
    assert parse_value("duration-list", format_value("duration-list", values)) == values


@given(st.one_of(st.none(), rates))
def test_rate_round_trip(rate: Rate | None) -> None:
    assert parse_rate(format_rate(rate)) == rate


@given(sizes)
def test_size_round_trip(size: int | None) -> None:
    assert parse_size(format_size(size)) == size


@given(st.text(max_size=30))
def test_parsers_raise_only_value_form_errors(text: str) -> None:
    kinds = ("duration", "rate", "size", "cidr", "listen", "host-list", "source-host", "regex")
    for kind in kinds:
        try:
            value = parse_value(kind, text)
        except ValueFormError:
            continue
        assert parse_value(kind, format_value(kind, value)) == value or kind == "regex"


def test_a_regex_python_warns_about_compiles_to_todays_meaning() -> None:
    # "[[a]" draws "FutureWarning: Possible nested set"; the suite turns warnings into errors.
    pattern = parse_regex("/[[a]/")
    assert pattern.fullmatch("[")
    assert pattern.fullmatch("a")
    with pytest.raises(ValueFormError):
        parse_regex("[[")
