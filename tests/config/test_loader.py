"""The loader: every block kind, includes, macros, clearing, errors with lines, warnings."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from sluice.config import ConfigError, Severity, load_config, load_config_text
from sluice.config.values import Listen

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def _errors(text: str) -> list[tuple[int, str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "t.conf")
    return [(d.line, d.directive, d.message) for d in info.value.errors]


@pytest.mark.parametrize("name", ["sample-13-1.conf", "sample-13-2.conf", "sample-13-3.conf"])
def test_reference_samples_load_without_errors(name: str) -> None:
    config = load_config(str(DATA / name), read_text=_read)
    assert all(w.severity is Severity.WARNING for w in config.warnings)


def test_seed_loads_with_its_two_warnings() -> None:
    config = load_config(str(REPO / "examples" / "seed.conf"), read_text=_read)
    assert [(w.line, w.directive) for w in config.warnings] == [
        (75, "require-starttls"),
        (76, "dkim-sign"),
    ]
    assert "plaintext" in config.warnings[0].message
    assert "domain-key" in config.warnings[1].message
    assert config.value("max-cpu-usage") == 90
    assert config.setting("max-cpu-usage").origin is not None
    assert config.setting("max-cpu-usage").origin.line == 19  # type: ignore[union-attr]
    assert sorted(config.vmtas) == ["marketing-1", "marketing-2", "transactional"]
    assert config.pool("marketing").members == ("marketing-1", "marketing-2")
    assert config.listeners[0].listen == Listen(
        address=ipaddress.ip_address("127.0.0.1"), port=2525
    )
    assert config.http.port == 8080


def test_ten_mistakes_are_all_reported_with_lines() -> None:
    path = str(DATA / "ten-mistakes.conf")
    with pytest.raises(ConfigError) as info:
        load_config(path, read_text=_read)
    got = [(d.line, d.directive) for d in info.value.errors]
    assert got == [
        (3, "max-smtp-outt"),  # unknown directive
        (5, "max-smtp-out"),  # wrong block
        (8, "max-msg-rate"),  # bad value
        (9, "421"),  # malformed inline backoff rule
        (11, "</virtual-mta>"),  # stray close tag
        (15, "virtual-mta"),  # duplicate VMTA name
        (18, "virtual-mta"),  # pool names an unknown VMTA
        (24, "queue-to"),  # queue-to cycle
        (26, "include"),  # include not found
        (27, "domain"),  # unclosed block
    ]
    messages = [d.message for d in info.value.errors]
    assert "did you mean max-smtp-out?" in messages[0]
    assert "not allowed inside <source>" in messages[1]
    assert "expected a rate such as 1000/h" in messages[2]
    assert "CODE TEXT *, DURATION, CONNECTIONS, MESSAGES_PER_HOUR" in messages[3]
    assert "a.example -> b.example -> a.example" in messages[7]
    assert all(str(d).startswith(f"{path}:{d.line}: {d.directive}: ") for d in info.value.errors)


def test_domain_names_star_default_and_macros() -> None:
    config = load_config_text(
        "domain-macro ms hotmail.com, outlook.com,live.com\n"
        "<domain $ms example.NET>\n max-smtp-out 3\n</domain>\n"
        "<domain default>\n max-smtp-out 4\n</domain>\n"
        "<domain *>\n max-msg-per-connection 9\n</domain>\n"
    )
    assert config.macros["ms"] == ("hotmail.com", "outlook.com", "live.com")
    assert config.domains[0].names == ("hotmail.com", "outlook.com", "live.com", "example.net")
    assert config.domains[1].names == ("*",)
    assert config.queue_policy("live.com").value("max-smtp-out") == 3
    assert config.queue_policy("other.org").value("max-smtp-out") == 4
    assert config.queue_policy("other.org").value("max-msg-per-connection") == 9
    assert _errors("<domain $nope>\n</domain>") == [
        (1, "domain", "unknown domain macro $nope (define it first: domain-macro nope a.com,b.com)")
    ]


def test_sources_users_and_named_sources() -> None:
    config = load_config_text(
        "<source 0/0>\n smtp-service yes\n always-allow-relaying no\n</source>\n"
        "<source 10.1.0/24>\n always-allow-relaying yes\n</source>\n"
        "<source {auth}>\n default-virtual-mta v1\n</source>\n"
        "<source {cust1}>\n default-virtual-mta v2\n</source>\n"
        "<smtp-user cust1>\n password secret\n source {cust1}\n</smtp-user>\n"
        "<virtual-mta v1>\n</virtual-mta>\n<virtual-mta v2>\n</virtual-mta>\n"
    )
    assert config.sources[1].network == ipaddress.ip_network("10.1.0.0/24")
    assert config.sources[2].label == "{auth}"
    inside = config.source_for("10.1.0.7")
    assert inside.value("always-allow-relaying") is True
    assert inside.matched == ("10.1.0.0/24", "0.0.0.0/0")
    outside = config.source_for("192.0.2.1")
    assert outside.value("always-allow-relaying") is False
    assert config.source_for("::1").matched == ("0.0.0.0/0",)
    assert outside.value("default-virtual-mta") is None
    both = config.source_for("192.0.2.1", ["{cust1}", "{auth}"])
    assert both.value("default-virtual-mta") == "v2"
    assert config.source_for("192.0.2.1", ["{auth}"]).value("default-virtual-mta") == "v1"
    assert config.smtp_users["cust1"].settings["source"].value == "{cust1}"


def test_pattern_lists_and_bounce_categories() -> None:
    config = load_config_text(
        "<smtp-pattern-list blocking>\n"
        " reply /421 .* Please try again later/ mode=backoff\n"
        " reply /^550 5\\.7\\.1/ disable-source-ip reenable-after=1h\n"
        " reply /x\\/y/ mode=normal backoff-to-normal-after=30m bounce-rcpt\n"
        "</smtp-pattern-list>\n"
        "<pattern-list inbound>\n mail-from /@news\\./ virtual-mta=v1\n"
        " rcpt-to /@gmail\\.com$/ virtual-mta=v1\n</pattern-list>\n"
        "<source 0/0>\n pattern-list inbound\n</source>\n"
        "<virtual-mta v1>\n</virtual-mta>\n"
        "<bounce-category-patterns>\n /mailbox +(is +)?full/ quota-issues\n"
        " /^[45]\\.1\\.1/ bad-mailbox\n // other\n</bounce-category-patterns>\n"
        "<domain *>\n smtp-pattern-list blocking\n</domain>\n"
    )
    rules = config.smtp_pattern_lists["blocking"].rules
    assert [r.mode for r in rules] == ["backoff", None, "normal"]
    assert rules[1].disable_source_ip
    assert rules[1].reenable_after == 3600
    assert rules[2].duration == 1800
    assert rules[2].bounce_rcpt
    assert rules[2].matches("450 x/y")
    assert rules[0].matches("421 mta7 Please try again later")
    inbound = config.pattern_lists["inbound"].rules
    assert [(r.field, r.virtual_mta) for r in inbound] == [("mail-from", "v1"), ("rcpt-to", "v1")]
    assert [c.category for c in config.bounce_category_patterns] == [
        "quota-issues",
        "bad-mailbox",
        "other",
    ]
    assert config.queue_policy("x.org").backoff_rules == rules


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (
            "<smtp-pattern-list l>\n reply /x/ mode=sideways\n</smtp-pattern-list>",
            2,
            "unknown action",
        ),
        ("<smtp-pattern-list l>\n reply /([/ mode=backoff\n</smtp-pattern-list>", 2, "compile"),
        ("<smtp-pattern-list l>\n reply /x/\n</smtp-pattern-list>", 2, "no action"),
        (
            "<smtp-pattern-list l>\n match /x/ mode=backoff\n</smtp-pattern-list>",
            2,
            "expected reply",
        ),
        (
            "<bounce-category-patterns>\n /x/ server-busy\n</bounce-category-patterns>",
            2,
            "category",
        ),
        ("<pattern-list p>\n mail-from /x/ virtual-mta=ghost\n</pattern-list>", 2, "ghost"),
        ("<domain *>\n smtp-pattern-list nolist\n</domain>", 2, "unknown smtp-pattern-list"),
        ("<source 0/0>\n default-virtual-mta nope\n</source>", 2, "unknown virtual-mta or pool"),
        ("<domain x.com>\n 421 RP-001 *, 1h, five, 1000\n</domain>", 2, "MESSAGES_PER_HOUR"),
        ("<domain x.com>\n 250 ok *, 1h, 5, 1000\n</domain>", 2, "4xx or 5xx"),
        ("421 RP-001 *, 1h, 5, 1000", 1, "belongs in a <domain>"),
        ("<domain x.com>\n 421 RP *, 1 hour, 5, 1000\n</domain>", 2, "duration"),
        ("<source 0/0>\n <domain x.com>\n </domain>\n</source>", 2, "not allowed inside <source>"),
        ("<domain x.com>\n <virtual-mta v>\n </virtual-mta>\n</domain>", 2, "not allowed"),
        ("<address-list>\n</address-list>", 1, "not allowed at top level"),
        ("<limits>\n max-smtp-out 5\n</limits>", 1, "unknown block <limits>"),
        ("<max-smtp-out>5</max-smtp-out>", 1, "write it as a directive line"),
        ("<source nowhere>\n</source>", 1, "address, CIDR or {name}"),
        ("<virtual-mta>\n</virtual-mta>", 1, "exactly one argument"),
        ("<domain>\n</domain>", 1, "expected <domain NAME"),
        ("<domain x.com>\n max-smtp-out\n</domain>", 2, "missing value"),
        ("<domain x.com>\n domain-macro m a.com\n</domain>", 2, "top level"),
        ("<virtual-mta-pool p>\n virtual-mta p\n</virtual-mta-pool>", 2, "is a pool"),
        (
            "<virtual-mta v>\n</virtual-mta>\n<virtual-mta-pool v>\n</virtual-mta-pool>",
            3,
            "duplicate",
        ),
        ("<domain a.com>\n</source>\n</domain>", 2, "stray </source>"),
        ("<virtual-mta v>\n<domain a.com>\n</virtual-mta>", 2, "<domain> is not closed"),
    ],
)
def test_single_mistakes(text: str, line: int, fragment: str) -> None:
    errors = _errors(text)
    assert any(ln == line and fragment in msg for ln, _, msg in errors), errors


def test_blocks_of_every_kind() -> None:
    config = load_config_text(
        "<acct-file /var/log/acct.csv>\n records d,b\n max-size 50M\n</acct-file>\n"
        "<acct-file |/usr/bin/acct-to-http --x 1>\n records d\n</acct-file>\n"
        "<spool /var/spool/sluice>\n deliver-only no\n</spool>\n"
        "<rewrite-list rw>\n mail-from *@a.com *@b.com\n</rewrite-list>\n"
        "<bounce-processor>\n <address-list>\n  domain bounces.example\n </address-list>\n"
        " deliver-unmatched-email no\n</bounce-processor>\n"
        "<feedback-loop-processor>\n <address-list>\n  domain fbl.example\n </address-list>\n"
        "</feedback-loop-processor>\n"
        "enable-signals true\n<signals>\n api-key k\n min-free-space 1G\n</signals>\n"
        "<smtp-listener 0.0.0.0:25>\n</smtp-listener>\nsmtp-listener 0/0:587\n"
        "http-access 127.0.0.1 admin\nhttp-access 0/0 none\n"
    )
    assert config.acct_files[0].path == "/var/log/acct.csv"
    assert config.acct_files[0].settings["max-size"].value == 50 * 1024 * 1024
    assert config.acct_files[1].command == "/usr/bin/acct-to-http --x 1"
    assert config.spools[0].path == "/var/spool/sluice"
    assert config.rewrite_lists["rw"].rules[0].replacement == "*@b.com"
    assert config.bounce_processors[0].domains == ("bounces.example",)
    assert config.feedback_loop_processors[0].domains == ("fbl.example",)
    assert config.signals[0].settings["min-free-space"].value == 1024**3
    assert [str(lst.listen.port) for lst in config.listeners] == ["25", "587"]
    assert [a.level for a in config.http.access] == ["admin", "none"]


def test_empty_string_clears_an_inherited_value() -> None:
    config = load_config_text(
        "<domain *>\n backoff-notify ops@example.com\n</domain>\n"
        '<domain quiet.com>\n backoff-notify ""\n</domain>\n'
    )
    assert config.queue_policy("x.com").value("backoff-notify") == ("ops@example.com",)
    cleared = config.queue_policy("quiet.com").setting("backoff-notify")
    assert cleared.cleared
    assert cleared.value is None
    assert cleared.origin is not None
    assert cleared.origin.line == 5


def test_duplicate_directive_in_a_block_warns_and_later_wins() -> None:
    config = load_config_text("<domain x.com>\n max-smtp-out 3\n max-smtp-out 4\n</domain>\n")
    assert config.queue_policy("x.com").value("max-smtp-out") == 4
    assert [(w.line, w.severity) for w in config.warnings] == [(3, Severity.WARNING)]


def test_includes_are_relative_to_the_including_file(tree: Any) -> None:
    files = tree(
        {
            "/etc/sluice/main.conf": (
                "include conf.d/*.conf\n<virtual-mta v>\n include vm/v.conf\n</virtual-mta>\n"
            ),
            "/etc/sluice/conf.d/a.conf": "<domain a.com>\n max-smtp-out 7\n</domain>\n",
            "/etc/sluice/conf.d/b.conf": "include ../shared.conf\n",
            "/etc/sluice/shared.conf": "postmaster pm@example.com\n",
            "/etc/sluice/vm/v.conf": "<domain *>\n max-smtp-out 2\n</domain>\n",
        }
    )
    config = load_config("/etc/sluice/main.conf", read_text=files.read_text, glob=files.glob)
    assert config.queue_policy("a.com").value("max-smtp-out") == 7
    assert config.queue_policy("b.com", "v").value("max-smtp-out") == 2
    assert config.value("postmaster") == "pm@example.com"
    assert config.setting("postmaster").origin_text == "/etc/sluice/shared.conf:1"
    assert "/etc/sluice/vm/v.conf" in config.files


def test_include_problems(tree: Any) -> None:
    files = tree(
        {
            "main.conf": (
                "include https://example.com/x.conf\ninclude a.conf\ninclude nothing*.conf\n"
            ),
            "a.conf": "include b.conf\n",
            "b.conf": "include a.conf\n<domain x.com>\n",
        }
    )
    with pytest.raises(ConfigError) as info:
        load_config("main.conf", read_text=files.read_text, glob=files.glob)
    got = [(d.file, d.line, d.message) for d in info.value.diagnostics]
    assert (
        "main.conf",
        1,
        "URL includes are not supported offline: https://example.com/x.conf",
    ) in got
    assert ("b.conf", 1, "include cycle: a.conf -> b.conf -> a.conf") in got
    assert ("b.conf", 2, "<domain> is not closed in b.conf") in got
    assert any(f == "main.conf" and ln == 3 and "matches no file" in m for f, ln, m in got)


def test_missing_main_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config("/nonexistent/sluice.conf", read_text=_read)


def test_inline_backoff_rule_matching() -> None:
    config = load_config_text(
        "<domain x.com>\n 421 RP-001 *, 1h, 5, 1000\n 550 *, 10m, 1, 10\n</domain>\n"
    )
    first, second = config.queue_policy("x.com").backoff_rules
    assert first.matches("421 RP-001 Unfortunately, messages from 192.0.2.1 weren't sent.")
    assert first.matches("421 4.7.0 RP-001 rate limited")
    assert not first.matches("450 RP-001")
    assert not first.matches("421 rp-001")  # case-sensitive
    assert second.matches("550 5.7.1 blocked")
    assert second.max_msg_rate is not None
    assert second.max_msg_rate.count == 10
    assert (first.origin.line, second.origin.line) == (2, 3)


def test_include_inside_a_pattern_list(tree: Any) -> None:
    files = tree(
        {
            "m.conf": "<smtp-pattern-list l>\n include rules.conf\n</smtp-pattern-list>\n",
            "rules.conf": "reply /^421/ mode=backoff\n",
        }
    )
    config = load_config("m.conf", read_text=files.read_text, glob=files.glob)
    assert config.smtp_pattern_lists["l"].rules[0].origin.file == "rules.conf"
