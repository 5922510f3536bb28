"""``<warmup-plan>`` blocks and ``warmup-plan``/``warmup-start`` (a Sluice extension):
loading, every error with its file:line, warnings, the queue view and the value kinds."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.config import ConfigError, Severity, load_config, load_config_text
from sluice.config._warmup import MAX_WARMUP_DAYS
from sluice.config.values import ValueFormError, format_value, parse_value

if TYPE_CHECKING:
    from conftest import FileTree

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[2]

VMTA = """
<virtual-mta ip21>
    smtp-source-host 203.0.113.21 m21.example.com
    warmup-plan new-ip
    warmup-start 2026-12-01
</virtual-mta>
"""


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def _plan(body: str, *, vmta: str = VMTA) -> str:
    return f"<warmup-plan new-ip>\n{body}\n</warmup-plan>\n{vmta}"


def _problems(text: str) -> list[tuple[str, int, str, str, Severity]]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "t.conf")
    return [(d.file, d.line, d.directive, d.message, d.severity) for d in info.value.diagnostics]


def _errors(text: str) -> list[tuple[int, str, str]]:
    return [(ln, d, m) for f, ln, d, m, s in _problems(text) if s is Severity.ERROR]


def _one_error(text: str) -> tuple[int, str, str]:
    errors = _errors(text)
    assert len(errors) == 1, errors
    return errors[0]


def _warnings(text: str) -> list[tuple[int, str, str]]:
    config = load_config_text(text, "t.conf")
    return [(w.line, w.directive, w.message) for w in config.warnings]


# ---------------------------------------------------------------- a plan that loads


def test_sample_plan_loads_with_every_part_and_its_origin() -> None:
    path = str(DATA / "warmup.conf")
    config = load_config(path, read_text=_read)
    assert config.warnings == ()
    plan = config.warmup_plans["new-ip"]
    assert plan.origin.line == 8
    assert [(g.name, g.domains, g.origin.line) for g in plan.groups] == [
        ("microsoft", ("hotmail.com", "outlook.com", "live.com", "msn.com"), 9),
        ("gmail", ("gmail.com", "googlemail.com"), 10),
    ]
    assert [(d.first, d.last, d.total, d.caps, d.origin.line) for d in plan.days] == [
        (1, 1, 2000, (("microsoft", 500), ("gmail", 1000)), 11),
        (2, 2, 4000, (("microsoft", 1000), ("gmail", 2000)), 12),
        (3, 4, 8000, (("microsoft", 2000), ("gmail", 4000)), 13),
        (5, 5, 15000, (), 14),
        (6, 7, None, (("microsoft", 8000),), 15),
    ]
    assert plan.length == 7
    assert plan.day(4) is plan.days[2]
    assert plan.day(8) is None
    assert plan.days[4].cap("microsoft") == 8000
    assert plan.days[4].cap("gmail") is None
    assert plan.hold_deferral_percent == 10.0
    assert plan.hold_bounce_percent == 2.5
    assert plan.min_sample == 200
    assert plan.overflow_vmta is None
    setting = plan.settings["hold-if-bounce-rate"]
    assert (setting.text, str(setting.origin)) == ("2.5%", f"{path}:17")
    spill = config.warmup_plans["spill"]
    assert spill.overflow_vmta == "warm-pool"
    assert spill.min_sample is None
    assert spill.hold_deferral_percent is None
    assert config.warmup_users() == {"new-ip": ("ip21",), "spill": ("ip22",)}
    found = config.warmup_of("ip21")
    assert found is not None
    assert found[0] is plan
    assert found[1].value == datetime.date(2026, 12, 1)
    assert found[1].origin is not None
    assert found[1].origin.line == 29
    assert config.warmup_of("warm1") is None
    assert config.warmup_of("nope") is None


def test_plan_json_and_summary_line() -> None:
    config = load_config(str(DATA / "warmup.conf"), read_text=_read)
    doc = config.warmup_plans["new-ip"].as_dict()
    assert doc["days"] == 7
    assert doc["domain_groups"] == {
        "microsoft": ["hotmail.com", "outlook.com", "live.com", "msn.com"],
        "gmail": ["gmail.com", "googlemail.com"],
    }
    steps = doc["steps"]
    assert isinstance(steps, list)
    assert steps[2]["days"] == [3, 4]
    assert steps[4] == {
        "days": [6, 7],
        "total": None,
        "caps": {"microsoft": 8000},
        "origin": f"{DATA / 'warmup.conf'}:15",
    }
    assert doc["hold_if_bounce_rate"] == 2.5
    assert doc["hold_min_sample"] == 200
    line = config.warmup_plans["new-ip"].describe()
    assert line.startswith("7 days, overall cap 2000 on day 1 to * on day 7")
    assert "groups microsoft, gmail" in line
    assert "bounces > 2.5%" in line
    assert config.warmup_plans["spill"].describe().endswith("overflow to warm-pool")


def test_groups_may_be_defined_after_the_days_that_cap_them() -> None:
    config = load_config_text(
        _plan("day 1 100 gmail=50\nday 2-3 *\ndomain-group gmail gmail.com"), "t.conf"
    )
    plan = config.warmup_plans["new-ip"]
    assert plan.group("gmail") is not None
    assert plan.days[0].caps == (("gmail", 50),)


def test_day_lines_may_be_written_out_of_order() -> None:
    config = load_config_text(_plan("day 3 300\nday 1 100\nday 2 200"), "t.conf")
    assert [d.total for d in config.warmup_plans["new-ip"].days] == [100, 200, 300]


def test_plan_in_an_included_file_and_unused_plan(
    tree: Callable[[dict[str, str]], FileTree],
) -> None:
    files = {
        "/etc/sluice/main.conf": "include plans/*.conf\n" + VMTA,
        "/etc/sluice/plans/a.conf": "<warmup-plan new-ip>\n  day 1 10\n</warmup-plan>\n",
        "/etc/sluice/plans/b.conf": "<warmup-plan spare>\n  day 1-2 *\n</warmup-plan>\n",
    }
    fs = tree(files)
    config = load_config("/etc/sluice/main.conf", read_text=fs.read_text, glob=fs.glob)
    assert str(config.warmup_plans["new-ip"].days[0].origin) == "/etc/sluice/plans/a.conf:2"
    assert config.warmup_users() == {"new-ip": ("ip21",), "spare": ()}


def test_error_in_an_included_plan_names_that_file(
    tree: Callable[[dict[str, str]], FileTree],
) -> None:
    files = tree(
        {
            "/c/main.conf": "include plan.conf\n" + VMTA,
            "/c/plan.conf": "<warmup-plan new-ip>\n  day 1 10\n  day 3 30\n</warmup-plan>\n",
        }
    )
    with pytest.raises(ConfigError) as info:
        load_config("/c/main.conf", read_text=files.read_text, glob=files.glob)
    assert [str(d).split(": ")[0] for d in info.value.errors] == ["/c/plan.conf:3"]


@pytest.mark.parametrize("name", ["sample-13-1.conf", "sample-13-2.conf", "sample-13-3.conf"])
def test_reference_samples_still_load_and_have_no_plans(name: str) -> None:
    config = load_config(str(DATA / name), read_text=_read)
    assert all(w.severity is Severity.WARNING for w in config.warnings)
    assert dict(config.warmup_plans) == {}


def test_seed_still_loads_and_its_queues_show_no_plan() -> None:
    config = load_config(str(REPO / "examples" / "seed.conf"), read_text=_read)
    assert [w.directive for w in config.warnings] == ["require-starttls", "dkim-sign"]
    policy = config.policy_for("msn.com/transactional")
    assert policy.setting("warmup-plan").origin is None
    assert policy.value("warmup-plan") is None
    assert policy.value("warmup-start") is None
    assert config.warmup_users() == {}


# ---------------------------------------------------------------- the queue view (explain)


def test_queues_of_a_planned_vmta_show_its_plan_and_start() -> None:
    config = load_config_text(_plan("day 1 10"), "t.conf")
    policy = config.policy_for("gmail.com/ip21")
    assert policy.value("warmup-plan") == "new-ip"
    assert policy.value("warmup-start") == datetime.date(2026, 12, 1)
    settings = policy.as_dict()["settings"]
    assert isinstance(settings, dict)
    assert settings["warmup-start"] == {
        "value": "2026-12-01",
        "text": "2026-12-01",
        "origin": "t.conf:8",
    }
    assert settings["warmup-plan"]["origin"] == "t.conf:7"
    default = config.policy_for("gmail.com").setting("warmup-plan")
    assert default.origin is None
    assert default.text == ""


# ---------------------------------------------------------------- errors, each with file:line


@pytest.mark.parametrize(
    ("body", "line", "needle"),
    [
        ("day 1 10\nday 3 30", 3, "does not define day 2: days run from 1 without gaps"),
        ("day 1 10\nday 4 30", 3, "add a line: day 2-3 TOTAL|*"),
        ("day 2 10", 2, "does not define day 1"),
        ("day 1-3 10\nday 2 20", 3, "day 2 of plan new-ip is already set at t.conf:2"),
        ("day 3-2 10", 2, "a range runs upwards"),
        ("day 0 10", 2, "days count from 1"),
        ("day one 10", 2, "expected a day number or range N-M first"),
        ("day 1", 2, "expected day N[-M] TOTAL|* [GROUP=CAP ...]"),
        ("day 1 lots", 2, "a whole number, or * for none"),
        ("day 1 -5", 2, "a whole number, or * for none"),
        ("day 1 10 gmail:5", 2, "expected GROUP=CAP such as microsoft=500"),
        ("day 1 10 gmail=5.5", 2, "expected GROUP=CAP"),
        ("domain-group gmail gmail.com\nday 1 10 gmail=5 gmail=6", 3, "capped twice"),
        (f"day 1-{MAX_WARMUP_DAYS + 1} 10", 2, f"at most {MAX_WARMUP_DAYS} days"),
        (
            "domain-group gmail gmail.com\nday 1 10 yahoo=5",
            3,
            "unknown domain group 'yahoo' (known: gmail); define it in this <warmup-plan>: "
            "domain-group yahoo DOMAIN,DOMAIN,...",
        ),
        ("day 1 10 yahoo=5", 2, "(the plan defines none)"),
        (
            "domain-group g a.com\ndomain-group g b.com\nday 1 1 g=1",
            3,
            "domain group g is already defined at t.conf:2",
        ),
        (
            "domain-group g a.com\ndomain-group h b.com,A.com\nday 1 1 g=1 h=1",
            3,
            "a.com is already in group g (t.conf:2); a domain belongs to one group",
        ),
        ("domain-group g bad_domain!\nday 1 1", 2, "invalid domain name 'bad_domain!'"),
        ("domain-group g\nday 1 1", 2, "expected domain-group NAME DOMAIN,DOMAIN"),
        ("domain-group g $nope\nday 1 1", 2, "unknown domain macro $nope"),
        ("day 1 1\nhold-if-deferral-rate 150%", 3, "expected a percentage 0-100"),
        ("day 1 1\nhold-if-bounce-rate lots", 3, "expected a percentage 0-100"),
        ("day 1 1\nhold-min-sample -1", 3, "expected a whole number"),
        ("day 1 1\nhold-if-deferal-rate 5%", 3, "did you mean hold-if-deferral-rate?"),
        ("day 1 1\nmax-smtp-out 5", 3, "not allowed inside <warmup-plan>"),
        ("day 1 1\ndomain-macro x a.com", 3, "define macros at top level"),
        ("day 1 1\n<domain a.com>\n</domain>", 3, "<domain> is not allowed inside <warmup-plan>"),
    ],
)
def test_plan_line_errors(body: str, line: int, needle: str) -> None:
    got_line, _, message = _one_error(_plan(body))
    assert got_line == line
    assert needle in message, message


def test_each_overlap_names_the_line_that_set_the_day() -> None:
    assert [
        (ln, m.split(";")[0]) for ln, _, m in _errors(_plan("day 1-5 1\nday 2 2\nday 4 4"))
    ] == [
        (3, "day 2 of plan new-ip is already set at t.conf:2"),
        (4, "day 4 of plan new-ip is already set at t.conf:2"),
    ]


def test_plan_without_days_is_an_error_at_its_tag() -> None:
    assert _one_error(_plan("hold-min-sample 10")) == (
        1,
        "warmup-plan",
        "plan new-ip has no day lines; add at least: day 1 TOTAL|* [GROUP=CAP ...]",
    )


def test_duplicate_plan_name_is_an_error_at_the_second_block() -> None:
    text = "<warmup-plan p>\nday 1 1\n</warmup-plan>\n<warmup-plan p>\nday 1 2\n</warmup-plan>\n"
    assert _one_error(text) == (
        4,
        "warmup-plan",
        "duplicate <warmup-plan p>: already defined at t.conf:1",
    )


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("<warmup-plan>\nday 1 1\n</warmup-plan>", 1, "<warmup-plan NAME>"),
        ("<warmup-plan a b>\nday 1 1\n</warmup-plan>", 1, "<warmup-plan NAME>"),
        ("<warmup-plan a/b>\nday 1 1\n</warmup-plan>", 1, "invalid name"),
        ("<virtual-mta v>\n<warmup-plan p>\n</warmup-plan>\n</virtual-mta>", 2, "not allowed"),
        ("<warmup-plan p>\nday 1 1\n", 1, "not closed"),
        ("day 1 100", 1, "not allowed at top level; allowed in: warmup-plan"),
        ("domain-group g a.com", 1, "allowed in: warmup-plan"),
        ("warmup-plan p", 1, "allowed in: virtual-mta"),
        ("<domain a.com>\nwarmup-start 2026-01-01\n</domain>", 2, "allowed in: virtual-mta"),
        (
            "<virtual-mta-pool p>\nwarmup-plan x\n</virtual-mta-pool>",
            2,
            "not allowed inside <virtual-mta-pool>",
        ),
    ],
)
def test_misplaced_warmup_syntax(text: str, line: int, needle: str) -> None:
    errors = _errors(text)
    assert errors, text
    assert errors[0][0] == line, errors
    assert needle in errors[0][2], errors


@pytest.mark.parametrize(
    ("vmta", "line", "needle"),
    [
        (
            "<virtual-mta v>\nwarmup-plan nwe-ip\nwarmup-start 2026-12-01\n</virtual-mta>",
            5,
            "unknown warmup-plan 'nwe-ip' (known: new-ip)",
        ),
        (
            "<virtual-mta v>\nwarmup-plan new-ip\n</virtual-mta>",
            5,
            "add warmup-start YYYY-MM-DD (day 1 of the ramp, 00:00 UTC)",
        ),
        (
            "<virtual-mta v>\nwarmup-plan new-ip\nwarmup-start 12/01/2026\n</virtual-mta>",
            6,
            "expected a date YYYY-MM-DD such as 2026-12-01, got '12/01/2026'",
        ),
        (
            "<virtual-mta v>\nwarmup-plan new-ip\nwarmup-start 2026-02-30\n</virtual-mta>",
            6,
            "expected a date YYYY-MM-DD such as 2026-12-01, got '2026-02-30' (day is out",
        ),
        (
            "<virtual-mta v>\nwarmup-plan new-ip\nwarmup-start 2026-12-01 2027-01-01\n"
            "</virtual-mta>",
            6,
            "expected a date YYYY-MM-DD",
        ),
    ],
)
def test_vmta_directive_errors(vmta: str, line: int, needle: str) -> None:
    errors = _errors(_plan("day 1 10", vmta=vmta))
    assert [e[0] for e in errors][:1] == [line], errors
    assert needle in errors[0][2], errors


def test_unknown_plan_when_none_is_defined() -> None:
    text = "<virtual-mta v>\nwarmup-plan p\nwarmup-start 2026-12-01\n</virtual-mta>"
    assert _one_error(text) == (
        2,
        "warmup-plan",
        "unknown warmup-plan 'p' (no <warmup-plan> is defined)",
    )


def test_cleared_plan_in_a_vmta_needs_no_start() -> None:
    config = load_config_text(
        _plan("day 1 1", vmta='<virtual-mta v>\nwarmup-plan ""\n</virtual-mta>'), "t.conf"
    )
    assert config.warmup_users() == {"new-ip": ()}


@pytest.mark.parametrize(
    ("overflow", "needle"),
    [
        ("nowhere", "unknown virtual-mta or pool 'nowhere' (known: ip21, other)"),
        ("ip21", "virtual-mta ip21 uses plan new-ip: its overflow would come back to it"),
    ],
)
def test_overflow_errors(overflow: str, needle: str) -> None:
    vmtas = VMTA + "<virtual-mta other>\n</virtual-mta>\n"
    line, directive, message = _one_error(
        _plan(f"day 1 1\noverflow-to-virtual-mta {overflow}", vmta=vmtas)
    )
    assert (line, directive) == (3, "overflow-to-virtual-mta")
    assert needle in message


def test_every_error_of_a_broken_plan_is_reported_in_line_order() -> None:
    body = "\n".join(
        [
            "domain-group ms hotmail.com",  # 2
            "day 1 100 ms=10",  # 3
            "day 3 300 yahoo=5",  # 4: gap and unknown group
            "hold-if-bounce-rate 101%",  # 5
            "overflow-to-virtual-mta ghost",  # 6
        ]
    )
    vmta = "<virtual-mta v>\nwarmup-plan new-ip\nwarmup-start 2026-13-01\n</virtual-mta>"
    errors = _problems(_plan(body, vmta=vmta))
    assert [(f, ln, d) for f, ln, d, _, s in errors if s is Severity.ERROR] == [
        ("t.conf", 4, "day"),
        ("t.conf", 4, "day"),
        ("t.conf", 5, "hold-if-bounce-rate"),
        ("t.conf", 6, "overflow-to-virtual-mta"),
        ("t.conf", 10, "warmup-start"),  # reported once, not again as a missing start
    ]


# ---------------------------------------------------------------- warnings


def test_group_cap_above_total_and_uncapped_group_are_warnings() -> None:
    warnings = _warnings(
        _plan("domain-group a a.com\ndomain-group b b.com\nday 1 100 a=500\nday 2 *")
    )
    assert warnings == [
        (
            3,
            "domain-group",
            "group b is capped on no day; its mail counts towards the overall cap only",
        ),
        (4, "day", "a=500 is above the day's overall cap 100; the overall cap limits it anyway"),
    ]


def test_start_without_plan_is_a_warning() -> None:
    text = "<virtual-mta v>\nwarmup-start 2026-12-01\n</virtual-mta>"
    assert _warnings(text) == [
        (2, "warmup-start", "virtual-mta v has no warmup-plan; this start day is unused")
    ]


def test_overflow_to_a_pool_holding_the_vmta_is_a_warning() -> None:
    vmtas = VMTA + "<virtual-mta-pool p>\nvirtual-mta ip21\n</virtual-mta-pool>\n"
    warnings = _warnings(_plan("day 1 1\noverflow-to-virtual-mta p", vmta=vmtas))
    assert [(ln, d) for ln, d, _ in warnings] == [(3, "overflow-to-virtual-mta")]
    assert "part of its overflow may come back" in warnings[0][2]


def test_group_domain_filed_under_another_queue_is_a_warning() -> None:
    text = "<domain msn.com>\nqueue-to hotmail.com\n</domain>\n" + _plan(
        "domain-group ms msn.com\ndomain-group other hotmail.com\nday 1 10 ms=1 other=1"
    )
    assert _warnings(text) == [
        (
            5,
            "domain-group",
            "msn.com is queued as hotmail.com on ip21 (queue-to), which is in group other; "
            "list hotmail.com in group ms to cap that queue",
        )
    ]
    same_group = "<domain msn.com>\nqueue-to hotmail.com\n</domain>\n" + _plan(
        "domain-group ms msn.com,hotmail.com\nday 1 10 ms=1"
    )
    assert _warnings(same_group) == []


def test_repeated_option_in_a_plan_is_a_warning() -> None:
    warnings = _warnings(_plan("day 1 1\nhold-min-sample 5\nhold-min-sample 6"))
    assert [(ln, d) for ln, d, _ in warnings] == [(4, "hold-min-sample")]


# ---------------------------------------------------------------- value kinds


@pytest.mark.parametrize(
    ("text", "value", "canonical"),
    [
        ("10%", 10.0, "10%"),
        ("2.5%", 2.5, "2.5%"),
        ("0", 0.0, "0%"),
        ("100", 100.0, "100%"),
        ("0.125%", 0.125, "0.125%"),
        ("99.999", 99.999, "99.999%"),
    ],
)
def test_percent_decimal_round_trip(text: str, value: float, canonical: str) -> None:
    assert parse_value("percent-decimal", text) == value
    assert format_value("percent-decimal", value) == canonical
    assert parse_value("percent-decimal", canonical) == value


@pytest.mark.parametrize("text", ["", "%", "-1%", "100.1%", "1.2345%", "10 %", "1e2", "ten"])
def test_percent_decimal_rejects(text: str) -> None:
    with pytest.raises(ValueFormError, match="a percentage 0-100"):
        parse_value("percent-decimal", text)


def test_date_round_trip_and_rejects() -> None:
    assert parse_value("date", "2026-12-01") == datetime.date(2026, 12, 1)
    assert format_value("date", datetime.date(2027, 1, 5)) == "2027-01-05"
    for bad in ("2026-1-5", "20261201", "2026-12-01T00:00", "2026-00-10", "tomorrow"):
        with pytest.raises(ValueFormError, match="expected a date YYYY-MM-DD"):
            parse_value("date", bad)


# ---------------------------------------------------------------- property


_WORDS = [
    "day", "1", "1-2", "0", "*", "100", "g=5", "g=x", "=", "domain-group", "g", "a.com", "$m",
    "hold-if-deferral-rate", "10%", "101%", "overflow-to-virtual-mta", "ip21", " ",
]  # fmt: skip
_DAY_LINES = st.builds(
    lambda first, extra, total, caps: " ".join(
        ["day", f"{first}-{first + extra}" if extra else str(first), total, *caps]
    ),
    st.integers(0, 4),
    st.integers(0, 2),
    st.sampled_from(["*", "100", "5", "x"]),
    st.lists(st.sampled_from(["g=5", "h=200", "zz=1"]), max_size=2, unique=True),
)
_OTHER_LINES = st.sampled_from(
    [
        "domain-group g a.com",
        "domain-group h b.com,c.com",
        "domain-group g $m",
        "domain-group h a.com",
        "hold-if-deferral-rate 10%",
        "hold-if-bounce-rate 101%",
        "hold-min-sample 5",
        "overflow-to-virtual-mta other",
        "overflow-to-virtual-mta ip21",
    ]
)
_GARBAGE = st.lists(st.sampled_from(_WORDS), max_size=6).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_DAY_LINES, _DAY_LINES, _DAY_LINES, _OTHER_LINES, _GARBAGE), max_size=8))
def test_any_plan_body_loads_as_a_ramp_or_fails_with_lines(lines: list[str]) -> None:
    vmtas = VMTA + "<virtual-mta other>\n</virtual-mta>\n"
    text = "domain-macro m a.com\n" + _plan("\n".join(lines), vmta=vmtas)
    last_line = text.count("\n") + 1
    error: ConfigError | None = None
    try:
        config = load_config_text(text, "t.conf")
    except ConfigError as exc:
        error = exc
    if error is not None:
        assert error.errors
        assert all(d.file == "t.conf" and 1 <= d.line <= last_line for d in error.diagnostics)
        return
    days = config.warmup_plans["new-ip"].days
    covered = 0
    for day in days:  # a plan that loaded runs from day 1 without gaps or overlaps
        assert day.first == covered + 1
        covered = day.last
    assert covered == config.warmup_plans["new-ip"].length >= 1
