"""Routing: where does mail for a domain go next? First match wins:

1. a per-domain route in the config (``[domains."example.org"] route = [...]``),
2. the smarthost, when one is configured,
3. the domain's MX records in DNS.

Pure: it reads only the config. Recipients whose routes share a key travel
together, in one transaction per message.
"""

from dataclasses import dataclass
from typing import Final, Literal

from empath.addresses import AddressError, Domain
from empath.config import Config
from empath.config.model import NextHop

SMARTHOST: Final = "smarthost"

# What limits, the circuit breaker and the operator's `domain set` apply to:
# a recipient domain, or every route through the smarthost.
Destination = Domain | Literal["smarthost"]


class NextHopId(str):
    """What recipients sharing a next hop have in common: ``mx:DOMAIN``,
    ``route:DOMAIN`` (a configured route) or ``smarthost``. A str, as the
    plug-ins see it; made by ``route_for``, or by calling the class, which checks it."""

    __slots__ = ()

    def __new__(cls, text: str) -> "NextHopId":
        kind, colon, domain = text.partition(":")
        try:
            valid = text == SMARTHOST or (kind in ("mx", "route") and bool(colon) and Domain(domain) == domain)
        except AddressError:
            valid = False
        if not valid:
            raise ValueError(f"{text!r} is not a next hop (mx:DOMAIN, route:DOMAIN or smarthost)")
        return str.__new__(cls, text)

    @classmethod
    def mx(cls, domain: Domain) -> "NextHopId":
        return str.__new__(cls, f"mx:{domain}")

    @classmethod
    def route(cls, domain: Domain) -> "NextHopId":
        return str.__new__(cls, f"route:{domain}")


NEXT_HOP_SMARTHOST = str.__new__(NextHopId, SMARTHOST)


@dataclass(frozen=True)
class Route:
    key: NextHopId
    domain: Domain  # the recipient domain this route was made for
    hops: tuple[NextHop, ...]  # fixed next hops; empty: look up the domain's MX
    tls: str
    smarthost: bool = False  # AUTH with the smarthost credentials
    source: tuple[str, ...] = ()  # local addresses to send from, one a family (none: the kernel's choice)
    family: str = "any"  # which of the next hop's addresses to use: any, ipv4, ipv6

    def source_for(self, address: str) -> str | None:
        """The local address to bind for a connection to ``address``: one of its family, if given."""
        v6 = ":" in address
        return next((s for s in self.source if (":" in s) == v6), None)

    def takes(self, address: str) -> bool:
        """Is ``address`` of a family this route uses?"""
        return self.family == "any" or (self.family == "ipv6") == (":" in address)

    @property
    def uses_mx(self) -> bool:
        return not self.hops

    @property
    def policy_key(self) -> Destination:
        """Limits and the breaker apply to the destination: the domain, or the smarthost."""
        return SMARTHOST if self.smarthost else self.domain


def route_for(domain: Domain, config: Config) -> Route:
    policy = config.domain_policy(domain)
    source, family = policy.source_address, policy.address_family
    if policy.route:
        return Route(NextHopId.route(domain), domain, policy.route, policy.tls, source=source, family=family)
    smart = config.smarthost
    if smart is not None:
        return Route(
            NEXT_HOP_SMARTHOST, domain, smart.hosts, smart.tls, True, smart.source_address, smart.address_family
        )
    return Route(NextHopId.mx(domain), domain, (), policy.tls, source=source, family=family)
