"""Real-socket shaping worlds: ISP simulators, a loopback DNS, Sluice on a scaled clock.

A *world* is what every test of tests/shaping_e2e and bench/bench_shaping.py runs in:

- simulated receivers (``sluice.sim.ThreadedCluster``, one shared port on 127.0.0.30 …),
  their durations scaled to real time (``params.scaled(1 / time_scale)``), sampling the open
  connections every 100 ms and recording every refusal and acceptance (``timeline=True``);
- a loopback DNS server (``sluice.net.dnsserver.DnsServer``) with MX records pointing each
  receiver's domains at it;
- the daemon (``python -m sluice run -c FILE --time-scale F``), so that the configuration's
  own durations (``1h``, ``5000/h``) run F times faster while network timeouts stay real.

Every time in a simulator's ``Stats`` is the simulator's clock: the loop's monotonic
``time()`` in *real* seconds. Config rates and durations are converted with :func:`real_rate`
and :func:`real_seconds`.

Public names:
    SIM_FIRST_HOST, MS_DOMAINS
    seed_config_text(workdir, *, listener, dns, smtp_port) -> str    the seed, unchanged, plus
        resolver/port/spool/acct lines
    custom_config_text(workdir, *, listener, dns, smtp_port, body) -> str
    World, run_world(workdir, specs, config, *, time_scale, ...) -> context manager
    Campaign, campaign_messages(n, domain, vmta, *, prefix) -> list[DemoMessage]
    real_rate(per_hour, time_scale), real_seconds(seconds, time_scale)
    Analysis helpers (pure): rate_between, max_in_window, count_in, samples_between,
    first_event, BackoffWindow, backoff_window, BackoffJudgement, judge_backoff
Raises: PeerError (tests.e2e.peers) when the daemon does not start; AssertionError from
World.wait_for on a time-out.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.peers import free_port
from tests.e2e.sluice_proc import SluiceProcess

from sluice.demo import DemoMessage, Injector, InjectStats, Kind
from sluice.net.dnsserver import DnsServer
from sluice.routing import FakeName
from sluice.sim import ConcurrencySample, ReceiverSpec, SimEvent, Stats, ThreadedCluster

__all__ = [
    "MS_DOMAINS",
    "REPO",
    "SEED_PATH",
    "SIM_FIRST_HOST",
    "BackoffJudgement",
    "BackoffWindow",
    "Campaign",
    "World",
    "backoff_window",
    "campaign_messages",
    "count_in",
    "custom_config_text",
    "first_event",
    "judge_backoff",
    "max_in_window",
    "rate_between",
    "real_rate",
    "real_seconds",
    "run_world",
    "samples_between",
    "seed_config_text",
]

REPO = Path(__file__).resolve().parents[2]
#: The seed configuration (examples/seed.conf is the seed document's file, unchanged).
SEED_PATH = REPO / "examples" / "seed.conf"
#: Our simulators live here and above (the demo uses 127.0.0.20-23, tests/e2e .2-.14).
SIM_FIRST_HOST = "127.0.0.30"
#: The seed's Microsoft domain group.
MS_DOMAINS = ("hotmail.com", "outlook.com", "live.com", "msn.com")
#: Sampling period of the receivers' concurrency (issue 5: every 100 ms).
SAMPLE_INTERVAL = 0.1
#: Real seconds the daemon gets to start and to stop.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


def real_rate(per_hour: float, time_scale: float) -> float:
    """Messages per real second of a ``per_hour`` config rate on a clock ``time_scale`` × fast."""
    return per_hour * time_scale / 3600.0


def real_seconds(seconds: float, time_scale: float) -> float:
    """Real seconds that a config duration of ``seconds`` lasts at ``time_scale``."""
    return seconds / time_scale


# -- configurations ------------------------------------------------------------------------


def _appendix(workdir: Path, dns: tuple[str, int], smtp_port: int) -> str:
    return (
        "\n# ---- added by tests/shaping_e2e (everything above is unchanged) ----\n"
        f"dns-server {dns[0]}:{dns[1]}\n"
        f"default-smtp-port {smtp_port}\n"
        f"<spool {workdir}/spool>\n"
        "</spool>\n"
        f"<acct-file {workdir}/acct.csv>\n"
        "    records d,b,t\n"
        "</acct-file>\n"
    )


def seed_config_text(
    workdir: Path, *, listener: tuple[str, int], dns: tuple[str, int], smtp_port: int
) -> str:
    """The seed file with only its ``smtp-listener`` and ``http-mgmt-port`` ports changed,
    plus the test's resolver, outbound port, spool and accounting file."""
    seed = SEED_PATH.read_text("utf-8")
    old = "smtp-listener 127.0.0.1:2525"
    if old not in seed:
        raise ValueError(f"{SEED_PATH}: no {old!r} line")
    text = seed.replace(old, f"smtp-listener {listener[0]}:{listener[1]}", 1)
    # The seed's management port (8080) moves to a free one: tests may run side by side.
    text = text.replace("http-mgmt-port 8080", f"http-mgmt-port {free_port('127.0.0.1')}", 1)
    return text + _appendix(workdir, dns, smtp_port)


def custom_config_text(
    workdir: Path,
    *,
    listener: tuple[str, int],
    dns: tuple[str, int],
    smtp_port: int,
    body: str,
) -> str:
    """A small configuration: the listener, an injector source that may relay and pick its
    VMTA, then ``body`` (VMTAs, domains), then the test lines."""
    head = (
        f"smtp-listener {listener[0]}:{listener[1]}\n"
        "<source 127.0.0.1>\n"
        "    always-allow-relaying yes\n"
        "    process-x-virtual-mta yes\n"
        "</source>\n"
    )
    return head + body + _appendix(workdir, dns, smtp_port)


#: (workdir, listener, dns address, smtp port) -> configuration text
ConfigFn = Callable[[Path, tuple[str, int], tuple[str, int], int], str]


# -- the world -------------------------------------------------------------------------------


def _zones(specs: Sequence[ReceiverSpec]) -> dict[str, FakeName]:
    out: dict[str, FakeName] = {}
    for spec in specs:
        out[spec.hostname] = FakeName(a=(spec.host,))
        for domain in spec.domains:
            out[domain] = FakeName(mx=((10, spec.hostname),))
    return out


@dataclass(slots=True)
class Campaign:
    """An injection running in a background thread (``sluice.demo.Injector``)."""

    injector: Injector
    thread: threading.Thread

    @property
    def stats(self) -> InjectStats:
        return self.injector.stats

    def join(self, timeout: float) -> InjectStats:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"injection not finished after {timeout}s: {self.stats}")
        return self.stats


def campaign_messages(
    n: int, domains: Sequence[str], vmta: str, *, prefix: str = "user", first_seq: int = 0
) -> list[DemoMessage]:
    """``n`` one-recipient messages through ``vmta`` (its name goes in ``X-Virtual-MTA``),
    addressed round robin over ``domains``; local parts ``{prefix}.{seq}`` are unique."""
    kind = Kind.RESET if vmta == "transactional" else Kind.NEWSLETTER
    sender = "no-reply@example.net" if kind is Kind.RESET else "news@example.net"
    return [
        DemoMessage(
            seq=first_seq + i,
            kind=kind,
            sender=sender,
            rcpt=f"{prefix}.{first_seq + i}@{domains[i % len(domains)]}",
            vmta=vmta,
        )
        for i in range(n)
    ]


@dataclass(slots=True)
class World:
    """A running world; see the module docstring."""

    sims: ThreadedCluster
    sluice: SluiceProcess
    dns: DnsServer
    time_scale: float
    workdir: Path

    @property
    def listener(self) -> tuple[str, int]:
        return self.sluice.listener

    def stats(self, name: str) -> Stats:
        return self.sims.stats(name)

    def now(self) -> float:
        """The simulators' clock (real monotonic seconds; the loop's ``time()``)."""
        return self.sims.call(lambda c: next(iter(c)).now())

    def inject(
        self, messages: Sequence[DemoMessage], *, concurrency: int = 8, speed: float = 0.0
    ) -> Campaign:
        """Start injecting ``messages`` into Sluice in a background thread."""
        injector = Injector(messages, self.listener, concurrency=concurrency, speed=speed)

        def run() -> None:
            asyncio.run(injector.run())

        thread = threading.Thread(target=run, name="shaping-injector", daemon=True)
        thread.start()
        return Campaign(injector=injector, thread=thread)

    def wait_for(
        self,
        name: str,
        predicate: Callable[[Stats], bool],
        timeout: float,
        what: str,
        interval: float = 0.1,
    ) -> Stats:
        """Poll receiver ``name`` until ``predicate(stats)``; AssertionError after ``timeout``
        (with the daemon's stderr tail)."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats(name)
            if predicate(st):
                return st
            if time.monotonic() > deadline:
                tail = self.sluice.stderr_text()[-3000:]
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}; "
                    f"receiver totals: messages={st.total.messages} tags={dict(st.total.tags)}"
                    f"\n--- sluice stderr tail ---\n{tail}"
                )
            time.sleep(interval)


@contextlib.contextmanager
def run_world(
    workdir: Path,
    specs: Sequence[ReceiverSpec],
    config: ConfigFn,
    *,
    time_scale: float,
    record: bool = False,
) -> Iterator[World]:
    """Start the receivers, the DNS server and Sluice; stop all of them afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    sims = ThreadedCluster(
        specs, sample_interval=SAMPLE_INTERVAL, timeline=True, record=record
    ).start()
    try:
        with DnsServer(_zones(specs)) as dns:
            listener = ("127.0.0.1", free_port("127.0.0.1"))
            path = workdir / "sluice.conf"
            path.write_text(config(workdir, listener, dns.address, sims.port), "utf-8")
            argv = [sys.executable, "-m", "sluice", "run", "-c", str(path)]
            if time_scale != 1.0:
                argv += ["--time-scale", repr(time_scale)]
            proc = SluiceProcess(
                path,
                listener=listener,
                workdir=workdir / "run",
                argv=argv,
                start_timeout=START_TIMEOUT,
            )
            proc.start()
            try:
                yield World(sims=sims, sluice=proc, dns=dns, time_scale=time_scale, workdir=workdir)
            finally:
                proc.stop(STOP_TIMEOUT)
    finally:
        sims.stop()


# -- analysis (pure) -------------------------------------------------------------------------


def count_in(times: Sequence[float], start: float, end: float) -> int:
    """Events of the sorted ``times`` in ``[start, end)``."""
    return bisect.bisect_left(times, end) - bisect.bisect_left(times, start)


def rate_between(times: Sequence[float], skip: int) -> tuple[float, int, float, float]:
    """The rate of the sorted event ``times`` with the first and last ``skip`` left out:
    ``(events - 1) / (last - first)`` over the rest; returns (rate, events, first, last)."""
    inner = list(times[skip : len(times) - skip])
    if len(inner) < 2:
        raise ValueError(f"too few events ({len(times)}) to leave out {skip} at each end")
    first, last = inner[0], inner[-1]
    return (len(inner) - 1) / (last - first), len(inner), first, last


def max_in_window(times: Sequence[float], width: float) -> tuple[int, float]:
    """The most events of the sorted ``times`` in any half-open window ``[t, t + width)``
    (it suffices to start windows at events); returns (count, window start)."""
    best, at = 0, times[0] if times else 0.0
    j = 0
    for i, t in enumerate(times):
        j = max(j, i)
        while j < len(times) and times[j] < t + width:
            j += 1
        if j - i > best:
            best, at = j - i, t
    return best, at


def samples_between(
    samples: Sequence[ConcurrencySample], ip: str, start: float, end: float
) -> list[tuple[float, int]]:
    """``(at, open connections of ip)`` for the samples taken in ``[start, end)``."""
    return [(s.at, s.by_ip.get(ip, 0)) for s in samples if start <= s.at < end]


def first_event(events: Sequence[SimEvent], ip: str, tag: str, after: float = -1e18) -> SimEvent:
    """The first refusal tagged ``tag`` sent to ``ip`` at or after ``after``."""
    for ev in events:
        if ev.ip == ip and ev.tag == tag and ev.at >= after:
            return ev
    raise AssertionError(f"no {tag} refusal to {ip} after {after}")


@dataclass(frozen=True, slots=True, kw_only=True)
class BackoffWindow:
    """What the receiver saw of one backoff: see :func:`backoff_window`."""

    #: The first refusal that matched the rule (receiver clock).
    start: float
    #: When the sampled connections of the source first fell to the backoff cap.
    dropped_at: float
    #: Refusals of the source in [start, dropped_at], the first one included.
    replies_before_drop: int
    #: Connections of the source open at ``start`` (the last sample before it).
    open_at_start: int


def backoff_window(st: Stats, ip: str, tag: str, cap: int, after: float = -1e18) -> BackoffWindow:
    """The first ``tag`` refusal to ``ip`` (at or after ``after``), the moment the sampled
    connections of ``ip`` first fell to ``cap`` or below after it, and the refusals ``ip``
    got in between (the backoff reaction)."""
    first = first_event(st.events, ip, tag, after)
    before = [s.by_ip.get(ip, 0) for s in st.samples if s.at <= first.at]
    open_at_start = before[-1] if before else 0
    dropped = next(
        (s.at for s in st.samples if s.at >= first.at and s.by_ip.get(ip, 0) <= cap), None
    )
    if dropped is None:
        raise AssertionError(f"the connections of {ip} never fell to {cap} after {first}")
    replies = sum(1 for ev in st.events if ev.ip == ip and first.at <= ev.at <= dropped)
    return BackoffWindow(
        start=first.at,
        dropped_at=dropped,
        replies_before_drop=replies,
        open_at_start=open_at_start,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class BackoffJudgement:
    """A backoff as the receiver saw it, against the rule's caps (see :func:`judge_backoff`).

    Times are the receiver's clock (real seconds); rates are per real second.
    """

    #: The first refusal matching the rule, and the last one of that first burst.
    start: float
    burst_end: float
    reaction: BackoffWindow
    #: The window in which every limit of the backoff must hold: from the first refusal
    #: plus the allowance for in-flight work, to the first refusal plus the period.
    window: tuple[float, float]
    #: 100 ms samples of the source in the window, and those above the cap.
    samples: int
    samples_over_cap: tuple[tuple[float, int], ...]
    #: Messages accepted in the window, and the most the backoff rate allows there.
    messages: int
    allowed: float
    #: The busiest 1-second window inside it, and what the rate allows in one.
    busiest_second: int
    allowed_per_second: float
    #: Refusals of the rule's kind inside the window (after the reaction).
    refusals_in_window: int
    #: After the period: the first sample above the cap, the next refusal of the rule's kind,
    #: the rate and the highest sampled concurrency between the two.
    resumed_at: float | None
    next_trigger_at: float | None
    rate_after: float
    peak_after: int

    @property
    def excess_requests(self) -> int:
        """Requests beyond the backoff's caps at the receiver: samples over the connection
        cap plus messages over the rate allowance."""
        over_rate = max(0, self.messages - int(self.allowed))
        return len(self.samples_over_cap) + over_rate

    def summary(self) -> str:
        a, b = self.window
        return (
            f"first refusal at {self.start:.3f}, burst to {self.burst_end:.3f}; reaction: "
            f"{self.reaction.replies_before_drop} replies in "
            f"{(self.reaction.dropped_at - self.start) * 1000:.0f} ms "
            f"({self.reaction.open_at_start} sessions in the last sample before); "
            f"window {b - a:.2f}s: "
            f"{self.messages} msgs (allowed {self.allowed:.1f}), busiest second "
            f"{self.busiest_second} (allowed {self.allowed_per_second:.1f}), "
            f"{len(self.samples_over_cap)}/{self.samples} samples over cap, "
            f"{self.refusals_in_window} refusals; resumed "
            f"{'never' if self.resumed_at is None else f'{self.resumed_at - self.start:.2f}s'}"
            f" after the first refusal, then {self.rate_after:.1f} msgs/s, peak "
            f"{self.peak_after} connections"
        )


def judge_backoff(
    st: Stats,
    ip: str,
    tag: str,
    *,
    cap: int,
    rate: float,
    period: float,
    allowance: float,
    jitter: float,
    refusal_means_over_cap: bool = False,
) -> BackoffJudgement:
    """Judge the first backoff of ``ip`` triggered by a ``tag`` refusal.

    ``cap``, ``rate`` (msgs per real second) and ``period`` (real seconds) are the rule's;
    ``allowance`` is how long after the first refusal work already handed out may still be
    finishing (the in-flight transactions); ``jitter`` the receiver-side timing noise added to
    a window's width when counting what a rate allows in it. ``refusal_means_over_cap``: the
    refusal itself proves more than ``cap`` sessions were open (a concurrency refusal), so the
    next one after the period counts as the return above the cap even between two samples.
    """
    events = [ev for ev in st.events if ev.ip == ip and ev.tag == tag]
    if not events:
        raise AssertionError(f"no {tag} refusal to {ip}")
    start = events[0].at
    burst = [ev.at for ev in events if ev.at < start + period / 2]
    reaction = backoff_window(st, ip, tag, cap)
    a, b = start + allowance, start + period
    window_samples = samples_between(st.samples, ip, a, b)
    over = tuple((at, n) for at, n in window_samples if n > cap)
    times = st.source(ip).message_times
    inner = times[bisect.bisect_left(times, a) : bisect.bisect_left(times, b)]
    busiest = max_in_window(inner, 1.0)[0] if inner else 0
    later = [ev.at for ev in events if ev.at >= start + period]
    next_trigger = later[0] if later else None
    after = samples_between(st.samples, ip, start + period / 2, next_trigger or st.taken_at)
    resumed = next((at for at, n in after if n > cap), None)
    if refusal_means_over_cap and next_trigger is not None:
        resumed = next_trigger if resumed is None else min(resumed, next_trigger)
    rate_after, peak_after = 0.0, 0
    if resumed is not None:
        end = next_trigger or st.taken_at
        n_after = count_in(times, resumed, end)
        rate_after = n_after / (end - resumed) if end > resumed else 0.0
        peak_after = max((n for at, n in after if at >= resumed), default=0)
    return BackoffJudgement(
        start=start,
        burst_end=burst[-1],
        reaction=reaction,
        window=(a, b),
        samples=len(window_samples),
        samples_over_cap=over,
        messages=len(inner),
        allowed=1 + (b - a + jitter) * rate,
        busiest_second=busiest,
        allowed_per_second=1 + (1.0 + jitter) * rate,
        refusals_in_window=sum(1 for ev in events if a <= ev.at < b),
        resumed_at=resumed,
        next_trigger_at=next_trigger,
        rate_after=rate_after,
        peak_after=peak_after,
    )
