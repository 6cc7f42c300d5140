"""The AUTH users file: one ``name:scrypt$n$r$p$salt$hash`` line per user.

Passwords are stored as salted scrypt hashes; they are never logged. The
file is re-read when it changes, so ``empathctl user add`` takes effect at
once.
"""

import base64
import functools
import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path

# scrypt cost: about 16 MiB and tens of milliseconds per check.
N, R, P = 2**14, 8, 1


class UsersFileError(Exception):
    pass


def hash_password(password: str, n: int = N, r: int = R, p: int = P) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=64 * 1024 * 1024)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=64 * 1024 * 1024,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_hex(8))


def valid_name(name: str) -> bool:
    return 0 < len(name) <= 255 and ":" not in name and name.isprintable() and name.strip() == name


def parse(text: str) -> dict[str, str]:
    users = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, stored = line.partition(":")
        if not colon or not valid_name(name) or not stored.startswith("scrypt$"):
            raise UsersFileError(f"line {number} is not name:scrypt$...")
        users[name] = stored
    return users


def render(users: dict[str, str]) -> str:
    return "".join(f"{name}:{stored}\n" for name, stored in sorted(users.items()))


def read(path: Path) -> dict[str, str]:
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsersFileError(f"cannot read {path}: {exc}") from None


def write(path: Path, users: dict[str, str]) -> None:
    """Replace the file atomically, readable by its owner only."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".users.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(render(users))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Users:
    """The users the daemon checks AUTH against, re-read when the file changes."""

    def __init__(self, path: Path):
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, str] = {}

    def _refresh(self) -> None:
        st = self.path.stat()
        # write() replaces the file, so the inode changes even when mtime and size do not.
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._users = read(self.path)
            self._stamp = stamp

    def verify(self, name: str, password: str) -> bool:
        """True if the password is right. Raises UsersFileError if the file is unreadable."""
        try:
            self._refresh()
        except OSError as exc:
            raise UsersFileError(f"cannot read {self.path}: {exc}") from None
        stored = self._users.get(name)
        if stored is None:
            # Spend the same time on unknown names, so timing does not reveal them.
            check_password(password, _dummy_hash())
            return False
        return check_password(password, stored)
