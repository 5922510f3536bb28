"""``POST /api/v1/messages``: HTTP injection through intake's Injector (admin role).

The handler parses and validates the JSON body (:mod:`sluice.mgmt._compose`), looks up the
client's ``<source>`` policy, stores the message through the same
:meth:`~sluice.intake.Injector.inject` the SMTP listener uses (protocol ``HTTP``), answers
202 only once the spool has made it durable, and then calls the daemon's ``on_received``
hand-off. Refusals are :class:`~sluice.mgmt.ApiError`: 400 (bad JSON or field), 408 (body
too slow), 413 (too big), 415 (not JSON), 422 (refused by policy, e.g. an unknown virtual
MTA), 503 with Retry-After (spool full or failing, CPU busy).

Public names: ENDPOINTS, post_message, parse_json, RETRY_AFTER_SECONDS, BODY_TIMEOUT_SECONDS.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace

from aiohttp import web

from sluice.errors import ReplyHint
from sluice.intake.headers import rfc5322_date
from sluice.intake.inject import Transaction
from sluice.intake.policy import SourcePolicy
from sluice.message import Recipient
from sluice.mgmt._access import Role
from sluice.mgmt._app import SERVICES, Endpoint, json_response, peer_ip
from sluice.mgmt._compose import InjectRequest, parse_inject, routing_headers
from sluice.mgmt._errors import ApiError
from sluice.smtp.limits import LongLinePolicy

__all__ = ["BODY_TIMEOUT_SECONDS", "ENDPOINTS", "RETRY_AFTER_SECONDS", "parse_json", "post_message"]

log = logging.getLogger("sluice.mgmt")

#: Retry-After on 503: the spool is full, failing or the CPU is busy; a minute is long
#: enough for space or load to change and short next to a bulk sender's campaign.
RETRY_AFTER_SECONDS = 60
_RETRY = (("Retry-After", str(RETRY_AFTER_SECONDS)),)
#: Longest wait for a request body once its headers are in (408 after it): a trickling
#: client must not hold a connection forever. A 64 MiB body needs ~9 Mbit/s to make it,
#: far below loopback or LAN speeds; the SMTP listener's 5-minute command timeout is the
#: precedent for the order of magnitude.
BODY_TIMEOUT_SECONDS = 60.0
#: The job header written for ``job_id`` when the source's ``jobid-header`` is not an
#: ``X-`` header (intake would read such a header but never strip it).
_DEFAULT_JOB_HEADER = "X-Job"
#: How intake names this protocol in Received fields (RFC 5321 §4.4 "with").
PROTOCOL = "HTTP"
_JSON_TYPES = ("application/json",)


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            # Two values for one key would let a filter and Sluice read different ones.
            raise ApiError(400, "key given twice", field=key[:80])
        out[key] = value
    return out


def _reject_constant(name: str) -> object:
    raise ApiError(400, f"{name} is not JSON")


def parse_json(raw: bytes) -> dict[str, object]:
    """A request body → its JSON object; ApiError(400) for anything else."""
    try:
        text = raw.decode("utf-8")
        doc = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except UnicodeDecodeError:
        raise ApiError(400, "request body is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"malformed JSON: {str(exc)[:120]}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "request body must be a JSON object")
    return doc


def _routed_policy(policy: SourcePolicy, req: InjectRequest) -> tuple[SourcePolicy, bytes]:
    """The policy and header prefix that make intake read ``virtual_mta`` and ``job_id``.

    The request parameters are explicit, so they are honoured even where the source does not
    process X-Virtual-MTA or X-Job headers; the headers carrying them are then removed.
    """
    job_header: str = policy.jobid_header
    if req.vmta is not None:
        policy = replace(policy, process_x_virtual_mta=True, retain_x_virtual_mta=False)
    if req.job_id is not None:
        if not job_header.lower().startswith("x-"):
            job_header = _DEFAULT_JOB_HEADER
        policy = replace(policy, process_x_job=True, retain_x_job=False, jobid_header=job_header)
    prefix = routing_headers(vmta=req.vmta, job_id=req.job_id, job_header=job_header)
    return policy, prefix


def _refusal(reply: ReplyHint, req: InjectRequest) -> ApiError:
    """Intake's SMTP refusal → the HTTP error."""
    text = reply.line()
    if reply.code == 552:
        return ApiError(413, text, field="content" if req.message_id is None else "text")
    if 400 <= reply.code < 500:
        return ApiError(503, text, headers=_RETRY)
    named = req.vmta is not None and "virtual MTA" in reply.text
    return ApiError(422, text, field="virtual_mta" if named else None)


async def post_message(request: web.Request) -> web.StreamResponse:
    """Inject one message (see docs/http-api.md for the JSON fields)."""
    services = request.app[SERVICES]
    busy = services.busy
    if busy is not None:
        raise ApiError(503, f"{busy[0]} {busy[1]} {busy[2]}", headers=_RETRY)
    if request.content_type not in _JSON_TYPES:
        raise ApiError(415, "Content-Type must be application/json", field="Content-Type")
    try:
        async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
            raw = await request.read()
    except TimeoutError:
        raise ApiError(408, "request body not received in time") from None
    doc = parse_json(raw)
    ip = peer_ip(request)
    policy = services.policies.lookup(ip)
    now = services.clock.wall()
    req = parse_inject(
        doc,
        max_recipients=policy.max_rcpt_per_message,
        long_lines_ok=policy.long_lines is LongLinePolicy.ACCEPT,
        date=rfc5322_date(now),
        message_id=services.next_message_id(),
    )
    policy, prefix = _routed_policy(policy, req)
    txn = Transaction(
        sender=req.sender,
        recipients=[Recipient(address=a) for a in req.recipients],
        env_id=req.env_id,
        smtputf8=req.smtputf8,
        body_8bit=req.body_8bit,
        long_lines=req.long_lines,
    )
    content = prefix + req.content if prefix else req.content
    result = await services.injector.inject(
        txn, content, policy, helo=ip, client_ip=ip, protocol=PROTOCOL, source_type="api"
    )
    msg_id, envelope = result.msg_id, result.envelope
    if msg_id is None or envelope is None:
        raise _refusal(result.reply, req)
    # Stored: from here on the answer is 202 whatever the hand-off does.
    if services.on_received is not None:
        try:
            services.on_received(msg_id, envelope, result.size)
        except Exception:
            log.exception("HTTP injection hand-off failed for message %s", msg_id)
    body: dict[str, object] = {"id": str(msg_id), "recipients": len(req.recipients)}
    if req.message_id is not None:
        body["message_id"] = req.message_id
    return json_response(body, status=202)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(method="POST", path="/api/v1/messages", role=Role.ADMIN, handler=post_message),
)
