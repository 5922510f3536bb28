"""Per-queue scheduling settings: the resolved policy of one ``domain/vmta`` queue.

The daemon fills :class:`QueueSettings` from the configuration layer's resolved policy
(``<domain>`` blocks after precedence, powermta.md §2.3–§2.4); this package never reads the
configuration itself. All durations are seconds.

Defaults are PowerMTA's where it documents one (powermta.md §2.3, §2.4), otherwise Sluice's
own, each with its reason below.

Public names: QueueSettings, BackoffSettings, DEFAULT_SETTINGS, NEVER,
MAX_CONNECTION_IDLE_TIMEOUT and the ``DEFAULT_*`` constants. ``QueueSettings`` and
``BackoffSettings`` raise ``ValueError`` on impossible values (negative counts or durations,
empty retry list, priority outside 0..100, jitter outside [0, 1), a source listed twice); a
``connection_idle_timeout`` above 10 minutes is taken as 10 minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sluice.sched.rules import ReplyRule
from sluice.sched.sources import SourceIp
from sluice.sched.throttle import RateLimit

__all__ = [
    "DEFAULT_BOUNCE_AFTER",
    "DEFAULT_CONNECTION_IDLE_TIMEOUT",
    "DEFAULT_JITTER",
    "DEFAULT_MAX_SMTP_OUT",
    "DEFAULT_QUEUE_PRIORITY",
    "DEFAULT_RETRY_AFTER",
    "DEFAULT_RETRY_AFTER_DNS_ERROR",
    "DEFAULT_SETTINGS",
    "MAX_CONNECTION_IDLE_TIMEOUT",
    "NEVER",
    "BackoffSettings",
    "QueueSettings",
]

#: ``max-smtp-out`` default: 20 connections per queue (PowerMTA user guide; stock ``<domain *>``).
DEFAULT_MAX_SMTP_OUT = 20
#: ``retry-after`` default: 10 minutes (PowerMTA user guide).
DEFAULT_RETRY_AFTER: tuple[float, ...] = (600.0,)
#: ``bounce-after`` default: 4 days 12 hours (PowerMTA user guide).
DEFAULT_BOUNCE_AFTER = 4 * 86400.0 + 12 * 3600.0
#: ``retry-after-dns-error`` default: 1 minute (PowerMTA user guide).
DEFAULT_RETRY_AFTER_DNS_ERROR = 60.0
#: ``queue-priority`` default: 50 on a 0..100 scale (PowerMTA user guide).
DEFAULT_QUEUE_PRIORITY = 50
#: Retry jitter, Sluice's choice: each retry delay is spread uniformly over ±10 % so that a
#: wave of deferrals does not come back in the same second (test-plan §4 "retry storms";
#: KumoMTA's "synchronized retry stampede"); never below ``min_retry_interval``.
DEFAULT_JITTER = 0.1
#: ``connection-idle-timeout`` default: 0, close a connection as soon as its queue has no
#: work for it (PowerMTA user guide; maximum 10 minutes there).
DEFAULT_CONNECTION_IDLE_TIMEOUT = 0.0
#: ``backoff-to-normal-after`` and ``reenable-source-ip-after`` default: never (PowerMTA user
#: guide).
NEVER = math.inf
#: ``connection-idle-timeout`` ceiling: 10 minutes (PowerMTA user guide).
MAX_CONNECTION_IDLE_TIMEOUT = 600.0
#: Upper bound on ``queue-priority`` (PowerMTA's 0..100 scale).
MAX_QUEUE_PRIORITY = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class BackoffSettings:
    """The ``backoff-*`` directives: limits that replace the normal ones in backoff mode.

    ``None`` means "same as in normal mode"; :func:`sluice.sched.backoff.effective_limits`
    reads them. A reply rule's own cap and rate replace ``max_smtp_out`` / ``max_msg_rate``
    while it holds the queue in backoff; in backoff no limit is ever looser than in normal
    mode.
    """

    #: ``backoff-max-smtp-out`` (PowerMTA default 20).
    max_smtp_out: int | None = None
    #: ``backoff-retry-after`` (PowerMTA default 1 h).
    retry_after: tuple[float, ...] | None = (3600.0,)
    #: ``backoff-max-msg-rate`` (``backoff-max-msg-per-hour N`` = N/h).
    max_msg_rate: RateLimit | None = None
    #: ``backoff-max-connect-rate``.
    max_connect_rate: RateLimit | None = None
    #: ``backoff-max-data-volume-rate``.
    max_data_volume_rate: RateLimit | None = None
    #: ``backoff-to-normal-after`` (seconds; ``inf`` = never, PowerMTA's default). A rule's
    #: own duration replaces it.
    to_normal_after: float = NEVER
    #: ``backoff-to-normal-after-delivery``: the first delivery of a transaction handed out
    #: while in backoff returns the queue to normal.
    to_normal_after_delivery: bool = False
    #: ``backoff-reroute-to-virtual-mta``: while in backoff, the queue's waiting mail moves to
    #: this VMTA (``Reroute`` actions).
    reroute_to_vmta: str | None = None
    #: ``backoff-upon-all-sources-disabled``: enter backoff when every source is disabled.
    upon_all_sources_disabled: bool = False

    def __post_init__(self) -> None:
        if self.max_smtp_out is not None and self.max_smtp_out < 0:
            raise ValueError("backoff max_smtp_out must be >= 0")
        if self.to_normal_after < 0:
            raise ValueError("backoff to_normal_after must be >= 0")
        if self.retry_after is not None:
            _check_retry_list(self.retry_after)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSettings:
    """How one queue is scheduled (PowerMTA directive names in the field comments)."""

    #: ``max-smtp-out``: connections open or opening for this queue at once; 0 = none.
    max_smtp_out: int = DEFAULT_MAX_SMTP_OUT
    #: ``max-msg-per-connection``: messages (transactions) per connection; 0 = unlimited.
    max_msg_per_connection: int = 0
    #: ``max-errors-per-connection``: close a connection after this many failed recipients;
    #: 0 = unlimited.
    max_errors_per_connection: int = 0
    #: ``max-rcpt-per-message`` / ``max-rcpt-per-transaction``: recipients per transaction;
    #: a message's recipients in this queue are split into transactions; 0 = unlimited.
    max_rcpt_per_message: int = 0
    #: ``retry-after`` / ``retry-interval``: the n-th retry of a recipient waits entry n
    #: (the last entry repeats). Also the queue's retry-mode delay after a site failure.
    retry_after: tuple[float, ...] = DEFAULT_RETRY_AFTER
    #: ``min-retry-interval``: floor under any retry delay of a recipient (after jitter).
    min_retry_interval: float = 0.0
    #: ``bounce-after`` / ``max-retry-time``: age (seconds since arrival) at which an
    #: undelivered recipient bounces.
    bounce_after: float = DEFAULT_BOUNCE_AFTER
    #: ``bounce-on-4xx-status``: True bounces a recipient at its first 4xx.
    bounce_on_4xx: bool = False
    #: ``retry-after-dns-error``: retry-mode delay after a temporary DNS failure.
    retry_after_dns_error: float = DEFAULT_RETRY_AFTER_DNS_ERROR
    #: Queue paused by configuration (``pmta pause queue`` does the same at run time).
    paused: bool = False
    #: ``queue-priority`` 0..100: under the global connection cap, higher goes first.
    queue_priority: int = DEFAULT_QUEUE_PRIORITY
    #: ``allow-priority-interruption``: this queue's idle connections give their slot up when
    #: a higher-priority queue waits for one under ``total-max-smtp-out`` (PowerMTA: true).
    allow_priority_interruption: bool = True
    #: Sluice: retry delays are spread uniformly over ±``jitter`` of their value.
    jitter: float = DEFAULT_JITTER
    #: ``connection-idle-timeout``: keep an idle connection this long waiting for work.
    connection_idle_timeout: float = DEFAULT_CONNECTION_IDLE_TIMEOUT
    #: The ``backoff-*`` overrides used while the queue is in backoff mode.
    backoff: BackoffSettings = field(default_factory=BackoffSettings)
    #: ``max-msg-rate`` (``max-msg-per-hour N`` = N/h): attempted recipients per interval.
    max_msg_rate: RateLimit | None = None
    #: ``max-connect-rate``: new connections per interval.
    max_connect_rate: RateLimit | None = None
    #: ``max-data-volume-rate``: message bytes per interval (``Scheduler.add(size=)``).
    max_data_volume_rate: RateLimit | None = None
    #: ``smtp-out-rampup-interval``: least wait between two new connections of the queue.
    smtp_out_rampup_interval: float = 0.0
    #: ``smtp-pattern-list`` rules and the seed's inline rules, in order (first match wins).
    reply_rules: tuple[ReplyRule, ...] = ()
    #: ``reenable-source-ip-after``: how long a rule's ``disable-source-ip`` lasts when the
    #: rule gives no ``reenable-after`` (``inf`` = never, PowerMTA's default).
    reenable_source_ip_after: float = NEVER
    #: The source IPs of the queue's VMTA with their ``source-ip-*`` limits; empty = the
    #: delivery layer chooses (see :mod:`sluice.sched.sources`).
    sources: tuple[SourceIp, ...] = ()

    def __post_init__(self) -> None:
        counts = {
            "max_smtp_out": self.max_smtp_out,
            "max_msg_per_connection": self.max_msg_per_connection,
            "max_errors_per_connection": self.max_errors_per_connection,
            "max_rcpt_per_message": self.max_rcpt_per_message,
            "min_retry_interval": self.min_retry_interval,
            "bounce_after": self.bounce_after,
            "retry_after_dns_error": self.retry_after_dns_error,
            "connection_idle_timeout": self.connection_idle_timeout,
            "smtp_out_rampup_interval": self.smtp_out_rampup_interval,
            "reenable_source_ip_after": self.reenable_source_ip_after,
        }
        for name, value in counts.items():
            if value < 0:
                raise ValueError(f"{name} must be >= 0")
        _check_retry_list(self.retry_after)
        if not 0 <= self.queue_priority <= MAX_QUEUE_PRIORITY:
            raise ValueError("queue_priority must be within 0..100")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be within [0, 1)")
        if self.connection_idle_timeout > MAX_CONNECTION_IDLE_TIMEOUT:
            # PowerMTA's ceiling: a longer value means the longest allowed.
            object.__setattr__(self, "connection_idle_timeout", MAX_CONNECTION_IDLE_TIMEOUT)
        if len({s.key for s in self.sources}) != len(self.sources):
            raise ValueError("a source IP is listed twice")


def _check_retry_list(delays: tuple[float, ...]) -> None:
    if not delays:
        raise ValueError("a retry list needs at least one delay")
    if any(d < 0 for d in delays):
        raise ValueError("retry delays must be >= 0")


#: Settings with every default: what a queue gets when nothing is configured.
DEFAULT_SETTINGS = QueueSettings()
