"""sluice.routing: where mail for a domain goes (pure; DNS answers come in as values).

Modules: ``answers`` (DNS answer values, the ``Resolver`` protocol), ``mx`` (MX ordering, route
specs, failures, site keys), ``attempt`` (the per-attempt plan), ``cache`` (TTL cache of
answers), ``vmta`` (pool member and source-IP choice), ``fake`` (dict-backed resolver for
tests). The dnspython-backed resolver is ``sluice.net.dns``. See docs/routing.md.

Public names are re-exported below; errors: RoutingConfigError, PlanMisuseError.
"""

from __future__ import annotations

from sluice.routing.answers import (
    AddressAnswer,
    DnsFailure,
    MxAnswer,
    MxRecord,
    Resolver,
    normalize_name,
)
from sluice.routing.attempt import (
    AttemptPlan,
    Connect,
    ConnectFailed,
    Done,
    FallbackEvent,
    Greeting,
    ResolveAddresses,
    ResolveMx,
    RouteSettings,
    Step,
)
from sluice.routing.cache import DnsCache
from sluice.routing.errors import PlanMisuseError, RoutingConfigError
from sluice.routing.fake import FakeName, FakeResolver
from sluice.routing.mx import (
    FailureKind,
    HostSpec,
    MxHost,
    Rng,
    RouteFailure,
    hosts_from_mx,
    order_mx,
    parse_host_list,
    parse_host_spec,
    site_key,
)
from sluice.routing.vmta import PoolChooser, PoolMember, SmoothRoundRobin, SourceChooser, SourceHost

__all__ = [
    "AddressAnswer",
    "AttemptPlan",
    "Connect",
    "ConnectFailed",
    "DnsCache",
    "DnsFailure",
    "Done",
    "FailureKind",
    "FakeName",
    "FakeResolver",
    "FallbackEvent",
    "Greeting",
    "HostSpec",
    "MxAnswer",
    "MxHost",
    "MxRecord",
    "PlanMisuseError",
    "PoolChooser",
    "PoolMember",
    "ResolveAddresses",
    "ResolveMx",
    "Resolver",
    "Rng",
    "RouteFailure",
    "RouteSettings",
    "RoutingConfigError",
    "SmoothRoundRobin",
    "SourceChooser",
    "SourceHost",
    "Step",
    "hosts_from_mx",
    "normalize_name",
    "order_mx",
    "parse_host_list",
    "parse_host_spec",
    "site_key",
]
