"""The dsnAction/dsnStatus/dsnDiag/dsnMta/bounceCat columns, through a real accounting row."""

from __future__ import annotations

import csv

import pytest

from sluice.acct.records import DEFAULT_FIELDS, AcctRecord, RecordType, format_row
from sluice.bounce import (
    Classifier,
    Diagnostic,
    DsnAction,
    Phase,
    acct_fields,
    dsn_action_for,
    dsn_diag_text,
    dsn_mta_text,
)

CLASSIFIER = Classifier.default()


def _diag(reply: str, phase: Phase = Phase.RCPT) -> Diagnostic:
    return Diagnostic.from_text(
        reply, phase, local_status="4.0.0", remote_mta="mx.dest.test", remote_ip="127.0.0.5"
    )


def test_bounce_columns_like_powermta() -> None:
    fields = acct_fields(_diag("550 5.1.1 user unknown"), CLASSIFIER, final=True)
    assert fields.dsn_action == "failed"
    assert fields.dsn_status == "5.1.1 (bad destination mailbox address)"
    assert fields.dsn_diag == "smtp;550 5.1.1 user unknown"
    assert fields.dsn_mta == "mx.dest.test (127.0.0.5)"
    assert fields.bounce_cat == "bad-mailbox"


@pytest.mark.parametrize(("remote_dsn", "action"), [(False, "relayed"), (True, "delivered")])
def test_delivery_columns(remote_dsn: bool, action: str) -> None:
    fields = acct_fields(
        _diag("250 ok dirdel", Phase.DOT), CLASSIFIER, final=True, remote_dsn=remote_dsn
    )
    assert fields.dsn_action == action
    assert fields.dsn_status == "2.0.0 (success)"
    assert fields.dsn_diag == "smtp;250 2.0.0 ok dirdel"
    assert fields.bounce_cat == "success"


def test_transient_columns() -> None:
    fields = acct_fields(_diag("451 4.7.1 greylisted"), CLASSIFIER, final=False)
    assert fields.dsn_action == "delayed"
    assert fields.dsn_status == "4.7.1 (delivery not authorized, message refused)"


def test_expiry_columns() -> None:
    last = _diag("421 4.4.2 connection dropped")
    fields = acct_fields(Diagnostic.expired(last), CLASSIFIER, final=True)
    assert fields.dsn_action == "failed"
    assert fields.dsn_status == "4.4.7 (delivery time expired)"
    assert fields.dsn_diag.startswith("smtp;451 4.4.7 [internal] message expired")
    assert "last error: 421 4.4.2 connection dropped" in fields.dsn_diag
    assert fields.dsn_mta == "mx.dest.test (127.0.0.5)"
    assert fields.bounce_cat == "message-expired"


def test_local_failure_columns() -> None:
    diag = Diagnostic.local("5.1.2", "nx.test: no such domain")
    fields = acct_fields(diag, CLASSIFIER, final=True)
    assert fields.dsn_diag == "smtp;554 5.1.2 [internal] nx.test: no such domain"
    assert fields.dsn_mta == ""
    assert fields.bounce_cat == "bad-domain"


@pytest.mark.parametrize(
    ("host", "ip", "text"),
    [("mx", "1.2.3.4", "mx (1.2.3.4)"), ("mx", "", "mx"), ("", "1.2.3.4", "1.2.3.4"), ("", "", "")],
)
def test_dsn_mta_text(host: str, ip: str, text: str) -> None:
    assert dsn_mta_text(Diagnostic.local("4.4.1", "x", remote_mta=host, remote_ip=ip)) == text


def test_action_for_each_outcome() -> None:
    ok = _diag("250 ok", Phase.DOT)
    bad = _diag("550 no")
    assert dsn_action_for(ok, final=True) is DsnAction.RELAYED
    assert dsn_action_for(ok, final=True, remote_dsn=True) is DsnAction.DELIVERED
    assert dsn_action_for(bad, final=True) is DsnAction.FAILED
    assert dsn_action_for(bad, final=False) is DsnAction.DELAYED


def test_multiline_reply_is_one_csv_field() -> None:
    diag = _diag('550-5.1.1 first line,\r\n550 5.1.1 second "quoted" line')
    assert dsn_diag_text(diag) == 'smtp;550 5.1.1 first line, second "quoted" line'
    fields = acct_fields(diag, CLASSIFIER, final=True)
    record = AcctRecord(
        type=RecordType.BOUNCE,
        time_logged=1_700_000_000,
        orig="bounces@shop.test",
        rcpt="r@dest.test",
        dsn_action=fields.dsn_action,
        dsn_status=fields.dsn_status,
        dsn_diag=fields.dsn_diag,
        dsn_mta=fields.dsn_mta,
        bounce_cat=fields.bounce_cat,
    )
    row = next(csv.DictReader([",".join(DEFAULT_FIELDS), format_row(record)]))
    assert row["dsnAction"] == "failed"
    assert row["dsnStatus"] == "5.1.1 (bad destination mailbox address)"
    assert row["dsnDiag"] == 'smtp;550 5.1.1 first line, second "quoted" line'
    assert row["dsnMta"] == "mx.dest.test (127.0.0.5)"
    assert row["bounceCat"] == "bad-mailbox"
