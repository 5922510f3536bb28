"""T07, T17, T18 over real sockets: smuggling, NUL and SMTPUTF8 through the live listener."""

from __future__ import annotations

import smtplib
import socket

import pytest
from intake_harness import Harness, read_reply, read_until_closed

# The SEQ list of test-plan A1 (smtp_smuggling_checker and SMTP-Smuggling-Tools).
SMUGGLING = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n.\n",
    b"\n\n.\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\n\x00.\n",
    b"\r\r\n.\r\r\n",
]
SMUGGLED = b"MAIL FROM:<s@x.test>\r\nRCPT TO:<v@y.test>\r\nDATA\r\nsmuggled\r\n.\r\n"


def _open_data(sock: socket.socket) -> None:
    read_reply(sock)
    sock.sendall(b"EHLO c.test\r\n")
    read_reply(sock)
    for line in (b"MAIL FROM:<a@x.test>\r\n", b"RCPT TO:<b@y.test>\r\n", b"DATA\r\n"):
        sock.sendall(line)
        read_reply(sock)


@pytest.mark.parametrize("seq", SMUGGLING, ids=repr)
def test_t07_smuggled_end_of_data_makes_no_phantom(harness: Harness, seq: bytes) -> None:
    sock = harness.connect()
    _open_data(sock)
    sock.sendall(b"Subject: t\r\n\r\nbody" + seq + SMUGGLED)
    sock.settimeout(2.0)
    try:
        got = read_until_closed(sock)
    except TimeoutError:
        got = b""
    sock.close()
    messages = harness.messages()
    # At most the one legitimate message (normalised or never finished); never the smuggled one.
    assert len(messages) <= 1, got
    assert all(b"smuggled\r\n" not in body or b"body" in body for _, body in messages)
    assert all(env.sender != "s@x.test" for env, _ in messages)


def test_t07_dot_then_eof_is_no_message(harness: Harness) -> None:
    sock = harness.connect()
    _open_data(sock)
    sock.sendall(b"Subject: t\r\n\r\nbody\r\n.")
    sock.shutdown(socket.SHUT_WR)
    read_until_closed(sock)
    assert harness.messages() == []


def test_t17_nul_in_command_header_and_body(harness: Harness) -> None:
    sock = harness.connect()
    read_reply(sock)
    sock.sendall(b"EHLO c.test\r\n")
    read_reply(sock)
    sock.sendall(b"MAIL FROM:<a\x00@x.test>\r\n")
    assert read_reply(sock)[:1] == b"5"
    for content in (b"Subject: a\x00b\r\n\r\nbody\r\n", b"Subject: t\r\n\r\nbo\x00dy\r\n"):
        for line in (b"MAIL FROM:<a@x.test>\r\n", b"RCPT TO:<b@y.test>\r\n", b"DATA\r\n"):
            sock.sendall(line)
            read_reply(sock)
        sock.sendall(content + b".\r\n")
        assert read_reply(sock).startswith(b"554 5.6.0")
    sock.close()
    assert harness.messages() == []


def test_t17_eight_bit_body_is_stored_intact(harness: Harness) -> None:
    body = "Subject: caf\u00e9\r\n\r\nna\u00efve \u00fcber\r\n".encode()
    with smtplib.SMTP("127.0.0.1", harness.port) as s:
        s.ehlo("c.test")
        s.sendmail("a@x.test", ["b@y.test"], body, mail_options=["BODY=8BITMIME"])
    ((envelope, stored),) = harness.messages()
    assert envelope.body_8bit
    assert body.split(b"\r\n\r\n", 1)[1] in stored


def test_t18_smtputf8_addresses(harness: Harness) -> None:
    sock = harness.connect()
    read_reply(sock)
    sock.sendall(b"EHLO c.test\r\n")
    assert b"SMTPUTF8" in read_reply(sock)
    sock.sendall("MAIL FROM:<\u00fc@x.test>\r\n".encode())
    assert read_reply(sock).startswith(b"553 5.6.7")
    sock.sendall(b"MAIL FROM:<\xff\xfe@x.test> SMTPUTF8\r\n")
    assert read_reply(sock)[:1] == b"5"
    sock.sendall("MAIL FROM:<\u00fc@x.test> SMTPUTF8\r\n".encode())
    assert read_reply(sock).startswith(b"250")
    sock.sendall("RCPT TO:<j\u00f6rg@y.test>\r\n".encode())
    assert read_reply(sock).startswith(b"250")
    sock.sendall(b"DATA\r\n")
    read_reply(sock)
    sock.sendall(b"Subject: t\r\n\r\nhi\r\n.\r\n")
    assert read_reply(sock).startswith(b"250")
    sock.close()
    ((envelope, _),) = harness.messages()
    assert envelope.smtputf8
    assert envelope.sender == "\u00fc@x.test"
