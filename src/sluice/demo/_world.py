"""The demo's world: the stories, the simulated receivers, their DNS zones, the configuration.

:class:`Story` picks the simulators' thresholds: ``plain`` (nobody throttles: the campaign
flows) or ``throttle`` (the Microsoft simulator's hourly budget per source IP is small, so the
marketing IPs earn ``421 RP-001`` and the seed's backoff rule takes over).

:func:`receivers` builds the simulator specs (``sluice.sim.demo_receivers``), :func:`zones`
the DNS answers pointing every demo domain at its receiver (``gmail.com MX 10
mx.gmail.sim.test``, ``mx.gmail.sim.test A 127.0.0.21``), and :func:`demo_config_text` the
configuration Sluice runs on: the seed's file **unchanged** except for its ``smtp-listener``
line (moved to a free port), with the demo's lines appended (resolver, outbound port, spool,
accounting file). :func:`seed_text` reads the seed from the package data.

Public names: Story, SEED_RESOURCE, DEMO_HOSTNAME, seed_text, receivers, zones,
demo_config_text, free_port, vmta_of_source.
Raises: ValueError (``demo_config_text``: the seed has no ``smtp-listener`` line), OSError
(``free_port``, ``seed_text``).
"""

from __future__ import annotations

import enum
import importlib.resources
import re
import socket

from sluice.config import Config
from sluice.routing import FakeName
from sluice.sim import (
    BudgetModel,
    GmailParams,
    MicrosoftParams,
    ReceiverSpec,
    YahooParams,
    demo_receivers,
)

__all__ = [
    "DEMO_HOSTNAME",
    "SEED_RESOURCE",
    "Story",
    "demo_config_text",
    "free_port",
    "receivers",
    "seed_text",
    "vmta_of_source",
    "zones",
]

#: The seed configuration shipped in the package (an exact copy of ``shared/seed/seed.conf``).
SEED_RESOURCE = "data/seed.conf"
#: Sluice's own name in the demo (EHLO for DSNs, ``Received`` headers, postmaster address).
DEMO_HOSTNAME = "sluice.demo.test"
#: The first simulator address; Microsoft, Gmail, Yahoo and the long tail follow.
FIRST_RECEIVER = "127.0.0.20"

#: Limits so high that nothing is refused in the ``plain`` story.
_UNLIMITED = 1_000_000_000
#: ``throttle`` story: the Microsoft simulator's budget per source IP is a token bucket of
#: this many messages, refilled over :data:`THROTTLE_WINDOW` (demo) seconds: 1,200 an hour.
#: The default campaign sends about 330 Microsoft newsletters per marketing IP at the seed's
#: ``max-msg-per-hour 5000``, so both marketing IPs empty it within minutes of demo time and
#: earn ``421 RP-001``; the seed's backoff rate (1,000 an hour) then fits the refill.
THROTTLE_BUDGET = 100
THROTTLE_WINDOW = 300.0
#: Demo seconds per real second for each story: the throttle story waits for the seed's
#: one-hour backoff to end, so its hour passes in 30 s.
TIME_SCALE = {"plain": 60.0, "throttle": 120.0}

_LISTENER_RE = re.compile(r"^(\s*smtp-listener\s+)(\S+)(.*)$", re.MULTILINE)
_MGMT_PORT_RE = re.compile(r"^(\s*http-mgmt-port\s+)\d+", re.MULTILINE)


class Story(enum.Enum):
    """What the simulated ISPs do with the campaign."""

    #: Every receiver accepts everything (issue 4's demo).
    PLAIN = "plain"
    #: Microsoft's hourly budget per source IP is small: RP-001, backoff, recovery.
    THROTTLE = "throttle"

    @property
    def time_scale(self) -> float:
        """The story's default demo seconds per real second."""
        return TIME_SCALE[self.value]


def seed_text() -> str:
    """The seed configuration from the package data."""
    return importlib.resources.files("sluice").joinpath(SEED_RESOURCE).read_text("utf-8")


def receivers(story: Story) -> list[ReceiverSpec]:
    """The simulators for ``story`` (durations in demo time: the clock is scaled instead)."""
    if story is Story.PLAIN:
        microsoft = MicrosoftParams(
            hourly_budget=_UNLIMITED, throttle_rate=None, max_connections=_UNLIMITED
        )
        gmail = GmailParams(rate_limit=_UNLIMITED)
        yahoo = YahooParams(volume_limit=_UNLIMITED)
    else:
        # Microsoft as documented but with a small budget; the others stay out of the way so
        # the story is about one ISP.
        microsoft = MicrosoftParams(
            hourly_budget=THROTTLE_BUDGET,
            budget_window=THROTTLE_WINDOW,
            budget_model=BudgetModel.BUCKET,
            throttle_rate=None,
        )
        gmail = GmailParams(rate_limit=_UNLIMITED)
        yahoo = YahooParams(volume_limit=_UNLIMITED)
    return demo_receivers(first_host=FIRST_RECEIVER, microsoft=microsoft, gmail=gmail, yahoo=yahoo)


def zones(specs: list[ReceiverSpec]) -> dict[str, FakeName]:
    """MX records for every receiver's domains, and an A record for each MX host."""
    out: dict[str, FakeName] = {}
    for spec in specs:
        out[spec.hostname] = FakeName(a=(spec.host,))
        for domain in spec.domains:
            out[domain] = FakeName(mx=((10, spec.hostname),))
    return out


def demo_config_text(
    seed: str,
    *,
    listen_port: int,
    dns: tuple[str, int],
    smtp_port: int,
    workdir: str,
    mgmt_port: int | None = None,
) -> str:
    """The seed with its listener moved to ``listen_port`` (and its ``http-mgmt-port`` to
    ``mgmt_port``, so a busy 8080 does not stop the demo) and the demo's lines appended."""
    match = _LISTENER_RE.search(seed)
    if match is None:
        raise ValueError("the seed configuration has no smtp-listener line")
    address = match.group(2)
    host = address.rsplit(":", 1)[0] if ":" in address else address
    text = (
        seed[: match.start()]
        + f"{match.group(1)}{host}:{listen_port}{match.group(3)}"
        + seed[match.end() :]
    )
    if mgmt_port is not None:
        text = _MGMT_PORT_RE.sub(rf"\g<1>{mgmt_port}", text, count=1)
    if not text.endswith("\n"):
        text += "\n"
    return text + (
        "\n# ---- added by `sluice demo` (everything above is the seed, unchanged except for\n"
        "# ---- the smtp-listener port) ----\n"
        "# Route by real DNS look-ups, answered by the demo's loopback DNS server.\n"
        f"dns-server {dns[0]}:{dns[1]}\n"
        "# Every simulated MX listens on this port of its own loopback address.\n"
        f"default-smtp-port {smtp_port}\n"
        f"<spool {workdir}/spool>\n"
        "</spool>\n"
        f"<acct-file {workdir}/acct.csv>\n"
        "    records r,d,b,t\n"
        "</acct-file>\n"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def vmta_of_source(config: Config) -> dict[str, str]:
    """Source IP → the virtual MTA whose ``smtp-source-host`` it is."""
    out: dict[str, str] = {}
    for name, vmta in config.vmtas.items():
        for source in vmta.source_hosts:
            out[str(source.first)] = name
    return out
