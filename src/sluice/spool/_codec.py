"""Compact, versioned encoding of an Envelope for the spool (a small JSON array per message).

JSON keeps the on-disk format independent of the Python version (unlike marshal or pickle)
and is decoded in C; positional arrays keep it small (~120 bytes plus addresses for a
one-recipient message). Decoding interns the strings that repeat across a bulk spool
(sender, VMTA, job, source) so a recovered queue shares them.

Public names: FORMAT_VERSION, encode_envelope, EnvelopeDecoder.
Raises: CorruptMessageError (EnvelopeDecoder.decode) for anything that is not a valid record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from sluice.message import Envelope, Notify, Recipient
from sluice.spool.base import CorruptMessageError

__all__ = ["FORMAT_VERSION", "EnvelopeDecoder", "encode_envelope"]

#: Version tag stored as the first array element of every envelope record.
FORMAT_VERSION = 1

_FLAG_SMTPUTF8 = 1
_FLAG_8BIT = 2

#: Every combination of the four Notify bits, so decoding is a dict look-up, not Flag().
_NOTIFY_BY_VALUE: dict[int, Notify] = {v: Notify(v) for v in range(16)}

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False)
_dumps = _encoder.encode


def _c_encoder(enc: json.JSONEncoder) -> Callable[[object, int], Iterable[str]] | None:
    """The C encoder ``enc.encode`` ends in, made once with ``enc``'s settings and called
    directly (``encode`` and ``iterencode`` are two Python calls per envelope before it);
    None without the C module."""
    make: Any = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    # Read untyped: the stubs type ``indent`` as int | str, None at run time, and compiled
    # code checks the declared type.
    settings: Any = enc
    # Iterable, not a concrete type: the C encoder's chunks come as a list or a tuple
    # (compiled code would check a concrete one).
    encoder: Callable[[object, int], Iterable[str]] = make(
        None,  # markers: check_circular is off
        settings.default,
        json.encoder.encode_basestring,  # what ensure_ascii=False selects
        settings.indent,
        settings.key_separator,
        settings.item_separator,
        settings.sort_keys,
        settings.skipkeys,
        settings.allow_nan,
    )
    return encoder


_c_encode = _c_encoder(_encoder)


def encode_envelope(env: Envelope) -> bytes:
    """The record bytes for ``env`` (UTF-8 JSON). Raises UnicodeEncodeError on lone surrogates."""
    flags = (_FLAG_SMTPUTF8 if env.smtputf8 else 0) | (_FLAG_8BIT if env.body_8bit else 0)
    rcpts = [[r.address, r.notify._value_, r.orcpt] for r in env.recipients]
    rec = [
        FORMAT_VERSION,
        env.sender,
        rcpts,
        env.vmta,
        env.job_id,
        env.env_id,
        env.ret,
        env.source_ip,
        env.source_helo,
        env.source_type,
        env.auth_user,
        env.arrival,
        flags,
        [list(t) for t in env.tags] if env.tags else 0,
    ]
    if _c_encode is not None:
        return "".join(_c_encode(rec, 0)).encode("utf-8")
    return _dumps(rec).encode("utf-8")


#: The C scanner behind json.loads, called directly: no encoding sniffing, no whitespace regex.
_scan_once: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
#: Interning memo bound: a spool of unique values (e.g. one job id per message) gains nothing.
_MEMO_MAX = 100_000


class EnvelopeDecoder:
    """Decodes envelope records, interning repeated strings across one recovery."""

    __slots__ = ("_memo",)

    def __init__(self) -> None:
        self._memo: dict[str | None, str | None] = {}

    def decode(self, data: bytes) -> Envelope:
        """The Envelope in ``data``; CorruptMessageError if it is not a valid record."""
        memo = self._memo
        if len(memo) > _MEMO_MAX:
            memo.clear()
        intern = memo.setdefault
        try:
            text = data.decode("utf-8")
            rec, end = _scan_once(text, 0)
            if end != len(text):
                raise ValueError("trailing data after the envelope record")
            (ver, sender, rcpts, vmta, job, envid, ret, ip, helo, stype, auth, arr, flags, tags) = (
                rec
            )
            if ver != FORMAT_VERSION:
                raise ValueError(f"unknown envelope format {ver!r}")
            notify = _NOTIFY_BY_VALUE
            recipients = tuple(
                [Recipient(address=a, notify=notify[n], orcpt=o) for a, n, o in rcpts]
            )
            return Envelope(
                sender=intern(sender, sender),  # type: ignore[arg-type]
                recipients=recipients,
                vmta=intern(vmta, vmta),
                job_id=intern(job, job),
                env_id=envid,
                ret=intern(ret, ret),
                source_ip=intern(ip, ip),  # type: ignore[arg-type]
                source_helo=intern(helo, helo),  # type: ignore[arg-type]
                source_type=intern(stype, stype),  # type: ignore[arg-type]
                auth_user=intern(auth, auth),
                arrival=float(arr),
                smtputf8=bool(flags & _FLAG_SMTPUTF8),
                body_8bit=bool(flags & _FLAG_8BIT),
                tags=tuple([(k, v) for k, v in tags]) if tags else (),
            )
        except StopIteration as exc:  # the scanner's way of saying "no JSON value here"
            raise CorruptMessageError("bad envelope record: not JSON") from exc
        except (ValueError, TypeError, KeyError) as exc:  # JSONDecodeError is a ValueError
            raise CorruptMessageError(f"bad envelope record: {exc}") from exc
