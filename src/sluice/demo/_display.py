"""Showing the demo's progress: a rich live table, or plain progress lines.

A :class:`Frame` is one moment of the run (injection totals, per-queue rows, clocks).
:class:`LiveDisplay` redraws a table of it about four times a second (one row per queue:
queued, deferred, delivered, bounced, connections, mode, last event); :class:`LineDisplay`
prints one line per second instead, plus a line whenever a queue changes mode (backoff,
retry mode), for logs and pipes.

Public names: Frame, Display, LiveDisplay, LineDisplay, REFRESH_PER_SECOND.
Nothing here raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from sluice.demo._inject import InjectStats
from sluice.demo._progress import ModeChange, QueueRow

__all__ = ["REFRESH_PER_SECOND", "Display", "Frame", "LineDisplay", "LiveDisplay"]

#: Live table redraws per second.
REFRESH_PER_SECOND = 4
#: Seconds between two plain progress lines.
LINE_INTERVAL = 1.0

_MODE_STYLE = {"normal": "green", "backoff": "bold red", "retry": "yellow", "paused": "dim"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """The run at one moment."""

    elapsed: float
    #: Demo time elapsed (seconds of the scaled clock).
    demo_elapsed: float
    inject: InjectStats
    rows: tuple[QueueRow, ...]
    #: Messages Sluice still holds (including DSNs it made).
    pending: int
    changes: tuple[ModeChange, ...] = ()

    @property
    def delivered(self) -> int:
        return sum(r.delivered for r in self.rows)

    @property
    def bounced(self) -> int:
        return sum(r.bounced for r in self.rows)

    @property
    def queued(self) -> int:
        return sum(r.queued for r in self.rows)

    @property
    def deferred(self) -> int:
        return sum(r.deferred for r in self.rows)

    @property
    def connections(self) -> int:
        return sum(r.connections for r in self.rows)


class Display(Protocol):
    """Where frames go."""

    def start(self) -> None: ...

    def show(self, frame: Frame, *, final: bool = False) -> None: ...

    def stop(self) -> None: ...


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def headline(frame: Frame) -> str:
    inj = frame.inject
    return (
        f"{frame.elapsed:5.1f}s (demo time +{_clock(frame.demo_elapsed)})  "
        f"injected {inj.injected}/{inj.total} (accepted {inj.accepted}"
        + (f", refused {inj.refused}" if inj.refused else "")
        + (f", retried {inj.retries}" if inj.retries else "")
        + f")  queued {frame.queued}  deferred {frame.deferred}  "
        f"delivered {frame.delivered}  bounced {frame.bounced}  "
        f"connections {frame.connections}"
    )


class LiveDisplay:
    """A rich ``Live`` table, redrawn by :meth:`show` (call it ~4×/s)."""

    def __init__(self, console: Console, title: str) -> None:
        self.console = console
        self.title = title
        self._live = Live(console=console, auto_refresh=False, transient=False)

    def start(self) -> None:
        self._live.start()

    def show(self, frame: Frame, *, final: bool = False) -> None:
        self._live.update(self._render(frame), refresh=True)

    def stop(self) -> None:
        self._live.stop()

    def _render(self, frame: Frame) -> Group:
        table = Table(title=self.title, title_justify="left", expand=False, pad_edge=False)
        table.add_column("queue (domain/vmta)", no_wrap=True)
        for name in ("queued", "deferred", "delivered", "bounced", "conns"):
            table.add_column(name, justify="right", no_wrap=True, min_width=len(name))
        table.add_column("mode", no_wrap=True, min_width=7)
        table.add_column("last event", overflow="ellipsis", no_wrap=True, max_width=80)
        for row in frame.rows:
            table.add_row(
                row.queue,
                str(row.queued),
                str(row.deferred) if row.deferred else "",
                str(row.delivered),
                str(row.bounced) if row.bounced else "",
                str(row.connections) if row.connections else "",
                Text(row.mode, style=_MODE_STYLE.get(row.mode, "")),
                Text(row.event, style="dim"),
            )
        return Group(table, Text(headline(frame)))


class LineDisplay:
    """Plain lines: one per :data:`LINE_INTERVAL`, and one per mode change."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._last = -LINE_INTERVAL

    def start(self) -> None:
        pass

    def show(self, frame: Frame, *, final: bool = False) -> None:
        for change in frame.changes:
            self.console.print(
                f"{frame.elapsed:5.1f}s  {change.queue}: mode {change.mode}"
                + (f" ({change.event})" if change.event else ""),
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        if final or frame.elapsed - self._last >= LINE_INTERVAL:
            self._last = frame.elapsed
            self.console.print(headline(frame), markup=False, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        pass
