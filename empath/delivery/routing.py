"""Routing: where does mail for a domain go next? First match wins:

1. a per-domain route in the config (``[domains."example.org"] route = [...]``),
2. the smarthost, when one is configured,
3. the domain's MX records in DNS.

Pure: it reads only the config. Recipients whose routes share a key travel
together, in one transaction per message.
"""

from dataclasses import dataclass

from empath.config import Config
from empath.config.model import NextHop


@dataclass(frozen=True)
class Route:
    key: str  # what recipients sharing a next hop have in common
    domain: str  # the recipient domain this route was made for
    hops: tuple[NextHop, ...]  # fixed next hops; empty: look up the domain's MX
    tls: str
    smarthost: bool = False  # AUTH with the smarthost credentials

    @property
    def uses_mx(self) -> bool:
        return not self.hops

    @property
    def policy_key(self) -> str:
        """Limits and the breaker apply to the destination: the domain, or the smarthost."""
        return "smarthost" if self.smarthost else self.domain


def route_for(domain: str, config: Config) -> Route:
    policy = config.domain_policy(domain)
    if policy.route:
        return Route(f"route:{domain}", domain, policy.route, policy.tls)
    if config.smarthost is not None:
        return Route("smarthost", domain, config.smarthost.hosts, config.smarthost.tls, smarthost=True)
    return Route(f"mx:{domain}", domain, (), policy.tls)
