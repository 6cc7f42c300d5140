"""A file read into a value, and read again when it changes (its mtime, size or
inode: a file replaced by rename keeps neither), so that an edit takes effect
at the next look, without a reload. The tables of who exists here and who may
send as whom are read this way."""

import logging
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger("empath")
T = TypeVar("T")


class FileError(Exception):
    """The file cannot be read, or does not parse; the text names the file and, where it can, the line."""


MAX_FILE = 16 << 20  # bytes a table may have: a typo naming /dev/zero must not eat the memory


def read_text(path: Path, limit: int = MAX_FILE) -> str:
    """A table file's text, UTF-8 (a BOM dropped). Only a regular file, opened without
    blocking (a FIFO named by mistake must not hang the daemon) and at most ``limit``
    bytes; ValueError says why not, OSError if it cannot be opened."""
    if not stat.S_ISREG(os.stat(path).st_mode):  # before opening: a device is never opened
        raise ValueError("not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for one between the two looks
            raise ValueError("not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data.decode("utf-8-sig")


def uncommented(line: str) -> str:
    """A table file's line without its comment: a ``#`` that starts the line or follows
    white space, outside quotes. One inside a word is part of it (``owner#x@example.com``),
    as aliases(5) and Postfix's tables read it."""
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def _stamp(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Watched(Generic[T]):
    """``parse`` of the file at ``path`` (which raises ValueError for what it cannot take).

    Read once when made (FileError if it cannot be: ``--check`` and the daemon's
    start say so). Afterwards a file that cannot be read keeps the last value
    read, and the error is kept (``error``) and logged once, not at every look.
    ``depends``: the other files a value was read from (an :include:), watched too."""

    def __init__(
        self,
        path: Path,
        parse: Callable[[str], T],
        what: str,
        depends: Callable[[T], Iterable[Path]] = lambda value: (),
    ):
        self.path = path
        self.what = what
        self._parse = parse
        self._depends = depends
        self._stamps: tuple[tuple[int, int, int], ...] = ()
        self.error: str | None = None
        self.value = self._read()

    def _read(self) -> T:
        try:
            stamp = _stamp(self.path)
            value = self._parse(read_text(self.path))
            stamps = (stamp, *(_stamp(p) for p in self._depends(value)))
        except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            said = str(exc)  # a parser that names the file (and its line) says it once
            self.error = said if said.startswith(str(self.path)) else f"{self.path}: {said}"
            raise FileError(self.error) from None
        self._stamps, self.error = stamps, None
        return value

    def current(self) -> T:
        """The value, read again first if the file (or one it depends on) changed."""
        try:
            stamps = (_stamp(self.path), *(_stamp(p) for p in self._depends(self.value)))
            if stamps != self._stamps:
                self.value = self._read()
        except OSError as exc:
            self._fault(f"{self.path}: {exc}")
        except FileError as exc:
            self._fault(str(exc))
        return self.value

    def _fault(self, text: str) -> None:
        if text != self.error:  # once a fault, not once a look
            log.error("%s unreadable, the last one read stands: %s", self.what, text)
        self.error = text
