"""DKIM signing's parts: the header list, the signing domain, signatures that
verify (against a public key handed straight to dkimpy), keys that are refused
at --check time with their line, keygen, and where composing a message signs."""

import os
import re
from pathlib import Path

import dkim as dkimpy
import pytest
import tomlkit

from empath import daemon
from empath.cmd import dkim as dkim_cli
from empath.config import ConfigError
from empath.config.model import DkimKey
from empath.config.sections import validate
from empath.message import dkim, submit
from empath.queue.insert import NewRecipient
from empath.queue.spool import Spool

MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: bob@remote.test\r\nSubject: hi\r\n"
    b"Received: from x by y; Tue, 24 Nov 2026 10:00:00 +0000\r\n\r\nhello\r\n"
)


def make_key(directory: Path, algorithm: str = "rsa-sha256", domain: str = "example.org", selector: str = "s1"):
    """A key file and the TXT record value that publishes its public half."""
    private, public = dkim.generate(algorithm, 1024)  # the smallest allowed: fast
    path = directory / f"{selector}.key"
    dkim_cli.write_private(path, private)
    record = dkim.txt_record(domain, selector, algorithm, public)
    value = b"".join(s.encode() for s in re.findall(r'"([^"]*)"', record))
    return DkimKey(domain, selector, path, algorithm), value


def published(records: dict[str, bytes]):
    """A dnsfunc for dkimpy that answers from ``records`` (name without the final dot)."""

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        return records.get(name.decode().rstrip("."))

    return lookup


# -- which fields, which domain --------------------------------------------------------


def test_header_list_signs_each_field_present_and_over_signs_the_singletons():
    h = dkim.header_list(["Received", "From", "To", "Subject", "X-Mailer", "List-Id", "Bcc", "Received"])
    assert h.count("from") == 2 and h.count("subject") == 2 and h.count("to") == 2
    assert h.count("reply-to") == 1  # absent, but signed as absent: it cannot be added
    assert h.count("list-id") == 1  # present once; lists may add others
    assert "list-post" not in h  # absent and not a singleton
    assert not {"received", "bcc", "x-mailer", "return-path"} & set(h)


def test_header_list_counts_repeats():
    assert dkim.header_list(["Cc", "cc", "Resent-To", "Resent-To"]).count("cc") == 3
    assert dkim.header_list(["Resent-To", "Resent-To"]).count("resent-to") == 2


@pytest.mark.parametrize(
    "header, domain",
    [
        (b"From: alice@Example.ORG", "example.org"),
        (b'From: "Smith, Alice" <alice@news.example.org>', "news.example.org"),
        (b"From: =?utf-8?q?J=C3=B6rg?= <j@b\xc3\xbccher.example>", "xn--bcher-kva.example"),
        (b"From: a@x.test, b@y.test", None),  # two authors: no one domain speaks for it
        (b"From: a@x.test\r\nFrom: b@x.test", None),
        (b"Sender: a@x.test", None),
        (b"From: undisclosed", None),
    ],
)
def test_from_domain(header, domain):
    assert dkim.from_domain(header + b"\r\nSubject: x\r\n\r\nbody\r\n") == domain


def test_keys_for_takes_the_domain_or_its_nearest_configured_parent():
    org, news, other = (DkimKey(d, "s", Path("/k")) for d in ("example.org", "news.example.org", "other.test"))
    keys = [org, news, other]
    assert dkim.keys_for("example.org", keys) == [org]
    assert dkim.keys_for("a.news.example.org", keys) == [news]
    assert dkim.keys_for("shop.example.org", keys) == [org]
    assert dkim.keys_for("example.com", keys) == [] and dkim.keys_for(None, keys) == []


# -- signatures --------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "ed25519-sha256"])
def test_a_signature_verifies_and_a_changed_body_or_added_header_does_not(tmp_path, algorithm):
    key, value = make_key(tmp_path, algorithm)
    signing = dkim.sign(MESSAGE, [key])
    assert signing.signed == [key] and not signing.failed
    signed = signing.fields + MESSAGE
    lookup = published({"s1._domainkey.example.org": value})
    assert dkimpy.verify(signed, dnsfunc=lookup)
    assert not dkimpy.verify(signed.replace(b"hello", b"hellO"), dnsfunc=lookup)
    assert not dkimpy.verify(b"Reply-To: evil@x.test\r\n" + signed, dnsfunc=lookup)
    # relaxed/relaxed: re-folded header whitespace in transit does not matter.
    assert dkimpy.verify(signed.replace(b"Subject: hi", b"Subject:   hi"), dnsfunc=lookup)


def test_two_keys_of_a_domain_both_sign(tmp_path):
    rsa_key, rsa_value = make_key(tmp_path, "rsa-sha256", selector="r")
    ed_key, ed_value = make_key(tmp_path, "ed25519-sha256", selector="e")
    signed = dkim.sign(MESSAGE, [rsa_key, ed_key]).fields + MESSAGE
    lookup = published({"r._domainkey.example.org": rsa_value, "e._domainkey.example.org": ed_value})
    checker = dkimpy.DKIM(signed)
    assert checker.verify(idx=0, dnsfunc=lookup) and checker.verify(idx=1, dnsfunc=lookup)


def test_signing_failures_are_reported_never_raised(tmp_path):
    key, _ = make_key(tmp_path)
    other = DkimKey("other.test", "s", tmp_path / "missing.key")
    assert dkim.sign(MESSAGE, [other]) == dkim.Signing()  # not its domain: nothing to do, nothing failed
    gone = DkimKey("example.org", "s", tmp_path / "missing.key")
    signing = dkim.sign(MESSAGE, [gone, key])
    assert signing.signed == [key] and signing.failed[0][0] == gone and "cannot read" in signing.failed[0][1]
    broken = b"From: alice@example.org\r\nthis is no header field\r\n\r\nbody\r\n"
    signing = dkim.sign(broken, [key])
    assert signing.fields == b"" and signing.failed == [(key, signing.failed[0][1])]


# -- keys at --check time ------------------------------------------------------------------


def load(text: str, base: Path):
    path = base / "empath.toml"
    path.write_text(text)
    return validate(tomlkit.parse(text).unwrap(), text, path)


BASE = '[server]\ndata_dir = "/tmp/x"\n[[listeners]]\naddress = "127.0.0.1:2525"\n'


def test_bad_dkim_tables_are_config_errors_with_their_lines(tmp_path):
    text = BASE + (
        '[[dkim]]\ndomain = "example.org"\nselector = "bad_selector"\nkey_file = "k"\nalgorithm = "rsa-sha1"\n'
        '[[dkim]]\ndomain = "example.org"\nselector = "s"\nkey = "k"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load(text, tmp_path)
    problems = "\n".join(caught.value.problems)
    assert "dkim[0].selector (line 7): 'bad_selector' is not a selector" in problems
    assert "dkim[0].algorithm (line 9): must be one of rsa-sha256, ed25519-sha256" in problems
    assert "dkim[1].key (line 13): unknown key" in problems and "dkim[1] (line 10): key_file is required" in problems


def test_key_files_are_checked_with_their_lines(tmp_path):
    good, _ = make_key(tmp_path, "ed25519-sha256", selector="good")
    (tmp_path / "open.key").write_bytes(good.key_file.read_bytes())
    (tmp_path / "open.key").chmod(0o644)
    dkim_cli.write_private(tmp_path / "junk.key", b"-----BEGIN RSA PRIVATE KEY-----\nnot a key\n")
    entries = [
        ("good", good.key_file.name, "ed25519-sha256"),
        ("missing", "missing.key", "rsa-sha256"),
        ("open", "open.key", "ed25519-sha256"),
        ("junk", "junk.key", "rsa-sha256"),
        ("swapped", good.key_file.name, "rsa-sha256"),  # an Ed25519 key named as RSA
    ]
    text = BASE + "".join(
        f'[[dkim]]\ndomain = "example.org"\nselector = "{s}"\nkey_file = "{f}"\nalgorithm = "{a}"\n'
        for s, f, a in entries
    )
    problems = daemon.check(load(text, tmp_path))
    assert (
        problems[0] == f"dkim[1].key_file (line 13): cannot read {tmp_path / 'missing.key'}: No such file or directory"
    )
    assert problems[1].startswith("dkim[2].key_file (line 18): ") and "open to every user: chmod 600" in problems[1]
    assert problems[2].startswith("dkim[3].key_file (line 23): ") and "is not a rsa-sha256 private key" in problems[2]
    assert problems[3].startswith("dkim[4].key_file (line 28): ") and "is not a rsa-sha256 private key" in problems[3]
    assert len(problems) == 4


# -- keygen --------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_0600_once_and_prints_a_record_that_verifies(tmp_path, capsys):
    config = load(BASE, tmp_path)
    args = ["example.org", "mail", "--directory", str(tmp_path / "keys")]
    parser_args = _keygen_args(args)
    assert dkim_cli.command(parser_args, config) == 0
    path = tmp_path / "keys" / "example.org.mail.key"
    assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(path.parent).st_mode & 0o777 == 0o750
    out = capsys.readouterr().out
    [record] = [line for line in out.splitlines() if " IN TXT " in line]
    assert record.startswith('mail._domainkey.example.org. IN TXT "v=DKIM1; k=rsa; p=')
    strings = re.findall(r'"([^"]*)"', record)
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)  # 2048 bits do not fit in one string
    key = DkimKey("example.org", "mail", path)
    assert dkim.key_problem(key) is None
    signed = dkim.sign(MESSAGE, [key]).fields + MESSAGE
    assert dkimpy.verify(signed, dnsfunc=published({"mail._domainkey.example.org": "".join(strings).encode()}))

    before = path.read_bytes()
    assert dkim_cli.command(parser_args, config) == 1
    assert "exists; choose a new selector" in capsys.readouterr().err and path.read_bytes() == before


def test_keygen_refuses_bad_names(tmp_path, capsys):
    config = load(BASE, tmp_path)
    assert dkim_cli.command(_keygen_args(["not a domain", "mail"]), config) == 1
    assert dkim_cli.command(_keygen_args(["example.org", "bad_selector"]), config) == 1
    assert capsys.readouterr().err.count("empathctl: dkim keygen: ") == 2
    assert not (tmp_path / "dkim").exists()


def _keygen_args(argv: list[str]):
    import argparse

    parser = argparse.ArgumentParser()
    dkim_cli.add_verbs(parser.add_subparsers(dest="verb"))
    return parser.parse_args(["dkim", "keygen", *argv])


# -- where composing signs ------------------------------------------------------------------


def compose_with(tmp_path, origin):
    key, value = make_key(tmp_path)
    config = load(BASE + f'[[dkim]]\ndomain = "example.org"\nselector = "s1"\nkey_file = "{key.key_file}"\n', tmp_path)
    envelope = submit.Envelope("alice@example.org", [NewRecipient("bob@remote.test", "remote.test")])
    message, signing = submit.compose(
        config, origin, envelope, Spool.holding(MESSAGE), "01ABCDEFGHJKMNPQ", 1.7e9, "0" * 32
    )
    return message, signing, published({"s1._domainkey.example.org": value})


def smtp_client(trusted: bool, auth_user: str | None) -> submit.SmtpClient:
    return submit.SmtpClient("192.0.2.1", "client.test", "smtp@127.0.0.1:25", "ESMTP", None, auth_user, trusted)


@pytest.mark.parametrize(
    "origin",
    [
        smtp_client(trusted=True, auth_user=None),
        smtp_client(trusted=False, auth_user="alice"),
        submit.LocalUser("cron"),
    ],
)
def test_own_users_mail_is_signed_over_the_headers_empath_adds(tmp_path, origin):
    message, signing, lookup = compose_with(tmp_path, origin)
    stored = message.head + message.body.read()
    assert stored.startswith(b"DKIM-Signature: ") and signing.signed and message.body.read() == MESSAGE
    assert b"\r\nReceived: " in message.head and dkimpy.verify(stored, dnsfunc=lookup)
    assert ("dkim", "signed: d=example.org s=s1 a=rsa-sha256") in message.events


def test_a_strangers_mail_claiming_our_domain_is_not_signed(tmp_path):
    message, signing, _ = compose_with(tmp_path, smtp_client(trusted=False, auth_user=None))
    assert b"DKIM-Signature" not in message.head + message.body.read() and signing == submit.dkim.Signing()
    assert [kind for kind, _ in message.events] == ["received"]
