"""Relay control: trusted networks, and who may send mail where."""

import ipaddress

import pytest

from empath.addresses import parse_path
from empath.config.sections import DEFAULT_TRUSTED
from empath.smtp.relay import Client, has_routing, is_trusted, may_relay

NETWORKS = [
    ipaddress.ip_network("192.0.2.0/24"),
    ipaddress.ip_network("10.0.0.1/32"),
    ipaddress.ip_network("2001:db8::/32"),
]


@pytest.mark.parametrize(
    "address, trusted",
    [
        ("192.0.2.1", True),
        ("192.0.2.255", True),
        ("192.0.3.1", False),
        ("10.0.0.1", True),
        ("10.0.0.2", False),
        ("2001:db8::1", True),
        ("2001:DB8:ffff::1", True),
        ("2001:db9::1", False),
        ("::ffff:192.0.2.7", True),  # IPv4-mapped, as a dual-stack socket reports it
        ("::ffff:10.0.0.1", True),
        ("::ffff:192.0.3.7", False),
        ("::1", False),
        ("127.0.0.1", False),
        ("", False),
        ("garbage", False),
        ("192.0.2", False),
        ("192.0.2.1/24", False),
        ("[192.0.2.1]", False),
        ("unix:/run/empath.sock", False),
    ],
)
def test_is_trusted(address, trusted):
    assert is_trusted(address, NETWORKS) is trusted


def test_no_networks_trusts_nobody():
    assert not is_trusted("127.0.0.1", [])


@pytest.mark.parametrize(
    "address, trusted",
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("192.168.1.1", False),
        ("10.0.0.1", False),
        ("::2", False),
    ],
)
def test_default_trusts_loopback_only(address, trusted):
    assert is_trusted(address, DEFAULT_TRUSTED) is trusted


LOCAL = frozenset({"example.test"})
STRANGER = Client("203.0.113.5", trusted=False, authenticated=False)
TRUSTED = Client("192.0.2.5", trusted=True, authenticated=False)
AUTHENTICATED = Client("203.0.113.5", trusted=False, authenticated=True)


@pytest.mark.parametrize(
    "path, routing",
    [
        ("<u@example.test>", False),
        ("<Postmaster>", False),
        ("<u%remote.example@example.test>", True),
        ("<remote.example!u@example.test>", True),
        ('<"u@remote.example"@example.test>', True),
        ("<@example.test:u@example.test>", True),
        ("<u@[192.0.2.1]>", True),
        ('<"u v"@example.test>', False),  # quoting alone is not routing
    ],
)
def test_has_routing(path, routing):
    assert has_routing(parse_path(path)) is routing


@pytest.mark.parametrize(
    "path, stranger",
    [
        ("<u@example.test>", True),
        ("<u@remote.example>", False),
        ("<u@sub.example.test>", False),
        ("<u%remote.example@example.test>", False),
        ("<u!remote.example@example.test>", False),
        ('<"u@remote.example"@example.test>', False),
        ("<@example.test:u@remote.example>", False),
        ("<@example.test:u@example.test>", False),
        ("<u@[192.0.2.1]>", False),
        ("<u@[IPv6:2001:db8::1]>", False),
        ("<Postmaster>", True),
        ("<postmaster@example.test>", True),
        ("<postmaster@remote.example>", False),
    ],
)
def test_may_relay(path, stranger):
    parsed = parse_path(path)
    assert may_relay(parsed, STRANGER, LOCAL) is stranger
    assert may_relay(parsed, TRUSTED, LOCAL) is True
    assert may_relay(parsed, AUTHENTICATED, LOCAL) is True


def test_may_relay_without_local_domains():
    assert not may_relay(parse_path("<u@example.test>"), STRANGER, frozenset())
    assert may_relay(parse_path("<Postmaster>"), STRANGER, frozenset())


def test_null_path_is_never_a_stranger_recipient():
    assert not may_relay(parse_path("<>", allow_null=True), STRANGER, LOCAL)
