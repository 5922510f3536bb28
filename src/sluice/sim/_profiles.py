"""ISP behaviours for the simulators: pure, stateful decision classes driven by ``now``.

A profile judges one source IP's traffic: when a connection opens (or says EHLO), when a
recipient is offered, and when a message ends. It returns a :class:`Refusal` (the reply and a
short tag for the counters) or None to accept. No I/O and no clock: the server passes
``now``, so every rule can be tested on a fake clock. The models, their parameters and the
reply texts are documented in ``docs/simulators.md``.

Public names:

- :class:`Profile` (accepts everything; the base of the others), :class:`PlainProfile`.
- :class:`MicrosoftProfile` with :class:`MicrosoftParams` and :class:`MicrosoftState`;
  :func:`fastest_drain_time`.
- :class:`GmailProfile` with :class:`GmailParams`; :class:`YahooProfile` with
  :class:`YahooParams`.
- :class:`Refusal`, :class:`Stage`, :class:`BudgetModel`, the ``TAG_*`` constants,
  :data:`PROFILE_NAMES` and :func:`make_profile`.

Raises: ValueError for invalid parameters or an unknown profile name.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, TypeVar

from sluice.sim._window import Budget, RollingWindow, TokenBucket, greedy_drain_time
from sluice.smtp import Reply

__all__ = [
    "PROFILE_NAMES",
    "TAG_BLOCKED",
    "TAG_BUSY",
    "TAG_CONNECTIONS",
    "TAG_GMAIL_RATE",
    "TAG_RATE_LIMIT",
    "TAG_YAHOO",
    "BudgetModel",
    "GmailParams",
    "GmailProfile",
    "MicrosoftParams",
    "MicrosoftProfile",
    "MicrosoftState",
    "PlainProfile",
    "Profile",
    "Refusal",
    "Stage",
    "YahooParams",
    "YahooProfile",
    "fastest_drain_time",
    "make_profile",
]

#: Tags counted per source IP (``SourceStats.tags``) for each kind of refusal.
TAG_RATE_LIMIT = "RP-001"
TAG_CONNECTIONS = "4.3.2"
TAG_BUSY = "4.7.500"
TAG_BLOCKED = "S3150"
TAG_GMAIL_RATE = "4.7.28"
TAG_YAHOO = "TSS04"

HOUR = 3600.0
MINUTE = 60.0


class Stage(enum.Enum):
    """Where a connection over the concurrency cap is refused."""

    #: Instead of the 220 greeting.
    GREETING = "greeting"
    #: As the reply to EHLO/HELO.
    EHLO = "ehlo"


class BudgetModel(enum.Enum):
    """How an hourly budget counts."""

    #: At most ``budget`` messages accepted in any rolling window (the default).
    ROLLING = "rolling"
    #: A token bucket of ``budget`` tokens, full at first, refilled at budget/window per second.
    BUCKET = "bucket"


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """A profile's answer instead of the normal one."""

    reply: Reply
    #: Short name counted in ``SourceStats.tags`` (e.g. ``"RP-001"``).
    tag: str
    #: This refusal counts as a deferral (a strike towards a block).
    deferral: bool = True


class Profile:
    """Accept everything. Subclasses override the hooks; ``stateful`` False lets the server
    skip the calls altogether (the plain receiver's fast path)."""

    name: ClassVar[str] = "plain"
    #: The server calls the hooks only when this is True.
    stateful: ClassVar[bool] = False
    #: Where ``on_connect`` is asked (greeting or EHLO).
    connect_stage: Stage = Stage.GREETING

    def on_connect(self, ip: str, now: float) -> Refusal | None:
        """A connection from ``ip`` asks to be served; None admits it (then ``on_disconnect``
        is owed when it ends)."""
        return None

    def on_disconnect(self, ip: str, now: float) -> None:
        """An admitted connection ended."""
        return None

    def on_rcpt(self, ip: str, now: float, *, first: bool) -> Refusal | None:
        """A recipient is offered. ``first``: the transaction holds no slot yet; accepting it
        reserves one, and ``on_accept`` or ``on_abort`` is owed."""
        return None

    def on_accept(self, ip: str, now: float) -> None:
        """The message whose slot is held was accepted (250 after the final dot)."""
        return None

    def on_abort(self, ip: str, now: float) -> None:
        """The held slot is released: the transaction ended without acceptance."""
        return None


class PlainProfile(Profile):
    """The plain accepting receiver (a sink)."""

    name: ClassVar[str] = "plain"


def _check_positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is not None and value <= 0:
            raise ValueError(f"{type(obj).__name__}.{name} must be positive, not {value!r}")


_P = TypeVar("_P", "MicrosoftParams", "GmailParams", "YahooParams")


def _scaled(obj: _P, factor: float, durations: tuple[str, ...]) -> _P:
    if factor <= 0:
        raise ValueError("a time scale must be positive")
    return replace(obj, **{name: getattr(obj, name) * factor for name in durations})


# --------------------------------------------------------------------------------------------
# Microsoft (Outlook.com / Hotmail)


@dataclass(frozen=True, slots=True, kw_only=True)
class MicrosoftParams:
    """The Microsoft model's thresholds (defaults are ours; Microsoft publishes none)."""

    #: Messages accepted per source IP per ``budget_window`` before ``421 RP-001``.
    hourly_budget: int = 1000
    #: The budget's window in seconds (an hour; scale it down in tests).
    budget_window: float = HOUR
    budget_model: BudgetModel = BudgetModel.ROLLING
    #: Concurrent connections per source IP; one more gets ``421 4.3.2``. Equal to the seed's
    #: hotmail ``max-smtp-out 20``, so the seed's configuration stays just within it.
    max_connections: int = 20
    connect_stage: Stage = Stage.GREETING
    #: Messages per source IP per ``throttle_window`` before ``451 4.7.500``; None: off.
    throttle_rate: int | None = 300
    throttle_window: float = MINUTE
    #: A source that collects more than this many further deferrals (RP-001, 4.7.500, 4.3.2)
    #: within ``deferral_period`` of its first one is blocked (``550 5.7.1 ... S3150``).
    block_after: int = 50
    deferral_period: float = HOUR
    #: How long a block lasts.
    block_duration: float = 6 * HOUR

    def __post_init__(self) -> None:
        _check_positive(
            self,
            "hourly_budget",
            "budget_window",
            "max_connections",
            "throttle_rate",
            "throttle_window",
            "deferral_period",
            "block_duration",
        )
        if self.block_after < 0:
            raise ValueError("MicrosoftParams.block_after must be >= 0")

    def scaled(self, factor: float) -> MicrosoftParams:
        """The same model with every duration multiplied by ``factor`` (e.g. 1/60: an hour
        becomes a minute); counts are unchanged."""
        return _scaled(
            self,
            factor,
            ("budget_window", "throttle_window", "deferral_period", "block_duration"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MicrosoftState:
    """What the Microsoft profile knows about one source IP at ``now`` (for tests)."""

    connections: int
    budget_used: float
    throttle_used: float
    strikes: int
    deferred_since: float | None
    blocked_until: float | None


class _MsSource:
    __slots__ = ("blocked_until", "budget", "connections", "period_start", "strikes", "throttle")

    def __init__(self, p: MicrosoftParams) -> None:
        self.connections = 0
        self.budget: Budget = (
            TokenBucket(p.hourly_budget, p.budget_window)
            if p.budget_model is BudgetModel.BUCKET
            else RollingWindow(p.hourly_budget, p.budget_window)
        )
        self.throttle = (
            RollingWindow(p.throttle_rate, p.throttle_window) if p.throttle_rate else None
        )
        self.period_start: float | None = None
        self.strikes = 0
        self.blocked_until: float | None = None


class MicrosoftProfile(Profile):
    """Outlook.com as modelled in docs/simulators.md: an hourly budget per source IP
    (``421 RP-001``), a concurrency cap (``421 4.3.2``), a per-minute throttle
    (``451 4.7.500``) and a block for sources that keep collecting deferrals
    (``550 5.7.1 ... (S3150)``)."""

    name: ClassVar[str] = "microsoft"
    stateful: ClassVar[bool] = True

    def __init__(self, params: MicrosoftParams | None = None) -> None:
        self.params = params or MicrosoftParams()
        self.connect_stage = self.params.connect_stage
        self._sources: dict[str, _MsSource] = {}
        self._replies: dict[tuple[str, str], Refusal] = {}

    def _src(self, ip: str) -> _MsSource:
        st = self._sources.get(ip)
        if st is None:
            st = self._sources[ip] = _MsSource(self.params)
        return st

    def _refusal(self, tag: str, ip: str) -> Refusal:
        key = (tag, ip)
        r = self._replies.get(key)
        if r is None:
            r = self._replies[key] = Refusal(
                reply=microsoft_reply(tag, ip), tag=tag, deferral=tag != TAG_BLOCKED
            )
        return r

    def _defer(self, st: _MsSource, now: float) -> None:
        """Count a deferral; the first opens a period, more than ``block_after`` further
        ones inside it earn the block."""
        p = self.params
        if st.period_start is None or now >= st.period_start + p.deferral_period:
            st.period_start = now
            st.strikes = 0
            return
        st.strikes += 1
        if st.strikes > p.block_after:
            st.blocked_until = now + p.block_duration
            st.period_start = None
            st.strikes = 0

    def _blocked(self, st: _MsSource, now: float) -> bool:
        until = st.blocked_until
        if until is None:
            return False
        if now < until:
            return True
        st.blocked_until = None
        return False

    def on_connect(self, ip: str, now: float) -> Refusal | None:
        st = self._src(ip)
        if st.connections >= self.params.max_connections:
            self._defer(st, now)
            return self._refusal(TAG_CONNECTIONS, ip)
        st.connections += 1
        return None

    def on_disconnect(self, ip: str, now: float) -> None:
        st = self._src(ip)
        if st.connections > 0:
            st.connections -= 1

    def on_rcpt(self, ip: str, now: float, *, first: bool) -> Refusal | None:
        st = self._src(ip)
        if self._blocked(st, now):
            return self._refusal(TAG_BLOCKED, ip)
        if not first:
            return None
        if not st.budget.has_room(now):
            self._defer(st, now)
            return self._refusal(TAG_RATE_LIMIT, ip)
        throttle = st.throttle
        if throttle is not None:
            if not throttle.has_room(now):
                self._defer(st, now)
                return self._refusal(TAG_BUSY, ip)
            throttle.reserve(now)
        st.budget.reserve(now)
        return None

    def on_accept(self, ip: str, now: float) -> None:
        st = self._src(ip)
        st.budget.commit(now)
        if st.throttle is not None:
            st.throttle.commit(now)

    def on_abort(self, ip: str, now: float) -> None:
        st = self._src(ip)
        st.budget.release(now)
        if st.throttle is not None:
            st.throttle.release(now)

    def state(self, ip: str, now: float) -> MicrosoftState:
        """A snapshot of one source's counters."""
        st = self._src(ip)
        blocked = self._blocked(st, now)
        period = st.period_start
        if period is not None and now >= period + self.params.deferral_period:
            period = None
        return MicrosoftState(
            connections=st.connections,
            budget_used=st.budget.used(now),
            throttle_used=st.throttle.used(now) if st.throttle is not None else 0,
            strikes=st.strikes if period is not None else 0,
            deferred_since=period,
            blocked_until=st.blocked_until if blocked else None,
        )


def microsoft_reply(tag: str, ip: str) -> Reply:
    """The Microsoft profile's reply for ``tag`` to source ``ip`` (our own wording after the
    public shape; the codes and tokens are what senders' pattern lists match)."""
    match tag:
        case "RP-001":
            # Hotmail sends RP-001 without an enhanced code; the seed's rule matches
            # "421 RP-001" literally.
            return Reply(
                code=421,
                lines=(
                    f"RP-001 (SIM-MC1) Unfortunately, messages from {ip} weren't sent. "
                    "Please try again later: this IP is over its hourly message limit.",
                ),
            )
        case "4.3.2":
            return Reply.of(421, "4.3.2", "Service not available, closing transmission channel")
        case "4.7.500":
            return Reply.of(
                451, "4.7.500", f"Server busy. Please try again later from [{ip}]. (S77)"
            )
        case "S3150":
            return Reply.of(
                550,
                "5.7.1",
                f"Unfortunately, messages from [{ip}] weren't sent. Please ask your provider "
                "why part of their network is on our block list (S3150).",
            )
    raise ValueError(f"unknown Microsoft reply tag {tag!r}")


def fastest_drain_time(messages: int, params: MicrosoftParams, *, sources: int = 1) -> float:
    """The fewest seconds the Microsoft profile lets ``messages`` take, sent evenly from
    ``sources`` source IPs: from the first acceptance (at 0) to the last, with every
    message accepted at the earliest moment its source's budget and throttle allow (no
    refusals, no protocol time). The campaign of issue 5 is measured against this."""
    if sources < 1:
        raise ValueError("sources must be >= 1")
    per_source = math.ceil(messages / sources)
    return greedy_drain_time(
        per_source,
        budget=params.hourly_budget,
        budget_span=params.budget_window,
        bucket=params.budget_model is BudgetModel.BUCKET,
        throttle=params.throttle_rate,
        throttle_span=params.throttle_window,
    )


# --------------------------------------------------------------------------------------------
# Gmail and Yahoo: one rolling window per source IP; Yahoo's refusal then lasts a while.


@dataclass(frozen=True, slots=True, kw_only=True)
class GmailParams:
    """Gmail's model: at most ``rate_limit`` messages per source IP per ``rate_window``."""

    rate_limit: int = 600
    rate_window: float = MINUTE

    def __post_init__(self) -> None:
        _check_positive(self, "rate_limit", "rate_window")

    def scaled(self, factor: float) -> GmailParams:
        return _scaled(self, factor, ("rate_window",))


@dataclass(frozen=True, slots=True, kw_only=True)
class YahooParams:
    """Yahoo's model: past ``volume_limit`` messages per ``volume_window``, every recipient
    from that source is deferred for ``deferral_duration`` (a multi-hour TSS04)."""

    volume_limit: int = 1000
    volume_window: float = HOUR
    deferral_duration: float = 4 * HOUR

    def __post_init__(self) -> None:
        _check_positive(self, "volume_limit", "volume_window", "deferral_duration")

    def scaled(self, factor: float) -> YahooParams:
        return _scaled(self, factor, ("volume_window", "deferral_duration"))


class _WindowedProfile(Profile):
    """A rolling window of accepted messages per source IP; subclasses say what happens
    when it is full."""

    stateful: ClassVar[bool] = True
    tag: ClassVar[str] = ""

    def __init__(self, limit: int, span: float) -> None:
        self._limit = limit
        self._span = span
        self._windows: dict[str, RollingWindow] = {}
        self._replies: dict[str, Refusal] = {}

    def _window(self, ip: str) -> RollingWindow:
        w = self._windows.get(ip)
        if w is None:
            w = self._windows[ip] = RollingWindow(self._limit, self._span)
        return w

    def _refusal(self, ip: str) -> Refusal:
        r = self._replies.get(ip)
        if r is None:
            r = self._replies[ip] = Refusal(reply=self._reply(ip), tag=self.tag)
        return r

    def _reply(self, ip: str) -> Reply:
        raise NotImplementedError

    def used(self, ip: str, now: float) -> float:
        """Messages counted in ``ip``'s window at ``now``."""
        return self._window(ip).used(now)

    def on_accept(self, ip: str, now: float) -> None:
        self._window(ip).commit(now)

    def on_abort(self, ip: str, now: float) -> None:
        self._window(ip).release(now)


class GmailProfile(_WindowedProfile):
    """Gmail: over the per-source rate, ``421 4.7.28`` until the window has room again."""

    name: ClassVar[str] = "gmail"
    tag: ClassVar[str] = TAG_GMAIL_RATE

    def __init__(self, params: GmailParams | None = None) -> None:
        self.params = params or GmailParams()
        super().__init__(self.params.rate_limit, self.params.rate_window)

    def _reply(self, ip: str) -> Reply:
        return Reply.of(
            421,
            "4.7.28",
            f"[{ip}] We have seen an unusual rate of unsolicited mail from your IP address, "
            "so its mail is being rate limited for now. Please try again later. (sim)",
        )

    def on_rcpt(self, ip: str, now: float, *, first: bool) -> Refusal | None:
        if not first:
            return None
        w = self._window(ip)
        if not w.has_room(now):
            return self._refusal(ip)
        w.reserve(now)
        return None


class YahooProfile(_WindowedProfile):
    """Yahoo: past the volume threshold, ``421 4.7.0 [TSS04]`` for every recipient from that
    source for ``deferral_duration``."""

    name: ClassVar[str] = "yahoo"
    tag: ClassVar[str] = TAG_YAHOO

    def __init__(self, params: YahooParams | None = None) -> None:
        self.params = params or YahooParams()
        super().__init__(self.params.volume_limit, self.params.volume_window)
        self._deferred_until: dict[str, float] = {}

    def _reply(self, ip: str) -> Reply:
        return Reply.of(
            421,
            "4.7.0",
            f"[TSS04] Messages from {ip} temporarily deferred due to unexpected volume or "
            "user complaints (sim)",
        )

    def deferred_until(self, ip: str, now: float) -> float | None:
        """When ``ip``'s deferral ends, or None when it is not deferred at ``now``."""
        until = self._deferred_until.get(ip)
        if until is None or now >= until:
            return None
        return until

    def on_rcpt(self, ip: str, now: float, *, first: bool) -> Refusal | None:
        if self.deferred_until(ip, now) is not None:
            return self._refusal(ip)
        if not first:
            return None
        w = self._window(ip)
        if not w.has_room(now):
            self._deferred_until[ip] = now + self.params.deferral_duration
            return self._refusal(ip)
        w.reserve(now)
        return None


# --------------------------------------------------------------------------------------------

#: The profiles by name (the CLI's ``--profile``).
PROFILE_NAMES = ("plain", "microsoft", "gmail", "yahoo")

_PARAMS: dict[str, type[MicrosoftParams] | type[GmailParams] | type[YahooParams]] = {
    "microsoft": MicrosoftParams,
    "gmail": GmailParams,
    "yahoo": YahooParams,
}


def make_profile(name: str, *, time_scale: float = 1.0, **params: Any) -> Profile:
    """A fresh profile by name, its parameters overridden by ``params`` (field names of the
    matching ``*Params`` class) and its durations multiplied by ``time_scale``."""
    if name == "plain":
        if params:
            raise ValueError(f"the plain profile takes no parameters: {sorted(params)}")
        return PlainProfile()
    cls = _PARAMS.get(name)
    if cls is None:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(PROFILE_NAMES)}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown {name} parameters {unknown}; known: {sorted(known)}")
    p = cls(**params)
    if time_scale != 1.0:
        p = p.scaled(time_scale)
    match p:
        case MicrosoftParams():
            return MicrosoftProfile(p)
        case GmailParams():
            return GmailProfile(p)
        case YahooParams():
            return YahooProfile(p)
    raise AssertionError(name)  # pragma: no cover
