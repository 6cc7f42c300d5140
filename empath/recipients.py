"""Who exists here: a table of the valid recipients of a local domain, and
the answers recipient verification gives (delivery/verify.py asks the next hop).

One address a line (``alice@office.test``), or ``@office.test`` for every
address of that domain (a catch-all); ``#`` starts a comment; whatever
follows the address on its line is ignored, so a Postfix map file
(``alice@office.test OK``) reads as it is. Addresses compare without regard
to case. The table is re-read when its file changes, as the users file is,
so an edit takes effect at the next RCPT without a reload.
"""

import enum
from pathlib import Path

from empath import addresses
from empath.addresses import AddressSet
from empath.watched import Watched, uncommented


class RecipientsFileError(ValueError):
    pass


class Existence(enum.Enum):
    """Does a recipient exist? As a callout finds out."""

    EXISTS = "exists"
    UNKNOWN = "unknown"  # the next hop refused it for good: 550 5.1.1
    UNVERIFIED = "unverified"  # no answer could be had (next hop down, a 4xx, too slow): 450 4.1.1


def parse(text: str) -> AddressSet:
    """The table in ``text``; RecipientsFileError names the first bad line."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = uncommented(line).split()
        if not words:
            continue
        try:
            entries.append(addresses.set_entry(words[0]))
        except addresses.AddressError as exc:
            raise RecipientsFileError(f"line {number}: {exc}") from None
    return AddressSet.of(entries)


class Table(Watched[AddressSet]):
    """One domain's table, read from ``path`` and read again when the file changes (watched.py)."""

    def __init__(self, path: Path):
        super().__init__(path, parse, "recipients table")

    def has(self, address: str) -> bool:
        return self.current().has(address)
