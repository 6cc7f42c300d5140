"""The sendmail command's pure parts: its argument syntax, reading stdin,
-t recipients and Bcc removal, and the message it builds."""

import io
from pathlib import Path

import pytest
import tomlkit
from config_helpers import GOOD, check

from empath.aliases import Aliases
from empath.cmd.sendmail import (
    Options,
    UsageError,
    _aliases,
    build,
    header_recipients,
    parse_args,
    read_message,
    remove_bcc,
)
from empath.config.sections import validate
from empath.rewrite import Rules
from empath.rewrite import parse as parse_canonical

NO_ALIASES = Aliases(None, None, "mail.example.test", 1000)


def config():
    text = '[server]\nhostname = "host.test"\ndata_dir = "/tmp/x"\n[[listeners]]\naddress = "127.0.0.1:2525"\n'
    return validate(tomlkit.parse(text).unwrap(), text, Path("/tmp/empath.toml"))


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["bob@x.test"], Options(recipients=["bob@x.test"])),
        (["-t", "-i"], Options(from_headers=True, dot_ends=False)),
        (["-oi", "-t"], Options(from_headers=True, dot_ends=False)),
        (["-fme@x.test", "a@b.test"], Options(sender="me@x.test", recipients=["a@b.test"])),
        (
            ["-f", "me@x.test", "-F", "Cron Daemon", "a@b.test"],
            Options(sender="me@x.test", full_name="Cron Daemon", recipients=["a@b.test"]),
        ),
        (["-r", "me@x.test", "--", "-odd@b.test"], Options(sender="me@x.test", recipients=["-odd@b.test"])),
        (["-bp"], Options(mode="list")),
        (["-bs"], Options(mode="smtp")),
        (["-q"], Options(mode="flush")),
        (["-C", "/etc/e.toml", "-oem", "-v", "a@b.test"], Options(config="/etc/e.toml", recipients=["a@b.test"])),
        (["-o", "X", "a@b.test"], Options(recipients=["a@b.test"])),
    ],
)
def test_parse_args(argv, expected):
    assert parse_args(argv) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["-f"],
        ["-bz"],
        ["-Z"],
        # Header injection through the From line's name (tests/regress would call it CRLF injection).
        ["-F", "Eve\r\nBcc: victim@x.test", "a@b.test"],
        ["-FEve\nX-Injected: 1", "a@b.test"],
    ],
)
def test_parse_args_refuses(argv):
    with pytest.raises(UsageError):
        parse_args(argv)


def test_read_message_normalises_line_ends_and_stops_at_a_lone_dot():
    stdin = io.BytesIO(b"Subject: x\n\nline\r\n.\nafter\n")
    assert read_message(stdin, dot_ends=True) == b"Subject: x\r\n\r\nline\r\n"
    stdin = io.BytesIO(b"Subject: x\n\nline\n.\nafter")
    assert read_message(stdin, dot_ends=False) == b"Subject: x\r\n\r\nline\r\n.\r\nafter\r\n"


def test_header_recipients_and_bcc_removal():
    header = (
        b"To: Ann <ann@a.test>, bob@b.test\r\nCc: carol@c.test\r\nBcc: dave@d.test,\r\n eve@e.test\r\nSubject: hi\r\n"
    )
    assert header_recipients(header) == ["ann@a.test", "bob@b.test", "carol@c.test", "dave@d.test", "eve@e.test"]
    cleaned = remove_bcc(header)
    assert b"dave" not in cleaned and b"eve" not in cleaned
    assert cleaned.endswith(b"Subject: hi\r\n")


def test_build_rewrites_a_local_program_s_sender_as_the_office_s_rules_say():
    rules = Rules(parse_canonical("root@example.test  it@example.test\n"), ("example.test",))
    message = b"From: Cron <root@host.example.test>\r\nSubject: backup\r\n\r\nok\r\n"
    opts = Options(sender="root@host.example.test", recipients=["ops@far.test"])
    (msg,), _ = build(opts, message, config(), "root", 1_700_000_000.0, "01ABCDEFGHJKMNPQ", NO_ALIASES, rules)
    assert msg.sender == "it@example.test"
    assert b"From: Cron <it@example.test>\r\n" in msg.head + msg.body.read()
    assert ("rewritten", "sender root@host.example.test as it@example.test") in msg.events


def test_build_adds_headers_qualifies_names_and_keeps_the_body():
    message = b"Subject: backup\r\nBcc: secret@x.test\r\n\r\nall done\r\n"
    opts = Options(from_headers=True, full_name="Cron Daemon", recipients=["root"])
    (msg,), signing = build(opts, message, config(), "backup", 1_700_000_000.0, "01ABCDEFGHJKMNPQ", NO_ALIASES)
    assert msg.sender == "backup@host.test"
    assert [r.address for r in msg.recipients] == ["root@host.test", "secret@x.test"]
    stored = msg.head + msg.body.read()  # what the queue keeps
    assert stored.startswith(
        f"Received: by host.test (Empath, from user backup)\r\n\t(Empath trace {msg.trace_id} on host.test)\r\n"
        "\tid 01ABCDEFGHJKMNPQ;".encode()
    )
    assert b"From: Cron Daemon <backup@host.test>\r\n" in stored
    assert b"Message-ID: <01ABCDEFGHJKMNPQ." in stored and b"\r\nDate: " in stored
    assert b"Bcc:" not in stored and b"secret" not in stored
    assert stored.endswith(b"Subject: backup\r\n\r\nall done\r\n")
    assert msg.size == len(stored)
    assert msg.listener == "sendmail" and msg.events == [("received", "from local user backup via sendmail")]
    assert not signing.signed and not signing.failed  # no [[dkim]] keys


def test_build_without_recipients_is_a_usage_error():
    with pytest.raises(UsageError):
        build(Options(), b"Subject: x\r\n\r\n", config(), "u", 0.0, "Q", NO_ALIASES)


def test_sendmail_goes_on_without_srs_when_it_cannot_read_the_secrets(tmp_path, capsys):
    (tmp_path / "srs.secret").mkdir()  # unreadable as a file, as the daemon's 0600 one is to another user
    text = GOOD + '[relay]\nlocal_domains = ["office.test"]\n[srs]\nsecret_file = "srs.secret"\n'
    aliases = _aliases(check(text, tmp_path / "empath.toml"))
    assert aliases.srs is None
    assert "mail an alias forwards keeps its sender (no SRS)" in capsys.readouterr().err
