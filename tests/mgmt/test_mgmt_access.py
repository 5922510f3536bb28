"""Access control of the management server: roles by address, token, Host and Origin guards
(T19's admin-only injection; T22/T23/T25 behaviour for the injection endpoint)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

import pytest
from mgmt_harness import TOKEN, MgmtHarness

from sluice.mgmt import (
    AccessMap,
    AccessRule,
    Role,
    bearer_matches,
    host_allowed,
    origin_allowed,
)

MSG = {"from": "s@src.test", "to": ["r@sink.test"], "subject": "s", "text": "t"}


def rule(cidr: str, role: Role) -> AccessRule:
    return AccessRule(network=ipaddress.ip_network(cidr, strict=False), role=role)


# ---- pure decisions ----------------------------------------------------------------------


def test_default_map_is_loopback_admin_only() -> None:
    m = AccessMap()
    assert m.role_of("127.0.0.1") is Role.ADMIN
    assert m.role_of("127.0.0.66") is Role.NONE  # other loopback addresses: other hosts
    assert m.role_of("::1") is Role.ADMIN
    assert m.role_of("::ffff:127.0.0.1") is Role.ADMIN
    assert m.role_of("10.0.0.1") is Role.NONE
    assert m.role_of("2001:db8::1") is Role.NONE
    assert m.role_of("") is Role.NONE
    assert m.role_of("garbage") is Role.NONE


def test_most_specific_rule_wins_and_later_lines_beat_earlier() -> None:
    m = AccessMap(
        [
            rule("0.0.0.0/0", Role.MONITOR),
            rule("10.1.0.0/24", Role.ADMIN),
            rule("10.1.0.7", Role.NONE),
            rule("127.0.0.1", Role.MONITOR),  # PowerMTA's stock file
            rule("192.0.2.0/24", Role.ADMIN),
            rule("192.0.2.0/24", Role.MONITOR),
        ]
    )
    assert m.role_of("10.1.0.5") is Role.ADMIN
    assert m.role_of("10.1.0.7") is Role.NONE
    assert m.role_of("8.8.8.8") is Role.MONITOR
    assert m.role_of("127.0.0.1") is Role.MONITOR
    assert m.role_of("127.0.0.2") is Role.MONITOR  # 0/0 covers the rest of loopback
    assert m.role_of("192.0.2.9") is Role.MONITOR
    assert m.role_of("2001:db8::1") is Role.NONE  # 0.0.0.0/0 is IPv4 only


def test_role_parse() -> None:
    assert Role.parse(" Admin ") is Role.ADMIN
    assert Role.parse("monitor") is Role.MONITOR
    assert Role.parse("NONE") is Role.NONE
    with pytest.raises(ValueError, match="unknown"):
        Role.parse("root")


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:8080", True),
        ("127.0.0.1", True),
        ("[::1]:8080", True),
        ("[::1]", True),
        ("localhost:8080", True),
        ("LOCALHOST", True),
        ("mta.test:1", True),
        ("mta.test.", True),
        ("10.9.8.7:99", True),
        ("evil.example", False),
        ("evil.example:8080", False),
        ("127.0.0.1.evil.example", False),
        ("localhost.evil.example", False),
        ("::1", False),
        ("[::1", False),
        ("[zz::1]:80", False),
        ("127.0.0.1:http", False),
        ("", False),
        (None, False),
    ],
)
def test_host_guard(host: str | None, ok: bool) -> None:
    assert host_allowed(host, frozenset({"mta.test"})) is ok


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        (None, "127.0.0.1:8080", True),
        ("http://127.0.0.1:8080", "127.0.0.1:8080", True),
        ("http://localhost", "localhost", True),
        ("http://evil.example", "127.0.0.1:8080", False),
        ("http://127.0.0.1:9999", "127.0.0.1:8080", False),
        ("https://127.0.0.1:8080", "127.0.0.1:8080", True),
        ("null", "127.0.0.1:8080", False),
        ("file://", "127.0.0.1", False),
        ("http://127.0.0.1:99999", "127.0.0.1:8080", False),
        ("http://127.0.0.1:8080", None, False),
    ],
)
def test_origin_guard(origin: str | None, host: str | None, ok: bool) -> None:
    assert origin_allowed(origin, host) is ok


def test_bearer_matches() -> None:
    token = b"abc"
    assert bearer_matches("Bearer abc", token)
    assert bearer_matches("bearer  abc ", token)
    assert not bearer_matches("Bearer abd", token)
    assert not bearer_matches("Bearer ab", token)
    assert not bearer_matches("Basic abc", token)
    assert not bearer_matches("abc", token)
    assert not bearer_matches(None, token)


# ---- the live server --------------------------------------------------------------------


def test_other_address_is_refused_by_default(mgmt: MgmtHarness) -> None:
    assert mgmt.host == "127.0.0.1"
    answer = mgmt.post(MSG, source="127.0.0.66")
    assert answer.status == 403
    assert answer.body == {"error": "access denied for this client address", "field": None}
    assert mgmt.stored() == []
    # Every path, not only injection: a "none" client learns nothing.
    assert mgmt.request("GET", "/no/such/page", source="127.0.0.66").status == 403
    assert mgmt.post(MSG).status == 202  # 127.0.0.1 is admin by default


def test_token_is_required_for_injection(mgmt_factory: Callable[..., MgmtHarness]) -> None:
    mgmt = mgmt_factory(token=TOKEN)
    no_token = mgmt.post(MSG)
    assert no_token.status == 401
    assert no_token.body["field"] == "Authorization"
    assert no_token.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = mgmt.post(MSG, token=TOKEN + "x")
    assert wrong.status == 401
    basic = mgmt.post(MSG, headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status == 401
    assert mgmt.stored() == []
    ok = mgmt.post(MSG, token=TOKEN)
    assert ok.status == 202, ok.raw
    assert len(mgmt.stored()) == 1
    for answer in (no_token, wrong, basic, ok):
        assert TOKEN.encode() not in answer.raw
        assert all(TOKEN not in v for v in answer.headers.values())


def test_role_map_monitor_and_none(mgmt_factory: Callable[..., MgmtHarness]) -> None:
    mgmt = mgmt_factory(
        token=TOKEN,
        access=[rule("127.0.0.66", Role.MONITOR), rule("127.0.0.67", Role.NONE)],
    )
    monitor = mgmt.post(MSG, token=TOKEN, source="127.0.0.66")
    assert monitor.status == 403
    assert "admin" in monitor.body["error"]
    assert mgmt.post(MSG, token=TOKEN, source="127.0.0.67").status == 403
    assert mgmt.post(MSG, source="127.0.0.67").status == 403
    assert mgmt.stored() == []
    assert mgmt.post(MSG, token=TOKEN, source="127.0.0.1").status == 202


def test_admin_rule_opens_another_address(mgmt_factory: Callable[..., MgmtHarness]) -> None:
    mgmt = mgmt_factory(access=[rule("127.0.0.64/28", Role.ADMIN)])
    assert mgmt.post(MSG, source="127.0.0.66").status == 202
    assert mgmt.post(MSG, source="127.0.0.99").status == 403  # outside the rule
    assert mgmt.post(MSG, source="127.0.0.1").status == 202  # built-in rule
    stored = mgmt.stored()
    assert [s.envelope.source_ip for s in stored] == ["127.0.0.66", "127.0.0.1"]


def test_missing_host_header_is_refused_quietly(
    mgmt: MgmtHarness, caplog: pytest.LogCaptureFixture
) -> None:
    answer = mgmt.post(MSG, host="")
    assert answer.status == 400  # aiohttp's HTTP/1.1 parser refuses it before any handler
    assert mgmt.stored() == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.nip.io"])
def test_foreign_host_header_is_refused(mgmt: MgmtHarness, host: str) -> None:
    answer = mgmt.post(MSG, host=host)
    assert answer.status == 421
    assert answer.body["field"] == "Host"
    assert mgmt.stored() == []


@pytest.mark.parametrize("host", ["localhost", "mta.test", "MTA.test:1234", "127.0.0.1"])
def test_own_names_are_accepted_as_host(mgmt: MgmtHarness, host: str) -> None:
    assert mgmt.post(MSG, host=host).status == 202


def test_cross_origin_post_is_refused(mgmt: MgmtHarness) -> None:
    evil = mgmt.post(MSG, headers={"Origin": "http://evil.example"})
    assert evil.status == 403
    assert evil.body["field"] == "Origin"
    assert "Access-Control-Allow-Origin" not in evil.headers
    assert mgmt.stored() == []
    own = mgmt.post(MSG, headers={"Origin": f"http://{mgmt.host}:{mgmt.port}"})
    assert own.status == 202


def test_preflight_gets_no_cors_grant(mgmt: MgmtHarness) -> None:
    answer = mgmt.request(
        "OPTIONS",
        "/api/v1/messages",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert answer.status in (403, 405)
    assert "Access-Control-Allow-Origin" not in answer.headers


def test_errors_are_json_with_security_headers(mgmt: MgmtHarness) -> None:
    missing = mgmt.request("GET", "/no/such/page")
    assert missing.status == 404
    assert missing.body == {"error": "not found", "field": None}
    wrong_method = mgmt.request("GET", "/api/v1/messages")
    assert wrong_method.status == 405
    assert wrong_method.headers["Allow"] == "POST"
    assert wrong_method.body["field"] is None
    for answer in (missing, wrong_method):
        assert answer.headers["Content-Type"].startswith("application/json")
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_missing_token_file_fails_start(tmp_path: object) -> None:
    import asyncio
    from pathlib import Path

    from sluice.clock import FakeClock
    from sluice.errors import ConfigError
    from sluice.intake.inject import Injector
    from sluice.intake.policy import SourcePolicyMap
    from sluice.mgmt import MgmtServer, MgmtSettings
    from sluice.spool import MemorySpool

    assert isinstance(tmp_path, Path)
    empty = tmp_path / "empty"
    empty.write_text("\n")

    async def start(token_file: str) -> None:
        clock = FakeClock()
        server = MgmtServer(
            MgmtSettings(port=0, token_file=token_file),
            injector=Injector(spool=MemorySpool(), clock=clock, hostname="h"),
            policies=SourcePolicyMap(),
            on_received=None,
            clock=clock,
        )
        try:
            await server.start()
        finally:
            await server.stop()

    with pytest.raises(ConfigError, match="No such file"):
        asyncio.run(start(str(tmp_path / "absent")))
    with pytest.raises(ConfigError, match="empty"):
        asyncio.run(start(str(empty)))
