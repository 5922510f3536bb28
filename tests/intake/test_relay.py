"""T09: not an open relay (test-plan A3), driven over SMTP from 127.0.0.66 and 127.0.0.1."""

from __future__ import annotations

import smtplib
from collections.abc import Callable

from intake_harness import UNTRUSTED, Harness

from sluice.intake.policy import SourcePolicy, SourcePolicyMap

#: test-plan A3, every RCPT form.
A3_RCPTS = [
    "<v@ext.test>",
    "<v%ext.test@us.test>",
    "<v%ext.test@[127.0.0.1]>",
    "<ext.test!v>",
    "<ext.test!v@us.test>",
    "<@us.test:v@ext.test>",
    "<@us.test,@ext.test:v@ext.test>",
    '<"v@ext.test">',
    '<"v@ext.test"@us.test>',
    "<v@ext.test@us.test>",
    "<v@[127.0.0.3]>",
    "<v@ext.test.>",
    "<V@EXT.TEST>",
]
A3_SENDERS = ["<>", "<postmaster@us.test>", "<x@ext.test>"]


def _try_all(port: int, source: str) -> list[tuple[str, str, int, bytes]]:
    """Every sender × recipient in one session each; (sender, rcpt, code, text) per RCPT."""
    out = []
    for sender in A3_SENDERS:
        with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0)) as s:
            s.ehlo("relaytest.test")
            for rcpt in A3_RCPTS:
                code, _ = s.docmd("MAIL", f"FROM:{sender}")
                assert code == 250, (sender, code)
                code, text = s.docmd("RCPT", f"TO:{rcpt}")
                out.append((sender, rcpt, code, text))
                if code == 250:
                    s.data(b"Subject: relay test\r\n\r\nrelay\r\n")
                else:
                    s.rset()
    return out


def test_untrusted_client_relays_nothing(harness_factory: Callable[..., Harness]) -> None:
    # us.test is a local domain, so even its percent-hack forms are tempting targets.
    policies = SourcePolicyMap(
        [("127.0.0.1", SourcePolicy(always_allow_relaying=True))],
        fallback=SourcePolicy(relay_domains=frozenset({"us.test"})),
    )
    h = harness_factory(policies=policies)
    results = _try_all(h.port, UNTRUSTED)
    assert len(results) == len(A3_RCPTS) * len(A3_SENDERS)
    accepted = [r for r in results if r[2] < 400]
    assert accepted == []
    for _, rcpt, code, text in results:
        assert code >= 500, (rcpt, code, text)
    assert h.messages() == []
    # The source IP is what decides: the same forms from a trusted address are accepted.
    assert _try_all(h.port, "127.0.0.1")[0][2] == 250


def test_default_map_untrusted_loopback_alias_relays_nothing(
    harness_factory: Callable[..., Harness],
) -> None:
    # With the built-in default every 127/8 client may relay; a <source 127.0.0.66> block
    # that says no must win (most specific).
    h = harness_factory(policies=SourcePolicyMap([("127.0.0.66/32", SourcePolicy())]))
    results = _try_all(h.port, UNTRUSTED)
    assert [r for r in results if r[2] < 400] == []
    assert h.messages() == []


def test_trusted_client_routes_literally(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory()  # built-in default: loopback may relay
    tricks = {
        "<v%ext.test@us.test>": "us.test",
        "<ext.test!v@us.test>": "us.test",
        "<@us.test:v@ext.test>": "ext.test",
        '<"v@ext.test"@us.test>': "us.test",
        "<V@EXT.TEST>": "ext.test",
    }
    with smtplib.SMTP("127.0.0.1", h.port) as s:
        s.ehlo("trusted.test")
        for rcpt in tricks:
            assert s.docmd("MAIL", "FROM:<a@x.test>")[0] == 250
            code, text = s.docmd("RCPT", f"TO:{rcpt}")
            assert code == 250, (rcpt, text)
            assert s.data(b"Subject: t\r\n\r\nx\r\n")[0] == 250
    queues = h.queues.queues
    assert sorted(queues) == ["ext.test/{default}", "us.test/{default}"]
    assert len(queues["us.test/{default}"]) == 3
    assert len(queues["ext.test/{default}"]) == 2
    stored = [env.recipients[0].address for env, _ in h.messages()]
    # The source route was dropped (RFC 5321 §4.1.1.3); the rest is kept as sent.
    assert stored == [
        "v%ext.test@us.test",
        "ext.test!v@us.test",
        "v@ext.test",
        '"v@ext.test"@us.test',
        "V@EXT.TEST",
    ]
