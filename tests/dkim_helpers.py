"""DKIM in the tests: a key made with `empathctl dkim keygen` for a daemon's config,
and the checks of a received message with dkimpy against the test's DNS server
(tests/integration/test_dkim_delivery.py, test_backup.py)."""

import subprocess
import sys

import dkim as dkimpy
import dns.resolver
from dns_server import DnsServer
from support import ROOT


def keygen(daemon, selector: str, algorithm: str) -> str:
    """Make a key for local.test; the TXT record's value as the zone file gives it."""
    result = subprocess.run(
        [sys.executable, "-m", "empath.cmd.empathctl", "--config", str(daemon.config_path), "dkim", "keygen"]
        + ["local.test", selector, "--algorithm", algorithm, "--directory", str(daemon.directory / "dkim")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    [record] = [line for line in result.stdout.splitlines() if " IN TXT " in line]
    daemon.extra += (
        f'[[dkim]]\ndomain = "local.test"\nselector = "{selector}"\n'
        f'key_file = "{daemon.directory / "dkim" / f"local.test.{selector}.key"}"\nalgorithm = "{algorithm}"\n'
    )
    return record.split(" IN TXT ", 1)[1]


def dns_lookup(server: DnsServer):
    """dkimpy's dnsfunc, as a real query to the test's DNS server."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port

    def txt(name: bytes, timeout: float = 5) -> bytes:
        answer = resolver.resolve(name.decode(), "TXT", lifetime=timeout)
        return b"".join(answer[0].strings)

    return txt


def verifies(message: bytes, idx: int, lookup) -> bool:
    """Does the idx-th signature verify? (dkimpy raises for some failures, returns False for others.)"""
    try:
        return dkimpy.DKIM(message).verify(idx=idx, dnsfunc=lookup)
    except dkimpy.DKIMException:
        return False
