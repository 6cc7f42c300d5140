"""Who may send as whom: the envelope senders each AUTH user may use.

A listener with ``sender_ownership`` (on by default for submission and
smtps) refuses, with 553 5.7.1, a MAIL FROM that the logged-in user does not
own: alice cannot send as director@office.test (Postfix's
``reject_sender_login_mismatch``; the From header is the mail program's). The table, ``[auth] senders``,
lists each user's addresses, and ``@domain`` for all of a domain's::

    alice: alice@office.test, a.smith@office.test
    scanner: scans@office.test
    director: @office.test

A user it does not list owns the one address the login names: the login
itself when it is an address, else login@ any local domain (the local part
exactly as the login: user names are case-sensitive). The null sender
is nobody's to refuse. Re-read when the file changes (watched.py).
"""

from pathlib import Path

from empath import addresses
from empath.addresses import AddressSet
from empath.users import valid_name
from empath.watched import Watched, uncommented


class SendersFileError(ValueError):
    pass


def parse(text: str) -> dict[str, AddressSet]:
    """The table in ``text``; SendersFileError names the first bad line."""
    table = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = uncommented(line).strip()
        if not line:
            continue
        user, colon, rest = line.partition(":")
        user = user.strip()
        if not colon or not valid_name(user):
            raise SendersFileError(f"line {number}: not user: address, address, @domain")
        if user in table:
            raise SendersFileError(f"line {number}: {user!r} is listed twice")
        try:
            entries = [addresses.set_entry(entry) for entry in rest.replace(",", " ").split()]
        except addresses.AddressError as exc:
            raise SendersFileError(f"line {number}: {exc}") from None
        if not entries:
            raise SendersFileError(f"line {number}: {user!r} is given no address")
        table[user] = AddressSet.of(entries)
    return table


def may_send_as(user: str, sender: str, table: dict[str, AddressSet], local_domains: tuple[str, ...]) -> bool:
    """May the AUTH user ``user`` use ``sender`` (not <>) as the envelope sender? (pure)

    Unlisted, a user owns the address its login names, its local part exactly as the login
    (user names are case-sensitive: Alice is not alice), its domain in any case."""
    owned = table.get(user)
    if owned is not None:
        return owned.has(sender)
    local, _, domain = sender.rpartition("@")
    domain = domain.lower()
    if "@" in user:
        login_local, _, login_domain = user.rpartition("@")
        return local == login_local and domain == login_domain.lower()
    return local == user and domain in local_domains


class Senders(Watched[dict[str, AddressSet]]):
    def __init__(self, path: Path):
        super().__init__(path, parse, "senders table")
