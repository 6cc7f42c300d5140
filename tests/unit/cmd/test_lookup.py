"""empathctl expand and senders (cmd/lookup.py): what the files say, without a daemon."""

from config_helpers import AUTH, GOOD, check

from empath.cmd import lookup


def config(tmp_path, senders: bool = True):
    (tmp_path / "aliases").write_text("postmaster: it@office.test\nroot: it@office.test\n")
    (tmp_path / "senders").write_text("alice: alice@office.test, @sales.office.test\n")
    text = GOOD + AUTH + ('senders = "senders"\n' if senders else "")
    text += '[relay]\nlocal_domains = ["office.test", "sales.office.test"]\n[aliases]\nfile = "aliases"\n'
    return check(text, tmp_path / "empath.toml")


def test_expand(tmp_path):
    assert lookup.expand(config(tmp_path), ["root", "<nobody>", "bob@office.test", "not an address"]) == [
        "root@mx.example.test: it@office.test",
        "nobody@mx.example.test: refused: leads to a local name with no alias, and there are no local mailboxes:"
        " alias it to an address",
        "bob@office.test: not aliased (delivered as it is)",
        "not an address: not an address (bad local part)",
    ]


def test_senders(tmp_path):
    assert lookup.owned(config(tmp_path), "alice") == (
        f"alice: alice@office.test, @sales.office.test (the senders table {tmp_path / 'senders'})"
    )
    assert lookup.owned(config(tmp_path), "bob@far.test") == (
        "bob@far.test: bob@far.test (the login itself: no line in the senders table)"
    )
    assert lookup.owned(config(tmp_path, senders=False), "carol") == (
        "carol: carol@office.test, carol@sales.office.test"
        " (the login at each local domain: no line in the senders table)"
    )
