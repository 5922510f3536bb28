"""The state table: every (state, input, reply) triple either moves the machine as the table
says or raises LocalProtocolError; the server engine never emits a command event that the
table does not allow in the current state (Hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from smtp_helpers import ALL_EXTENSIONS, HOST, Transcript, default_reply, feed

from sluice import smtp
from sluice.smtp import replies as R
from sluice.smtp._state import TRANSITIONS, Input, State, is_valid, next_state

CODES = st.sampled_from(
    [211, 214, 220, 221, 235, 250, 251, 252, 334, 354, 421, 450, 451, 452, 500, 501, 503, 550, 554]
)


@given(st.sampled_from(list(State)), st.sampled_from(list(Input)), CODES, st.booleans())
def test_every_pair_is_in_the_table_or_raises(
    state: State, command: Input, code: int, strict: bool
) -> None:
    transition = TRANSITIONS[state].get(command)
    try:
        new = next_state(state, command, code, strict=strict)
    except smtp.LocalProtocolError:
        assert transition is None or (code // 100 in (2, 3) and code != 421)
        return
    assert transition is not None
    assert is_valid(state, command)
    if code == 421:
        assert new is State.CLOSED
    elif code >= 400:
        assert new is transition.on_failure
    else:
        assert new in (transition.on_2xx, transition.on_3xx)


def test_terminal_states_accept_nothing() -> None:
    for state in (State.CLOSED, State.ERROR, State.TLS_HANDOFF):
        assert TRANSITIONS[state] == {}


COMMAND_LINES = [
    b"EHLO c.test\r\n",
    b"HELO c.test\r\n",
    b"MAIL FROM:<a@x.test>\r\n",
    b"RCPT TO:<b@y.test>\r\n",
    b"DATA\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY x\r\n",
    b"HELP\r\n",
    b"BDAT 2\r\nab",
    b"BDAT 1 LAST\r\nc",
    b"AUTH PLAIN\r\n",
    b"bogus\r\n",
    b"hello\r\n.\r\n",
]

_EVENT_INPUT = {
    smtp.Ehlo: Input.EHLO,
    smtp.Helo: Input.HELO,
    smtp.MailFrom: Input.MAIL,
    smtp.RcptTo: Input.RCPT,
    smtp.Data: Input.DATA,
    smtp.Rset: Input.RSET,
    smtp.Noop: Input.NOOP,
    smtp.Vrfy: Input.VRFY,
    smtp.Help: Input.HELP,
    smtp.Auth: Input.AUTH,
}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(COMMAND_LINES), st.booleans()), max_size=25),
)
def test_server_emits_only_commands_valid_in_sequence(steps: list[tuple[bytes, bool]]) -> None:
    conn = smtp.Connection(smtp.SERVER)
    conn.send(R.greeting(HOST))
    for line, accept in steps:
        before = conn.state
        t = Transcript()

        def policy(ev: smtp.Event, accept: bool = accept) -> smtp.Reply | None:
            if isinstance(ev, smtp.Auth | smtp.AuthResponse):
                return smtp.Reply.of(535, "5.7.8", "no")
            if not accept and not isinstance(
                ev, smtp.Quit | smtp.EndOfData | smtp.EndOfChunk | smtp.BadCommand
            ):
                return R.LOCAL_ERROR
            return default_reply(ev, ALL_EXTENSIONS)

        try:
            feed(conn, line, t, policy)
        except smtp.RemoteProtocolError:
            return
        for ev in t.events:
            kind = _EVENT_INPUT.get(type(ev))
            if kind is not None:
                assert is_valid(before, kind), (before, ev)
            before = conn.state if kind is None else before
        assert conn.state is not State.ERROR
