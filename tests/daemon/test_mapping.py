"""Config → part settings: the daemon's mapping of the resolved model."""

from __future__ import annotations

from pathlib import Path

from sluice.config import load_config_text
from sluice.daemon.mapping import (
    ConfigSourceMap,
    acct_settings,
    dns_servers,
    queue_settings,
    route_settings,
)
from sluice.daemon.routing_map import QueueRouter
from sluice.message import Envelope, Recipient

SEED = (Path(__file__).resolve().parents[2] / "examples" / "seed.conf").read_text()


def test_seed_source_trusts_only_the_listed_address() -> None:
    sources = ConfigSourceMap(load_config_text(SEED))
    trusted = sources.lookup("127.0.0.1")
    assert trusted.always_allow_relaying
    assert trusted.process_x_virtual_mta
    assert trusted.default_virtual_mta == "transactional"
    assert not sources.lookup("127.0.0.66").always_allow_relaying


def test_without_source_blocks_loopback_may_relay() -> None:
    sources = ConfigSourceMap(load_config_text("smtp-listener 127.0.0.1:2525\n"))
    assert sources.lookup("127.0.0.66").always_allow_relaying
    assert not sources.lookup("192.0.2.1").always_allow_relaying


def test_seed_hotmail_queue_settings() -> None:
    config = load_config_text(SEED)
    settings = queue_settings(config.queue_policy("msn.com", "transactional"))
    assert settings.max_smtp_out == 20
    assert settings.max_msg_per_connection == 100
    assert settings.max_errors_per_connection == 5
    assert settings.retry_after == (1800.0,)
    assert settings.min_retry_interval == 900.0
    assert settings.bounce_after == 4 * 86400.0
    assert settings.bounce_on_4xx is False
    marketing = queue_settings(config.queue_policy("hotmail.com", "marketing-1"))
    assert marketing.bounce_after == 2 * 3600.0


def test_route_dns_and_acct_mapping() -> None:
    config = load_config_text(
        "dns-server 127.0.0.1:5353\n"
        "<domain a.test>\n route [127.0.1.1]:2526\n</domain>\n"
        "<acct-file /tmp/x.csv>\n records d,b\n record-fields d *,header_X-Id\n</acct-file>\n"
    )
    assert dns_servers(config) == (["127.0.0.1"], 5353)
    route = route_settings(config.queue_policy("a.test"))
    assert route.route is not None
    assert route.route.port == 2526
    (acct,) = acct_settings(config)
    assert acct.target == "/tmp/x.csv"
    assert "header_X-Id" in acct.layout.header()


def test_pool_members_alternate_and_queue_to_applies() -> None:
    router = QueueRouter(load_config_text(SEED))
    picks = [router.vmta_for("marketing") for _ in range(4)]
    assert sorted(set(picks)) == ["marketing-1", "marketing-2"]
    envelope = Envelope(
        sender="a@x.test",
        recipients=(Recipient(address="u@msn.com"), Recipient(address="v@example.org")),
    )
    assert router.queues_of(envelope, "transactional") == {
        "hotmail.com/transactional": [0],
        "example.org/transactional": [1],
    }


def test_cold_vmta_takes_the_first_messages_per_domain_per_day() -> None:
    config = load_config_text(
        "<virtual-mta cust1>\n smtp-source-host 127.0.0.5 a.test\n"
        " <domain *>\n  max-cold-virtual-mta-msg 2/day\n </domain>\n</virtual-mta>\n"
        "<virtual-mta cust1-cold>\n smtp-source-host 127.0.0.6 b.test\n</virtual-mta>\n"
    )
    router = QueueRouter(config)
    envelope = Envelope(sender="a@x.test", recipients=(Recipient(address="u@gmail.com"),))
    day = 1_800_000_000.0
    picks = [next(iter(router.queues_of(envelope, "cust1", day + i))) for i in range(4)]
    assert picks == ["gmail.com/cust1-cold"] * 2 + ["gmail.com/cust1"] * 2
    assert next(iter(router.queues_of(envelope, "cust1", day + 86400))) == "gmail.com/cust1-cold"
    assert next(iter(router.queues_of(envelope, "cust1"))) == "gmail.com/cust1"


def test_address_literal_domains_route_to_their_address() -> None:
    config = load_config_text("smtp-listener 127.0.0.1:2525\n")
    route = route_settings(config.queue_policy("[127.0.0.9]"))
    assert route.route is not None
    assert str(route.route) == "[127.0.0.9]"
    six = route_settings(config.queue_policy("[IPv6:::1]"))
    assert six.route is not None
    assert str(six.route) == "[::1]"
    assert route_settings(config.queue_policy("example.org")).route is None
