"""Control tokens: who may do what over the control socket.

The tokens file holds one ``NAME:SCOPE:SHA256`` line per token (``#`` starts
a comment): a name for the audit log, a scope (``read`` < ``operate`` <
``admin``, each allowing what the ones before it do) and the sha256 of the
token in hex. The token itself is stored nowhere: whoever made it keeps it.
Without a tokens file the socket's file permissions are the authentication,
and whoever can connect has the ``admin`` scope.
"""

import hashlib
import hmac
import re
import stat
from dataclasses import dataclass
from pathlib import Path

READ, OPERATE, ADMIN = "read", "operate", "admin"
SCOPES = (READ, OPERATE, ADMIN)  # each allows what the ones before it do

_LINE = re.compile(r"([A-Za-z0-9_.-]{1,64}):(read|operate|admin):([0-9a-f]{64})")
MAX_TOKEN = 256  # characters; a longer one is no token of ours


class TokensFileError(Exception):
    pass


@dataclass(frozen=True)
class Token:
    name: str
    scope: str
    digest: str  # sha256 of the token, hex


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def parse(text: str) -> tuple[Token, ...]:
    found: list[Token] = []
    names: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.fullmatch(line)
        if not m:
            raise TokensFileError(f"line {number} is not NAME:read|operate|admin:SHA256-OF-TOKEN (64 hex digits)")
        if m.group(1) in names:
            raise TokensFileError(f"line {number}: the name {m.group(1)!r} is used twice")
        names.add(m.group(1))
        found.append(Token(m.group(1), m.group(2), m.group(3)))
    return tuple(found)


def read(path: Path) -> tuple[Token, ...]:
    """The tokens of ``path``; refused if others may read it or anyone but its owner may write it."""
    try:
        st = path.stat()
        if st.st_mode & (stat.S_IRWXO | stat.S_IWGRP):
            raise TokensFileError(
                f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: others must have no access and "
                "its group no write access (chmod 0600 or 0640)"
            )
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise TokensFileError(f"cannot read {path}: {exc}") from None


def find(tokens: tuple[Token, ...], token: str) -> Token | None:
    """The entry whose digest is the token's; every entry is compared, in constant time each."""
    wanted = digest(token)
    match = None
    for entry in tokens:
        if hmac.compare_digest(entry.digest, wanted):
            match = entry
    return match


def allows(held: str, needed: str) -> bool:
    return SCOPES.index(held) >= SCOPES.index(needed)
