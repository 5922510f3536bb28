"""Sanity checks of the directive table data (sluice.config._directive_data).

These run on the data alone; the tests that parse every default with the real value parsers
live beside the loader.
"""

from __future__ import annotations

import re

import pytest

from sluice.config._directive_data import DIRECTIVE_ROWS, DirectiveRow


def _words(text: str) -> list[str]:
    """Split a whitespace-separated list written as a block of text."""
    return text.split()


KINDS = frozenset(
    _words(
        "bool int int-or-unlimited percent port duration duration-or-never duration-list rate"
        " volume-rate daily-limit size string word name email path address cidr listen host-port"
        " host-list cidr-int cidr-rate source-host domain-key regex record-list record-fields"
        " http-access duration-or-bool email-list header-name date percent-decimal"
    )
)
SCOPES = frozenset(
    _words(
        "global domain virtual-mta virtual-mta-pool source smtp-user acct-file spool"
        " bounce-processor feedback-loop-processor address-list signals rewrite-list"
        " smtp-listener warmup-plan"
    )
)
IMPLEMENTED = frozenset(
    _words("config intake delivery shaping tls dkim mgmt bounce acct spool parsed")
)
QUEUE_SCOPES = "global domain virtual-mta virtual-mta-pool"

# Every directive named in reference/powermta.md §1-§9 and §12, plus those used in the §13
# sample configs, extracted by hand. Left out on purpose: pattern actions (mode=,
# disable-source-ip, reenable-after=, backoff-to-normal-after= as an action, bounce-rcpt),
# block tags, and map-header-to-field (named only as an undocumented gap).
REFERENCE_NAMES = _words(
    """
include domain-macro
queue-priority allow-priority-interruption allow-priority-interruption-during-transfer
queue-to smtp-hosts route default-smtp-port disable-mx-rollup type reroute-to-virtual-mta
backoff-reroute-to-virtual-mta mx-connection-attempts smtp-421-means-mx-unavailable
retry-after retry-recipients-after retry-after-dns-error retry-upon-new-mail bounce-after
notify-of-delay-every bounce-upon-no-mx bounce-upon-5xx-greeting bounce-upon-transfer-failure
bounce-upon-pix-transfer-failure assume-delivery-upon-data-termination-timeout
max-smtp-out backoff-max-smtp-out source-ip-max-smtp-out max-msg-per-connection
max-rcpt-per-message max-rcpt-per-transaction max-errors-per-connection max-msg-rate
backoff-max-msg-rate source-ip-max-msg-rate max-connect-rate backoff-max-connect-rate
source-ip-max-connect-rate max-data-volume-rate backoff-max-data-volume-rate
source-ip-max-data-volume-rate smtp-out-rampup-interval connection-idle-timeout
total-max-smtp-out total-max-smtp-in max-msg-per-hour backoff-max-msg-per-hour
connect-timeout smtp-greeting-timeout data-send-timeout smtp-data-termination-timeout
ignore-8bitmime ignore-chunking ignore-pipelining ignore-dsn pix-bug-workaround
allow-cancel-during-transfer smtp-553-means-invalid-mailbox replace-smtp-421-service-response
auth-username auth-password use-unencrypted-plain-auth check-spf-outbound
backoff-upon-all-sources-disabled backoff-retry-after backoff-to-normal-after
backoff-to-normal-after-delivery backoff-notify smtp-pattern-list reenable-source-ip-after
disabled-source-ip-notify log-disabled-ips
dsn-format suppress-local-dsn deliver-local-dsn postmaster bcc-upon-delivery
disable-acct-records relay-domain deliver-unmatched-email deliver-matched-email domain
records record-fields move-interval max-size delete-after move-to world-readable user-string
smtp-source-host host-name virtual-mta default-virtual-mta process-x-virtual-mta
retain-x-virtual-mta max-cold-virtual-mta-msg auto-cold-virtual-mta process-x-job
retain-x-job jobid-header process-x-envid verp-default pattern-list mail-from
smtp-listener always-allow-relaying smtp-service max-message-size log-connections
log-commands log-data require-auth allow-unencrypted-plain-auth allow-starttls
smtp-max-auth-failure-rate add-received-header remove-received-headers hide-message-source
add-message-id-header add-date-header date-header-time allow-mailmerge
always-allow-api-submission accept-invalid-recipients rewrite-list
password authentication-method source
smtp-server-tls-certificate smtp-server-tls-allow-tlsv1.1 smtp-server-tls-allow-tlsv1.2
pickup
use-starttls require-starttls reuse-ssl-session domain-key dkim-sign dk-sign dkim-identity
dkim-identity-fallback dkim-algorithm dkim-body-canon dkim-headers-canon dkim-add-body-limit
dkim-add-timestamp dkim-expire-after dkim-query-method dkim-headers
dkim-disallow-adding-headers
http-mgmt-port http-access http-redirect-to-https max-events-recorded
log-file log-rotate log-file-world-readable log-messages log-resolution
log-transfer-failures track-recipient-events
enable-signals api-key upload-url engagement-tracking min-free-space
sync-msg-create sync-msg-update run-as-root edns-udp-length deliver-only delete-file-holders
retry-interval max-retry-time min-retry-interval bounce-on-4xx-status log-delivery-failures
log-fallback-failures max-cpu-usage
"""
)

# Every directive of the seed configuration (../shared/seed/seed.conf), which must load.
SEED_NAMES = _words(
    """
smtp-listener http-mgmt-port always-allow-relaying process-x-virtual-mta default-virtual-mta
max-cpu-usage smtp-source-host virtual-mta bounce-after queue-to retry-interval
max-retry-time max-smtp-out max-msg-per-connection max-errors-per-connection
max-msg-per-hour min-retry-interval bounce-on-4xx-status log-delivery-failures
log-fallback-failures use-starttls require-starttls dkim-sign max-msg-rate retry-after
"""
)

SLUICE_EXTENSIONS = _words(
    """
dns-server smtp-client-tls-ca-file http-mgmt-token-file smtp-command-timeout
smtp-idle-timeout max-smtp-in-per-client spool-format spool-group-commit-ms
intake-processes bare-lf-policy
warmup-plan warmup-start domain-group day hold-if-deferral-rate hold-if-bounce-rate
hold-min-sample overflow-to-virtual-mta
"""
)

_DURATION = r"\d+[smhd](?:\d+[smhd])*|0"
_RATE_UNIT = r"(?:d|day|h|hr|m|min|s|sec)"
_RATE = rf"unlimited|0|[1-9]\d*/\d*{_RATE_UNIT}"
_BOOL = r"yes|no|true|false"
# A loose shape per kind for the defaults written in the table.
DEFAULT_SHAPES: dict[str, str] = {
    "bool": _BOOL,
    "int": r"\d+",
    "int-or-unlimited": r"\d+|unlimited",
    "percent": r"(?:100|[1-9]?\d)",
    "port": r"[1-9]\d{0,4}",
    "duration": _DURATION,
    "duration-or-never": rf"{_DURATION}|never",
    "duration-list": rf"(?:{_DURATION})(?:,(?:{_DURATION}))*",
    "rate": _RATE,
    "volume-rate": rf"unlimited|0|\d+[bkmgtBKMGT]?/\d*{_RATE_UNIT}",
    "daily-limit": r"\d+/(?:d|day)",
    "size": r"\d+[bkmgtBKMGT]?|unlimited",
    "duration-or-bool": rf"{_BOOL}|{_DURATION}|never",
    "record-list": r"(?:d|b|t|tq|r|f|rb|rs)(?:,(?:d|b|t|tq|r|f|rb|rs))*",
    "string": r".+",
    "word": r"\S+",
    "name": r"\S+",
}

_BY_NAME = {row.name: row for row in DIRECTIVE_ROWS}
_ALL_NAMES = set(_BY_NAME) | {alias for row in DIRECTIVE_ROWS for alias in row.aliases}


def _kind_ok(kind: str) -> bool:
    if kind.startswith("enum:"):
        choices = kind.removeprefix("enum:").split("|")
        return all(re.fullmatch(r"[a-z0-9][a-z0-9.-]*", c) for c in choices) and len(
            set(choices)
        ) == len(choices)
    return kind in KINDS


def test_rows_are_directive_rows_and_the_table_is_sizeable() -> None:
    assert all(isinstance(row, DirectiveRow) for row in DIRECTIVE_ROWS)
    assert 150 <= len(DIRECTIVE_ROWS) <= 300


def test_names_are_unique_and_lower_case_hyphenated() -> None:
    names = [row.name for row in DIRECTIVE_ROWS]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    bad = [n for n in names if not re.fullmatch(r"[a-z0-9]+(?:[-.][a-z0-9]+)*", n)]
    assert not bad


def test_aliases_collide_with_no_name_and_no_other_alias() -> None:
    seen: dict[str, str] = {}
    for row in DIRECTIVE_ROWS:
        for alias in row.aliases:
            assert re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", alias), alias
            assert alias not in _BY_NAME, f"alias {alias} of {row.name} is also a name"
            assert alias not in seen, f"alias {alias} of {row.name} and {seen[alias]}"
            seen[alias] = row.name


@pytest.mark.parametrize("row", DIRECTIVE_ROWS, ids=lambda r: r.name)
def test_row_uses_the_fixed_vocabularies(row: DirectiveRow) -> None:
    assert _kind_ok(row.kind), row.kind
    scopes = row.scopes.split()
    assert scopes, "no scope"
    assert set(scopes) <= SCOPES, set(scopes) - SCOPES
    assert len(scopes) == len(set(scopes))
    assert row.implemented in IMPLEMENTED
    assert row.description.strip() == row.description
    assert row.description
    assert "\n" not in row.description


@pytest.mark.parametrize(
    "row", [r for r in DIRECTIVE_ROWS if r.default is not None], ids=lambda r: r.name
)
def test_default_has_the_shape_of_its_kind(row: DirectiveRow) -> None:
    assert row.default is not None
    if row.kind.startswith("enum:"):
        assert row.default in row.kind.removeprefix("enum:").split("|")
        return
    shape = DEFAULT_SHAPES.get(row.kind)
    assert shape is not None, f"a default of kind {row.kind} has no shape check"
    assert re.fullmatch(shape, row.default), f"{row.default!r} is not a {row.kind}"


def test_every_reference_directive_is_in_the_table() -> None:
    missing = sorted(set(REFERENCE_NAMES) - _ALL_NAMES)
    assert not missing


def test_every_seed_directive_is_in_the_table() -> None:
    assert not sorted(set(SEED_NAMES) - _ALL_NAMES)


def test_sluice_extensions_are_marked_as_such() -> None:
    for name in SLUICE_EXTENSIONS:
        assert _BY_NAME[name].description.startswith("Sluice extension:"), name
    marked = {r.name for r in DIRECTIVE_ROWS if r.description.startswith("Sluice extension")}
    assert marked == set(SLUICE_EXTENSIONS)


def test_seed_dialect_rows_are_their_own_rows_and_say_what_they_mean() -> None:
    for name, target in [
        ("retry-interval", "retry-after"),
        ("max-retry-time", "bounce-after"),
        ("log-delivery-failures", "log-transfer-failures"),
        ("max-msg-per-hour", "max-msg-rate"),
    ]:
        row = _BY_NAME[name]
        assert "seed dialect" in row.description
        assert target in row.description
        assert row.kind == _BY_NAME[target].kind or name == "max-msg-per-hour"
        assert row.scopes == _BY_NAME[target].scopes


def test_key_defaults_match_powermta() -> None:
    expected = {
        "max-smtp-out": "20",
        "bounce-after": "4d12h",
        "retry-after": "10m",
        "backoff-retry-after": "1h",
        "max-msg-rate": "unlimited",
        "max-errors-per-connection": "unlimited",
        "notify-of-delay-every": "4h",
        "connect-timeout": "2m",
        "smtp-data-termination-timeout": "10m",
        "queue-priority": "50",
        "records": "d,b",
        "bounce-on-4xx-status": "false",
    }
    assert {n: _BY_NAME[n].default for n in expected} == expected


def test_queue_settings_can_be_inherited_from_every_level() -> None:
    for name in ("max-smtp-out", "bounce-after", "retry-after", "max-msg-rate", "dkim-sign"):
        assert _BY_NAME[name].scopes == QUEUE_SCOPES


def test_repeatable_rows_include_the_known_multi_line_directives() -> None:
    for name in (
        "smtp-listener",
        "smtp-source-host",
        "http-access",
        "domain-key",
        "virtual-mta",
        "include",
        "record-fields",
        "dns-server",
    ):
        assert _BY_NAME[name].repeatable, name
    assert not _BY_NAME["max-smtp-out"].repeatable
