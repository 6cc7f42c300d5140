"""The two plug-ins Empath ships: the block list and the header tagger."""

import dataclasses

import pytest

from empath.plugins import blocklist, tagger
from empath.plugins.api import Context, Headers, Reject, apply_headers, parse_headers

LIST = """\
# people we do not want
spam@Example.COM      REJECT   (Postfix access syntax: the action is ignored)
bad.test
abuse@
"""


@pytest.fixture(autouse=True)
def fresh_lists():
    blocklist.reload()
    yield
    blocklist.reload()


def test_parse_takes_the_first_word_of_each_line():
    assert blocklist.parse(LIST) == frozenset({"spam@example.com", "bad.test", "abuse@"})


@pytest.mark.parametrize(
    "address, hit",
    [
        ("spam@example.com", True),
        ("SPAM@example.com", True),
        ("ham@example.com", False),
        ("anyone@bad.test", True),
        ("anyone@sub.bad.test", False),
        ("abuse@anywhere.test", True),
        ("", False),
        ("postmaster", False),
    ],
)
def test_blocked(address, hit):
    assert blocklist.blocked(address, blocklist.parse(LIST)) is hit


def test_check_refuses_a_listed_sender_and_recipient(tmp_path):
    path = tmp_path / "blocked"
    path.write_text(LIST)
    options = {"file": str(path)}
    mail = Context("mail", "t", options=options, sender="spam@example.com")
    assert blocklist.check(mail) == Reject(550, "5.7.1", "Sender address rejected: <spam@example.com> is blocked here")
    rcpt = Context("rcpt", "t", options=options, sender="ok@elsewhere.test", recipient="abuse@example.com")
    assert blocklist.check(rcpt).text == "Recipient address rejected: <abuse@example.com> is blocked here"
    assert blocklist.check(Context("mail", "t", options=options, sender="")) is None  # the null sender
    assert blocklist.check(Context("helo", "t", options=options, helo="bad.test")) is None


def test_the_file_is_read_again_only_after_reload(tmp_path):
    path = tmp_path / "blocked"
    path.write_text("one@example.com\n")
    ctx = Context("mail", "t", options={"file": str(path)}, sender="two@example.com")
    assert blocklist.check(ctx) is None
    path.write_text("two@example.com\n")
    assert blocklist.check(ctx) is None  # still the list read first
    blocklist.reload()
    assert blocklist.check(ctx) is not None


def test_a_missing_file_raises_so_the_runner_fails_closed(tmp_path):
    with pytest.raises(FileNotFoundError):
        blocklist.check(Context("mail", "t", options={"file": str(tmp_path / "nope")}, sender="a@b.test"))


MESSAGE = b"Subject: Your invoice 42\r\nFrom: shop@lists.example.org\r\nX-Empath-Tag: forged\r\n\r\nbody\r\n"
RULES = [
    {"field": "sender", "pattern": r"@lists\.example\.org$", "tag": "list"},
    {"field": "header:subject", "pattern": "(?i)INVOICE", "tag": "invoice"},
    {"field": "recipient", "pattern": "^boss@", "tag": "vip"},
    {"field": "client", "pattern": r"^192\.0\.2\.", "tag": "office"},
    {"field": "auth_user", "pattern": "alice", "tag": "alice"},
    {"field": "helo", "pattern": "printer", "tag": "printer"},
    {"field": "header:Subject", "pattern": "invoice", "tag": "invoice"},  # the same tag once
]


def data(**fields) -> Context:
    return Context("data", "t", options={"rules": RULES}, headers=parse_headers(MESSAGE), message=MESSAGE, **fields)


def test_tagger_writes_every_matching_tag_in_place_of_the_clients():
    ctx = data(sender="shop@lists.example.org", recipients=("a@x.test", "boss@x.test"), client_address="192.0.2.5")
    assert tagger.tag(ctx) == Headers(replace=[("X-Empath-Tag", "list, invoice, vip, office")])


def test_tagger_header_name_is_an_option_and_no_match_removes_the_header():
    ctx = data(sender="x@y.test", auth_user="alice", helo="printer.office.test")
    ctx = dataclasses.replace(ctx, options={"rules": RULES, "header": "X-Office"})
    assert tagger.tag(ctx) == Headers(replace=[("X-Office", "invoice, alice, printer")])
    # No tag: a client's own X-Empath-Tag must not pass for ours.
    untagged = Context("data", "t", options={"rules": RULES[:1]}, sender="x@y.test")
    assert tagger.tag(untagged) == Headers(remove=["X-Empath-Tag"])
    forged = b"X-Empath-Tag: invoice\r\nSubject: hi\r\n\r\nbody\r\n"
    assert apply_headers(forged, [tagger.tag(untagged)]) == b"Subject: hi\r\n\r\nbody\r\n"


def test_blocklist_names_an_international_address_in_ascii(tmp_path):
    """A reply is ASCII: an SMTPUTF8 address in the text would make the decision invalid (451, not 550)."""
    listed = tmp_path / "blocked"
    listed.write_text("jörg@example.test\n", encoding="utf-8")
    ctx = Context("rcpt", "t", options={"file": str(listed)}, recipient="jörg@example.test")
    decision = blocklist.check(ctx)
    assert decision is not None and decision.code == 550 and "j\\xf6rg@example.test" in decision.text
