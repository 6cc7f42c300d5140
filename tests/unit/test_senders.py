"""Who may send as whom (empath/senders.py): the table, and the rule for users it does not list."""

import pytest

from empath.addresses import AddressSet
from empath.senders import SendersFileError, parse
from empath.senders import may_send_as as may

LOCAL = ("office.test", "branch.test")


def test_parse():
    table = parse(
        "# user: addresses\n"
        "alice: alice@office.test, A.Smith@Office.test\n"
        "scanner:scans@office.test\n"
        "director: @office.test @branch.test   # everything\n"
        "\n"
        "bob@office.test: bob@office.test bobby@branch.test\n"
    )
    assert table == {
        "alice": AddressSet(frozenset({"alice@office.test", "a.smith@office.test"})),
        "scanner": AddressSet(frozenset({"scans@office.test"})),
        "director": AddressSet(domains=frozenset({"office.test", "branch.test"})),
        "bob@office.test": AddressSet(frozenset({"bob@office.test", "bobby@branch.test"})),
    }


@pytest.mark.parametrize(
    "line, problem",
    [
        ("alice alice@office.test", "not user: address"),
        (": alice@office.test", "not user: address"),
        ("alice:", "given no address"),
        ("alice: not an address", "'not' is not an address"),
        ("alice: @bad_domain", "is not an address or @domain"),
        ("alice: <>", "is not an address or @domain"),
        ("scanner: x@office.test", "listed twice"),
    ],
)
def test_a_bad_line_is_named(line, problem):
    with pytest.raises(SendersFileError, match=f"line 2: .*{problem}"):
        parse(f"scanner: scans@office.test\n{line}\n")


TABLE = parse("alice: alice@office.test, sales@office.test\ndirector: @office.test\n")


@pytest.mark.parametrize(
    "user, sender, allowed",
    [
        ("alice", "alice@office.test", True),
        ("alice", "Sales@OFFICE.test", True),
        ("alice", "alice@branch.test", False),  # listed: only what the table says
        ("alice", "director@office.test", False),
        ("director", "anyone@office.test", True),
        ("director", "anyone@branch.test", False),
        # Not listed: the login's own address.
        ("carol", "carol@office.test", True),
        ("carol", "carol@Branch.test", True),
        ("carol", "Carol@branch.test", False),  # user names are case-sensitive: Carol is not carol
        ("carol", "carol@far.test", False),  # not a local domain
        ("carol", "alice@office.test", False),
        ("dave@far.test", "dave@far.test", True),
        ("dave@far.test", "dave@FAR.test", True),
        ("dave@far.test", "DAVE@far.test", False),
        ("Alice", "alice@office.test", False),
        ("dave@far.test", "dave@office.test", False),
    ],
)
def test_may_send_as(user, sender, allowed):
    assert may(user, sender, TABLE, LOCAL) is allowed
