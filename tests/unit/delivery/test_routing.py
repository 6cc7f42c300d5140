"""Routing: a domain's own route, then the smarthost, then MX; and the TLS policy each brings.
Then where a route leads: the courier's list of addresses to try, in order,
without looping back to ourselves.

Configs are real TOML, validated as the daemon does; DNS is a real server on
loopback (tests/dns_server.py).
"""

import socket
from dataclasses import replace

import pytest
from config_helpers import GOOD, check
from dns_server import DnsServer

from empath.addresses import Domain
from empath.config import ConfigError
from empath.config.model import NextHop
from empath.delivery.connections import ConnectionPool
from empath.delivery.courier import Candidate, Courier, Loop, source_problems
from empath.delivery.dns import DnsError, Resolver
from empath.delivery.routing import Route, route_for

DOMAINS = """
[delivery]
tls = "none"

[domains."routed.example"]
route = ["relay1.routed.example", "[2001:db8::25]:2525"]
tls = "verify"

[domains."tuned.example"]
tls = "required"
concurrency = 2
"""

SMARTHOST = """
[smarthost]
hosts = ["smart.example:587"]
tls = "verify"
"""

PLAIN = check(GOOD + DOMAINS)
WITH_SMARTHOST = check(GOOD + DOMAINS + SMARTHOST)
DEFAULTS = check(GOOD)


@pytest.mark.parametrize(
    "config, domain, expected",
    [
        # 1. a domain's own route wins, smarthost or not
        (
            PLAIN,
            "routed.example",
            Route(
                "route:routed.example",
                "routed.example",
                (NextHop("relay1.routed.example", 25), NextHop("2001:db8::25", 2525)),
                "verify",
            ),
        ),
        (
            WITH_SMARTHOST,
            "routed.example",
            Route(
                "route:routed.example",
                "routed.example",
                (NextHop("relay1.routed.example", 25), NextHop("2001:db8::25", 2525)),
                "verify",
            ),
        ),
        # 2. then the smarthost, with its own TLS policy, for every other domain
        (
            WITH_SMARTHOST,
            "other.example",
            Route("smarthost", "other.example", (NextHop("smart.example", 587),), "verify", smarthost=True),
        ),
        (
            WITH_SMARTHOST,
            "tuned.example",  # a policy without a route does not keep a domain from the smarthost
            Route("smarthost", "tuned.example", (NextHop("smart.example", 587),), "verify", smarthost=True),
        ),
        # 3. then MX, with the domain's TLS policy or the defaults
        (PLAIN, "other.example", Route("mx:other.example", "other.example", (), "none")),
        (PLAIN, "tuned.example", Route("mx:tuned.example", "tuned.example", (), "required")),
        (DEFAULTS, "other.example", Route("mx:other.example", "other.example", (), "opportunistic")),
    ],
)
def test_first_match_wins(config, domain, expected):
    assert route_for(domain, config) == expected


def test_smarthost_tls_defaults_to_the_delivery_default():
    config = check(GOOD + '[delivery]\ntls = "required"\n[smarthost]\nhosts = ["smart.example"]\n')
    route = route_for("x.example", config)
    assert route.tls == "required"
    assert route.hops == (NextHop("smart.example", 25),)


def test_smarthost_with_login_defaults_to_tls_required():
    config = check(GOOD + '[smarthost]\nhosts = ["smart.example"]\nusername = "u"\npassword_file = "pw"\n')
    assert route_for("x.example", config).tls == "required"


def test_domain_route_uses_the_delivery_port():
    config = check(
        GOOD + '[delivery]\nport = 2525\n[domains."a.example"]\nroute = ["hop.example", "hop2.example:26"]\n'
    )
    assert route_for("a.example", config).hops == (NextHop("hop.example", 2525), NextHop("hop2.example", 26))


@pytest.mark.parametrize(
    "config, domains, keys",
    [
        # MX routes: one group per domain
        (PLAIN, ["a.example", "b.example", "a.example"], ["mx:a.example", "mx:b.example", "mx:a.example"]),
        # the smarthost: every domain in one group (one transaction per message)
        (WITH_SMARTHOST, ["a.example", "b.example"], ["smarthost", "smarthost"]),
        # a routed domain stays apart from the smarthost's group
        (WITH_SMARTHOST, ["routed.example", "a.example"], ["route:routed.example", "smarthost"]),
        (PLAIN, ["routed.example", "a.example"], ["route:routed.example", "mx:a.example"]),
    ],
)
def test_keys_group_recipients_sharing_a_next_hop(config, domains, keys):
    assert [route_for(d, config).key for d in domains] == keys


@pytest.mark.parametrize(
    "config, domain, policy_key, uses_mx",
    [
        (PLAIN, "routed.example", "routed.example", False),
        (PLAIN, "other.example", "other.example", True),
        (WITH_SMARTHOST, "other.example", "smarthost", False),
        (WITH_SMARTHOST, "tuned.example", "smarthost", False),
        (WITH_SMARTHOST, "routed.example", "routed.example", False),
    ],
)
def test_limits_apply_to_the_destination(config, domain, policy_key, uses_mx):
    route = route_for(domain, config)
    assert route.policy_key == policy_key
    assert route.uses_mx is uses_mx


# -- where a route leads: Courier.candidates ----------------------------------------------

ME = "mx.example.test"  # the hostname in GOOD
# TEST-NET-2 addresses, for hosts that are not this one (the test host's own
# network may well be one of the documentation nets: checked below).
FAR = "198.51.100.25"
FAR6 = "2001:db8::25"

RECORDS = {
    "remote.test": {"MX": [(10, "mx.remote.test")]},
    "mx.remote.test": {"A": [FAR], "AAAA": [FAR6]},
    "to-me.test": {"MX": [(10, ME)]},
    "to-loopback.test": {"MX": [(10, "lo.to-loopback.test")]},
    "lo.to-loopback.test": {"A": ["127.0.0.1"]},
    "backup.test": {"MX": [(10, "primary.backup.test"), (20, ME), (20, "other.backup.test"), (30, "last.backup.test")]},
    "primary.backup.test": {"A": ["198.51.100.10"]},
    "other.backup.test": {"A": ["198.51.100.20"]},
    "last.backup.test": {"A": ["198.51.100.30"]},
    "equal.test": {"MX": [(10, "other.backup.test"), (10, ME)]},
    "partial.test": {"MX": [(10, "mx.remote.test"), (20, "lo.to-loopback.test"), (30, "last.backup.test")]},
    "many.test": {"MX": [(10, "a.many.test"), (20, "b.many.test"), (30, "c.many.test")]},
    "a.many.test": {"A": ["198.51.100.1"]},
    "b.many.test": {"A": ["198.51.100.2"]},
    "c.many.test": {"A": ["198.51.100.3"]},
    "half-broken.test": {"MX": [(10, "broken.test"), (20, "mx.remote.test")]},
    "all-broken.test": {"MX": [(10, "broken.test")]},
}


def is_local(address: str) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
        return True


@pytest.fixture(scope="module")
def dns():
    far = [a for entry in RECORDS.values() for a in entry.get("A", []) + entry.get("AAAA", []) if a != "127.0.0.1"]
    if any(is_local(a) for a in far):
        pytest.skip("this host has one of the test's remote addresses")
    with DnsServer(RECORDS, servfail={"broken.test"}) as server:
        yield server
    assert server.errors == []


def courier(dns, extra: str = "") -> Courier:
    config = check(GOOD + extra)
    resolver = Resolver([dns.address], timeout=2.0, shuffle=lambda hosts: None)
    return Courier(config, resolver, ConnectionPool(idle_time=0, max_messages=1))


def mx_route(domain: str) -> Route:
    return Route(f"mx:{domain}", domain, (), "opportunistic")


WILDCARD = '[[listeners]]\naddress = "0.0.0.0:25"\n'
DUAL_STACK = '[[listeners]]\naddress = "[::]:25"\n'


@pytest.mark.parametrize("listeners", ["", WILDCARD, DUAL_STACK])
def test_mx_addresses_in_order(dns, listeners):
    # A listener on every address of this host at port 25 is not every address in the world.
    assert courier(dns, listeners).candidates(mx_route("remote.test")) == [
        Candidate("mx.remote.test", FAR, 25),
        Candidate("mx.remote.test", FAR6, 25),
    ]


def test_delivery_port_for_mx(dns):
    found = courier(dns, "[delivery]\nport = 2525\n").candidates(mx_route("remote.test"))
    assert [c.port for c in found] == [2525, 2525]


@pytest.mark.parametrize(
    "domain, max_addresses, expected",
    [
        ("many.test", 5, ["198.51.100.1", "198.51.100.2", "198.51.100.3"]),
        ("many.test", 2, ["198.51.100.1", "198.51.100.2"]),
        ("many.test", 1, ["198.51.100.1"]),
        ("remote.test", 1, [FAR]),
        ("backup.test", 5, ["198.51.100.10"]),  # we are MX 20: only better ones may take it
        ("partial.test", 5, [FAR, FAR6]),  # stop at the address that is ours
        ("half-broken.test", 5, [FAR, FAR6]),  # one MX failing in DNS is skipped
    ],
)
def test_candidates(dns, domain, max_addresses, expected):
    extra = WILDCARD + f"[delivery]\nmax_addresses = {max_addresses}\n"
    assert [c.address for c in courier(dns, extra).candidates(mx_route(domain))] == expected


@pytest.mark.parametrize(
    "domain, listeners",
    [
        ("to-me.test", ""),  # our hostname is the best MX
        ("equal.test", ""),  # an MX of our own preference is no better than us
        ("to-loopback.test", WILDCARD),  # the MX is this host, where we listen on every address
        ("to-loopback.test", DUAL_STACK),
        ("to-loopback.test", '[[listeners]]\naddress = "127.0.0.1:25"\n'),
    ],
)
def test_loops_back_to_myself(dns, domain, listeners):
    with pytest.raises(Loop, match=f"mail for {domain} loops back to myself"):
        courier(dns, listeners).candidates(mx_route(domain))


def test_no_loop_through_another_port(dns):
    # 127.0.0.1:25 is not our 127.0.0.1:2525
    found = courier(dns).candidates(mx_route("to-loopback.test"))
    assert found == [Candidate("lo.to-loopback.test", "127.0.0.1", 25)]


def test_a_route_to_our_own_listener_loops(dns):
    route = Route("route:x.test", "x.test", (NextHop("127.0.0.1", 2525),), "none")
    with pytest.raises(Loop):
        courier(dns).candidates(route)


def test_fixed_hops_in_order_without_dns_for_addresses(dns):
    route = Route("route:x.test", "x.test", (NextHop("198.51.100.7", 2525), NextHop("mx.remote.test", 26)), "none")
    assert courier(dns, WILDCARD).candidates(route) == [
        Candidate("198.51.100.7", "198.51.100.7", 2525),
        Candidate("mx.remote.test", FAR, 26),
        Candidate("mx.remote.test", FAR6, 26),
    ]


def test_no_address_at_all_is_a_transient_dns_failure(dns):
    with pytest.raises(DnsError) as info:
        courier(dns).candidates(mx_route("all-broken.test"))
    assert (info.value.permanent, info.value.status) == (False, "4.4.3")


# -- which addresses, and from where: address_family and source_address -------------------


@pytest.mark.parametrize("family, expected", [("any", [FAR, FAR6]), ("ipv4", [FAR]), ("ipv6", [FAR6])])
def test_address_family_keeps_the_next_hops_addresses_of_that_family(dns, family, expected):
    route = replace(mx_route("remote.test"), family=family)
    assert [c.address for c in courier(dns).candidates(route)] == expected


def test_source_address_and_family_come_from_the_domain_the_defaults_or_the_smarthost():
    text = GOOD + (
        '[delivery]\nsource_address = ["192.0.2.10", "2001:db8::10"]\naddress_family = "ipv4"\n'
        '[domains."six.example"]\naddress_family = "ipv6"\nsource_address = "2001:db8::66"\n'
    )
    config = check(text)
    six, other = route_for(Domain("six.example"), config), route_for(Domain("other.example"), config)
    assert (six.source, six.family) == (("2001:db8::66",), "ipv6")
    assert (other.source, other.family) == (("192.0.2.10", "2001:db8::10"), "ipv4")
    assert other.source_for(FAR) == "192.0.2.10" and other.source_for(FAR6) == "2001:db8::10"
    assert six.source_for(FAR) is None  # no IPv4 source named: the kernel chooses
    smart = route_for(Domain("other.example"), check(text + '[smarthost]\nhosts = ["smart.example"]\n'))
    assert (smart.source, smart.family) == (("192.0.2.10", "2001:db8::10"), "ipv4")  # the [delivery] defaults


@pytest.mark.parametrize(
    "value, problem",
    [
        ('"192.0.2.1.5"', "'192.0.2.1.5' is not an IP address"),
        ('["192.0.2.1", "192.0.2.2"]', "give at most one IPv4 and one IPv6 address"),
    ],
)
def test_a_bad_source_address_is_refused(value, problem):
    with pytest.raises(ConfigError, match=problem):
        check(GOOD + f"[delivery]\nsource_address = {value}\n")


def test_check_names_a_source_address_that_is_not_ours():
    config = check(
        GOOD + '[delivery]\nsource_address = "127.0.0.5"\n[smarthost]\nhosts = ["s.example"]\n'
        'source_address = "198.51.100.99"\n'
    )
    assert source_problems(config) == [
        ("smarthost.source_address", "198.51.100.99 is not an address of this host: mail cannot be sent from it")
    ]
