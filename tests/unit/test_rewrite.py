"""Sender rewriting (empath/rewrite.py): the canonical table, masquerading, and the header fields."""

import pytest

from empath.rewrite import CanonicalFileError, Rules, parse

TABLE = parse(
    "# who the office's machines are, to the world\n"
    "root@office.test        it@office.test\n"
    "Scanner@Office.test     scans@office.test\n"
    "@old-name.test          @office.test   # renamed\n"
)
RULES = Rules(TABLE, ("office.test",))


@pytest.mark.parametrize(
    "given, rewritten",
    [
        ("root@office.test", "it@office.test"),
        ("ROOT@office.test", "it@office.test"),
        ("scanner@office.test", "scans@office.test"),
        ("alice@old-name.test", "alice@office.test"),  # the local part kept
        ("cron@mail.office.test", "cron@office.test"),  # masqueraded
        ("root@mail.office.test", "it@office.test"),  # masqueraded, then the table knows it
        ("alice@office.test", "alice@office.test"),
        ("bob@far.example", "bob@far.example"),
        ("bob@notoffice.test", "bob@notoffice.test"),  # not a subdomain
    ],
)
def test_address(given, rewritten):
    assert RULES.address(given) == rewritten


def test_the_sender_fields_are_rewritten_and_nothing_else():
    section = (
        b'From: "Cron Daemon" <root@office.test>\r\n'
        b"To: root@office.test\r\n"
        b"Reply-To: ops@office.test,\r\n  printer <scanner@office.test>\r\n"
        b"Sender: cron@mail.office.test (the scheduler)\r\n"
        b"Subject: root@office.test says hello\r\n"
        b"\r\n"
    )
    assert RULES.header_section(section) == (
        b'From: "Cron Daemon" <it@office.test>\r\n'
        b"To: root@office.test\r\n"
        b"Reply-To: ops@office.test,\r\n  printer <scans@office.test>\r\n"
        b"Sender: cron@office.test (the scheduler)\r\n"
        b"Subject: root@office.test says hello\r\n"
        b"\r\n"
    )


def test_an_address_inside_a_longer_one_is_left_alone():
    section = b"From: xroot@office.test, root@office.test\r\n\r\n"
    assert RULES.header_section(section) == b"From: xroot@office.test, it@office.test\r\n\r\n"


@pytest.mark.parametrize(
    "line, problem",
    [
        ("root@office.test", "not 'address new-address'"),
        ("root@office.test a@b.test c@d.test", "not 'address new-address'"),
        ("root@office.test @office.test", "an address maps to an address"),
        ("@a.test x@b.test", "an address maps to an address"),
        ("root it@office.test", "'root' is not an address or @domain"),
        ("root@office.test x@office.test", "listed twice"),
    ],
)
def test_a_bad_line_is_named(line, problem):
    with pytest.raises(CanonicalFileError, match=f"line 2: .*{problem}"):
        parse(f"root@office.test it@office.test\n{line}\n")


def test_a_display_name_or_a_comment_is_not_an_address():
    section = b'From: "root@mail.office.test (cron)" <root@mail.office.test> (root@office.test)\r\n\r\n'
    assert RULES.header_section(section) == (
        b'From: "root@mail.office.test (cron)" <it@office.test> (root@office.test)\r\n\r\n'
    )


def test_each_address_is_rewritten_once():
    rules = Rules(parse("a@office.test b@office.test\nb@office.test c@office.test\n"))
    assert rules.header_section(b"From: a@office.test, b@office.test\r\n\r\n") == (
        b"From: b@office.test, c@office.test\r\n\r\n"
    )
    assert rules.address("a@office.test") == "b@office.test"  # as the envelope sender is


def test_a_field_of_thousands_of_addresses_takes_one_pass_and_rewrites_the_first_hundred():
    field = b"From: " + b", ".join(b"root@office.test" for _ in range(12_000)) + b"\r\n\r\n"
    rewritten = RULES.header_section(field)  # quadratic, this took a minute
    assert rewritten.count(b"it@office.test") == 100 and rewritten.count(b"root@office.test") == 11_900
