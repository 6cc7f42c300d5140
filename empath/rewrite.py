"""Sender rewriting for the office's own mail: a sender canonical table and masquerading.

Cron's mail leaves as root@mail.office.test, which a provider refuses, and a
scanner says it is scanner@printer.office.test. For mail from the office's
own clients (trusted networks, sessions logged in, local programs; a
stranger's mail is never rewritten), the envelope sender and the From,
Sender and Reply-To header fields are rewritten before DKIM signs them:

1. the sender canonical table (Postfix's ``sender_canonical_maps``), one
   ``key value`` a line, asked about the address as given and, if it does not
   know it, as masqueraded (so ``root@office.test`` catches ``root@mail.office.test``)::

       root@office.test      it@office.test
       @old-name.test        @office.test        # the local part kept

2. masquerading (Postfix's ``masquerade_domains``): an address at a
   subdomain of a listed domain loses the subdomain
   (``user@host.office.test`` → ``user@office.test``).

Pure but for the table's file, which is re-read when it changes (watched.py).
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

from empath import addresses
from empath.addresses import AddressError
from empath.watched import Watched, uncommented

SENDER_FIELDS = ("from", "sender", "reply-to")
MAX_ADDRESSES = 100  # addresses rewritten in one field
# An address as a header field writes it outside angle brackets or inside them: an atom run,
# @, a domain. Started only where no word began before it (see _field).
_ADDRESS = re.compile(r"(?<![^\s<,:;])[^\s<>,;:\"()\[\]@\\]+@[A-Za-z0-9.-]+(?![^\s>,;])")


class CanonicalFileError(ValueError):
    pass


@dataclass(frozen=True)
class Canonical:
    """Address → address, and @domain → @domain (the local part kept); keys in lower case."""

    addresses: dict[str, str] = field(default_factory=dict)
    domains: dict[str, str] = field(default_factory=dict)


def parse(text: str) -> Canonical:
    """The table in ``text``; CanonicalFileError names the first bad line."""
    found: dict[str, str] = {}
    domains: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        words = uncommented(line).split()
        if not words:
            continue
        if len(words) != 2:
            raise CanonicalFileError(f"line {number}: not 'address new-address' or '@domain @new-domain'")
        key, value = words
        try:
            key, value = addresses.set_entry(key), addresses.set_entry(value)
        except AddressError as exc:
            raise CanonicalFileError(f"line {number}: {exc}") from None
        if key.startswith("@") != value.startswith("@"):
            raise CanonicalFileError(f"line {number}: an address maps to an address, a @domain to a @domain")
        table = domains if key.startswith("@") else found
        if key in table:
            raise CanonicalFileError(f"line {number}: {key} is listed twice")
        table[key] = value
    return Canonical(found, {k[1:]: v[1:] for k, v in domains.items()})


@dataclass(frozen=True)
class Rules:
    canonical: Canonical = Canonical()
    masquerade: tuple[str, ...] = ()  # domains whose subdomains are stripped

    def address(self, address: str) -> str:
        """``address`` rewritten: the table asked about it as given, else as masqueraded
        (root@office.test in the table catches root@mail.office.test too); then masqueraded."""
        mapped = self._canonical(address)
        if mapped is None:
            address = self._masquerade(address)
            mapped = self._canonical(address)
        return self._masquerade(mapped or address)

    def _canonical(self, address: str) -> str | None:
        local, _, domain = address.rpartition("@")
        if not local:
            return None
        if address.lower() in self.canonical.addresses:
            return self.canonical.addresses[address.lower()]
        new_domain = self.canonical.domains.get(domain.lower())
        return f"{local}@{new_domain}" if new_domain is not None else None

    def _masquerade(self, address: str) -> str:
        local, _, domain = address.rpartition("@")
        for parent in self.masquerade:
            if domain.lower().endswith("." + parent):
                return f"{local}@{parent}"
        return address

    def header_section(self, section: bytes) -> bytes:
        """The header section with the addresses of From, Sender and Reply-To rewritten;
        the fields' other text (display names, comments) and every other field as they were."""
        fields, out = _fields(section), []
        for raw in fields:
            name = raw.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
            out.append(self._field(raw) if name in SENDER_FIELDS else raw)
        return b"".join(out) + section[sum(len(raw) for raw in fields) :]

    def _field(self, raw: bytes) -> bytes:
        """One field with each address in it rewritten once, in one pass: the addresses
        outside quotes and comments (a display name or a comment is not an address), at
        most MAX_ADDRESSES of them (a field of thousands is left, not rewritten slowly)."""
        text = raw.decode("utf-8", "surrogateescape")
        name, colon, value = text.partition(":")
        out, i, quoted, depth, rewritten = [], 0, False, 0, 0
        while i < len(value):
            ch = value[i]
            if (quoted or depth) and ch == "\\":
                out.append(value[i : i + 2])
                i += 2
                continue
            if quoted or depth or ch in '"(':
                quoted ^= ch == '"' and not depth
                depth += (ch == "(" and not quoted) - (ch == ")" and depth > 0 and not quoted)
                out.append(ch)
                i += 1
                continue
            found = _ADDRESS.match(value, i)
            if found is None or rewritten >= MAX_ADDRESSES:
                out.append(ch)
                i += 1
                continue
            out.append(self.address(found.group()))
            rewritten += 1
            i = found.end()
        return f"{name}{colon}{''.join(out)}".encode("utf-8", "surrogateescape")


def _fields(section: bytes) -> list[bytes]:
    """The raw fields of a header section, each with its continuation lines and CRLFs."""
    fields: list[bytes] = []
    for line in section.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


class Rewriter:
    """The config's rules, the table watched: ``rules()`` is what they say now."""

    def __init__(self, canonical: Path | None, masquerade: tuple[str, ...]):
        self.canonical = Watched(canonical, parse, "sender canonical table") if canonical is not None else None
        self.masquerade = masquerade

    @property
    def active(self) -> bool:
        return self.canonical is not None or bool(self.masquerade)

    def rules(self) -> Rules:
        return Rules(self.canonical.current() if self.canonical is not None else Canonical(), self.masquerade)
