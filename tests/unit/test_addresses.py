"""Envelope address parsing: paths, local parts, domains, literals and HELO names."""

import pytest

from empath.addresses import (
    MAX_DOMAIN,
    MAX_LOCAL_PART,
    MAX_PATH,
    AddressError,
    Mailbox,
    NeedsSMTPUTF8,
    parse_helo,
    parse_path,
    split_path,
)

# -- split_path ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, path, rest",
    [
        ("<a@b.example>", "<a@b.example>", ""),
        ("<a@b.example> SIZE=10", "<a@b.example>", "SIZE=10"),
        ("<a@b.example>   SIZE=10 BODY=8BITMIME", "<a@b.example>", "SIZE=10 BODY=8BITMIME"),
        ("   <a@b.example>", "<a@b.example>", ""),
        ("<>", "<>", ""),
        ("<> RET=FULL", "<>", "RET=FULL"),
        # A '>' inside quotes does not end the path.
        ('<">"@x.example> SIZE=1', '<">"@x.example>', "SIZE=1"),
        ('<"a\\">b"@x.example>', '<"a\\">b"@x.example>', ""),
        ('<"a@b"@x.example>', '<"a@b"@x.example>', ""),
        # Old printers leave out the brackets.
        ("a@b.example", "<a@b.example>", ""),
        ("a@b.example SIZE=5", "<a@b.example>", "SIZE=5"),
    ],
)
def test_split_path(text, path, rest):
    assert split_path(text) == (path, rest)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "<a@b.example",
        "<a@b.example>SIZE=10",  # junk glued to the bracket
        '<"a>@b.example',  # the quote never closes, so neither does the path
        "a@b.example>",
        "a<b@c.example",
    ],
)
def test_split_path_rejects(text):
    with pytest.raises(AddressError):
        split_path(text)


# -- parse_path ---------------------------------------------------------------


def test_null_path_only_where_allowed():
    assert parse_path("<>", allow_null=True).mailbox is None
    assert parse_path("<>", allow_null=True).address == ""
    with pytest.raises(AddressError):
        parse_path("<>")


@pytest.mark.parametrize("text", ["<Postmaster>", "<postmaster>", "<POSTMASTER>"])
def test_bare_postmaster(text):
    path = parse_path(text)
    assert path.postmaster
    assert path.mailbox is None


def test_postmaster_with_domain_is_an_ordinary_mailbox():
    path = parse_path("<Postmaster@Example.COM>")
    assert not path.postmaster
    assert path.mailbox == Mailbox("Postmaster", "example.com")


@pytest.mark.parametrize(
    "text, local, domain, quoted, literal",
    [
        ("<user@example.com>", "user", "example.com", False, False),
        ("<First.Last+tag@Sub.Example.COM>", "First.Last+tag", "sub.example.com", False, False),
        ("<!#$%&'*+-/=?^_`{|}~@example.com>", "!#$%&'*+-/=?^_`{|}~", "example.com", False, False),
        ('<"a@b"@x.example>', "a@b", "x.example", True, False),
        ('<">"@x.example>', ">", "x.example", True, False),
        ('<"john doe"@x.example>', "john doe", "x.example", True, False),
        ('<"a\\"b"@x.example>', 'a"b', "x.example", True, False),
        ('<"a\\\\b"@x.example>', "a\\b", "x.example", True, False),
        ('<""@x.example>', "", "x.example", True, False),
        ("<u@[192.0.2.1]>", "u", "[192.0.2.1]", False, True),
        ("<u@[IPv6:2001:db8::1]>", "u", "[IPv6:2001:db8::1]", False, True),
        ("<u@[ipv6:2001:DB8:0:0:0:0:0:1]>", "u", "[IPv6:2001:db8::1]", False, True),
        ("<u@x-y.example>", "u", "x-y.example", False, False),
        ("<u@localhost>", "u", "localhost", False, False),
    ],
)
def test_parse_mailbox(text, local, domain, quoted, literal):
    path = parse_path(text)
    assert path.mailbox == Mailbox(local, domain, quoted, literal)
    assert not path.source_route
    assert not path.postmaster


@pytest.mark.parametrize(
    "text, address",
    [
        ("<user@Example.COM>", "user@example.com"),
        ('<"a@b"@x.example>', '"a@b"@x.example'),
        ('<"john doe"@x.example>', '"john doe"@x.example'),
        ('<"a\\"b"@x.example>', '"a\\"b"@x.example'),
        ('<"plain"@x.example>', "plain@x.example"),  # needless quotes are dropped
        ("<u@[IPv6:2001:DB8::1]>", "u@[IPv6:2001:db8::1]"),
        ("<user@Office.Test.>", "user@office.test"),  # the fully qualified form: the same domain
    ],
)
def test_address_round_trip(text, address):
    path = parse_path(text)
    assert path.address == address
    # What we print parses back to the same local part and domain.
    again = parse_path(f"<{address}>").mailbox
    assert (again.local, again.domain) == (path.mailbox.local, path.mailbox.domain)


@pytest.mark.parametrize(
    "text, domain",
    [
        ("<@relay.example:user@dest.example>", "dest.example"),
        ("<@a.example,@b.example:user@dest.example>", "dest.example"),
    ],
)
def test_source_route_is_recorded(text, domain):
    path = parse_path(text)
    assert path.source_route
    assert path.mailbox is not None and path.mailbox.domain == domain


@pytest.mark.parametrize(
    "text",
    [
        "<@relay.example>",  # no colon
        "<@relay.example,relay2.example:u@x.example>",  # second hop lacks '@'
        "<@bad_domain:u@x.example>",
        "<@relay.example:>",
    ],
)
def test_bad_source_route(text):
    with pytest.raises(AddressError):
        parse_path(text)


@pytest.mark.parametrize(
    "text",
    [
        "user@example.com",  # no brackets
        "<user@example.com",
        "<user>",  # no domain
        "<@example.com>",
        "<user@>",
        "<a@b@example.com>",  # more than one '@'
        "<a@b@c@example.com>",
        "<.user@example.com>",
        "<user.@example.com>",
        "<us..er@example.com>",
        "<us er@example.com>",
        "<us(er@example.com>",
        '<"unterminated@example.com>',
        '<"a"b@example.com>',  # junk after the quoted part
        '<"a\x01"@example.com>',  # control character in quotes
        '<"a\\\x01"@example.com>',  # quoted control character
        "<user@-example.com>",
        "<user@example-.com>",
        "<user@exa_mple.com>",
        "<user@example..com>",
        "<user@example.com..>",
        "<user@.>",
        "<user@.example.com>",
        "<user@[300.1.1.1]>",
        "<user@[1.2.3]>",
        "<user@[IPv6:2001:db8::g]>",
        "<user@[2001:db8::1]>",  # IPv6 needs its tag
        "<user@[tag:whatever]>",
        "<user@[192.0.2.1>",
    ],
)
def test_parse_path_rejects(text):
    with pytest.raises(AddressError):
        parse_path(text)


def test_local_part_limit_is_64_octets():
    ok = "a" * MAX_LOCAL_PART
    assert MAX_LOCAL_PART == 64
    assert parse_path(f"<{ok}@x.example>").mailbox.local == ok
    with pytest.raises(AddressError, match="64"):
        parse_path(f"<{ok}a@x.example>")
    # Octets, not characters: 32 two-byte characters fill the limit.
    assert parse_path(f"<{'é' * 32}@x.example>", utf8=True).mailbox.local == "é" * 32
    with pytest.raises(AddressError, match="64"):
        parse_path(f"<{'é' * 33}@x.example>", utf8=True)
    # Quoted local parts are measured too.
    with pytest.raises(AddressError, match="64"):
        parse_path(f'<"{"a" * 65}"@x.example>')


def _domain(length: int) -> str:
    """A valid domain name of exactly ``length`` characters."""
    labels = []
    remaining = length
    while remaining > 0:
        size = min(63, remaining)
        if remaining - size == 1:  # a label cannot be empty
            size -= 1
        labels.append("d" * size)
        remaining -= size + 1
    domain = ".".join(labels)
    assert len(domain) == length
    return domain


def test_domain_limit_is_255_octets():
    from empath.addresses import parse_domain

    assert MAX_DOMAIN == 255
    assert parse_domain(_domain(255)) == _domain(255)
    with pytest.raises(AddressError, match="255"):
        parse_domain(_domain(256))


def test_path_limit_is_256_octets_brackets_included():
    assert MAX_PATH == 256
    local = "a" * 60
    fits = f"<{local}@{_domain(256 - len(local) - 3)}>"
    assert len(fits) == 256
    assert parse_path(fits).mailbox.local == local
    too_long = f"<{local}@{_domain(257 - len(local) - 3)}>"
    assert len(too_long) == 257
    with pytest.raises(AddressError, match="256"):
        parse_path(too_long)


def test_path_limit_counts_the_canonical_form():
    # 146 octets as sent; 279 once its U-labels are A-labels ("ü" is "xn--tda").
    sent = f"<{'x' * 60}@{'.'.join(['ü'] * 27)}.de>"
    assert len(sent.encode()) <= MAX_PATH
    with pytest.raises(AddressError, match="256"):
        parse_path(sent, utf8=True)


def test_path_limit_counts_octets():
    local = "é" * 32  # 32 characters, 64 octets
    fits = f"<{local}@{_domain(189)}>"
    assert len(fits.encode()) == 256
    assert parse_path(fits, utf8=True).mailbox.local == local
    too_long = f"<{local}@{_domain(190)}>"
    assert len(too_long) < 256 < len(too_long.encode())
    with pytest.raises(AddressError, match="256"):
        parse_path(too_long, utf8=True)


@pytest.mark.parametrize(
    "text",
    [
        "<jös@example.com>",
        "<user@bücher.example>",
        '<"jös"@example.com>',
        "<@bücher.example:user@example.com>",
    ],
)
def test_non_ascii_needs_smtputf8(text):
    with pytest.raises(NeedsSMTPUTF8):
        parse_path(text)
    parse_path(text, utf8=True)


def test_needs_smtputf8_is_an_address_error():
    assert issubclass(NeedsSMTPUTF8, AddressError)


@pytest.mark.parametrize(
    "text, domain",
    [
        ("<user@bücher.example>", "xn--bcher-kva.example"),
        ("<user@BÜCHER.Example>", "xn--bcher-kva.example"),
        ("<user@xn--BCHER-KVA.example>", "xn--bcher-kva.example"),
        ("<user@пример.рф>", "xn--e1afmkfd.xn--p1ai"),
    ],
)
def test_idna_domains_become_lower_case_a_labels(text, domain):
    assert parse_path(text, utf8=True).mailbox.domain == domain


def test_utf8_local_part_kept_as_written():
    path = parse_path("<Jörg.Müller@bücher.example>", utf8=True)
    assert path.mailbox.local == "Jörg.Müller"
    assert path.address == "Jörg.Müller@xn--bcher-kva.example"


# -- parse_helo ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, helo",
    [
        ("mail.example.com", "mail.example.com"),
        ("  mail.example.com  ", "mail.example.com"),
        ("printer_1", "printer_1"),  # not a legal domain, but printers send it
        ("[192.0.2.1]", "[192.0.2.1]"),
        ("[IPv6:2001:db8::1]", "[IPv6:2001:db8::1]"),
        ("LOCALHOST", "LOCALHOST"),  # kept as given
        ("x" * 255, "x" * 255),
    ],
)
def test_parse_helo_accepts(text, helo):
    assert parse_helo(text) == helo


@pytest.mark.parametrize(
    "text",
    ["", "   ", "two words", "tab\there", "nul\x00", "bell\x07", "del\x7f", "x" * 256],
)
def test_parse_helo_rejects(text):
    with pytest.raises(AddressError):
        parse_helo(text)
