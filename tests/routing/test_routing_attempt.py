"""AttemptPlan against a fake resolver: every T27 case, fall-back, routes, limits."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Mapping

import pytest
from t27_zones import OUR_LISTENER, OUR_NAME, T27_ZONES

from sluice.net.dns import drive_dns
from sluice.routing import (
    AttemptPlan,
    Connect,
    ConnectFailed,
    DnsFailure,
    Done,
    FailureKind,
    FakeName,
    FakeResolver,
    Greeting,
    MxAnswer,
    PlanMisuseError,
    ResolveMx,
    RouteSettings,
    parse_host_list,
    parse_host_spec,
)

Peer = Callable[[Connect], ConnectFailed | Greeting]


def ok_peer(step: Connect) -> ConnectFailed | Greeting:
    return Greeting(code=220, text="ready")


def scripted(replies: Mapping[str, ConnectFailed | Greeting]) -> Peer:
    """Peers keyed by address; addresses not listed greet with 220."""
    return lambda step: replies.get(step.address, Greeting(code=220, text="ready"))


def run(
    domain: str,
    settings: RouteSettings | None = None,
    peer: Peer = ok_peer,
    zones: Mapping[str, FakeName] = T27_ZONES,
    seed: int = 1,
) -> tuple[Done, AttemptPlan, FakeResolver, list[Connect]]:
    resolver = FakeResolver(zones)
    plan = AttemptPlan(domain, settings or RouteSettings(), random.Random(seed))
    connects: list[Connect] = []

    async def go() -> Done:
        while True:
            step = await drive_dns(plan, resolver)
            if isinstance(step, Done):
                return step
            connects.append(step)
            plan.result(peer(step))

    return asyncio.run(go()), plan, resolver, connects


# --- T27 ------------------------------------------------------------------------------------


def test_ok_domain_connects_to_the_preferred_mx() -> None:
    done, plan, resolver, connects = run("ok.test")
    assert done.failure is None
    assert done.target == Connect(host="mx1.ok.test", address="127.0.0.2", port=25, preference=10)
    assert [c.address for c in connects] == ["127.0.0.2"]
    assert plan.site == "mx1.ok.test,mx2.ok.test"
    assert resolver.queries == [("MX", "ok.test"), ("A", "mx1.ok.test")]


def test_servfail_defers_with_4_4_3_and_never_falls_back_to_a() -> None:
    done, _plan, resolver, connects = run("servfail.test")
    assert done.failure is not None
    assert done.failure.kind is FailureKind.DNS_TEMPORARY
    assert (done.failure.transient, done.failure.status) == (True, "4.4.3")
    assert resolver.queries == [("MX", "servfail.test")]
    assert connects == []


def test_timeout_defers_with_4_4_3() -> None:
    done, _plan, resolver, connects = run("timeout.test")
    assert done.failure is not None
    assert (done.failure.transient, done.failure.code, done.failure.status) == (True, 451, "4.4.3")
    assert resolver.queries == [("MX", "timeout.test")]
    assert connects == []


def test_nxdomain_bounces_with_5_1_2() -> None:
    done, _plan, resolver, connects = run("nx.test")
    assert done.failure is not None
    assert done.failure.kind is FailureKind.NO_SUCH_DOMAIN
    assert (done.failure.permanent, done.failure.status) == (True, "5.1.2")
    assert resolver.queries == [("MX", "nx.test")]
    assert connects == []


def test_null_mx_bounces_with_5_1_10_without_connecting() -> None:
    done, plan, resolver, connects = run("nullmx.test")
    assert done.failure is not None
    assert done.failure.kind is FailureKind.NULL_MX
    assert (done.failure.permanent, done.failure.code, done.failure.status) == (
        True,
        556,
        "5.1.10",
    )
    assert connects == []
    assert plan.connect_attempts == 0
    assert resolver.queries == [("MX", "nullmx.test")]


def test_a_only_domain_is_its_own_implicit_mx() -> None:
    done, plan, resolver, _ = run("NoMX.test")
    assert done.target == Connect(host="nomx.test", address="127.0.0.4", port=25)
    assert plan.site == "nomx.test"
    assert resolver.queries == [("MX", "nomx.test"), ("A", "nomx.test")]


def test_mx_resolving_to_our_listener_is_a_loop_5_4_6() -> None:
    settings = RouteSettings(local_endpoints=frozenset({OUR_LISTENER}))
    done, plan, _resolver, connects = run("loop.test", settings)
    assert done.failure is not None
    assert done.failure.kind is FailureKind.MX_LOOP
    assert (done.failure.permanent, done.failure.status) == (True, "5.4.6")
    assert connects == []
    assert plan.connect_attempts == 0


def test_same_address_on_another_port_is_not_a_loop() -> None:
    settings = RouteSettings(local_endpoints=frozenset({("127.0.0.1", 2525)}))
    done, _plan, _resolver, _ = run("loop.test", settings)
    assert done.target is not None
    assert done.target.address == "127.0.0.1"


def test_mx_naming_us_is_a_loop_without_any_address_lookup() -> None:
    settings = RouteSettings(local_names=frozenset({OUR_NAME.upper()}))
    done, _plan, resolver, connects = run("nameloop.test", settings)
    assert done.failure is not None
    assert done.failure.status == "5.4.6"
    assert connects == []
    assert resolver.queries == [("MX", "nameloop.test")]


def test_loop_discards_us_and_higher_preferences_but_keeps_better_hosts() -> None:
    zones = {
        **T27_ZONES,
        "mixed.test": FakeName(mx=((10, "mx1.ok.test"), (20, OUR_NAME), (30, "mx2.ok.test"))),
    }
    settings = RouteSettings(local_names=frozenset({OUR_NAME}))
    failing = scripted({"127.0.0.2": ConnectFailed(reason="refused")})
    done, _plan, _resolver, connects = run("mixed.test", settings, failing, zones)
    # mx1 tried, we and mx2 (preference >= ours) discarded: the failure is mx1's, transient.
    assert [c.host for c in connects] == ["mx1.ok.test"]
    assert done.failure is not None
    assert done.failure.kind is FailureKind.CONNECT_FAILED
    assert done.failure.transient


def test_address_loop_drops_the_rest_of_the_set() -> None:
    zones = {
        **T27_ZONES,
        "lp.test": FakeName(mx=((10, "mx1.ok.test"), (20, "mx.loop.test"), (30, "mx2.ok.test"))),
    }
    settings = RouteSettings(local_endpoints=frozenset({OUR_LISTENER}))
    failing = scripted({"127.0.0.2": ConnectFailed(reason="refused")})
    done, _plan, _resolver, connects = run("lp.test", settings, failing, zones)
    assert [c.host for c in connects] == ["mx1.ok.test"]
    assert done.failure is not None
    assert done.failure.transient


def test_ipv6_listener_endpoint_matches_in_canonical_form() -> None:
    settings = RouteSettings(local_endpoints=frozenset({("0:0:0:0:0:0:0:1", 25)}))
    done, _plan, _resolver, connects = run("v6.test", settings)
    # 127.0.0.20 is tried first; ::1 is us.
    assert [c.address for c in connects] == ["127.0.0.20"]
    assert done.target is not None
    failing = scripted({"127.0.0.20": ConnectFailed(reason="refused")})
    done, _plan, _resolver, connects = run("v6.test", settings, failing)
    assert [c.address for c in connects] == ["127.0.0.20"]
    assert done.failure is not None
    assert done.failure.transient


# --- fall-back ------------------------------------------------------------------------------


def test_421_greeting_falls_back_to_the_next_mx_and_records_it() -> None:
    peer = scripted({"127.0.0.2": Greeting(code=421, text="4.7.0 Try again later")})
    done, plan, _resolver, connects = run("ok.test", RouteSettings(), peer)
    assert [c.host for c in connects] == ["mx1.ok.test", "mx2.ok.test"]
    assert done.target is not None
    assert done.target.host == "mx2.ok.test"
    assert len(plan.fallbacks) == 1
    event = plan.fallbacks[0]
    assert (event.host, event.address, event.port) == ("mx1.ok.test", "127.0.0.2", 25)
    assert event.reason == "421 4.7.0 Try again later"
    assert plan.fallbacks_to_log() == ()


def test_log_fallback_failures_exposes_the_events() -> None:
    peer = scripted({"127.0.0.2": ConnectFailed(reason="connection refused")})
    done, plan, _resolver, _ = run("ok.test", RouteSettings(log_fallback_failures=True), peer)
    assert done.target is not None
    assert done.target.host == "mx2.ok.test"
    assert [e.reason for e in plan.fallbacks_to_log()] == ["connection refused"]


def test_all_hosts_down_defers_with_the_last_reason() -> None:
    peer = scripted(
        {
            "127.0.0.2": ConnectFailed(reason="refused"),
            "127.0.0.3": Greeting(code=421, text="4.3.2 busy"),
        }
    )
    done, plan, _resolver, _ = run("ok.test", RouteSettings(), peer)
    assert done.failure is not None
    assert done.failure.kind is FailureKind.REJECTED
    assert (done.failure.transient, done.failure.code, done.failure.status) == (True, 421, "4.3.2")
    assert len(plan.fallbacks) == 2


def test_5xx_greeting_bounces_by_default_and_falls_back_when_told_not_to() -> None:
    peer = scripted({"127.0.0.2": Greeting(code=554, text="5.7.1 go away")})
    done, _plan, _resolver, connects = run("ok.test", RouteSettings(), peer)
    assert len(connects) == 1
    assert done.failure is not None
    assert done.failure.permanent
    assert (done.failure.code, done.failure.status) == (554, "5.7.1")
    done, _plan, _resolver, connects = run(
        "ok.test", RouteSettings(bounce_upon_5xx_greeting=False), peer
    )
    assert done.target is not None
    assert done.target.host == "mx2.ok.test"


def test_fallback_after_a_mid_session_421_moves_to_the_next_host() -> None:
    resolver = FakeResolver(T27_ZONES)
    plan = AttemptPlan("ok.test", RouteSettings(), random.Random(0))

    async def go() -> tuple[Done, Done]:
        step = await drive_dns(plan, resolver)
        assert isinstance(step, Connect)
        plan.result(Greeting(code=220))
        first = plan.next_step()
        assert isinstance(first, Done)
        plan.fallback(421, "4.4.2 closing")
        step = await drive_dns(plan, resolver)
        assert isinstance(step, Connect)
        assert step.host == "mx2.ok.test"
        plan.result(ConnectFailed(reason="refused"))
        last = await drive_dns(plan, resolver)
        assert isinstance(last, Done)
        return first, last

    first, last = asyncio.run(go())
    assert first.target is not None
    assert first.target.host == "mx1.ok.test"
    assert last.failure is not None
    assert last.failure.kind is FailureKind.CONNECT_FAILED
    assert [e.host for e in plan.fallbacks] == ["mx1.ok.test", "mx2.ok.test"]


def test_every_address_of_a_host_is_tried_before_the_next_host() -> None:
    zones = {
        "multi.test": FakeName(mx=((10, "mx.multi.test"), (20, "mx1.ok.test"))),
        "mx.multi.test": FakeName(a=("127.0.0.30", "127.0.0.31")),
        "mx1.ok.test": FakeName(a=("127.0.0.2",)),
    }
    peer = scripted({"127.0.0.30": ConnectFailed(reason="refused")})
    done, _plan, _resolver, connects = run("multi.test", RouteSettings(), peer, zones)
    assert [c.address for c in connects] == ["127.0.0.30", "127.0.0.31"]
    assert done.target is not None
    assert done.target.address == "127.0.0.31"


def test_connect_attempts_are_capped_per_attempt() -> None:
    zones: dict[str, FakeName] = {
        "many.test": FakeName(mx=tuple((i, f"mx{i}.many.test") for i in range(10))),
    }
    zones.update({f"mx{i}.many.test": FakeName(a=(f"127.0.1.{i}",)) for i in range(10)})

    def refuse(step: Connect) -> ConnectFailed:
        return ConnectFailed(reason="refused")

    done, plan, _resolver, connects = run(
        "many.test", RouteSettings(max_connect_attempts=3), refuse, zones
    )
    assert len(connects) == 3
    assert plan.connect_attempts == 3
    assert done.failure is not None
    assert done.failure.transient


# --- MX host resolution failures ------------------------------------------------------------


def test_mx_hosts_without_addresses_bounce_5_4_4() -> None:
    done, _plan, resolver, connects = run("badmx.test")
    assert connects == []
    assert done.failure is not None
    assert done.failure.kind is FailureKind.NO_MAIL_HOST
    assert (done.failure.permanent, done.failure.status) == (True, "5.4.4")
    assert ("A", "gone.badmx.test") in resolver.queries
    assert ("A", "empty.badmx.test") in resolver.queries


def test_one_mx_host_with_servfail_makes_the_whole_thing_transient() -> None:
    done, _plan, _resolver, _ = run("halfbad.test")
    assert done.failure is not None
    assert done.failure.kind is FailureKind.DNS_TEMPORARY
    assert done.failure.transient


def test_null_mx_mixed_with_real_records_is_ignored() -> None:
    zones = {**T27_ZONES, "mixnull.test": FakeName(mx=((0, "."), (10, "mx1.ok.test")))}
    done, _plan, _resolver, _ = run("mixnull.test", zones=zones)
    assert done.target is not None
    assert done.target.host == "mx1.ok.test"


# --- equal preferences ------------------------------------------------------------------------


def test_equal_preferences_are_shuffled_reproducibly_by_the_seed() -> None:
    def first_host(seed: int) -> str:
        done, _plan, _resolver, _ = run("equal.test", seed=seed)
        assert done.target is not None
        return done.target.host

    assert first_host(7) == first_host(7)
    firsts = [first_host(seed) for seed in range(60)]
    assert set(firsts) == {"a.equal.test", "b.equal.test", "c.equal.test"}
    assert all(firsts.count(h) >= 10 for h in set(firsts))


def test_lower_preference_always_wins_over_the_shuffle() -> None:
    for seed in range(20):
        done, _plan, _resolver, _ = run("ok.test", seed=seed)
        assert done.target is not None
        assert done.target.host == "mx1.ok.test"


# --- route, smtp-hosts, default-smtp-port -----------------------------------------------------


def test_bracketed_route_connects_directly_without_dns() -> None:
    settings = RouteSettings(route=parse_host_spec("[127.0.0.9]:2525"))
    done, plan, resolver, _ = run("ok.test", settings)
    assert done.target == Connect(host="127.0.0.9", address="127.0.0.9", port=2525)
    assert resolver.queries == []
    assert plan.site == "127.0.0.9:2525"


def test_bracketed_host_name_route_uses_its_address_not_its_mx() -> None:
    settings = RouteSettings(route=parse_host_spec("[mx2.ok.test]"))
    done, _plan, resolver, _ = run("anything.test", settings)
    assert done.target is not None
    assert done.target.address == "127.0.0.3"
    assert resolver.queries == [("A", "mx2.ok.test")]


def test_unbracketed_route_looks_up_the_relay_mx() -> None:
    settings = RouteSettings(route=parse_host_spec("ok.test:2526"))
    done, _plan, resolver, _ = run("other.test", settings)
    assert done.target == Connect(host="mx1.ok.test", address="127.0.0.2", port=2526, preference=10)
    assert resolver.queries[0] == ("MX", "ok.test")


def test_route_beats_smtp_hosts() -> None:
    settings = RouteSettings(
        route=parse_host_spec("[127.0.0.9]"), smtp_hosts=parse_host_list("ok.test")
    )
    done, _plan, _resolver, _ = run("x.test", settings)
    assert done.target is not None
    assert done.target.address == "127.0.0.9"


def test_smtp_hosts_are_tried_in_order_with_fallback() -> None:
    settings = RouteSettings(smtp_hosts=parse_host_list("[127.0.0.7]:26, nomx.test"))
    peer = scripted({"127.0.0.7": ConnectFailed(reason="refused")})
    done, plan, _resolver, connects = run("hotmail.test", settings, peer)
    assert [(c.address, c.port) for c in connects] == [("127.0.0.7", 26), ("127.0.0.4", 25)]
    assert done.target is not None
    assert done.target.host == "nomx.test"
    assert plan.site == "127.0.0.7:26,nomx.test"


def test_smtp_hosts_naming_another_domain_use_its_mx() -> None:
    settings = RouteSettings(smtp_hosts=parse_host_list("ok.test"))
    done, _plan, resolver, _ = run("hotmail.queue", settings)
    assert done.target is not None
    assert done.target.host == "mx1.ok.test"
    assert ("MX", "hotmail.queue") not in resolver.queries


def test_dns_failures_of_an_operator_route_are_transient() -> None:
    for spec in ("nx.test", "nullmx.test", "[gone.test]"):
        settings = RouteSettings(smtp_hosts=parse_host_list(spec))
        done, _plan, _resolver, _ = run("x.test", settings)
        assert done.failure is not None, spec
        assert (done.failure.transient, done.failure.status) == (True, "4.4.4"), spec


def test_default_smtp_port_applies_where_no_port_is_given() -> None:
    settings = RouteSettings(default_smtp_port=2600)
    done, _plan, _resolver, _ = run("ok.test", settings)
    assert done.target is not None
    assert done.target.port == 2600
    settings = RouteSettings(default_smtp_port=2600, route=parse_host_spec("[127.0.0.9]:27"))
    done, _plan, _resolver, _ = run("ok.test", settings)
    assert done.target is not None
    assert done.target.port == 27


# --- misuse ---------------------------------------------------------------------------------


def test_feeding_the_wrong_result_is_a_local_error() -> None:
    plan = AttemptPlan("ok.test", RouteSettings(), random.Random(0))
    assert plan.next_step() == ResolveMx(name="ok.test")
    assert plan.next_step() == ResolveMx(name="ok.test")  # idempotent until answered
    with pytest.raises(PlanMisuseError):
        plan.result(Greeting(code=220))
    with pytest.raises(PlanMisuseError):
        plan.result(MxAnswer(domain="other.test", failure=DnsFailure.NXDOMAIN))
    with pytest.raises(PlanMisuseError):
        plan.fallback(421, "no")
    plan.result(MxAnswer(domain="OK.test.", failure=DnsFailure.NXDOMAIN))
    done = plan.next_step()
    assert isinstance(done, Done)
    assert done.failure is not None
    assert plan.next_step() is done
