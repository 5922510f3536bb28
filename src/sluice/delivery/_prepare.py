"""What a transfer becomes on one server: its MAIL FROM and RCPT TO events, or why it cannot go.

``prepare(transfer, conn, offer)`` decides, before any command of the transfer is written,
everything that depends on the message and on what the server offered (:class:`Offer`, from
its EHLO reply and the settings): NUL octets and lines over 998 octets (the engine checks
the body once here and remembers it, so sending it after the 354 does not scan it again),
SIZE, 8BITMIME, SMTPUTF8, the DSN parameters; and builds the events. Recipients whose
address the event checks refuse are refused locally, one by one.

Public names: Offer, Prepared, prepare. Nothing raises: refusals are outcomes (``Result``
values with a :class:`~sluice.delivery.values.DeliveryOutcome`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sluice.delivery.settings import DeliverySettings
from sluice.delivery.values import Phase, Transfer, local_outcome
from sluice.sched.outcome import OutcomeKind, Result, Scope
from sluice.smtp import ClientConnection, Data, Event, LocalProtocolError, MailFrom, RcptTo

__all__ = ["Offer", "Prepared", "prepare"]

P = OutcomeKind.PERMANENT
_DATA = Data()


@dataclass(frozen=True, slots=True, kw_only=True)
class Offer:
    """What one connection's server offers, as the session uses it (settings applied)."""

    #: Send groups (RFC 2920): PIPELINING offered and ``ignore-pipelining`` off.
    pipelining: bool
    #: 8-bit content may be sent: 8BITMIME offered, or ``ignore-8bitmime`` (send it anyway).
    eight_bit_ok: bool
    #: ``BODY=8BITMIME`` is put on MAIL for 8-bit content (``ignore-8bitmime`` off).
    body_param: bool
    #: DSN offered and ``ignore-dsn`` off: RET, ENVID, NOTIFY, ORCPT are sent.
    dsn: bool
    #: SMTPUTF8 offered (RFC 6531).
    utf8: bool
    #: SIZE offered: ``SIZE=<octets>`` goes on MAIL (RFC 1870).
    size_param: bool
    #: The server's advertised size limit in octets (0: none given).
    size_limit: int

    @classmethod
    def of(cls, extensions: Mapping[str, str], settings: DeliverySettings) -> Offer:
        """The offer from the EHLO keywords (upper-cased → parameters) and the settings."""
        size = extensions.get("SIZE", "")
        return cls(
            pipelining="PIPELINING" in extensions and not settings.ignore_pipelining,
            eight_bit_ok="8BITMIME" in extensions or settings.ignore_8bitmime,
            body_param=not settings.ignore_8bitmime,
            dsn="DSN" in extensions and not settings.ignore_dsn,
            utf8="SMTPUTF8" in extensions,
            size_param="SIZE" in extensions,
            size_limit=int(size) if size.isdigit() and int(size) > 0 else 0,
        )


class Prepared:
    """A transfer ready to be sent: its events and the outcomes decided so far (a working
    object of the session's, made once per transfer: positional, not frozen; a plain class,
    whose constructor mypyc compiles, unlike the one ``dataclasses`` generates)."""

    __slots__ = ("events", "indexes", "results", "transfer")

    def __init__(
        self, transfer: Transfer, events: list[Event], indexes: list[int], results: list[Result]
    ) -> None:
        self.transfer = transfer
        #: MAIL FROM, a RCPT TO for every recipient not refused locally, DATA: the group.
        self.events = events
        #: The indexes of those recipients, in the order of their RCPT TO.
        self.indexes = indexes
        #: Outcomes of recipients refused locally; the session appends the rest.
        self.results = results


def prepare(t: Transfer, conn: ClientConnection, offer: Offer) -> Prepared | list[Result]:
    """``t``'s events for this server, or (no command to send) the results of every
    recipient: the whole message refused locally, or every recipient refused."""
    body = t.body
    problem = conn.check_content(body)
    if problem is not None:
        why = "NUL octet" if problem == "nul" else "line longer than 998 octets"
        return _whole(t, "5.6.0", f"message cannot be sent: {why}", 554)
    if offer.size_limit and len(body) > offer.size_limit:
        why = f"message size {len(body)} exceeds the server's limit {offer.size_limit}"
        return _whole(t, "5.3.4", why, 552)
    eight_bit = t.eight_bit or not body.isascii()
    if eight_bit and not offer.eight_bit_ok:
        return _whole(t, "5.6.3", "8-bit message and the server does not support 8BITMIME", 554)
    utf8 = not t.sender.isascii() or (t.smtputf8 and eight_bit)
    if not utf8:
        for r in t.rcpts:
            if not r.address.isascii():
                utf8 = True
                break
    if utf8 and not offer.utf8:
        why = "internationalised message and the server does not support SMTPUTF8"
        return _whole(t, "5.6.7", why, 553)
    dsn = offer.dsn
    try:
        mail = MailFrom(
            address=t.sender,
            size=len(body) if offer.size_param else None,
            body="8BITMIME" if eight_bit and offer.body_param else None,
            smtputf8=utf8,
            ret=t.ret if dsn else None,
            envid=t.envid if dsn else None,
        )
    except LocalProtocolError as exc:
        return _whole(t, "5.1.7", str(exc), 553)
    results: list[Result] = []
    events: list[Event] = [mail]
    indexes: list[int] = []
    for r in t.rcpts:
        try:
            if dsn:
                ev = RcptTo(address=r.address, notify=r.notify, orcpt=r.orcpt)
            else:
                ev = RcptTo(address=r.address)
        except LocalProtocolError as exc:
            bad = local_outcome(P, Scope.RECIPIENT, "5.1.3", str(exc), Phase.LOCAL, code=553)
            results.append(Result(msg_id=t.msg_id, rcpts=(r.index,), outcome=bad))
        else:
            events.append(ev)
            indexes.append(r.index)
    if not indexes:
        return results
    events.append(_DATA)
    return Prepared(t, events, indexes, results)


def _whole(t: Transfer, status: str, text: str, code: int) -> list[Result]:
    """The message refused locally: one permanent result for every recipient."""
    outcome = local_outcome(P, Scope.MESSAGE, status, text, Phase.LOCAL, code=code)
    return [Result(msg_id=t.msg_id, rcpts=tuple(r.index for r in t.rcpts), outcome=outcome)]
