"""``sluice inject``: submit messages to a running Sluice over SMTP.

Each FILE is an RFC 5322 message (``-`` reads standard input) sent as is, or, with
``--subject``/``--header``/``--body``, a message is composed from parts. Envelope sender and
recipients come from ``--from`` and ``--to`` (repeatable). Every value is checked before
anything is sent: a CR, LF or NUL in an address, a header name or value, or the subject is
refused (test-plan T19: no header or command injection through the CLI), and so is a header
name that is not RFC 5322 ``ftext``.

Exit status: 0 when every message got 250, 1 when the server refused one or could not be
reached, 2 for bad input (nothing is sent then).

Public names: NAME, HELP, add_arguments, run, compose, check_value.
"""

from __future__ import annotations

import argparse
import re
import smtplib
import sys
import time
from email.utils import formatdate, make_msgid

__all__ = ["HELP", "NAME", "add_arguments", "check_value", "compose", "run"]

NAME = "inject"
HELP = "submit messages to a running Sluice over SMTP"

#: Exit status for input refused before sending.
EXIT_BAD_INPUT = 2
#: RFC 5322 §3.6.8 field name: printable US-ASCII except the colon.
_FTEXT = re.compile(r"[!-9;-~]+")
#: What may never appear inside one header value, address or subject line.
_FORBIDDEN = re.compile(r"[\r\n\x00]")


class InputError(ValueError):
    """A value that would break the SMTP command or the header block."""


def check_value(what: str, value: str) -> str:
    """``value`` unless it holds CR, LF or NUL (raises InputError naming ``what``)."""
    if _FORBIDDEN.search(value):
        raise InputError(f"{what} must not contain CR, LF or NUL: {value!r}")
    return value


def compose(
    *, sender: str, recipients: list[str], subject: str, headers: list[str], body: str
) -> bytes:
    """A message built from parts, every part checked; CRLF line endings."""
    lines = [
        f"From: {check_value('--from', sender)}",
        f"To: {', '.join(check_value('--to', r) for r in recipients)}",
        f"Subject: {check_value('--subject', subject)}",
        f"Date: {formatdate(time.time(), localtime=False)}",
        f"Message-ID: {make_msgid(domain='sluice.inject')}",
    ]
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not _FTEXT.fullmatch(name):
            raise InputError(f"--header must be 'Name: value' with a plain name: {header!r}")
        lines.append(f"{name}:{check_value('--header', value)}")
    text = body.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "\r\n")
    if not text.endswith("\r\n"):
        text += "\r\n"
    return ("\r\n".join(lines) + "\r\n\r\n" + text).encode("utf-8")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", metavar="FILE", help="message files ('-': stdin)")
    parser.add_argument("--server", default="127.0.0.1:2525", metavar="HOST:PORT")
    parser.add_argument("--from", dest="sender", required=True, metavar="ADDR")
    parser.add_argument("--to", dest="rcpts", action="append", required=True, metavar="ADDR")
    parser.add_argument("--subject", metavar="TEXT", help="compose a message with this subject")
    parser.add_argument(
        "--header", action="append", default=[], metavar="'NAME: VALUE'", help="extra header"
    )
    parser.add_argument("--body", default="", metavar="TEXT", help="body of a composed message")
    parser.add_argument("--virtual-mta", metavar="NAME", help="add X-Virtual-MTA: NAME")
    parser.add_argument("--job", metavar="ID", help="add X-Job: ID")


def _messages(args: argparse.Namespace) -> list[bytes]:
    headers = list(args.header)
    if args.virtual_mta:
        headers.append(f"X-Virtual-MTA: {check_value('--virtual-mta', args.virtual_mta)}")
    if args.job:
        headers.append(f"X-Job: {check_value('--job', args.job)}")
    out: list[bytes] = []
    if args.subject is not None or not args.files:
        out.append(
            compose(
                sender=args.sender,
                recipients=args.rcpts,
                subject=args.subject or "",
                headers=headers,
                body=args.body,
            )
        )
    for name in args.files:
        data = sys.stdin.buffer.read() if name == "-" else open(name, "rb").read()  # noqa: SIM115
        if headers:
            extra = "".join(f"{h}\r\n" for h in headers).encode("utf-8")
            data = extra + data
        out.append(data)
    return out


def run(args: argparse.Namespace) -> int:
    try:
        check_value("--from", args.sender)
        for rcpt in args.rcpts:
            check_value("--to", rcpt)
        messages = _messages(args)
    except InputError as exc:
        print(f"sluice inject: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        print(f"sluice inject: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    host, _, port = args.server.rpartition(":")
    if not port.isdigit():
        print(f"sluice inject: --server must be HOST:PORT, got {args.server!r}", file=sys.stderr)
        return EXIT_BAD_INPUT
    failed = 0
    try:
        with smtplib.SMTP(host or "127.0.0.1", int(port or 25), timeout=60) as smtp:
            for data in messages:
                try:
                    refused = smtp.sendmail(args.sender, args.rcpts, data)
                except smtplib.SMTPException as exc:
                    print(f"sluice inject: refused: {exc}", file=sys.stderr)
                    failed += 1
                    continue
                for rcpt, (code, text) in refused.items():
                    print(f"sluice inject: {rcpt}: {code} {text.decode()}", file=sys.stderr)
                print(f"sluice inject: accepted ({len(data)} octets)")
    except (OSError, smtplib.SMTPException) as exc:
        print(f"sluice inject: cannot talk to {args.server}: {exc}", file=sys.stderr)
        return 1
    return 1 if failed else 0
