"""Opening a connection: TCP from the source address, greeting, EHLO/HELO, and the walk
over the routing plan's hosts until one greets us.

Public names (for the session module): connect_host, walk_plan, quit_and_close,
greeting_text. Nothing raises: failures are the plan's ``ConnectFailed`` / ``Greeting``
results or a ``RouteFailure``.
"""

from __future__ import annotations

import asyncio

from sluice.delivery._protocol import ClientProtocol, Wait
from sluice.delivery.settings import DeliverySettings
from sluice.delivery.values import SessionInfo, reply_line
from sluice.net.dns import drive_dns
from sluice.routing import AttemptPlan, Connect, ConnectFailed, Greeting, Resolver, RouteFailure
from sluice.smtp import Ehlo, Event, Helo, LocalProtocolError, Quit, Reply, State

__all__ = ["connect_host", "greeting_text", "quit_and_close", "walk_plan"]

_QUIT_OK = (State.GREETED, State.READY, State.MAIL, State.RCPT, State.REFUSED)
_QUIT = Quit()


def greeting_text(reply: Reply) -> str:
    return reply_line(reply)[4:]


async def quit_and_close(proto: ClientProtocol, timeout: float) -> None:
    """QUIT if the state allows it, wait briefly for 221, close. Never fails."""
    if not proto.closed and proto.conn.state in _QUIT_OK and not proto.conn.in_flight:
        try:
            proto.write(proto.conn.send(_QUIT))
        except LocalProtocolError:
            pass
        else:
            await proto.wait_replies(len(proto.replies) + 1, timeout)
    transport = proto.transport
    if transport is not None:
        transport.close()


async def connect_host(
    step: Connect, settings: DeliverySettings
) -> tuple[ClientProtocol, SessionInfo] | ConnectFailed | Greeting:
    """One TCP connection, greeting and EHLO/HELO; the result to feed the plan, or a
    greeted protocol (the plan is then fed ``Greeting(220)`` by the caller)."""
    loop = asyncio.get_running_loop()
    local = (settings.source_address, 0) if settings.source_address else None
    try:
        async with asyncio.timeout(settings.connect_timeout):
            transport, proto = await loop.create_connection(
                lambda: ClientProtocol(loop), step.address, step.port, local_addr=local
            )
    except TimeoutError:
        return ConnectFailed(reason=f"connect timeout after {settings.connect_timeout:g}s")
    except OSError as exc:
        return ConnectFailed(reason=exc.strerror or str(exc) or type(exc).__name__)
    how = await proto.wait_replies(1, settings.smtp_greeting_timeout)
    if how is not Wait.DONE:
        proto.abort("no greeting")
        why = "greeting timeout" if how is Wait.TIMEOUT else proto.closed_reason
        return ConnectFailed(reason=f"no greeting: {why}")
    greeting = proto.replies.pop(0)
    if not greeting.is_positive:
        await quit_and_close(proto, settings.quit_timeout)
        return Greeting(code=greeting.code, text=greeting_text(greeting))
    conn = proto.conn
    reply: Reply | None = None
    name = settings.ehlo_hostname
    hellos: tuple[Event, ...] = (Ehlo(domain=name), Helo(domain=name))
    for hello in hellos:
        proto.write(conn.send(hello))
        how = await proto.wait_replies(1, settings.command_timeout)
        if how is not Wait.DONE:
            proto.abort("no reply to EHLO/HELO")
            why = "timeout" if how is Wait.TIMEOUT else proto.closed_reason
            return ConnectFailed(reason=f"no reply to {type(hello).__name__.upper()}: {why}")
        reply = proto.replies.pop(0)
        if not reply.is_permanent or isinstance(hello, Helo):
            break
    assert reply is not None
    if not reply.is_positive:
        await quit_and_close(proto, settings.quit_timeout)
        return Greeting(code=reply.code, text=greeting_text(reply))
    peer = transport.get_extra_info("peername") or (step.address, step.port)
    sock = transport.get_extra_info("sockname") or ("", 0)
    info = SessionInfo(
        remote_host=step.host,
        remote_address=str(peer[0]),
        remote_port=int(peer[1]),
        local_address=str(sock[0]),
        local_port=int(sock[1]),
        helo_name=settings.ehlo_hostname,
        esmtp=isinstance(hello, Ehlo),
        extensions=tuple(conn.extensions.items()),
        greeting=greeting.text,
    )
    return proto, info


async def walk_plan(
    plan: AttemptPlan, settings: DeliverySettings, resolver: Resolver
) -> tuple[ClientProtocol, SessionInfo] | RouteFailure:
    """Run the plan until a host greets us (or it gives up)."""
    while True:
        step = await drive_dns(plan, resolver)
        if not isinstance(step, Connect):
            assert step.failure is not None, "the plan ends with a target only after a greeting"
            return step.failure
        opened = await connect_host(step, settings)
        if isinstance(opened, tuple):
            plan.result(Greeting(code=220, text=""))
            return opened
        plan.result(opened)
