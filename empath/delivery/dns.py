"""DNS for delivery: a domain's MX hosts (RFC 5321 §5.1, RFC 7505) and a host's addresses.

dnspython does the wire work. The cache is ours, not dnspython's, so that it
honours the negative TTL we choose, counts hits and misses for the metrics,
and runs on an injected clock that tests can move without sleeping. Only
answers are cached (records, NXDOMAIN, no data); a failure to get an answer
(SERVFAIL, timeout, no server reachable) is not, so the next attempt asks
again. Under gevent the lookups block only the greenlet that makes them.
"""

import collections
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from empath.addresses import Domain

# Enhanced status codes (RFC 3463, RFC 7505) for the DSNs and deferrals.
DNS_FAILURE = "4.4.3"  # directory server failure: try again later
NO_SUCH_DOMAIN = "5.1.2"  # bad destination system address
NULL_MX = "5.1.10"  # the recipient's domain has a null MX

# The DNS flag day 2020 size: big enough for any sane MX set, small enough to
# avoid IP fragmentation. Larger answers come back truncated and dnspython
# asks again over TCP.
EDNS_PAYLOAD = 1232

# A resolver lives as long as the daemon; this bounds what it remembers.
CACHE_LIMIT = 10_000

# What one (name, type) question got from DNS.
ANSWER = "answer"
NXDOMAIN = "nxdomain"
NO_ANSWER = "no_answer"


class DnsError(Exception):
    """A lookup that gave no usable answer, with the enhanced status code to report it by."""

    def __init__(self, text: str, permanent: bool, status: str):
        # All three in args, so that copies and pickles of the error keep them.
        super().__init__(text, permanent, status)
        self.text = text
        self.permanent = permanent
        self.status = status

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class MxHost:
    name: str  # exchange host name, lower case, no trailing dot
    preference: int


@dataclass(frozen=True)
class _Answer:
    kind: str  # ANSWER, NXDOMAIN or NO_ANSWER
    records: tuple  # MX: (preference, exchange) pairs; A/AAAA: address strings
    expires: float


def normalize(name: str) -> str:
    """``name`` as the cache and the answers spell it: lower case, no trailing dot."""
    name = name.strip().lower()
    return name[:-1] if name.endswith(".") else name


class Resolver:
    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]] = (),
        timeout: float = 10.0,
        negative_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        shuffle: Callable[[list], None] = random.shuffle,
    ):
        self.timeout = timeout
        self.negative_ttl = negative_ttl
        self.stats: collections.Counter = collections.Counter()
        self._clock = clock
        self._shuffle = shuffle
        self._cache: dict[tuple[str, str], _Answer] = {}
        # Set when the system has no usable resolver configuration: lookups then
        # fail as transient, so a smarthost-only setup still starts and MX
        # delivery defers with the reason rather than the daemon refusing to run.
        self._config_error: str | None = None
        if nameservers:
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in nameservers]
        else:
            try:
                self._resolver = dns.resolver.Resolver(configure=True)
            except dns.resolver.NoResolverConfiguration as exc:
                self._resolver = dns.resolver.Resolver(configure=False)
                self._config_error = f"no usable nameservers in the system resolver configuration: {exc}"
        # Ours is the only cache: dnspython's would keep negative answers for the
        # server's TTL instead of ours, and on the wall clock.
        self._resolver.cache = None
        # One deadline for the whole lookup, retries and TCP fallback included;
        # dnspython's per-try timeout is clamped to what is left of it.
        self._resolver.lifetime = timeout
        self._resolver.use_edns(0, 0, EDNS_PAYLOAD)

    def mx(self, domain: Domain) -> list[MxHost]:
        """The hosts to try for ``domain``, in order: by preference, equal ones shuffled.

        Raises DnsError: permanent for a domain that does not exist, has a null
        MX, or has neither MX nor address records; transient when DNS fails.
        """
        name = self._check(domain)
        answer = self._lookup(name, "MX")
        if answer.kind == NXDOMAIN:
            raise DnsError(f"domain {name} does not exist (NXDOMAIN)", True, NO_SUCH_DOMAIN)
        if answer.kind == NO_ANSWER:
            return [self._implicit_mx(name)]
        best: dict[str, int] = {}
        for preference, exchange in answer.records:
            if exchange != "." and (exchange not in best or preference < best[exchange]):
                best[exchange] = preference
        if not best:
            # RFC 7505: a null MX is alone in its set. If it has company, the
            # real hosts still get the mail; a lone "." means none ever will.
            raise DnsError(f"domain {name} accepts no mail (null MX, RFC 7505)", True, NULL_MX)
        by_preference: dict[int, list[MxHost]] = collections.defaultdict(list)
        for exchange, preference in best.items():
            by_preference[preference].append(MxHost(exchange, preference))
        hosts: list[MxHost] = []
        for preference in sorted(by_preference):
            group = by_preference[preference]
            if len(group) > 1:
                # RFC 5321 §5.1: spread the load over hosts of equal preference.
                self._shuffle(group)
            hosts += group
        return hosts

    def addresses(self, name: str) -> list[str]:
        """The IPv4 addresses of ``name``, then its IPv6 ones, without repeats.

        Raises DnsError: permanent when the name does not exist or has no
        address records; transient when DNS fails and gave no address at all.
        """
        name = self._check(name)
        found: list[str] = []
        failure: DnsError | None = None
        for rdtype in ("A", "AAAA"):
            try:
                answer = self._lookup(name, rdtype)
            except DnsError as exc:
                failure = exc
                continue
            if answer.kind == NXDOMAIN:
                raise DnsError(f"host {name} does not exist (NXDOMAIN)", True, NO_SUCH_DOMAIN)
            found += answer.records
        if found:
            # One family failing is no reason not to use the other.
            return list(dict.fromkeys(found))
        if failure is not None:
            raise failure
        raise DnsError(f"host {name} has no address records (A or AAAA)", True, NO_SUCH_DOMAIN)

    def clear(self) -> None:
        """Forget every cached answer (an operator's flush, or a config reload)."""
        self._cache.clear()

    def _implicit_mx(self, domain: str) -> MxHost:
        # RFC 5321 §5.1: no MX records, so the domain itself is the mail host,
        # if it has an address to connect to.
        try:
            self.addresses(domain)
        except DnsError as exc:
            if not exc.permanent:
                raise
            raise DnsError(f"domain {domain} has no MX records and no address records", True, NO_SUCH_DOMAIN) from exc
        return MxHost(domain, 0)

    def _check(self, name: str) -> str:
        name = normalize(name)
        try:
            if not name:
                raise ValueError("empty")
            dns.name.from_text(name)
        except (ValueError, dns.exception.DNSException) as exc:
            raise DnsError(f"{name!r} is not a valid domain name ({exc})", True, NO_SUCH_DOMAIN) from exc
        return name

    def _lookup(self, name: str, rdtype: str) -> _Answer:
        self.stats["lookup"] += 1
        key = (name, rdtype)
        cached = self._cache.get(key)
        if cached is not None and self._clock() < cached.expires:
            self.stats["cache_hit"] += 1
            return cached
        self.stats["cache_miss"] += 1
        answer = self._query(name, rdtype)
        # Moved to the end, so the dict's order is oldest first for pruning.
        self._cache.pop(key, None)
        self._cache[key] = answer
        if len(self._cache) > CACHE_LIMIT:
            self._prune()
        return answer

    def _prune(self) -> None:
        now = self._clock()
        for key in [key for key, answer in self._cache.items() if answer.expires <= now]:
            del self._cache[key]
        while len(self._cache) > CACHE_LIMIT:
            del self._cache[next(iter(self._cache))]

    def _query(self, name: str, rdtype: str) -> _Answer:
        what = f"DNS lookup of {name} {rdtype}"
        if self._config_error is not None:
            self.stats["unreachable"] += 1
            raise DnsError(f"{what} failed: {self._config_error}", False, DNS_FAILURE)
        qname = dns.name.from_text(name)
        try:
            result = self._resolver.resolve(qname, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            self.stats["nxdomain"] += 1
            responses = list(exc.responses().values())
            return _Answer(NXDOMAIN, (), self._clock() + self._negative_ttl(responses[0] if responses else None))
        except dns.exception.Timeout as exc:
            self.stats["timeout"] += 1
            raise DnsError(f"{what} timed out after {self.timeout:g}s", False, DNS_FAILURE) from exc
        except dns.resolver.NoNameservers as exc:
            # Every server was asked and none gave an answer we can use.
            errors = exc.kwargs.get("errors") or []
            if any(str(error[3]) == "SERVFAIL" for error in errors):
                self.stats["servfail"] += 1
                raise DnsError(f"{what} failed: the nameserver answered SERVFAIL", False, DNS_FAILURE) from exc
            self.stats["unreachable"] += 1
            raise DnsError(f"{what} failed: {exc}", False, DNS_FAILURE) from exc
        except dns.exception.DNSException as exc:
            self.stats["error"] += 1
            raise DnsError(f"{what} failed: {exc}", False, DNS_FAILURE) from exc
        if result.rrset is None:
            self.stats["no_answer"] += 1
            return _Answer(NO_ANSWER, (), self._clock() + self._negative_ttl(result.response))
        if rdtype == "MX":
            records: tuple = tuple(
                (rdata.preference, rdata.exchange.to_text(omit_final_dot=True).lower()) for rdata in result.rrset
            )
        else:
            records = tuple(rdata.address for rdata in result.rrset)
        # The chain's smallest TTL: a CNAME on the way expires the answer too.
        return _Answer(ANSWER, records, self._clock() + result.chaining_result.minimum_ttl)

    def _negative_ttl(self, response) -> float:
        # RFC 2308 §5: a negative answer lives min(SOA TTL, SOA MINIMUM); ours
        # caps it, and stands alone when the server sent no SOA.
        ttl = self.negative_ttl
        if response is not None:
            for rrset in response.authority:
                if rrset.rdtype == dns.rdatatype.SOA:
                    ttl = min(ttl, rrset.ttl, rrset[0].minimum)
        return ttl
