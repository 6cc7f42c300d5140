"""The AUTH users file: scrypt hashes, parsing, and re-reading on change."""

import os
import stat

import pytest

from empath import users
from empath.users import Users, UsersFileError, check_password, hash_password

# A tiny scrypt cost keeps the tests fast; the format records it per hash.
COST = dict(n=16, r=1, p=1)


def cheap(password: str) -> str:
    return hash_password(password, **COST)


def test_hash_round_trip():
    stored = cheap("correct horse")
    assert stored.startswith("scrypt$16$1$1$")
    assert check_password("correct horse", stored)


@pytest.mark.parametrize("wrong", ["correct hors", "Correct horse", "", "correct horse "])
def test_wrong_password(wrong):
    assert not check_password(wrong, cheap("correct horse"))


def test_hashes_are_salted():
    assert cheap("pw") != cheap("pw")


def test_unicode_password():
    stored = cheap("pässwörd ☃")
    assert check_password("pässwörd ☃", stored)
    assert not check_password("passwort", stored)


def test_default_cost_is_recorded():
    assert hash_password("pw").startswith(f"scrypt${users.N}${users.R}${users.P}$")


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "scrypt",
        "scrypt$16$1$1$c2FsdA==",  # no digest
        "bcrypt$16$1$1$c2FsdA==$ZGlnZXN0",
        "scrypt$x$1$1$c2FsdA==$ZGlnZXN0",
        "scrypt$15$1$1$c2FsdA==$ZGlnZXN0",  # n not a power of two
        "scrypt$16$1$1$!!!$ZGlnZXN0",
        "scrypt$16$1$1$c2FsdA==$!!!",
        "scrypt$16$1$1$c2FsdA==$ZGlnZXN0$extra",
    ],
)
def test_check_password_with_a_broken_hash_is_false(stored):
    assert check_password("pw", stored) is False


def test_parse_skips_comments_and_blank_lines():
    a, b = cheap("a"), cheap("b")
    text = f"# users\n\nalice:{a}\n  \n  bob:{b}  \n"
    assert users.parse(text) == {"alice": a, "bob": b}


@pytest.mark.parametrize(
    "bad_line",
    [
        "alice",
        "alice scrypt$16$1$1$x$y",
        "alice:plaintext",
        ":scrypt$16$1$1$x$y",
        "al\x01ice:scrypt$16$1$1$x$y",
        "alice :scrypt$16$1$1$x$y",
    ],
)
def test_parse_errors_name_the_line(bad_line):
    text = f"# header\nbob:{cheap('b')}\n{bad_line}\n"
    with pytest.raises(UsersFileError, match="line 3"):
        users.parse(text)


@pytest.mark.parametrize(
    "name, valid",
    [
        ("alice", True),
        ("alice@example.test", True),
        ("x" * 255, True),
        ("", False),
        ("x" * 256, False),
        ("a:b", False),
        (" alice", False),
        ("alice\n", False),
    ],
)
def test_valid_name(name, valid):
    assert users.valid_name(name) is valid


def test_write_and_read(tmp_path):
    path = tmp_path / "users"
    entries = {"bob": cheap("b"), "alice": cheap("a")}
    users.write(path, entries)
    assert users.read(path) == entries
    assert path.read_text().splitlines()[0].startswith("alice:")  # sorted
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["users"]  # no temporary file left


def test_read_missing_file(tmp_path):
    with pytest.raises(UsersFileError, match="cannot read"):
        users.read(tmp_path / "nope")


def _bump_mtime(path, seconds: int) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 1_000_000_000))


def test_users_verify(tmp_path):
    path = tmp_path / "users"
    users.write(path, {"alice": cheap("secret")})
    checker = Users(path)
    assert checker.verify("alice", "secret")
    assert not checker.verify("alice", "wrong")
    assert not checker.verify("mallory", "secret")


def test_an_unknown_name_costs_the_same_scrypt_as_a_wrong_password(tmp_path, monkeypatch):
    # Timing must not tell a guesser which names exist: the same work either way.
    path = tmp_path / "users"
    users.write(path, {"alice": hash_password("secret")})  # the default cost, as empathctl writes it
    checker = Users(path)
    users._dummy_hash()  # made once per process, before any check is timed
    calls = []
    real = users.hashlib.scrypt

    def spy(password, **kwargs):
        calls.append({k: kwargs[k] for k in ("n", "r", "p", "dklen")})
        return real(password, **kwargs)

    monkeypatch.setattr(users.hashlib, "scrypt", spy)
    assert not checker.verify("alice", "wrong")
    known, calls[:] = list(calls), []
    assert not checker.verify("mallory", "wrong")
    assert calls == known and len(known) == 1


def test_users_rereads_the_file_when_it_changes(tmp_path):
    path = tmp_path / "users"
    users.write(path, {"alice": cheap("old")})
    checker = Users(path)
    assert checker.verify("alice", "old")
    users.write(path, {"alice": cheap("new"), "bob": cheap("b")})
    _bump_mtime(path, 1)
    assert checker.verify("alice", "new")
    assert not checker.verify("alice", "old")
    assert checker.verify("bob", "b")


def test_users_rereads_when_only_the_mtime_changes(tmp_path):
    path = tmp_path / "users"
    users.write(path, {"alice": cheap("one")})
    checker = Users(path)
    assert checker.verify("alice", "one")
    users.write(path, {"alice": cheap("two")})  # same size
    _bump_mtime(path, 2)
    assert checker.verify("alice", "two")


def test_users_file_removed(tmp_path):
    path = tmp_path / "users"
    users.write(path, {"alice": cheap("pw")})
    checker = Users(path)
    assert checker.verify("alice", "pw")
    path.unlink()
    with pytest.raises(UsersFileError, match="cannot read"):
        checker.verify("alice", "pw")


def test_users_broken_file_then_fixed(tmp_path):
    path = tmp_path / "users"
    path.write_text("alice:oops\n")
    checker = Users(path)
    with pytest.raises(UsersFileError, match="line 1"):
        checker.verify("alice", "pw")
    users.write(path, {"alice": cheap("pw")})
    _bump_mtime(path, 3)
    assert checker.verify("alice", "pw")
