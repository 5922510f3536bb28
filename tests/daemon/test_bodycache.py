"""BodyCache: newest bodies within a byte budget; a miss is counted, never invented."""

from __future__ import annotations

from sluice.daemon.bodycache import BodyCache


def test_get_returns_what_was_put_and_counts_hits_and_misses() -> None:
    cache = BodyCache(budget=100)
    cache.put(1, b"a" * 10)
    assert cache.get(1) == b"a" * 10
    assert cache.get(2) is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_the_oldest_bodies_go_first_when_over_budget() -> None:
    cache = BodyCache(budget=25)
    for msg_id in (1, 2, 3):
        cache.put(msg_id, bytes([msg_id]) * 10)
    assert cache.get(1) is None
    assert cache.get(2) == b"\x02" * 10
    assert cache.get(3) == b"\x03" * 10
    assert (len(cache), cache.size) == (2, 20)


def test_a_body_larger_than_the_budget_is_not_kept() -> None:
    cache = BodyCache(budget=5)
    cache.put(1, b"123456")
    assert (len(cache), cache.size, cache.get(1)) == (0, 0, None)


def test_discard_and_replace_keep_the_size_exact() -> None:
    cache = BodyCache(budget=100)
    cache.put(1, b"x" * 30)
    cache.put(1, b"y" * 10)
    assert cache.size == 10
    cache.discard(1)
    cache.discard(1)
    assert (len(cache), cache.size) == (0, 0)
