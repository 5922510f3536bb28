"""T19 end to end (HTTP half): the real ``sluice run`` with ``http-mgmt-port``; N messages
injected by HTTP plus every malicious variant; the sink gets exactly N, none injected.

"""

from __future__ import annotations

import email
import http.client
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.e2e.peers import PeerError, SmtpSink, free_port
from tests.e2e.sluice_proc import SluiceProcess

pytestmark = [
    pytest.mark.interop,
]

N = 12
TOKEN = "e2e-token-7f3a9c"
#: Every field that reaches a header or the SMTP envelope, with CR, LF and NUL.
BAD = ("\r", "\n", "\x00", "\r\n")


def _good(k: int) -> dict[str, Any]:
    return {
        "from": "news@src.test",
        "to": [f"rcpt{k}@sink.test"],
        "subject": f"offer {k}",
        "headers": {"X-Test-Seq": str(k)},
        "text": f"message {k}\n",
    }


def _malicious() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for ch in BAD:
        inj = f"{ch}X-Injected: yes"
        cmd = f"{ch}RCPT TO:<evil@sink.test>"
        base = _good(999)
        out += [
            {**base, "subject": "s" + inj},
            {**base, "from": "news@src.test" + cmd},
            {**base, "to": ["rcpt999@sink.test" + cmd]},
            {**base, "to": ["rcpt998@sink.test", "rcpt999@sink.test" + cmd]},
            {**base, "headers": {"X-Test-Seq": "999" + inj}},
            {**base, "headers": {f"X-Test-Seq{ch}X-Injected": "yes"}},
            {"mail_from": "news@src.test" + cmd, "rcpt_to": ["rcpt999@sink.test"], "content": "x"},
        ]
    out.append({**_good(999), "headers": {"X-Long": "a" * 999}})
    return out


class Api:
    """A tiny HTTP client for the daemon's management port."""

    def __init__(self, port: int) -> None:
        self.port = port

    def post(self, doc: Any, *, token: str | None = TOKEN) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            headers = {"Content-Type": "application/json"}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            conn.request("POST", "/api/v1/messages", json.dumps(doc), headers)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        finally:
            conn.close()

    def wait_ready(self, proc: SluiceProcess, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.post({}, token=None)
            except OSError:
                time.sleep(0.1)
                continue
            return
        raise PeerError(f"no HTTP management interface on {self.port}:\n{proc.stderr_text()}")


def test_http_injection_end_to_end(
    e2e_dir: Path,
    sluice_config: Callable[..., Path],
    sluice_factory: Callable[..., SluiceProcess],
    smtp_sink: SmtpSink,
) -> None:
    token_file = e2e_dir / "mgmt-token"
    token_file.write_text(TOKEN + "\n")
    port = free_port("127.0.0.1")
    config = sluice_config(
        extra=[f"http-mgmt-port {port}", f"http-mgmt-token-file {token_file}"],
        domains={"*": {"retry-after": "2s"}},
    )
    proc = sluice_factory(config)
    api = Api(port)
    api.wait_ready(proc)

    assert api.post(_good(0), token=None)[0] == 401
    assert api.post(_good(0), token="wrong")[0] == 401
    for doc in _malicious():
        status, body = api.post(doc)
        assert status == 400, (doc, body)
        assert set(body) == {"error", "field"}
    ids = set()
    for k in range(N):
        status, body = api.post(_good(k))
        assert status == 202, body
        ids.add(body["id"])
    assert len(ids) == N

    assert smtp_sink.wait_for_messages(N, timeout=30) >= N
    time.sleep(1.0)  # anything extra (a smuggled message) would arrive by now
    transactions = smtp_sink.transactions()
    assert len(transactions) == N
    seqs = []
    for t in transactions:
        assert t.sender == "news@src.test"
        assert len(t.recipients) == 1
        assert "evil" not in t.recipients[0]
        msg = email.message_from_bytes(t.message)
        assert "X-Injected" not in msg
        assert b"X-Injected" not in t.message
        assert t.recipients[0] == f"rcpt{msg['X-Test-Seq']}@sink.test"
        seqs.append(int(msg["X-Test-Seq"]))
    assert sorted(seqs) == list(range(N))
    assert proc.stop() == 0
