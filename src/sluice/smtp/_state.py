"""The SMTP conversation state machine: one table, shared by the client and server roles.

Two rules, after h11's ``_state.py``:

1. Everything that changes the conversation's state is in this file: the states, the inputs
   (commands and the pseudo-command of the greeting) and :data:`TRANSITIONS`.
2. The file does not know which role it plays. A command is *issued* by the client and
   *received* by the server, and the state moves when its reply is sent (server) or received
   (client); both roles ask :func:`next_state` the same question.

A conversation is in one :class:`State`; a command is valid in a state when the pair is in
the table (otherwise: the server answers 503, the client raises LocalProtocolError); its
reply's class picks the next state: 2xx → ``on_2xx``, 3xx → ``on_3xx``, 4xx/5xx →
``on_failure``, and a 421 always → CLOSED (RFC 5321 §3.8). ``docs`` can draw the diagram from
:data:`TRANSITIONS`.

Public names: Role, CLIENT, SERVER, State, Input, Transition, TRANSITIONS, ENDS_GROUP,
POSITIVE_CODES, is_valid, next_state. Raises: LocalProtocolError (a pair or reply class
not in the table).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from sluice.smtp._errors import LocalProtocolError

__all__ = [
    "CLIENT",
    "ENDS_GROUP",
    "POSITIVE_CODES",
    "SERVER",
    "TRANSITIONS",
    "Input",
    "Role",
    "State",
    "Transition",
    "is_valid",
    "next_state",
]


class Role(enum.Enum):
    """Which side of the conversation a Connection plays (RFC 5321 §2.3.3)."""

    #: Sends commands, receives replies (delivery).
    CLIENT = "client"
    #: Receives commands, sends replies (intake).
    SERVER = "server"


CLIENT: Final = Role.CLIENT
SERVER: Final = Role.SERVER


class State(enum.Enum):
    """Where an SMTP conversation stands (RFC 5321 §3, §4.1.4; RFC 3030; RFC 3207; RFC 4954)."""

    # Identity hash: members are singletons, and Enum's own __hash__ is Python-level (slow in
    # the per-command table look-ups).
    __hash__ = object.__hash__

    #: Connected; the server's greeting is owed (server) or awaited (client).
    GREETING = "GREETING"
    #: The greeting was 554: only QUIT is allowed (RFC 5321 §3.1).
    REFUSED = "REFUSED"
    #: Greeted (or just switched to TLS); EHLO or HELO must come next.
    GREETED = "GREETED"
    #: EHLO/HELO accepted; no mail transaction open.
    READY = "READY"
    #: MAIL accepted; RCPT expected.
    MAIL = "MAIL"
    #: At least one RCPT accepted; more RCPT, or DATA, or BDAT.
    RCPT = "RCPT"
    #: 354 given: message content flows until ``<CRLF>.<CRLF>`` (RFC 5321 §4.1.1.4).
    DATA = "DATA"
    #: Inside a BDAT transaction after an accepted non-last chunk (RFC 3030 §2).
    BDAT = "BDAT"
    #: 334 given to AUTH: a SASL response line is expected (RFC 4954 §4).
    AUTH = "AUTH"
    #: 220 given to STARTTLS: hand the socket to TLS and build a fresh Connection (RFC 3207 §4.2).
    TLS_HANDOFF = "TLS_HANDOFF"
    #: 221 to QUIT, a 421, or the peer closed: nothing more is exchanged.
    CLOSED = "CLOSED"
    #: A fatal protocol error: close the connection.
    ERROR = "ERROR"


class Input(enum.Enum):
    """What moves the machine: each command (and the greeting) together with its reply."""

    __hash__ = object.__hash__

    #: The server's opening reply (RFC 5321 §4.3.1): 220, or 554/421.
    GREETING = "GREETING"
    EHLO = "EHLO"
    HELO = "HELO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    #: The ``<CRLF>.<CRLF>`` that ends DATA content.
    END_OF_DATA = "END_OF_DATA"
    #: A BDAT chunk that is not the last one (RFC 3030).
    BDAT = "BDAT"
    #: ``BDAT n LAST``.
    BDAT_LAST = "BDAT_LAST"
    RSET = "RSET"
    NOOP = "NOOP"
    VRFY = "VRFY"
    HELP = "HELP"
    QUIT = "QUIT"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    #: A SASL response line after a 334 (RFC 4954 §4).
    AUTH_RESPONSE = "AUTH_RESPONSE"


@dataclass(frozen=True, slots=True)
class Transition:
    """Next states after a reply of each class; None means that class is not a valid answer."""

    on_2xx: State | None
    on_3xx: State | None
    on_failure: State


S = State
I = Input  # noqa: E741 - a one-letter alias keeps the table readable


def _same(state: State) -> Transition:
    return Transition(state, None, state)


def _anywhere(state: State) -> dict[Input, Transition]:
    """Commands valid in every greeted state; they leave the state alone (RSET and QUIT aside)."""
    return {
        I.NOOP: _same(state),
        I.VRFY: _same(state),
        I.HELP: _same(state),
        I.RSET: Transition(S.GREETED if state is S.GREETED else S.READY, None, state),
        I.QUIT: Transition(S.CLOSED, None, state),
        I.EHLO: Transition(S.READY, None, state),
        I.HELO: Transition(S.READY, None, state),
    }


#: state → {input → Transition}. A pair that is missing is out of sequence.
TRANSITIONS: dict[State, dict[Input, Transition]] = {
    S.GREETING: {I.GREETING: Transition(S.GREETED, None, S.REFUSED)},
    S.REFUSED: {I.QUIT: Transition(S.CLOSED, None, S.REFUSED)},
    S.GREETED: _anywhere(S.GREETED),
    S.READY: {
        **_anywhere(S.READY),
        I.MAIL: Transition(S.MAIL, None, S.READY),
        I.STARTTLS: Transition(S.TLS_HANDOFF, None, S.READY),
        I.AUTH: Transition(S.READY, S.AUTH, S.READY),
    },
    S.MAIL: {
        **_anywhere(S.MAIL),
        I.RCPT: Transition(S.RCPT, None, S.MAIL),
    },
    S.RCPT: {
        **_anywhere(S.RCPT),
        I.RCPT: Transition(S.RCPT, None, S.RCPT),
        I.DATA: Transition(None, S.DATA, S.RCPT),
        I.BDAT: Transition(S.BDAT, None, S.READY),
        I.BDAT_LAST: Transition(S.READY, None, S.READY),
    },
    S.DATA: {I.END_OF_DATA: Transition(S.READY, None, S.READY)},
    S.BDAT: {
        I.BDAT: Transition(S.BDAT, None, S.READY),
        I.BDAT_LAST: Transition(S.READY, None, S.READY),
        I.RSET: Transition(S.READY, None, S.BDAT),
        I.NOOP: _same(S.BDAT),
        I.QUIT: Transition(S.CLOSED, None, S.BDAT),
    },
    S.AUTH: {I.AUTH_RESPONSE: Transition(S.READY, S.AUTH, S.READY)},
    S.TLS_HANDOFF: {},
    S.CLOSED: {},
    S.ERROR: {},
}

#: RFC 2920 §3.1: commands that must be the last of a pipelined group (the client waits for
#: their reply before sending more). The greeting is awaited before anything is sent.
ENDS_GROUP: frozenset[Input] = frozenset(
    {
        I.GREETING,
        I.EHLO,
        I.HELO,
        I.DATA,
        I.VRFY,
        I.HELP,
        I.QUIT,
        I.NOOP,
        I.STARTTLS,
        I.AUTH,
        I.AUTH_RESPONSE,
    }
)

#: The positive codes a server may send to each input (RFC 5321 §4.3.2, RFC 3207, RFC 4954).
#: Inputs not listed take 250 only.
POSITIVE_CODES: dict[Input, frozenset[int]] = {
    I.GREETING: frozenset({220}),
    I.STARTTLS: frozenset({220}),
    I.QUIT: frozenset({221}),
    I.DATA: frozenset({354}),
    I.RCPT: frozenset({250, 251}),
    I.VRFY: frozenset({250, 251, 252}),
    I.HELP: frozenset({211, 214}),
    I.AUTH: frozenset({235, 334}),
    I.AUTH_RESPONSE: frozenset({235, 334}),
}
_DEFAULT_POSITIVE = frozenset({250})


def is_valid(state: State, command: Input) -> bool:
    """Is ``command`` in sequence in ``state``?"""
    return command in TRANSITIONS[state]


#: Memo of :func:`next_state` answers (the table is fixed, so an answer never changes). The
#: keys are few (states x inputs x the codes a server actually sends); the cap only guards
#: against a peer-driven stream of odd codes on the client side.
_memo: dict[tuple[State, Input, int, bool], State] = {}
_MEMO_LIMIT = 4096


def next_state(state: State, command: Input, code: int, *, strict: bool = True) -> State:
    """The state after ``command`` issued in ``state`` got a reply with ``code``.

    ``strict`` (the server checking what it sends) also checks the exact positive code.
    Raises LocalProtocolError if the pair is not in the table or the reply class is not a
    valid answer to the command.
    """
    key = (state, command, code, strict)
    known = _memo.get(key)
    if known is not None:
        return known
    transition = TRANSITIONS[state].get(command)
    if transition is None:
        raise LocalProtocolError(f"{command.name} is not valid in state {state.name}")
    target: State | None
    if code == 421:
        target = S.CLOSED
    else:
        klass = code // 100
        if klass == 2:
            target = transition.on_2xx
        elif klass == 3:
            target = transition.on_3xx
        elif klass in (4, 5):
            target = transition.on_failure
        else:
            target = None
        if target is None:
            raise LocalProtocolError(f"a {code} reply is not a valid answer to {command.name}")
        if klass < 4 and strict and code not in POSITIVE_CODES.get(command, _DEFAULT_POSITIVE):
            raise LocalProtocolError(f"{code} is not a valid positive reply to {command.name}")
    if len(_memo) < _MEMO_LIMIT:
        _memo[key] = target
    return target
