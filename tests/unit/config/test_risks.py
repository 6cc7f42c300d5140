"""What --check warns of (config/risks.py, pure) and the open relay it refuses."""

import pytest
from config_helpers import GOOD, check, problems_of

from empath.config.risks import risks


@pytest.mark.parametrize(
    "network, public",
    [
        ("10.0.0.0/8", False),
        ("10.20.0.0/16", False),
        ("172.16.0.0/12", False),
        ("192.168.1.0/24", False),
        ("127.0.0.0/8", False),
        ("169.254.0.0/16", False),
        ("::1/128", False),
        ("fd12:3456::/32", False),
        ("fe80::/10", False),
        ("10.0.0.0/7", True),  # wider than the private range it starts in
        ("192.168.0.0/15", True),
        ("100.64.0.0/10", True),  # shared address space: the provider's, not the office's
        ("198.51.100.0/24", True),
        ("2001:db8::/32", True),
        ("0.0.0.0/0", True),
        ("::/0", True),
    ],
)
def test_public_trusted_networks(network, public):
    relay = f'\n[relay]\ntrusted_networks = ["{network}"]\nallow_open_relay = true\n'
    found = risks(check(GOOD + relay))
    assert [key for key, _ in found] == (["relay.trusted_networks"] if public else [])


@pytest.mark.parametrize("address, warned", [("127.0.0.1:9125", False), ("[::1]:9125", False), ("0.0.0.0:9125", True)])
def test_metrics_off_loopback(address, warned):
    text = GOOD.replace('data_dir = "data"', f'data_dir = "data"\nmetrics_address = "{address}"')
    assert [key for key, _ in risks(check(text))] == (["server.metrics_address"] if warned else [])


def test_the_default_config_has_no_risk():
    assert risks(check(GOOD)) == []


def test_allow_open_relay_is_a_boolean():
    assert problems_of(GOOD + '\n[relay]\nallow_open_relay = "yes"\n') == [
        "relay.allow_open_relay (line 9): must be true or false"
    ]


@pytest.mark.parametrize(
    "address, extra, warned",
    [
        ("192.168.1.5:2526", "", False),  # the LAN's own address
        ("0.0.0.0:2526", "", True),  # every address, the public one too
        ("198.51.100.5:2526", "", True),
        ("0.0.0.0:2526", 'networks = ["192.168.1.0/24"]\n', False),  # only the LAN may connect
        ("0.0.0.0:2526", 'networks = ["0.0.0.0/0"]\n', True),
        ("0.0.0.0:2526", 'tls_min_version = "1.2"\n', False),  # not old TLS
    ],
)
def test_old_tls_beyond_the_office(address, extra, warned):
    tls = "" if "tls_min_version" in extra else 'tls_min_version = "1.0"\n'
    text = GOOD + f'[[listeners]]\naddress = "{address}"\n{tls}{extra}'
    assert [key for key, _ in risks(check(text))] == (["listeners[1].tls_min_version"] if warned else [])
