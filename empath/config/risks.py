"""Settings that are valid but expose the office: ``--check`` warns of them (exit 0),
and the daemon logs them at start and at every reload.

``risks`` is pure: it reads the Config. Each warning is (the key, what the risk
is); ``warnings`` reads the config file for reader.located to put the key's line to.
"""

import ipaddress

from empath.config.model import Config, Listener, Network
from empath.config.reader import located

# Where an office's own hosts are: private (RFC 1918, RFC 4193), loopback and link-local.
OWN_RANGES = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16")
    + ("fc00::/7", "::1/128", "fe80::/10")
)


def _public(network: Network) -> bool:
    """Does ``network`` reach beyond the private, loopback and link-local ranges?"""
    return not any(network.version == own.version and network.subnet_of(own) for own in OWN_RANGES)  # type: ignore[arg-type]


def _reaches_outside(listener: Listener) -> bool:
    """May a host outside the private ranges connect to ``listener``?"""
    if listener.networks:
        return any(_public(network) for network in listener.networks)
    address = ipaddress.ip_address(listener.host)
    return address.is_unspecified or _public(ipaddress.ip_network(address))


def risks(config: Config) -> list[tuple[str, str]]:
    found = []
    for network in config.trusted_networks:
        if _public(network):
            found.append(
                (
                    "relay.trusted_networks",
                    f"{network} covers public addresses: every host there may relay through Empath without"
                    " logging in; keep trusted networks to the office's own private ranges",
                )
            )
    for i, listener in enumerate(config.listeners):
        if listener.tls_min_version in ("1.0", "1.1") and _reaches_outside(listener):
            found.append(
                (
                    f"listeners[{i}].tls_min_version",
                    f"{listener.name} takes TLS {listener.tls_min_version}, broken long ago, and is reachable beyond"
                    " the office's private ranges: keep old devices' listeners on a private address, or set networks",
                )
            )
    if config.metrics_address is not None:
        host, port = config.metrics_address
        if not ipaddress.ip_address(host).is_loopback:
            found.append(
                (
                    "server.metrics_address",
                    f"{host}:{port} serves the metrics (queue sizes, clients refused) off loopback, without"
                    " authentication: bind it to 127.0.0.1 or keep it behind a firewall",
                )
            )
    return found


def warnings(config: Config) -> list[str]:
    """The risks, each as ``key (line N): what``."""
    return located(config.path, risks(config))
