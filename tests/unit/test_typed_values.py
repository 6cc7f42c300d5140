"""The typed values: Domain, EmailAddress, ReversePath (empath/addresses.py)
and NextHopId (empath/delivery/routing.py). Each parses and normalises once,
is a str everywhere else (SQLite, logs, plug-ins), and is a distinct type to
mypy, which the last tests prove by running it."""

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import queue_helpers
from queue_helpers import NOW, add

from empath.addresses import NULL_SENDER, AddressError, Domain, EmailAddress, NeedsSMTPUTF8, ReversePath, parse_path
from empath.delivery.routing import NEXT_HOP_SMARTHOST, NextHopId
from empath.queue import claims

ROOT = Path(__file__).resolve().parents[2]
db = queue_helpers.db  # the fixture: a new queue database

# -- Domain ------------------------------------------------------------------------


def test_domain_is_lower_case_and_equal_to_its_plain_text():
    d = Domain("Example.ORG")
    assert d == "example.org" and str(d) == "example.org" and type(d) is Domain
    assert hash(d) == hash("example.org")
    assert {"example.org": 1}[d] == 1 and {d: 1}["example.org"] == 1
    assert Domain("example.org.".rstrip(".")) == Domain("EXAMPLE.org")


def test_domain_takes_u_labels_as_a_labels():
    assert Domain("Bücher.Example") == "xn--bcher-kva.example"
    assert Domain("xn--bcher-kva.example") == Domain("bücher.example")


@pytest.mark.parametrize("text", ["", "a_b.example", "-a.example", "a..example", "a" * 64 + ".example", "[1.2.3]"])
def test_domain_refuses_what_is_not_one(text):
    with pytest.raises(AddressError):
        Domain(text)


def test_domain_is_at_most_255_octets():
    label = "a" * 63
    longest = ".".join([label, label, label, label[:-2] + "bc"])  # 255
    assert len(longest) == 255 and Domain(longest) == longest
    with pytest.raises(AddressError, match="255"):
        Domain(longest + "d")


def test_address_literals_are_domains_of_their_own_kind():
    v4, v6 = Domain("[192.0.2.1]"), Domain("[IPv6:2001:DB8:0::1]")
    assert v4 == "[192.0.2.1]" and v4.is_literal
    assert v6 == "[IPv6:2001:db8::1]" and v6.is_literal
    assert not Domain("example.org").is_literal
    with pytest.raises(AddressError):
        Domain.name("[192.0.2.1]")  # where only a name will do (the config, the control socket)


# -- EmailAddress and ReversePath ----------------------------------------------------


def test_address_keeps_the_local_part_and_lower_cases_the_domain():
    a = EmailAddress("John.Smith@Example.ORG")
    assert a == "John.Smith@example.org" and type(a) is EmailAddress
    assert a.local == "John.Smith"
    assert a.domain == "example.org" and type(a.domain) is Domain
    assert hash(a) == hash("John.Smith@example.org")


def test_address_quotes_only_where_it_must():
    assert EmailAddress('"plain"@example.org') == "plain@example.org"
    spaced = EmailAddress('"a b\\"c"@example.org')
    assert spaced == '"a b\\"c"@example.org'
    assert spaced.local == 'a b"c'
    assert EmailAddress(spaced) == spaced


def test_smtputf8_local_part_is_kept_as_given():
    a = EmailAddress("Jörg@Bücher.example")
    assert a == "Jörg@xn--bcher-kva.example"
    assert a.local == "Jörg" and a.domain == "xn--bcher-kva.example"


def test_address_at_a_literal():
    a = EmailAddress("postmaster@[192.0.2.1]")
    assert a.domain.is_literal and a.domain == "[192.0.2.1]"


def test_rfc5321_length_limits():
    assert EmailAddress("a" * 64 + "@example.org").local == "a" * 64
    with pytest.raises(AddressError, match="64"):
        EmailAddress("a" * 65 + "@example.org")
    # The path, angle brackets included, is at most 256 octets (RFC 5321 §4.5.3.1.3).
    domain = ".".join(["b" * 63, "c" * 63, "d" * 61])  # 189 octets
    assert len(EmailAddress("a" * 64 + "@" + domain).encode()) + 2 == 256
    with pytest.raises(AddressError, match="256"):
        EmailAddress("a" * 64 + "@" + domain + "e")
    with pytest.raises(AddressError, match="64"):
        EmailAddress("é" * 33 + "@example.org")  # 66 octets in UTF-8


@pytest.mark.parametrize("text", ["", "nobody", "@example.org", "a@", "a b@example.org", "a@b@example.org"])
def test_address_refuses_what_is_not_one(text):
    with pytest.raises(AddressError):
        EmailAddress(text)


def test_null_sender_is_explicit_and_never_an_address():
    assert ReversePath("") is NULL_SENDER
    assert NULL_SENDER.is_null and NULL_SENDER == "" and not isinstance(NULL_SENDER, EmailAddress)
    sender = ReversePath("a@Example.org")
    assert type(sender) is EmailAddress and not sender.is_null and sender == "a@example.org"
    assert parse_path("<>", allow_null=True).address is NULL_SENDER


def test_the_parser_makes_the_types():
    path = parse_path("<User@Bücher.example>", utf8=True)
    assert type(path.address) is EmailAddress and path.address == "User@xn--bcher-kva.example"
    assert path.mailbox is not None and type(path.mailbox.domain) is Domain
    with pytest.raises(NeedsSMTPUTF8):
        parse_path("<User@Bücher.example>")  # the session's SMTPUTF8 rule is still the parser's


def test_values_pickle_and_check_again():
    for value in (Domain("example.org"), EmailAddress("a@example.org"), NULL_SENDER, NextHopId("mx:example.org")):
        copy = pickle.loads(pickle.dumps(value))
        assert copy == value and type(copy) is type(value)


# -- the queue boundary ----------------------------------------------------------


def test_queue_reads_come_back_typed(db):
    queue_id = add(db, sender="Boss@Corp.test", rcpts=("r@one.test",))
    [claimed] = claims.claim(db, NOW, "me", 60, 10)
    assert type(claimed.address) is EmailAddress and type(claimed.domain) is Domain
    assert claimed.address.domain == claimed.domain == "one.test"
    loaded = claims.load(db.connection(), queue_id)
    assert loaded is not None and type(loaded.sender) is EmailAddress and loaded.sender == "Boss@corp.test"


def test_queue_reads_the_null_sender_as_itself(db):
    queue_id = add(db, sender="")
    loaded = claims.load(db.connection(), queue_id)
    assert loaded is not None and loaded.sender is NULL_SENDER


# -- NextHopId ------------------------------------------------------------------------


def test_next_hop_ids():
    d = Domain("Example.org")
    assert NextHopId.mx(d) == "mx:example.org" == NextHopId("mx:example.org")
    assert NextHopId.route(d) == "route:example.org"
    assert NEXT_HOP_SMARTHOST == "smarthost" == NextHopId("smarthost")
    literal = NextHopId.mx(Domain("[192.0.2.1]"))  # a trusted client may send to an address literal
    assert NextHopId(literal) == literal == "mx:[192.0.2.1]"
    for bad in ("example.org", "mx:", "mx:Example.org", "dns:example.org", "route:a_b"):
        with pytest.raises(ValueError, match="next hop"):
            NextHopId(bad)


# -- mixing them up is a type error ------------------------------------------------------

MIXED = """\
from empath.addresses import NULL_SENDER, Domain, EmailAddress, ReversePath
from empath.delivery.dns import Resolver
from empath.delivery.routing import NextHopId
from empath.queue.insert import NewRecipient


def check(resolver: Resolver, address: EmailAddress, sender: ReversePath, text: str) -> None:
    resolver.mx(address.domain)
    NewRecipient(address, address.domain)
    resolver.mx(address)  # ERROR
    resolver.mx(text)  # ERROR
    NewRecipient(address.domain, address.domain)  # ERROR
    NewRecipient(sender, address.domain)  # ERROR
    NewRecipient(NULL_SENDER, address.domain)  # ERROR
    NextHopId.mx(address)  # ERROR
"""


def test_mixing_the_types_is_a_mypy_error(tmp_path):
    snippet = tmp_path / "mixed.py"
    snippet.write_text(MIXED)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--follow-imports=silent",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-error-summary",
            str(snippet),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    expected = {n for n, line in enumerate(MIXED.splitlines(), 1) if line.endswith("# ERROR")}
    reported = {int(line.split(":")[1]) for line in run.stdout.splitlines() if "[arg-type]" in line}
    errors = [line for line in run.stdout.splitlines() if ": error:" in line]
    assert all("[arg-type]" in line for line in errors), run.stdout + run.stderr
    assert reported == expected, run.stdout + run.stderr
