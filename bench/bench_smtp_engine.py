"""Benchmark of the sans-IO SMTP server engine alone (no sockets, no spool).

Prints messages/s for N pipelined 2 KB transactions through one server Connection (the
``--reuse`` shape: MAIL+RCPT+DATA in one read, the body and the final dot in the next),
and for N one-message sessions (greeting, EHLO, MAIL, RCPT, DATA, body, QUIT each on a new
Connection), and the same through a client Connection joined to a server in memory.

    python bench/bench_smtp_engine.py [-n 20000] [--size 2048]
"""

from __future__ import annotations

import argparse
import time

from sluice import smtp
from sluice.smtp import replies as R

EXTENSIONS = ["PIPELINING", "SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN", "CHUNKING"]
EHLO = R.ehlo_reply("mx.bench", EXTENSIONS)
ACCEPTED = R.message_accepted("0123456789")


def make_body(size: int) -> bytes:
    line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
    head = b"From: a@x.test\r\nTo: b@y.test\r\nSubject: bench\r\nMessage-ID: <1@x.test>\r\n\r\n"
    body = head + line * ((size - len(head)) // len(line) + 1)
    return body[: size - 2] + b"\r\n"


def serve(conn: smtp.Connection, data: bytes, out: list[bytes]) -> int:
    """Feed ``data``, answer every event; returns messages completed."""
    conn.receive_data(data)
    done = 0
    chunks: list[bytes] = []
    while True:
        ev = conn.next_event()
        if ev is smtp.NEED_DATA or ev is smtp.PAUSED:
            return done
        if isinstance(ev, smtp.DataChunk):
            chunks.append(ev.data)
            continue
        if isinstance(ev, smtp.MailFrom):
            reply = R.SENDER_OK
        elif isinstance(ev, smtp.RcptTo):
            reply = R.RECIPIENT_OK
        elif isinstance(ev, smtp.Data):
            reply = R.START_MAIL_INPUT
        elif isinstance(ev, smtp.EndOfData):
            message = b"".join(chunks)
            chunks.clear()
            assert ev.reject is None
            assert len(message) == ev.size
            reply = ACCEPTED
            done += 1
        elif isinstance(ev, smtp.Ehlo):
            reply = EHLO
        elif isinstance(ev, smtp.Quit):
            reply = R.closing("mx.bench")
        elif isinstance(ev, smtp.ConnectionClosed):
            return done
        else:
            raise AssertionError(ev)
        out.append(conn.send(reply))


def bench_pipelined(n: int, body: bytes) -> float:
    envelope = (
        b"MAIL FROM:<sender@example.test> SIZE=2048\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n"
    )
    content = body + b".\r\n"
    conn = smtp.Connection(smtp.SERVER)
    out: list[bytes] = [conn.send(R.greeting("mx.bench"))]
    serve(conn, b"EHLO client.bench\r\n", out)
    t0 = time.perf_counter()
    done = 0
    for _ in range(n):
        serve(conn, envelope, out)
        done += serve(conn, content, out)
        out.clear()
    elapsed = time.perf_counter() - t0
    assert done == n, done
    return n / elapsed


def bench_sessions(n: int, body: bytes) -> float:
    envelope = b"MAIL FROM:<sender@example.test>\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n"
    content = body + b".\r\nQUIT\r\n"
    out: list[bytes] = []
    t0 = time.perf_counter()
    done = 0
    for _ in range(n):
        conn = smtp.Connection(smtp.SERVER)
        out.append(conn.send(R.greeting("mx.bench")))
        serve(conn, b"EHLO client.bench\r\n", out)
        serve(conn, envelope, out)
        done += serve(conn, content, out)
        out.clear()
    elapsed = time.perf_counter() - t0
    assert done == n, done
    return n / elapsed


def bench_client_server(n: int, body: bytes) -> float:
    """Client and server engines joined in memory, one reused connection, pipelined."""
    server = smtp.Connection(smtp.SERVER)
    client = smtp.Connection(smtp.CLIENT)
    out: list[bytes] = []
    client.receive_data(server.send(R.greeting("mx.bench")))
    client.next_event()
    serve(server, client.send(smtp.Ehlo(domain="client.bench")), out)
    client.receive_data(b"".join(out))
    client.next_event()
    out.clear()
    t0 = time.perf_counter()
    done = 0
    mail = smtp.MailFrom(address="sender@example.test", size=len(body))
    rcpt = smtp.RcptTo(address="rcpt@example.net")
    for _ in range(n):
        serve(server, client.send(mail) + client.send(rcpt) + client.send(smtp.Data()), out)
        client.receive_data(b"".join(out))
        out.clear()
        for _ in range(3):
            client.next_event()
        wire = client.send(smtp.DataChunk(data=body)) + client.send(smtp.EndOfData())
        done += serve(server, wire, out)
        client.receive_data(b"".join(out))
        out.clear()
        client.next_event()
    elapsed = time.perf_counter() - t0
    assert done == n, done
    return n / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000, help="transactions per run")
    parser.add_argument("--size", type=int, default=2048, help="message size in octets")
    args = parser.parse_args()
    body = make_body(args.size)
    rate = bench_pipelined(args.n, body)
    print(f"server, pipelined on one connection: {rate:,.0f} messages/s ({args.size} B)")
    rate = bench_sessions(args.n, body)
    print(f"server, one message per connection:  {rate:,.0f} messages/s")
    rate = bench_client_server(args.n, body)
    print(f"client+server joined in memory:      {rate:,.0f} messages/s")


if __name__ == "__main__":
    main()
