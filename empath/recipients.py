"""Who exists here: a table of the valid recipients of a local domain.

One address a line (``alice@office.test``), or ``@office.test`` for every
address of that domain (a catch-all); ``#`` starts a comment; whatever
follows the address on its line is ignored, so a Postfix map file
(``alice@office.test OK``) reads as it is. Addresses compare without regard
to case. The table is re-read when its file changes, as the users file is,
so an edit takes effect at the next RCPT without a reload.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from empath import addresses

log = logging.getLogger("empath.smtp")


class RecipientsFileError(Exception):
    pass


@dataclass(frozen=True)
class Known:
    """The addresses a table lists, and the domains it takes whole."""

    addresses: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()

    def has(self, address: str) -> bool:
        address = address.lower()
        return address in self.addresses or address.rpartition("@")[2] in self.domains


def parse(text: str) -> Known:
    """The table in ``text``; RecipientsFileError names the first bad line."""
    found, domains = set(), set()
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        entry = words[0]
        try:
            if entry.startswith("@"):
                domains.add(addresses.parse_domain(entry[1:], utf8=True))
                continue
            mailbox = addresses.parse_path(f"<{entry}>", utf8=True).mailbox
        except addresses.AddressError as exc:
            raise RecipientsFileError(f"line {number}: {entry!r} is not an address or @domain ({exc})") from None
        if mailbox is None:
            raise RecipientsFileError(f"line {number}: {entry!r} is not an address or @domain")
        found.add(mailbox.address.lower())
    return Known(frozenset(found), frozenset(domains))


class Table:
    """One domain's table, read from ``path`` and read again when the file changes.

    A file that cannot be read keeps the last table read (the daemon started,
    or reloaded, only after ``--check`` read it); the error is kept to say why."""

    def __init__(self, path: Path):
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._known = Known()
        self.error: str | None = None
        self.read()

    def read(self) -> None:
        """Read the file if it changed since the last read; RecipientsFileError if it cannot be."""
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if stamp == self._stamp:
                return
            known = parse(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, RecipientsFileError) as exc:
            self.error = f"{self.path}: {exc}"
            raise RecipientsFileError(self.error) from None
        self._stamp, self._known, self.error = stamp, known, None

    def has(self, address: str) -> bool:
        said = self.error
        try:
            self.read()
        except RecipientsFileError as exc:
            if str(exc) != said:  # once a fault, not once a recipient
                log.error("recipients table unreadable, the last one read stands: %s", exc)
        return self._known.has(address)
