"""Resolution: the seed's must-show queues, every precedence layer, queue-to, pools."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.config import (
    DEFAULT_VMTA,
    Config,
    ConfigError,
    UnknownQueueError,
    load_config,
    load_config_text,
)
from sluice.config.values import Rate

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "examples" / "seed.conf"
SHARED_SEED = REPO.parent / "shared" / "seed" / "seed.conf"


@pytest.fixture(scope="module")
def seed() -> Config:
    return load_config(str(SEED), read_text=lambda p: Path(p).read_text(encoding="utf-8"))


def _line(config: Config, queue: str, name: str) -> int | None:
    origin = config.policy_for(queue).setting(name).origin
    return None if origin is None else origin.line


def test_examples_seed_is_the_shared_seed() -> None:
    if not SHARED_SEED.exists():
        pytest.skip("../shared/seed/seed.conf is not present")
    assert SEED.read_bytes() == SHARED_SEED.read_bytes()


def test_msn_transactional_is_the_hotmail_queue(seed: Config) -> None:
    p = seed.policy_for("msn.com/transactional")
    assert p.queue == "hotmail.com/transactional"
    assert (p.domain, p.vmta, p.requested) == (
        "hotmail.com",
        "transactional",
        "msn.com/transactional",
    )
    assert p.value("max-smtp-out") == 20
    assert p.value("max-msg-per-connection") == 100
    assert p.value("max-errors-per-connection") == 5
    assert p.value("max-msg-rate") == Rate(count=5000, seconds=3600)
    assert p.setting("max-msg-rate").text == "5000/h"
    assert p.setting("max-msg-rate").written_as == "max-msg-per-hour 5000"
    assert p.value("retry-after") == (1800,)
    assert p.value("min-retry-interval") == 900
    assert p.value("bounce-after") == 4 * 86400
    assert p.value("bounce-on-4xx-status") is False
    assert p.value("use-starttls") is True
    assert p.value("require-starttls") is False
    assert p.value("dkim-sign") == "yes"
    lines = {
        n: _line(seed, "msn.com/transactional", n)
        for n in (
            "max-smtp-out",
            "max-msg-rate",
            "retry-after",
            "bounce-after",
            "min-retry-interval",
            "bounce-on-4xx-status",
            "use-starttls",
            "require-starttls",
            "dkim-sign",
        )
    }
    assert lines == {
        "max-smtp-out": 55, "max-msg-rate": 60, "retry-after": 51, "bounce-after": 52,
        "min-retry-interval": 61, "bounce-on-4xx-status": 64, "use-starttls": 74,
        "require-starttls": 75, "dkim-sign": 76,
    }  # fmt: skip
    first, second = p.backoff_rules
    assert (first.code, first.literal, first.duration, first.max_smtp_out) == (
        "421",
        "RP-001",
        3600,
        5,
    )
    assert first.max_msg_rate == Rate(count=1000, seconds=3600)
    assert (second.code, second.literal, second.duration, second.max_smtp_out) == (
        "421",
        "4.3.2",
        2700,
        2,
    )
    assert second.max_msg_rate == Rate(count=500, seconds=3600)
    assert (first.origin.line, second.origin.line) == (70, 71)
    assert p.typed("max-smtp-out", int) == 20
    assert p.optional("max-msg-rate", Rate) == Rate(count=5000, seconds=3600)
    with pytest.raises(TypeError):
        p.typed("max-smtp-out", str)


def test_seed_marketing_and_catch_all_queues(seed: Config) -> None:
    hm = seed.policy_for("hotmail.com/marketing-1")
    assert hm.value("bounce-after") == 2 * 3600
    assert _line(seed, "hotmail.com/marketing-1", "bounce-after") == 41
    assert hm.value("max-smtp-out") == 20  # the global <domain hotmail.com> still applies
    org2 = seed.policy_for("example.org/marketing-2")
    assert org2.value("bounce-after") == 2 * 3600
    assert _line(seed, "example.org/marketing-2", "bounce-after") == 38
    assert org2.value("max-smtp-out") == 50
    assert org2.value("max-msg-rate") == Rate(count=200, seconds=1)
    tx = seed.policy_for("example.org/transactional")
    assert tx.value("bounce-after") == 4 * 86400
    assert _line(seed, "example.org/transactional", "bounce-after") == 83
    assert tx.backoff_rules == ()


def test_outlook_live_msn_share_the_hotmail_queue(seed: Config) -> None:
    for vmta in (None, "transactional", "marketing-1", "marketing-2"):
        for domain in ("outlook.com", "live.com", "msn.com", "hotmail.com"):
            assert seed.queue_policy(domain, vmta).domain == "hotmail.com"
    assert seed.queue_name("live.com") == f"hotmail.com/{DEFAULT_VMTA}"
    assert seed.policy_for("msn.com").queue == "hotmail.com/{default}"
    assert seed.queue_map()["transactional"] == {
        "live.com": "hotmail.com",
        "msn.com": "hotmail.com",
        "outlook.com": "hotmail.com",
    }


def test_unknown_vmta_or_pool_as_queue(seed: Config) -> None:
    with pytest.raises(UnknownQueueError, match="no virtual-mta named 'ghost'"):
        seed.policy_for("x.com/ghost")
    with pytest.raises(UnknownQueueError, match="is a virtual-mta-pool"):
        seed.policy_for("x.com/marketing")


PRECEDENCE = """
max-smtp-out 1
<domain *>
    max-smtp-out 4
</domain>
<domain d.com>
    max-smtp-out 7
</domain>
<virtual-mta v>
    max-smtp-out 2
    <domain *>
        max-smtp-out 6
    </domain>
    <domain d.com>
        max-smtp-out 9
    </domain>
</virtual-mta>
<virtual-mta w>
</virtual-mta>
<virtual-mta-pool p>
    virtual-mta v
    virtual-mta w
    max-smtp-out 3
    <domain *>
        max-smtp-out 5
    </domain>
    <domain d.com>
        max-smtp-out 8
    </domain>
</virtual-mta-pool>
"""


def _strip(text: str, *needles: str) -> str:
    """Remove the ``max-smtp-out N`` lines for the given N values."""
    return "\n".join(ln for ln in text.splitlines() if ln.strip() not in needles)


@pytest.mark.parametrize(
    ("removed", "expected"),
    [
        ((), 9),  # <virtual-mta v><domain d>
        (("max-smtp-out 9",), 8),  # <virtual-mta-pool p><domain d>
        (("max-smtp-out 9", "max-smtp-out 8"), 7),  # <domain d>
        (("max-smtp-out 9", "max-smtp-out 8", "max-smtp-out 7"), 6),  # <virtual-mta v><domain *>
        (("max-smtp-out 9", "max-smtp-out 8", "max-smtp-out 7", "max-smtp-out 6"), 5),  # pool *
        (("max-smtp-out 9", "max-smtp-out 8", "max-smtp-out 7", "max-smtp-out 6",
          "max-smtp-out 5"), 4),
        (("max-smtp-out 9", "max-smtp-out 8", "max-smtp-out 7", "max-smtp-out 6", "max-smtp-out 5",
          "max-smtp-out 4"), 2),  # directly in <virtual-mta v>
        (("max-smtp-out 9", "max-smtp-out 8", "max-smtp-out 7", "max-smtp-out 6", "max-smtp-out 5",
          "max-smtp-out 4", "max-smtp-out 2"), 3),  # directly in the pool
        (("max-smtp-out 9", "max-smtp-out 8", "max-smtp-out 7", "max-smtp-out 6", "max-smtp-out 5",
          "max-smtp-out 4", "max-smtp-out 2", "max-smtp-out 3"), 1),  # global
        (("max-smtp-out 9", "max-smtp-out 8", "max-smtp-out 7", "max-smtp-out 6", "max-smtp-out 5",
          "max-smtp-out 4", "max-smtp-out 2", "max-smtp-out 3", "max-smtp-out 1"), 20),  # default
    ],
)  # fmt: skip
def test_precedence_layers(removed: tuple[str, ...], expected: int) -> None:
    config = load_config_text(_strip(PRECEDENCE, *removed))
    assert config.queue_policy("d.com", "v").value("max-smtp-out") == expected


def test_pool_domain_blocks_apply_to_every_member_and_not_others() -> None:
    config = load_config_text(PRECEDENCE)
    assert config.queue_policy("d.com", "w").value("max-smtp-out") == 8
    assert config.queue_policy("e.com", "w").value("max-smtp-out") == 5
    assert config.queue_policy("d.com").value("max-smtp-out") == 7
    assert config.queue_policy("e.com").value("max-smtp-out") == 4
    assert config.queue_policy("e.com").setting("max-smtp-out").origin_text == "<string>:4"


def test_first_listed_pool_wins_when_a_vmta_is_in_two() -> None:
    config = load_config_text(
        "<virtual-mta v>\n</virtual-mta>\n"
        "<virtual-mta-pool p1>\n virtual-mta v\n <domain *>\n  max-smtp-out 11\n </domain>\n"
        "</virtual-mta-pool>\n"
        "<virtual-mta-pool p2>\n virtual-mta v\n <domain *>\n  max-smtp-out 12\n </domain>\n"
        "</virtual-mta-pool>\n"
    )
    assert config.queue_policy("x.com", "v").value("max-smtp-out") == 11


def test_queue_to_target_settings_govern_and_chains() -> None:
    config = load_config_text(
        "domain-macro ms hotmail.com,outlook.com\n"
        '<domain $ms>\n queue-to "hotmail.queue"\n max-smtp-out 99\n</domain>\n'
        "<domain hotmail.queue>\n queue-to ms.final\n</domain>\n"
        "<domain ms.final>\n max-smtp-out 3\n smtp-hosts hotmail.com\n</domain>\n"
    )
    p = config.queue_policy("outlook.com")
    assert p.queue == "ms.final/{default}"
    assert p.queue_to_chain == ("outlook.com", "hotmail.queue", "ms.final")
    assert p.value("max-smtp-out") == 3


def test_queue_to_cycle_is_an_error_at_load() -> None:
    with pytest.raises(ConfigError, match=r"queue-to loops: a\.com -> b\.com -> c\.com -> a\.com"):
        load_config_text(
            "<domain a.com>\n queue-to b.com\n</domain>\n<domain b.com>\n queue-to c.com\n"
            "</domain>\n<domain c.com>\n queue-to a.com\n</domain>\n"
        )


def test_vmta_only_cycle_is_detected() -> None:
    with pytest.raises(ConfigError) as info:
        load_config_text(
            "<domain a.com>\n queue-to b.com\n</domain>\n"
            "<virtual-mta v>\n <domain b.com>\n  queue-to a.com\n </domain>\n</virtual-mta>\n"
        )
    assert [(d.line, d.directive) for d in info.value.errors] == [(6, "queue-to")]


def test_pattern_list_rules_follow_inline_rules() -> None:
    config = load_config_text(
        "<smtp-pattern-list l>\n reply /^421/ mode=backoff\n</smtp-pattern-list>\n"
        "<domain *>\n smtp-pattern-list l\n</domain>\n"
        "<domain x.com>\n 421 RP-001 *, 1h, 5, 1000\n</domain>\n"
    )
    rules = config.queue_policy("x.com").backoff_rules
    assert [(r.code, r.list_name) for r in rules] == [("421", None), (None, "l")]
    assert len(config.queue_policy("y.com").backoff_rules) == 1


def test_policy_json_is_stable(seed: Config) -> None:
    doc = seed.policy_for("msn.com/transactional").as_dict()
    assert list(doc) == [
        "queue", "domain", "vmta", "requested", "queue_to_chain", "settings", "backoff_rules",
    ]  # fmt: skip
    assert doc["settings"]["max-smtp-out"] == {  # type: ignore[index]
        "value": 20,
        "text": "20",
        "origin": f"{SEED}:55",
    }
    assert doc["settings"]["connect-timeout"]["origin"] == "default"  # type: ignore[index]


def test_unnamed_domains_share_one_settings_mapping(seed: Config) -> None:
    a = seed.queue_policy("a.example", "marketing-1")
    b = seed.queue_policy("B.Example", "marketing-1")
    assert (a.queue, b.queue) == ("a.example/marketing-1", "b.example/marketing-1")
    assert a.settings is b.settings
    assert a.value("bounce-after") == 2 * 3600


def test_wildcard_queue_to_merges_every_other_domain() -> None:
    config = load_config_text(
        "<domain *>\n queue-to relay.queue\n</domain>\n"
        "<domain relay.queue>\n max-smtp-out 2\n</domain>\n"
        "<domain own.com>\n queue-to own.com\n</domain>\n"
    )
    p = config.queue_policy("anything.org")
    assert (p.queue, p.requested) == ("relay.queue/{default}", "anything.org/{default}")
    assert p.queue_to_chain == ("anything.org", "relay.queue")
    assert p.value("max-smtp-out") == 2
    assert config.queue_policy("own.com").queue == "own.com/{default}"
