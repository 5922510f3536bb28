"""daemon/mgmt_map.py: configuration → MgmtSettings; and MgmtServer.update (reload)."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest
from mgmt_harness import TOKEN, MgmtHarness

from sluice.config import load_config_text
from sluice.daemon.mgmt_map import bind_addresses, mgmt_settings
from sluice.errors import ConfigError
from sluice.mgmt import DEFAULT_BIND, AccessRule, MgmtSettings, Role

MSG = {"from": "s@src.test", "to": ["r@sink.test"], "subject": "s", "text": "t"}


def test_no_port_means_no_interface() -> None:
    assert mgmt_settings(load_config_text("host-name mta.example.com\n")) is None


def test_defaults_are_loopback_only() -> None:
    settings = mgmt_settings(load_config_text("http-mgmt-port 8080\n"))
    assert settings == MgmtSettings(port=8080)
    assert settings.bind == DEFAULT_BIND == ("127.0.0.1",)


def test_full_settings() -> None:
    text = (
        "http-mgmt-port 1983\n"
        "host-name MTA.Example.com\n"
        "http-mgmt-token-file /etc/sluice/token\n"
        "http-access 127.0.0.1 monitor\n"
        "http-access 10.1.0/24 admin\n"
        "http-access ::1 admin\n"
    )
    settings = mgmt_settings(load_config_text(text), hostname="box.example.net.")
    assert settings is not None
    assert settings.port == 1983
    assert settings.token_file == "/etc/sluice/token"
    assert settings.host_names == frozenset({"mta.example.com", "box.example.net"})
    assert settings.access == (
        AccessRule(network=ipaddress.ip_network("127.0.0.1/32"), role=Role.MONITOR),
        AccessRule(network=ipaddress.ip_network("10.1.0.0/24"), role=Role.ADMIN),
        AccessRule(network=ipaddress.ip_network("::1/128"), role=Role.ADMIN),
    )
    assert settings.bind == ("0.0.0.0",)


def _rules(*pairs: tuple[str, Role]) -> list[AccessRule]:
    return [AccessRule(network=ipaddress.ip_network(c), role=r) for c, r in pairs]


@pytest.mark.parametrize(
    ("rules", "bind"),
    [
        ([], ("127.0.0.1",)),
        (_rules(("127.0.0.66/32", Role.ADMIN), ("::1/128", Role.MONITOR)), ("127.0.0.1",)),
        (_rules(("0.0.0.0/0", Role.NONE)), ("127.0.0.1",)),
        (_rules(("0.0.0.0/0", Role.MONITOR)), ("0.0.0.0",)),
        (_rules(("2001:db8::/32", Role.ADMIN)), ("127.0.0.1", "::")),
        (_rules(("10.0.0.0/8", Role.ADMIN), ("::/0", Role.MONITOR)), ("0.0.0.0", "::")),
    ],
)
def test_bind_addresses(rules: list[AccessRule], bind: tuple[str, ...]) -> None:
    assert bind_addresses(rules) == bind


def test_settings_validate() -> None:
    with pytest.raises(ValueError, match="port"):
        MgmtSettings(port=70000)
    with pytest.raises(ValueError, match="bind"):
        MgmtSettings(port=1, bind=())
    with pytest.raises(ValueError, match="max_request_size"):
        MgmtSettings(port=1, max_request_size=0)


def test_update_applies_new_rules_and_token(
    mgmt_factory: Callable[..., MgmtHarness], tmp_path: Path
) -> None:
    mgmt = mgmt_factory()
    assert mgmt.post(MSG, source="127.0.0.66").status == 403
    token_file = tmp_path / "new-token"
    token_file.write_text(TOKEN)
    monitor = _rules(("127.0.0.66/32", Role.ADMIN))
    settings = MgmtSettings(port=0, access=tuple(monitor), token_file=str(token_file))
    mgmt.server.update(settings)
    assert mgmt.post(MSG, source="127.0.0.66").status == 401
    assert mgmt.post(MSG, source="127.0.0.66", token=TOKEN).status == 202
    # A broken token file on reload keeps the old settings.
    with pytest.raises(ConfigError):
        mgmt.server.update(dataclasses.replace(settings, token_file=str(tmp_path / "gone")))
    assert mgmt.post(MSG, source="127.0.0.66", token=TOKEN).status == 202
    mgmt.server.update(MgmtSettings(port=0))
    assert mgmt.post(MSG, source="127.0.0.66").status == 403
    assert mgmt.post(MSG).status == 202
