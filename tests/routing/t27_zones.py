"""The T27 test zones (test-plan.md §6.2), shared by the pure tests and the DNS interop tests."""

from __future__ import annotations

from sluice.routing import DnsFailure, FakeName

#: Our own SMTP listener in these tests (an MX resolving here is a loop).
OUR_LISTENER = ("127.0.0.1", 25)
#: Our own host name (an MX naming it is a loop).
OUR_NAME = "sluice.example.test"

T27_ZONES: dict[str, FakeName] = {
    "ok.test": FakeName(mx=((10, "mx1.ok.test"), (20, "mx2.ok.test"))),
    "mx1.ok.test": FakeName(a=("127.0.0.2",)),
    "mx2.ok.test": FakeName(a=("127.0.0.3",)),
    "nomx.test": FakeName(a=("127.0.0.4",), negative_ttl=30),
    "nullmx.test": FakeName(mx=((0, "."),)),
    "servfail.test": FakeName(failure=DnsFailure.SERVFAIL),
    "timeout.test": FakeName(failure=DnsFailure.TIMEOUT),
    "loop.test": FakeName(mx=((10, "mx.loop.test"),)),
    "mx.loop.test": FakeName(a=("127.0.0.1",)),
    "nameloop.test": FakeName(mx=((10, OUR_NAME),)),
    OUR_NAME: FakeName(a=("127.0.0.1",)),
    "equal.test": FakeName(mx=((10, "a.equal.test"), (10, "b.equal.test"), (10, "c.equal.test"))),
    "a.equal.test": FakeName(a=("127.0.0.11",)),
    "b.equal.test": FakeName(a=("127.0.0.12",)),
    "c.equal.test": FakeName(a=("127.0.0.13",)),
    "v6.test": FakeName(mx=((5, "mx.v6.test"),)),
    "mx.v6.test": FakeName(a=("127.0.0.20",), aaaa=("::1",)),
    "badmx.test": FakeName(mx=((10, "gone.badmx.test"), (20, "empty.badmx.test"))),
    "empty.badmx.test": FakeName(negative_ttl=60),
    "halfbad.test": FakeName(mx=((10, "broken.halfbad.test"), (20, "gone.halfbad.test"))),
    "broken.halfbad.test": FakeName(failure=DnsFailure.SERVFAIL),
    # nx.test is absent on purpose: NXDOMAIN.
}
