"""Accounting records: PowerMTA's header, field selection, time format, CSV quoting."""

from __future__ import annotations

import csv
import io
from datetime import UTC, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sluice.acct import (
    DEFAULT_FIELDS,
    DEFAULT_LAYOUT,
    AcctConfigError,
    AcctLayout,
    AcctRecord,
    RecordType,
    csv_field,
    csv_line,
    dsn_status_text,
    format_row,
    format_time,
    parse_field_list,
    parse_record_types,
)

POWERMTA_HEADER = (
    "type,timeLogged,timeQueued,orig,rcpt,orcpt,dsnAction,dsnStatus,dsnDiag,dsnMta,bounceCat,"
    "srcType,srcMta,dlvType,dlvSourceIp,dlvDestinationIp,dlvEsmtpAvailable,dlvSize,vmta,jobId,"
    "envId,queue,vmtaPool\n"
)
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


def delivered(**extra: object) -> AcctRecord:
    fields: dict[str, object] = {
        "type": RecordType.DELIVERY,
        "time_logged": T0 + 65,
        "time_queued": T0,
        "orig": "bounce@sender.test",
        "rcpt": "user@ok.test",
        "dsn_action": "relayed",
        "dsn_status": "2.0.0",
        "dsn_diag": "smtp;250 2.0.0 OK, queued as 1234",
        "dsn_mta": "mx1.ok.test (127.0.0.2)",
        "src_type": "smtp",
        "src_mta": "injector.test (127.0.0.1)",
        "dlv_type": "smtp",
        "dlv_source_ip": "127.0.0.2",
        "dlv_destination_ip": "127.0.0.20",
        "dlv_esmtp_available": "PIPELINING,8BITMIME,SIZE",
        "dlv_size": 2048,
        "vmta": "transactional",
        "job_id": "job-1",
        "queue": "ok.test/transactional",
    }
    fields.update(extra)
    return AcctRecord(**fields)  # type: ignore[arg-type]


def parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_default_header_is_powermta_s() -> None:
    assert DEFAULT_LAYOUT.header() == POWERMTA_HEADER
    assert DEFAULT_LAYOUT.columns == DEFAULT_FIELDS
    assert DEFAULT_LAYOUT.types == {RecordType.DELIVERY, RecordType.BOUNCE}


def test_default_row_parses_with_csv_and_lines_up_with_the_header() -> None:
    text = DEFAULT_LAYOUT.header() + DEFAULT_LAYOUT.row(delivered())
    (row,) = csv.DictReader(io.StringIO(text))
    assert row["type"] == "d"
    assert row["timeLogged"] == "2023-11-14 22:14:25+0000"
    assert row["timeQueued"] == "2023-11-14 22:13:20+0000"
    assert row["dsnStatus"] == "2.0.0 (success)"
    assert row["dsnDiag"] == "smtp;250 2.0.0 OK, queued as 1234"  # has a comma: quoted
    assert row["dlvEsmtpAvailable"] == "PIPELINING,8BITMIME,SIZE"
    assert row["dlvSize"] == "2048"
    assert row["queue"] == "ok.test/transactional"
    assert row["orcpt"] == ""
    assert row["vmtaPool"] == ""


def test_time_format_with_an_offset() -> None:
    assert format_time(T0, UTC) == "2023-11-14 22:13:20+0000"
    assert format_time(T0 + 0.9, timezone(timedelta(hours=2))) == "2023-11-15 00:13:20+0200"
    assert format_time(T0, timezone(-timedelta(hours=5, minutes=30))) == (
        "2023-11-14 16:43:20-0530"
    )
    row = format_row(delivered(), ["timeLogged"], timezone(timedelta(hours=1)))
    assert row == "d,2023-11-14 23:14:25+0100\n"


def test_dsn_status_texts() -> None:
    assert dsn_status_text("2.0.0") == "2.0.0 (success)"
    assert dsn_status_text("5.1.1") == "5.1.1 (bad destination mailbox address)"
    assert dsn_status_text("4.4.3") == "4.4.3 (routing server failure)"
    assert dsn_status_text("5.1.10") == "5.1.10 (recipient address has null MX)"
    assert dsn_status_text("5.0.0") == "5.0.0 (undefined status)"
    assert dsn_status_text("4.4.99") == "4.4.99 (other or undefined network or routing status)"
    assert dsn_status_text("5.9.9") == "5.9.9"
    assert dsn_status_text("5.1.1 (already)") == "5.1.1 (already)"
    assert dsn_status_text("") == ""


def test_record_fields_star_and_extras_and_headers() -> None:
    layout = AcctLayout.build(
        "d", {"d": "*,timeFirstAttempt,totalSecondsQueued,header_X-Id,header_Subject"}
    )
    assert layout.columns == (
        *DEFAULT_FIELDS,
        "timeFirstAttempt",
        "totalSecondsQueued",
        "header_X-Id",
        "header_Subject",
    )
    record = delivered(
        time_first_attempt=T0 + 1,
        headers=(("x-id", "abc-1"), ("Subject", 'Hello, "world"\r\nline 2')),
    )
    (row,) = csv.DictReader(io.StringIO(layout.header() + layout.row(record)))
    assert row["timeFirstAttempt"] == "2023-11-14 22:13:21+0000"
    assert row["totalSecondsQueued"] == "65"
    assert row["header_X-Id"] == "abc-1"
    assert row["header_Subject"] == 'Hello, "world"\r\nline 2'


def test_field_names_are_canonicalised_and_type_comes_first() -> None:
    assert parse_field_list("rcpt, TIMELOGGED ,type,rcpt") == ("type", "rcpt", "timeLogged")
    assert parse_field_list("*")[:3] == ("type", "timeLogged", "timeQueued")
    with pytest.raises(AcctConfigError, match="unknown accounting field"):
        parse_field_list("rcpt,nope")
    with pytest.raises(AcctConfigError, match="bad header name"):
        parse_field_list("header_")


def test_one_header_with_the_union_of_columns_as_powermta_documents() -> None:
    layout = AcctLayout.build(
        "d, b",
        {
            "delivery": "timeLogged,orig,rcpt,dlvSourceIp",
            "bounce": "timeLogged,orig,rcpt,bounceCat",
        },
    )
    assert layout.header() == "type,timeLogged,orig,rcpt,dlvSourceIp,bounceCat\n"
    bounce = AcctRecord(
        type=RecordType.BOUNCE,
        time_logged=T0,
        orig="o@x.test",
        rcpt="u@y.test",
        bounce_cat="policy-related",
        dlv_source_ip="127.0.0.2",  # not a configured b field: left out
    )
    d_row = layout.row(delivered(bounce_cat="ignored"))
    assert parse(d_row + layout.row(bounce)) == [
        ["d", "2023-11-14 22:14:25+0000", "bounce@sender.test", "user@ok.test", "127.0.0.2", ""],
        ["b", "2023-11-14 22:13:20+0000", "o@x.test", "u@y.test", "", "policy-related"],
    ]


def test_feedback_records_get_their_own_default_columns() -> None:
    layout = AcctLayout.build("d,f")
    assert layout.columns[: len(DEFAULT_FIELDS)] == DEFAULT_FIELDS
    assert {"feedbackType", "userAgent"} <= set(layout.columns)
    fbl = AcctRecord(type=RecordType.FEEDBACK, time_logged=T0, feedback_type="abuse")
    (row,) = csv.DictReader(io.StringIO(layout.header() + layout.row(fbl)))
    assert (row["type"], row["feedbackType"], row["dsnStatus"]) == ("f", "abuse", "")
    assert not layout.wants(RecordType.BOUNCE)


def test_record_type_names() -> None:
    assert parse_record_types("d,b,t,tq,r,f,rb") == frozenset(RecordType)
    assert parse_record_types("delivery, bounce") == {RecordType.DELIVERY, RecordType.BOUNCE}
    with pytest.raises(AcctConfigError):
        parse_record_types("d,x")
    with pytest.raises(AcctConfigError):
        parse_record_types(" , ")
    with pytest.raises(AcctConfigError):
        AcctLayout.build([])


@given(st.lists(st.text(), min_size=1, max_size=6))
def test_csv_quoting_round_trips_through_pythons_reader(values: list[str]) -> None:
    line = csv_line(values)
    rows = list(csv.reader(io.StringIO(line, newline="")))
    assert rows == [values] or (values == [""] and rows == [[]])


def test_csv_field_quotes_only_when_needed() -> None:
    assert csv_field("plain text") == "plain text"
    assert csv_field("a,b") == '"a,b"'
    assert csv_field('2"') == '"2"""'
    assert csv_field("a\nb") == '"a\nb"'
    assert csv_field("a\rb") == '"a\rb"'
