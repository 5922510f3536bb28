"""sluice.bounce: reply → bounce category, RFC 3464 DSNs, and the DSN columns of accounting.

Pure (no I/O). ``classify`` holds PowerMTA's categories and the rule-list classifier;
``diagnostic`` the per-recipient verdict both DSNs and records are written from; ``dsn`` who
gets a DSN and its bytes; ``accounting`` the dsnAction/dsnStatus/dsnDiag/dsnMta/bounceCat
columns. See docs/bounces.md.

Public names: Category, Phase, Rule, Classifier, DEFAULT_RULES, dsn_status_for,
normalize_status, STATUS_* constants, DsnAction, Diagnostic, LOCAL_REPLY_CODE, DsnEntry, Dsn,
dsn_recipients, build_dsn, DEFAULT_RETURN_LIMIT, AcctDsnFields, acct_fields, dsn_action_for,
dsn_diag_text, dsn_mta_text. They raise ValueError on bad input (see each module).
"""

from __future__ import annotations

from sluice.bounce.accounting import (
    AcctDsnFields,
    acct_fields,
    dsn_action_for,
    dsn_diag_text,
    dsn_mta_text,
)
from sluice.bounce.classify import (
    DEFAULT_RULES,
    STATUS_CONNECTION_LOST,
    STATUS_DNS_TEMPFAIL,
    STATUS_EXPIRED,
    STATUS_NO_ANSWER,
    STATUS_NO_SUCH_DOMAIN,
    STATUS_NULL_MX,
    STATUS_ROUTING_LOOP,
    Category,
    Classifier,
    Phase,
    Rule,
    dsn_status_for,
    normalize_status,
)
from sluice.bounce.diagnostic import LOCAL_REPLY_CODE, Diagnostic, DsnAction
from sluice.bounce.dsn import DEFAULT_RETURN_LIMIT, Dsn, DsnEntry, build_dsn, dsn_recipients

__all__ = [
    "DEFAULT_RETURN_LIMIT",
    "DEFAULT_RULES",
    "LOCAL_REPLY_CODE",
    "STATUS_CONNECTION_LOST",
    "STATUS_DNS_TEMPFAIL",
    "STATUS_EXPIRED",
    "STATUS_NO_ANSWER",
    "STATUS_NO_SUCH_DOMAIN",
    "STATUS_NULL_MX",
    "STATUS_ROUTING_LOOP",
    "AcctDsnFields",
    "Category",
    "Classifier",
    "Diagnostic",
    "Dsn",
    "DsnAction",
    "DsnEntry",
    "Phase",
    "Rule",
    "acct_fields",
    "build_dsn",
    "dsn_action_for",
    "dsn_diag_text",
    "dsn_mta_text",
    "dsn_recipients",
    "dsn_status_for",
    "normalize_status",
]
