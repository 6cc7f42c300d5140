"""A local domain's recipients table: parsing, lookups and re-reading on change."""

import os

import pytest

from empath.addresses import AddressSet
from empath.recipients import RecipientsFileError, Table, parse
from empath.watched import FileError


def test_addresses_and_catch_alls_match_without_regard_to_case():
    known = parse("# the office\nAlice@Office.Test\nbob@office.test OK   # a Postfix map line\n\n@lists.office.test\n")
    assert known == AddressSet(frozenset({"alice@office.test", "bob@office.test"}), frozenset({"lists.office.test"}))
    assert known.has("ALICE@office.test") and known.has("bob@OFFICE.test")
    assert known.has("anyone@lists.office.test")
    assert not known.has("carol@office.test") and not known.has("alice@other.test")


def test_an_internationalized_domain_is_stored_as_its_a_labels():
    known = parse("jose@bücher.example\n")
    assert known.has("jose@xn--bcher-kva.example")


@pytest.mark.parametrize("line", ["not an address", "a@b@c.test", "@bad..domain", "<x@y.test>"])
def test_a_bad_line_is_named_by_its_number(line):
    with pytest.raises(RecipientsFileError, match="line 2:"):
        parse(f"ok@office.test\n{line}\n")


def test_the_table_is_read_again_when_the_file_changes_and_kept_when_it_breaks(tmp_path):
    path = tmp_path / "recipients"
    path.write_text("alice@office.test\n")
    table = Table(path)
    assert table.has("alice@office.test") and not table.has("bob@office.test")
    path.write_text("bob@office.test\n")
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))  # a change the clock might not show
    assert table.has("bob@office.test") and not table.has("alice@office.test")
    path.write_text("bob@office.test\nbroken line\n")
    assert table.has("bob@office.test")  # the last good table stands
    assert table.error is not None and "line 2" in table.error


def test_a_missing_file_is_an_error_at_first_read(tmp_path):
    with pytest.raises(FileError, match="No such file"):
        Table(tmp_path / "absent")
