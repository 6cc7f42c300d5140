"""The MX resolver against a real DNS server on loopback (tests/dns_server.py).

A resolver is only honestly tested by asking a server, so these unit tests
use UDP (and TCP, for truncated answers) on 127.0.0.1. Time is an injected
clock: cache expiry is tested by moving it, never by sleeping.
"""

import pickle
import socket
import time

import pytest
from dns_server import DnsServer

from empath.delivery.dns import DnsError, MxHost, Resolver

RECORDS = {
    "example.test": {"MX": [(20, "mx2.example.test"), (10, "mx1.example.test"), (30, "mx3.example.test")]},
    "mx1.example.test": {"A": ["127.0.0.10"], "AAAA": ["::10"]},
    "mx2.example.test": {"A": ["127.0.0.20"]},
    "equal.test": {"MX": [(10, "a.equal.test"), (10, "b.equal.test"), (10, "c.equal.test"), (20, "d.equal.test")]},
    "plain.test": {"A": ["127.0.0.30"]},  # no MX: the implicit MX
    "v6only.test": {"AAAA": ["::30"]},
    "textonly.test": {"TXT": ['"v=spf1 -all"']},  # no MX, no address
    "nullmx.test": {"MX": [(0, ".")], "A": ["127.0.0.40"]},
    "www.example.test": {"CNAME": ["mx1.example.test"], "TTL": 5},
    "dual.test": {"A": ["127.0.0.2", "127.0.0.1"], "AAAA": ["::2", "::1"]},
    "deep.sub.test": {"A": ["127.0.0.50"]},  # so sub.test exists, with no records
}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def no_shuffle(hosts: list) -> None:
    """No shuffle, for the tests that are not about it."""


@pytest.fixture
def server():
    # DnsServer copies each name's dict, so tests changing records (server.set) leave RECORDS alone.
    with DnsServer(RECORDS, ttl=300, soa_minimum=60, servfail={"broken.test"}, drop={"slow.test"}) as server:
        yield server
    assert server.errors == []


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def resolver(server, clock):
    return Resolver(nameservers=[server.address], timeout=2.0, clock=clock, shuffle=no_shuffle)


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- MX --------------------------------------------------------------------------


def test_mx_sorted_by_preference(resolver):
    assert resolver.mx("example.test") == [
        MxHost("mx1.example.test", 10),
        MxHost("mx2.example.test", 20),
        MxHost("mx3.example.test", 30),
    ]


def test_equal_preferences_are_shuffled(server, clock):
    given = []

    def reverse(hosts):
        given.append([host.name for host in hosts])
        hosts.reverse()

    hosts = Resolver([server.address], clock=clock, shuffle=reverse).mx("equal.test")
    # Only the three of preference 10 are shuffled; the lone 20 stays last.
    assert len(given) == 1
    assert sorted(given[0]) == ["a.equal.test", "b.equal.test", "c.equal.test"]
    assert hosts == [MxHost(name, 10) for name in reversed(given[0])] + [MxHost("d.equal.test", 20)]


def test_default_shuffle_spreads_equal_preferences(server):
    resolver = Resolver([server.address])
    firsts = {resolver.mx("equal.test")[0].name for _ in range(60)}
    assert firsts == {"a.equal.test", "b.equal.test", "c.equal.test"}
    assert server.count("equal.test", "MX") == 1  # shuffled afresh from the cache each time


def test_names_are_normalized(server, resolver):
    server.set("upper.test", MX=[(10, "MX.Upper.TEST")])
    assert resolver.mx("UPPER.test.") == [MxHost("mx.upper.test", 10)]
    assert resolver.mx("upper.test") == [MxHost("mx.upper.test", 10)]
    assert server.count("upper.test", "MX") == 1


def test_same_exchange_twice_keeps_the_best_preference(server, resolver):
    server.set("twice.test", MX=[(20, "mx.twice.test"), (5, "MX.twice.test"), (10, "other.twice.test")])
    assert resolver.mx("twice.test") == [MxHost("mx.twice.test", 5), MxHost("other.twice.test", 10)]


@pytest.mark.parametrize("domain", ["plain.test", "v6only.test"])
def test_implicit_mx(resolver, domain):
    assert resolver.mx(domain) == [MxHost(domain, 0)]


def test_implicit_mx_without_addresses_is_permanent(resolver):
    with pytest.raises(DnsError) as caught:
        resolver.mx("textonly.test")
    assert caught.value.permanent
    assert caught.value.status == "5.1.2"
    assert "no MX" in caught.value.text


def test_empty_non_terminal_has_no_mail_host(resolver):
    with pytest.raises(DnsError) as caught:
        resolver.mx("sub.test")
    assert (caught.value.permanent, caught.value.status) == (True, "5.1.2")
    assert resolver.stats["nxdomain"] == 0  # it exists: no data, not NXDOMAIN


def test_null_mx_is_permanent(resolver):
    with pytest.raises(DnsError) as caught:
        resolver.mx("nullmx.test")
    assert caught.value.permanent
    assert caught.value.status == "5.1.10"
    assert "accepts no mail" in caught.value.text
    assert "RFC 7505" in caught.value.text


def test_null_mx_beside_real_hosts_is_ignored(server, resolver):
    server.set("mixed.test", MX=[(0, "."), (10, "mx.mixed.test")])
    assert resolver.mx("mixed.test") == [MxHost("mx.mixed.test", 10)]


def test_nxdomain_is_permanent(resolver):
    with pytest.raises(DnsError) as caught:
        resolver.mx("nowhere.test")
    assert (caught.value.permanent, caught.value.status) == (True, "5.1.2")
    assert "does not exist" in caught.value.text


def test_servfail_is_transient(resolver):
    with pytest.raises(DnsError) as caught:
        resolver.mx("broken.test")
    assert (caught.value.permanent, caught.value.status) == (False, "4.4.3")
    assert "SERVFAIL" in caught.value.text
    assert resolver.stats["servfail"] == 1


def test_timeout_is_transient_and_quick(server, clock):
    resolver = Resolver([server.address], timeout=0.3, clock=clock)
    started = time.monotonic()
    with pytest.raises(DnsError) as caught:
        resolver.mx("slow.test")
    assert time.monotonic() - started < 2.0
    assert (caught.value.permanent, caught.value.status) == (False, "4.4.3")
    assert "timed out" in caught.value.text
    assert resolver.stats["timeout"] == 1
    # Not cached: once the server answers, so does the resolver, at once.
    server.drop.discard("slow.test")
    server.set("slow.test", MX=[(10, "mx.slow.test")])
    assert resolver.mx("slow.test") == [MxHost("mx.slow.test", 10)]


def test_no_nameserver_answering_is_transient(clock):
    resolver = Resolver([("127.0.0.1", closed_udp_port())], timeout=0.3, clock=clock)
    with pytest.raises(DnsError) as caught:
        resolver.mx("example.test")
    assert (caught.value.permanent, caught.value.status) == (False, "4.4.3")


def test_invalid_names_are_permanent(resolver, server):
    for name in ["", ".", "a..b.test", "x" * 64 + ".test"]:
        with pytest.raises(DnsError) as caught:
            resolver.mx(name)
        assert (caught.value.permanent, caught.value.status) == (True, "5.1.2"), name
    assert server.queries == []


# -- addresses -------------------------------------------------------------------


def test_addresses_ipv4_then_ipv6(resolver, server):
    addresses = resolver.addresses("dual.test")
    assert sorted(addresses[:2]) == ["127.0.0.1", "127.0.0.2"]
    assert sorted(addresses[2:]) == ["::1", "::2"]
    assert server.count("dual.test", "A") == 1
    assert server.count("dual.test", "AAAA") == 1


def test_addresses_of_one_family(resolver):
    assert resolver.addresses("mx2.example.test") == ["127.0.0.20"]
    assert resolver.addresses("v6only.test") == ["::30"]


def test_addresses_follow_cname(resolver):
    assert resolver.addresses("www.example.test") == ["127.0.0.10", "::10"]


def test_addresses_nxdomain_is_permanent(resolver, server):
    with pytest.raises(DnsError) as caught:
        resolver.addresses("nowhere.test")
    assert (caught.value.permanent, caught.value.status) == (True, "5.1.2")
    assert server.count("nowhere.test", "AAAA") == 0  # the name does not exist: no need to ask again


def test_addresses_none_is_permanent(resolver):
    with pytest.raises(DnsError) as caught:
        resolver.addresses("textonly.test")
    assert (caught.value.permanent, caught.value.status) == (True, "5.1.2")
    assert "no address records" in caught.value.text


def test_addresses_servfail_is_transient(resolver):
    with pytest.raises(DnsError) as caught:
        resolver.addresses("broken.test")
    assert (caught.value.permanent, caught.value.status) == (False, "4.4.3")


def test_big_answer_comes_over_tcp(resolver, server):
    many = [f"10.0.{i // 256}.{i % 256}" for i in range(300)]
    server.set("big.test", A=many)
    assert sorted(resolver.addresses("big.test")) == sorted(many)
    assert ("big.test", "A") in server.tcp_queries


# -- cache -----------------------------------------------------------------------


def test_second_lookup_served_from_cache(resolver, server):
    first = resolver.mx("example.test")
    queries = list(server.queries)
    assert resolver.mx("example.test") == first
    assert server.queries == queries
    assert resolver.stats["cache_hit"] == 1


def test_answer_expires_after_its_ttl(resolver, server, clock):
    resolver.mx("example.test")
    server.set("example.test", MX=[(10, "new.example.test")])
    clock.advance(299)
    assert resolver.mx("example.test")[0].name == "mx1.example.test"
    assert server.count("example.test", "MX") == 1
    clock.advance(2)
    assert resolver.mx("example.test") == [MxHost("new.example.test", 10)]
    assert server.count("example.test", "MX") == 2


def test_cname_expires_the_answer_with_it(resolver, server, clock):
    resolver.addresses("www.example.test")  # CNAME TTL 5, target TTL 300
    clock.advance(6)
    resolver.addresses("www.example.test")
    assert server.count("www.example.test", "A") == 2


def test_negative_answer_cached_for_negative_ttl(server, clock):
    resolver = Resolver([server.address], negative_ttl=30, clock=clock)  # below the SOA's 60
    with pytest.raises(DnsError):
        resolver.mx("late.test")
    server.set("late.test", MX=[(10, "mx.late.test")])
    clock.advance(29)
    with pytest.raises(DnsError):
        resolver.mx("late.test")
    assert server.count("late.test", "MX") == 1
    clock.advance(2)
    assert resolver.mx("late.test") == [MxHost("mx.late.test", 10)]
    assert server.count("late.test", "MX") == 2


def test_negative_answer_cached_no_longer_than_soa_minimum(clock):
    with DnsServer({"plain.test": {"A": ["127.0.0.30"]}}, ttl=300, soa_minimum=5) as server:
        resolver = Resolver([server.address], negative_ttl=60, clock=clock)
        assert resolver.mx("plain.test") == [MxHost("plain.test", 0)]  # MX: no data, cached
        clock.advance(4)
        resolver.mx("plain.test")
        assert server.count("plain.test", "MX") == 1
        clock.advance(2)
        resolver.mx("plain.test")
        assert server.count("plain.test", "MX") == 2


def test_servfail_not_cached(resolver, server):
    for _ in range(2):
        with pytest.raises(DnsError):
            resolver.mx("broken.test")
    assert server.count("broken.test", "MX") == 2
    server.servfail.discard("broken.test")
    server.set("broken.test", MX=[(10, "mx.broken.test")])
    assert resolver.mx("broken.test") == [MxHost("mx.broken.test", 10)]


def test_clear_forgets_answers(resolver, server):
    resolver.mx("example.test")
    resolver.clear()
    resolver.mx("example.test")
    assert server.count("example.test", "MX") == 2


def test_stats(resolver, clock):
    resolver.mx("example.test")  # miss
    resolver.mx("example.test")  # hit
    resolver.mx("plain.test")  # MX no data, then A and AAAA (no data)
    with pytest.raises(DnsError):
        resolver.mx("nowhere.test")
    with pytest.raises(DnsError):
        resolver.mx("broken.test")
    assert resolver.stats == {
        "lookup": 7,
        "cache_hit": 1,
        "cache_miss": 6,
        "no_answer": 2,
        "nxdomain": 1,
        "servfail": 1,
    }


def test_dns_error_keeps_its_fields():
    error = DnsError("domain x.test accepts no mail", True, "5.1.10")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.text, copy.permanent, copy.status) == ("domain x.test accepts no mail", True, "5.1.10")
    assert str(copy) == "domain x.test accepts no mail"
