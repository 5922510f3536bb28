"""A TTL cache of DNS answers (MX and address), pure: ``now`` is passed in.

Positive answers live for their TTL (clamped to [``min_ttl``, ``max_ttl``]); NXDOMAIN and NODATA
for their negative TTL from the SOA (RFC 2308 §5), capped short; SERVFAIL and timeouts for a
few seconds only, so a burst of messages to a broken domain costs one query, not thousands
(RFC 2308 §7.1 allows up to five minutes).

Public names: DnsCache. Nothing here raises.
"""

from __future__ import annotations

from dataclasses import dataclass

from sluice.routing.answers import AddressAnswer, DnsFailure, MxAnswer, normalize_name

__all__ = ["DnsCache"]

#: Longest time any answer is kept, whatever its TTL (one day; Postfix/Unbound use similar caps).
MAX_TTL = 86_400.0
#: Longest time a negative answer (NXDOMAIN, NODATA) is kept: short, as test-plan.md §4 asks.
NEGATIVE_TTL_MAX = 60.0
#: How long a SERVFAIL/timeout is remembered (RFC 2308 §7.1 allows at most 300 s).
TRANSIENT_TTL = 5.0
#: Entries kept before the oldest are evicted; bounds memory on a run over many domains.
MAX_ENTRIES = 100_000


@dataclass(slots=True)
class _Entry:
    expires: float
    answer: MxAnswer | AddressAnswer


class DnsCache:
    """MX and address answers by name, each until its expiry time."""

    def __init__(
        self,
        *,
        min_ttl: float = 0.0,
        max_ttl: float = MAX_TTL,
        negative_ttl_max: float = NEGATIVE_TTL_MAX,
        transient_ttl: float = TRANSIENT_TTL,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._min_ttl = min_ttl
        self._max_ttl = max_ttl
        self._negative_ttl_max = negative_ttl_max
        self._transient_ttl = transient_ttl
        self._max_entries = max_entries
        self._entries: dict[tuple[str, str], _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def lifetime(self, answer: MxAnswer | AddressAnswer) -> float:
        """Seconds this answer may be served from the cache (0 = do not cache)."""
        match answer.failure:
            case None:
                return min(max(float(answer.ttl), self._min_ttl), self._max_ttl)
            case DnsFailure.NXDOMAIN | DnsFailure.NODATA:
                return min(float(answer.ttl), self._negative_ttl_max)
            case DnsFailure.SERVFAIL | DnsFailure.TIMEOUT:
                return self._transient_ttl

    def get_mx(self, domain: str, now: float) -> MxAnswer | None:
        answer = self._get(("mx", normalize_name(domain)), now)
        return answer if isinstance(answer, MxAnswer) else None

    def get_addresses(self, host: str, now: float) -> AddressAnswer | None:
        answer = self._get(("addr", normalize_name(host)), now)
        return answer if isinstance(answer, AddressAnswer) else None

    def put(self, answer: MxAnswer | AddressAnswer, now: float) -> None:
        """Remember ``answer`` from ``now`` for its lifetime (nothing if that is 0)."""
        life = self.lifetime(answer)
        if life <= 0:
            return
        if isinstance(answer, MxAnswer):
            key = ("mx", normalize_name(answer.domain))
        else:
            key = ("addr", normalize_name(answer.host))
        self._entries.pop(key, None)
        if len(self._entries) >= self._max_entries:
            self._evict(now)
        self._entries[key] = _Entry(expires=now + life, answer=answer)

    def _get(self, key: tuple[str, str], now: float) -> MxAnswer | AddressAnswer | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            del self._entries[key]
            return None
        return entry.answer

    def _evict(self, now: float) -> None:
        expired = [key for key, entry in self._entries.items() if entry.expires <= now]
        for key in expired:
            del self._entries[key]
        while len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]  # oldest insertion first
