"""Client role: the FIFO of commands in flight (RFC 2920), matching each reply to its command.

Replies come back in the order commands were sent, so a deque is the whole mechanism; what
it adds is the rule of when another command may join the group: only with PIPELINING
advertised, and never after a command that must end a group (EHLO, DATA, QUIT, ...).

Public names: InFlight, Pipeline.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sluice.smtp._events import Event
from sluice.smtp._state import ENDS_GROUP, Input

__all__ = ["InFlight", "Pipeline"]


@dataclass(frozen=True, slots=True)
class InFlight:
    """A command sent and not yet answered (``event`` None for the greeting)."""

    command: Input
    event: Event | None


class Pipeline:
    """Commands in flight, oldest first."""

    __slots__ = ("_fifo",)

    def __init__(self) -> None:
        self._fifo: deque[InFlight] = deque()

    def __len__(self) -> int:
        return len(self._fifo)

    def __bool__(self) -> bool:
        return bool(self._fifo)

    def push(self, command: Input, event: Event | None) -> None:
        self._fifo.append(InFlight(command, event))

    def pop(self) -> InFlight | None:
        """The command the next reply answers, or None if nothing is in flight."""
        return self._fifo.popleft() if self._fifo else None

    def clear(self) -> None:
        self._fifo.clear()

    def may_add(self, pipelining: bool) -> str | None:
        """Why another command may not be sent now, or None if it may."""
        if not self._fifo:
            return None
        last = self._fifo[-1].command
        if last in ENDS_GROUP:
            return f"must wait for the reply to {last.name} (RFC 2920 §3.1)"
        if not pipelining:
            return "the server did not advertise PIPELINING: wait for each reply"
        return None

    @property
    def commands(self) -> tuple[Input, ...]:
        return tuple(item.command for item in self._fifo)
