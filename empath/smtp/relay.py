"""Relay control: may this client hand us mail for this recipient?

Pure code. Postfix's rules, with its defaults: local domains take mail from
anyone; every other destination only from trusted networks or authenticated
sessions; and sender-specified routing (``%``, ``!``, ``@`` in the local
part, source routes, address literals) is refused for everyone else, so an
address trick can never turn a stranger's recipient into a relayed one.
"""

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from empath.addresses import Domain, Path

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Client:
    address: str  # the peer's IP address as text
    trusted: bool  # inside a trusted relay network
    authenticated: bool


def is_trusted(address: str, networks: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


def has_routing(path: Path) -> bool:
    """Does the address carry sender-specified routing?"""
    box = path.mailbox
    if path.source_route:
        return True
    if box is None:
        return False
    return box.literal or any(ch in box.local for ch in "@%!")


def may_relay(path: Path, client: Client, local_domains: frozenset[Domain]) -> bool:
    if path.postmaster:
        return True
    if client.trusted or client.authenticated:
        return True
    box = path.mailbox
    if box is None or has_routing(path):
        return False
    return box.domain in local_domains
