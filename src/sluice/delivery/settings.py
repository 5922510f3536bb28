"""DeliverySettings: how one outbound SMTP session behaves (timeouts, source, protocol knobs).

The daemon maps the configuration (``connect-timeout``, ``smtp-greeting-timeout``,
``data-send-timeout``, ``smtp-data-termination-timeout``, ``smtp-source-host``,
``host-name``, ``ignore-pipelining``, ``ignore-8bitmime``, ``ignore-dsn``,
``smtp-421-means-mx-unavailable``, ``bounce-upon-5xx-greeting``,
``assume-delivery-upon-data-termination-timeout`` and the routing directives) to one frozen
value per queue and source; sessions only read it.

Public names: DeliverySettings and the default constants. Raises ValueError for a
non-positive timeout.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sluice.routing import RouteSettings, SourceHost

__all__ = [
    "DEFAULT_COMMAND_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_DATA_SEND_TIMEOUT",
    "DEFAULT_DATA_TERMINATION_TIMEOUT",
    "DEFAULT_GREETING_TIMEOUT",
    "DEFAULT_QUIT_TIMEOUT",
    "DeliverySettings",
]

#: ``connect-timeout`` default, 2m (PowerMTA; powermta.md §2.5).
DEFAULT_CONNECT_TIMEOUT = 120.0
#: ``smtp-greeting-timeout`` default, 5m (PowerMTA; RFC 5321 §4.5.3.2.1 "initial 220": 5 min).
DEFAULT_GREETING_TIMEOUT = 300.0
#: Wait for the reply to EHLO, MAIL, RCPT, DATA, RSET: 5 min (RFC 5321 §4.5.3.2.2–.4; the
#: DATA initiation minimum of 2 min is covered by it).
DEFAULT_COMMAND_TIMEOUT = 300.0
#: ``data-send-timeout`` default, 3m without progress while sending content (PowerMTA;
#: RFC 5321 §4.5.3.2.5 "data block": 3 min).
DEFAULT_DATA_SEND_TIMEOUT = 180.0
#: ``smtp-data-termination-timeout`` default, 10m for the reply to the final dot (PowerMTA;
#: RFC 5321 §4.5.3.2.6 "DATA termination": 10 min; shorter invites duplicates).
DEFAULT_DATA_TERMINATION_TIMEOUT = 600.0
#: Wait for the reply to QUIT before simply closing. Not a delivery matter (a failed QUIT
#: is not a failed delivery), so short (Postfix ``smtp_quit_timeout`` is 300 s; nothing
#: depends on it).
DEFAULT_QUIT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliverySettings:
    """Settings of the sessions of one queue from one source (see the module docstring).

    ``source_address`` None means "let the kernel choose" (no bind). ``bounce_upon_5xx_greeting``
    is read from ``route`` (the plan acts on it); it is exposed here as a property.
    """

    #: The EHLO/HELO name: the ``smtp-source-host`` name, else ``host-name``.
    ehlo_hostname: str = "localhost"
    #: The local address to bind (``smtp-source-host`` IP), or None.
    source_address: str | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    smtp_greeting_timeout: float = DEFAULT_GREETING_TIMEOUT
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT
    data_send_timeout: float = DEFAULT_DATA_SEND_TIMEOUT
    smtp_data_termination_timeout: float = DEFAULT_DATA_TERMINATION_TIMEOUT
    quit_timeout: float = DEFAULT_QUIT_TIMEOUT
    #: ``ignore-pipelining``: send each command and wait for its reply even if offered.
    ignore_pipelining: bool = False
    #: ``ignore-8bitmime``: never send BODY=8BITMIME; 8-bit content then goes out without
    #: the parameter (the operator's explicit choice; off, 8-bit to a 7-bit server is 5.6.3).
    ignore_8bitmime: bool = False
    #: ``ignore-dsn``: never send NOTIFY/ORCPT/RET/ENVID even if DSN is offered.
    ignore_dsn: bool = False
    #: ``smtp-421-means-mx-unavailable``: a 421 mid-session moves on to the next MX host
    #: within the same delivery; off, the session ends and the scheduler reconnects later.
    smtp_421_means_mx_unavailable: bool = False
    #: ``assume-delivery-upon-data-termination-timeout``: no reply to the final dot within
    #: the timeout counts as delivered (no retry, no duplicate) instead of a possible
    #: duplicate retried later.
    assume_delivery_upon_data_termination_timeout: bool = False
    #: Routing of the queue (MX, ``route``, ``smtp-hosts``, port, 5xx-greeting rule).
    route: RouteSettings = dataclasses.field(default_factory=RouteSettings)

    def __post_init__(self) -> None:
        timeouts = (
            self.connect_timeout,
            self.smtp_greeting_timeout,
            self.command_timeout,
            self.data_send_timeout,
            self.smtp_data_termination_timeout,
            self.quit_timeout,
        )
        if min(timeouts) <= 0:
            raise ValueError("every delivery timeout must be positive")

    @property
    def bounce_upon_5xx_greeting(self) -> bool:
        """``bounce-upon-5xx-greeting`` (from ``route``)."""
        return self.route.bounce_upon_5xx_greeting

    def with_source(self, source: SourceHost) -> DeliverySettings:
        """These settings from another ``smtp-source-host`` (bind IP and EHLO name)."""
        return dataclasses.replace(
            self, source_address=source.address, ehlo_hostname=source.hostname
        )
