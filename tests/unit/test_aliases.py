"""Aliases (empath/aliases.py): the two files' syntax, and expansion, from tables of cases."""

import os
from pathlib import Path

import pytest

from empath.addresses import EmailAddress
from empath.aliases import AliasesFile, AliasesFileError, expand, parse

HOST = "mx.office.test"
ETC = Path("/etc/aliases")
VIRTUAL = Path("/etc/empath/virtual")

LOCAL = parse(
    "# local names\n"
    "postmaster: root\n"
    "root: it@office.test\n"
    "abuse:   root,\n"
    "   security@office.test     # a continuation line\n"
    "MAILER-DAEMON: postmaster\n"
    "loopa: loopb\n"
    "loopb: loopa\n"
    "nobody-here: ghost\n",
    ETC,
    virtual=False,
)
VIRT = parse(
    "sales@office.test      alice@office.test, Bob@office.test\n"
    "alice@office.test      alice@office.test, alice@home.example\n"
    "all@office.test:       sales@office.test alice@office.test carol@office.test\n"
    "it@office.test         root-team@office.test\n"
    "root-team@office.test  dave@office.test, itarchive@office.test\n"
    "@branch.test           it@office.test\n"
    "boss@branch.test       boss@branch.test\n"
    "x@office.test          y@office.test\n"
    "y@office.test          x@office.test\n"
    "cron@office.test       root\n",
    VIRTUAL,
    virtual=True,
)


def run(address: str, local=LOCAL, virtual=VIRT, limit: int = 1000):
    result = expand(EmailAddress(address), local, virtual, HOST, limit)
    return list(result.targets) if result.problem is None else result.problem


@pytest.mark.parametrize(
    "address, expected",
    [
        ("bob@office.test", ["bob@office.test"]),  # not aliased: itself
        ("sales@office.test", ["alice@office.test", "alice@home.example", "Bob@office.test"]),
        ("SALES@Office.test", ["alice@office.test", "alice@home.example", "Bob@office.test"]),  # any case
        ("alice@office.test", ["alice@office.test", "alice@home.example"]),  # a copy kept, one forwarded
        # Duplicates go: alice is reached twice through all@.
        ("all@office.test", ["alice@office.test", "alice@home.example", "Bob@office.test", "carol@office.test"]),
        ("root@mx.office.test", ["dave@office.test", "itarchive@office.test"]),  # a local name → virtual aliases
        ("postmaster@localhost", ["dave@office.test", "itarchive@office.test"]),
        ("abuse@mx.office.test", ["dave@office.test", "itarchive@office.test", "security@office.test"]),
        ("mailer-daemon@mx.office.test", ["dave@office.test", "itarchive@office.test"]),
        ("anyone@branch.test", ["dave@office.test", "itarchive@office.test"]),  # the catch-all
        ("boss@branch.test", ["boss@branch.test"]),  # a key beats the catch-all
        ("cron@office.test", ["dave@office.test", "itarchive@office.test"]),  # a virtual target that is a local name
        ("loopa@mx.office.test", "loop"),
        ("x@office.test", "loop"),
        ("nobody@mx.office.test", "unknown"),  # a local name with no alias: no mailbox here
        ("nobody-here@mx.office.test", "unknown"),  # its alias leads to one
    ],
)
def test_expand(address, expected):
    assert run(address) == expected


def test_without_an_aliases_file_the_hostname_is_a_domain_like_any_other():
    assert run("root@mx.office.test", local=None) == ["root@mx.office.test"]
    assert run("cron@office.test", local=None) == ["root@mx.office.test"]


def test_a_runaway_expansion_stops_at_the_limit():
    assert run("all@office.test", limit=3) == "too_many"
    assert run("all@office.test", limit=4) == [
        "alice@office.test",
        "alice@home.example",
        "Bob@office.test",
        "carol@office.test",
    ]


def test_aliased_says_whether_the_address_itself_has_an_alias():
    assert expand(EmailAddress("sales@office.test"), LOCAL, VIRT, HOST).aliased
    assert expand(EmailAddress("anyone@branch.test"), LOCAL, VIRT, HOST).aliased
    assert not expand(EmailAddress("bob@office.test"), LOCAL, VIRT, HOST).aliased


@pytest.mark.parametrize(
    "text, virtual, problem",
    [
        ("root it@office.test\n", False, "line 1: not name: target"),
        ("root: |/usr/bin/procmail\n", False, "line 1: '|/usr/bin/procmail': pipes are not run"),
        ('root: "|exec /bin/sh"\n', False, "pipes are not run"),
        ("root: /var/mail/root\n", False, "line 1: '/var/mail/root': files are not written"),
        ("root:\n", False, "line 1: 'root' is given no target"),
        (
            "root: a@b.test\n# c\nroot: c@d.test\n",
            False,
            "line 3: 'root' is aliased twice (first at /etc/aliases, line 1)",
        ),
        ("bad name: a@b.test\n", False, "'bad name' is not a local name"),
        ("root: not@valid@x\n", False, "line 1:"),
        ("sales@office.test\n", True, "line 1: 'sales@office.test' is given no target"),
        ("not-an-address x@y.test\n", True, "line 1: 'not-an-address' is not an address or @domain"),
        ("@bad_domain x@y.test\n", True, "line 1: '@bad_domain' is not an address or @domain"),
        ("a@office.test /tmp/file\n", True, "files are not written"),
        ("a@office.test :include:/nonexistent/list\n", True, "line 1: :include:/nonexistent/list: cannot read it"),
    ],
)
def test_a_bad_entry_is_named_with_its_file_and_line(text, virtual, problem):
    with pytest.raises(AliasesFileError, match=problem.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")):
        parse(text, VIRTUAL if virtual else ETC, virtual)


def test_include_files_are_read_relative_to_the_file_and_watched(tmp_path):
    team = tmp_path / "team"
    team.write_text("# the backup team\nalice@office.test,\nbob@office.test  carol\n")
    aliases = tmp_path / "aliases"
    aliases.write_text("carol: carol@office.test\nbackups: :include:team\n")
    watched = AliasesFile(aliases, virtual=False)
    assert watched.value.targets["backups"] == ("alice@office.test", "bob@office.test", "carol")
    assert watched.value.includes == (team,)
    assert run("backups@mx.office.test", local=watched.value, virtual=parse("", VIRTUAL, True)) == [
        "alice@office.test",
        "bob@office.test",
        "carol@office.test",
    ]
    team.write_text("dave@office.test\n")
    assert watched.current().targets["backups"] == ("dave@office.test",)  # an include's edit is seen too
    team.write_text("|/bin/sh\n")
    assert watched.current().targets["backups"] == ("dave@office.test",)  # a bad edit keeps the last good table
    assert watched.error is not None and f"{team}, line 1" in watched.error


def test_includes_that_loop_or_nest_too_deep_are_refused_and_each_file_is_read_once(tmp_path):
    (tmp_path / "self").write_text(":include:self\n")
    with pytest.raises(AliasesFileError, match="includes itself"):
        parse("a: :include:self\n", tmp_path / "aliases", virtual=False)
    for n in range(12):
        (tmp_path / f"f{n}").write_text(f":include:f{n + 1}\n" if n < 11 else "x@office.test\n")
    with pytest.raises(AliasesFileError, match="more than 10 files deep"):
        parse("a: :include:f0\n", tmp_path / "aliases", virtual=False)
    # Each file names the next one four times: 4**8 reads, were each name read anew.
    for n in range(9):
        (tmp_path / f"g{n}").write_text(f":include:g{n + 1}, " * 4 + "\n" if n < 8 else "x@office.test\n")
    table = parse("a: :include:g0\n", tmp_path / "aliases", virtual=False)
    assert table.targets["a"] == ("x@office.test",) and len(table.includes) == 9


def test_an_include_must_be_a_regular_file_of_reasonable_size(tmp_path):
    os.mkfifo(tmp_path / "fifo")  # opened without blocking: nobody writes to it, nothing hangs
    with pytest.raises(AliasesFileError, match="not a regular file"):
        parse("a: :include:fifo\n", tmp_path / "aliases", virtual=False)
    with pytest.raises(AliasesFileError, match="not a regular file"):
        parse("a: :include:/dev/zero\n", tmp_path / "aliases", virtual=False)


def test_an_expansion_takes_linear_time_however_the_aliases_fan_out():
    # l0 → a0, b0; a0 → l1; b0 → l1; ...: 2**40 paths to the one address at the end.
    lines = "".join(f"l{n}: a{n}, b{n}\na{n}: l{n + 1}\nb{n}: l{n + 1}\n" for n in range(40))
    table = parse(lines + "l40: end@office.test\n", ETC, virtual=False)
    assert run("l0@mx.office.test", local=table, virtual=parse("", VIRTUAL, True)) == ["end@office.test"]


def test_a_local_name_listing_itself_has_nowhere_to_keep_its_copy():
    table = parse("root: root, it@office.test\n", ETC, virtual=False)
    assert run("root@mx.office.test", local=table, virtual=parse("", VIRTUAL, True)) == "unknown"


def test_a_hostname_that_is_also_a_mail_domain_keeps_its_mailboxes():
    table = parse("root: it@office.test\n", ETC, virtual=False)
    empty = parse("", VIRTUAL, True)
    got = expand(EmailAddress("bob@office.test"), table, empty, "office.test", mailboxes=("office.test",))
    assert got.targets == ("bob@office.test",) and not got.aliased  # to the internal server, as before
    got = expand(EmailAddress("root@office.test"), table, empty, "office.test", mailboxes=("office.test",))
    assert got.targets == ("it@office.test",)


@pytest.mark.parametrize(
    "text, virtual, key, targets",
    [
        ("lists: owner#x@example.com  # the list's owner\n", False, "lists", ("owner#x@example.com",)),
        ("  # an indented comment\nroot: a@b.test\n", False, "root", ("a@b.test",)),
        (
            "sales@office.test\ta@office.test,\tb@office.test\n",
            True,
            "sales@office.test",
            ("a@office.test", "b@office.test"),
        ),
        ("\ufeffpostmaster: a@b.test\n", False, "postmaster", ("a@b.test",)),
    ],
)
def test_what_aliases5_and_virtual5_allow(text, virtual, key, targets, tmp_path):
    path = tmp_path / "file"
    path.write_text(text, encoding="utf-8")
    assert AliasesFile(path, virtual).value.targets[key] == targets


def test_internationalized_domains_match_in_either_form():
    virtual = parse("verkauf@bücher.test  anna@office.test\n@bücher.test  info@office.test\n", VIRTUAL, virtual=True)
    assert run("verkauf@xn--bcher-kva.test", virtual=virtual) == ["anna@office.test"]
    assert run("VERKAUF@xn--bcher-kva.test", virtual=virtual) == ["anna@office.test"]
    assert run("wer@xn--bcher-kva.test", virtual=virtual) == ["info@office.test"]
    assert run("zoë@office.test", virtual=parse("zoë@office.test  zoe@home.example\n", VIRTUAL, True)) == [
        "zoe@home.example"
    ]
