"""Client role: the FIFO of commands in flight (RFC 2920), matching each reply to its command.

Replies come back in the order commands were sent, so a deque is the whole mechanism; what
it adds is the rule of when another command may join the group: only with PIPELINING
advertised, and never after a command that must end a group (EHLO, DATA, QUIT, ...).

Entries are plain ``(command, event)`` pairs (:data:`InFlight`): one is made per command
sent, so they are tuples rather than dataclass instances. ``items`` is the deque itself, the
same object for the pipeline's life, for the engine's per-reply path to read without a call.

Public names: InFlight, Pipeline.
"""

from __future__ import annotations

from collections import deque
from typing import TypeAlias

from sluice.smtp._events import Event
from sluice.smtp._state import ENDS_GROUP, Input

__all__ = ["InFlight", "Pipeline"]

#: A command sent and not yet answered: its input and event (``None`` for the greeting).
InFlight: TypeAlias = tuple[Input, Event | None]


class Pipeline:
    """Commands in flight, oldest first."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        #: The commands in flight, oldest first. Read it; change it only through the methods.
        self.items: deque[InFlight] = deque()

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)

    def push(self, command: Input, event: Event | None) -> None:
        self.items.append((command, event))

    def pop(self) -> InFlight | None:
        """The command the next reply answers, or None if nothing is in flight."""
        return self.items.popleft() if self.items else None

    def clear(self) -> None:
        self.items.clear()

    def may_add(self, pipelining: bool) -> str | None:
        """Why another command may not be sent now, or None if it may."""
        fifo = self.items
        if not fifo:
            return None
        last = fifo[-1][0]
        if last in ENDS_GROUP:
            return f"must wait for the reply to {last.name} (RFC 2920 §3.1)"
        if not pipelining:
            return "the server did not advertise PIPELINING: wait for each reply"
        return None

    @property
    def commands(self) -> tuple[Input, ...]:
        return tuple(item[0] for item in self.items)
