"""A file read into a value, and read again when it changes (its mtime, size or
inode: a file replaced by rename keeps neither), so that an edit takes effect
at the next look, without a reload. The tables of who exists here and who may
send as whom are read this way."""

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger("empath")
T = TypeVar("T")


class FileError(Exception):
    """The file cannot be read, or does not parse; the text names the file and, where it can, the line."""


class Watched(Generic[T]):
    """``parse`` of the file at ``path`` (which raises ValueError for what it cannot take).

    Read once when made (FileError if it cannot be: ``--check`` and the daemon's
    start say so). Afterwards a file that cannot be read keeps the last value
    read, and the error is kept (``error``) and logged once, not at every look."""

    def __init__(self, path: Path, parse: Callable[[str], T], what: str):
        self.path = path
        self.what = what
        self._parse = parse
        self._stamp: tuple[int, int, int] | None = None
        self.error: str | None = None
        self.value = self._read()

    def _read(self) -> T:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            value = self._parse(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            self.error = f"{self.path}: {exc}"
            raise FileError(self.error) from None
        self._stamp, self.error = stamp, None
        return value

    def current(self) -> T:
        """The value, read again first if the file changed."""
        try:
            st = os.stat(self.path)
            if (st.st_mtime_ns, st.st_size, st.st_ino) != self._stamp:
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
