"""Envelope addresses: parse the path of MAIL FROM and RCPT TO (RFC 5321 §4.1.2).

Pure code. Parsing is strict about what can change where mail goes (a bare
``@`` in a local part, a broken domain) and records the features that relay
control must look at (a source route, a domain literal, a quoted local part).
"""

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

# RFC 5322 atext; SMTPUTF8 (RFC 6531) adds every non-ASCII character.
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_ATOM_ASCII = re.compile(rf"[{_ATEXT}]+")
_ATOM_UTF8 = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+")
# One DNS label (letters, digits, inner hyphens), for domains and DKIM selectors alike.
DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class AddressError(ValueError):
    """The text is not a valid envelope address; the message says why."""


class NeedsSMTPUTF8(AddressError):
    """The address is valid only in a session that declared SMTPUTF8."""


# Typed values. Each is a str, so it stores in SQLite, prints, hashes and
# compares as its canonical text (Domain("Example.ORG") == "example.org"),
# but mypy rejects a plain str, or the other type, where one is required.
# Calling the class parses and normalises; the result is canonical, so the
# types are never re-checked. ``_trusted`` skips the parse: it is for text
# that is already canonical, because this module's parsers just made it or
# because the queue stored it (empath/queue/ reads rows back with it), and
# nowhere else.


class Domain(str):
    """A domain in lower case with IDNA A-labels, or an address literal
    such as ``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` (``is_literal``)."""

    __slots__ = ()

    def __new__(cls, text: str) -> "Domain":
        canonical = parse_literal(text) if text.startswith("[") else parse_domain(text, utf8=True)
        return str.__new__(cls, canonical)

    @classmethod
    def name(cls, text: str) -> "Domain":
        """A domain name only: an address literal is refused."""
        return str.__new__(cls, parse_domain(text, utf8=True))

    @classmethod
    def _trusted(cls, text: str) -> "Domain":
        return str.__new__(cls, text)

    @property
    def is_literal(self) -> bool:
        return self.startswith("[")


class ReversePath(str):
    """What MAIL FROM carries: an EmailAddress, or the null sender ``<>``
    (``NULL_SENDER``, the empty string). Only an EmailAddress may be used
    where an address is required, so a bounce can never be sent to ``<>``."""

    __slots__ = ()

    def __new__(cls, text: str) -> "ReversePath":
        return NULL_SENDER if text == "" else EmailAddress(text)

    @classmethod
    def _trusted(cls, text: str) -> "ReversePath":
        return NULL_SENDER if text == "" else EmailAddress._trusted(text)

    @property
    def is_null(self) -> bool:
        return self == ""


class EmailAddress(ReversePath):
    """``local@domain``: the local part as given (SMTPUTF8 included, quoted
    only where it must be), the domain a Domain; within RFC 5321
    §4.5.3.1's limits (local part 64, domain 255, path 256 octets)."""

    __slots__ = ()

    def __new__(cls, text: str) -> "EmailAddress":
        return parse_mailbox(text, utf8=True).address

    @classmethod
    def _trusted(cls, text: str) -> "EmailAddress":
        return str.__new__(cls, text)

    @property
    def local(self) -> str:
        """The local part, quotes removed and quoted pairs resolved."""
        local = self.rpartition("@")[0]
        return _parse_quoted(local)[0] if local.startswith('"') else local

    @property
    def domain(self) -> Domain:
        return Domain._trusted(self.rpartition("@")[2])


NULL_SENDER = str.__new__(ReversePath, "")


@dataclass(frozen=True)
class Mailbox:
    local: str  # as written, quotes removed, quoted-pairs resolved
    domain: Domain
    quoted: bool = False
    literal: bool = False

    def __str__(self) -> str:
        return f"{quote_local(self.local)}@{self.domain}"

    @property
    def address(self) -> EmailAddress:
        return EmailAddress._trusted(str(self))


@dataclass(frozen=True)
class Path:
    """What was inside the angle brackets. ``mailbox`` is None for ``<>``."""

    mailbox: Mailbox | None
    source_route: bool = False
    postmaster: bool = False  # the bare <Postmaster> of RFC 5321 §4.5.1

    @property
    def address(self) -> ReversePath:
        return NULL_SENDER if self.mailbox is None else self.mailbox.address


def quote_local(local: str) -> str:
    if all(_ATOM_UTF8.fullmatch(part) for part in local.split(".")):
        return local
    escaped = local.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def split_path(text: str) -> tuple[str, str]:
    """Split ``<path> params`` into the path (brackets kept) and the rest.

    Clients that omit the brackets (old printers do) are accepted when the
    address has no spaces. A ``>`` inside a quoted local part does not end
    the path.
    """
    text = text.lstrip(" ")
    if not text.startswith("<"):
        head, _, rest = text.partition(" ")
        if not head or "<" in head or ">" in head:
            raise AddressError("address must be in angle brackets")
        return "<" + head + ">", rest
    quoted = False
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            rest = text[i + 1 :]
            if rest and not rest.startswith(" "):
                raise AddressError("junk after the closing angle bracket")
            return text[: i + 1], rest.lstrip(" ")
    raise AddressError("missing closing angle bracket")


def parse_path(text: str, utf8: bool = False, allow_null: bool = False) -> Path:
    """Parse ``<...>`` (brackets included) into a Path."""
    # RFC 5321 §4.5.3.1.3: 256 octets, the angle brackets included.
    if len(text.encode("utf-8")) > MAX_PATH:
        raise AddressError("path longer than 256 octets")
    if not (text.startswith("<") and text.endswith(">")):
        raise AddressError("address must be in angle brackets")
    inner = text[1:-1]
    if inner == "":
        if allow_null:
            return Path(None)
        raise AddressError("empty address not allowed here")
    if inner.lower() == "postmaster":
        return Path(None, postmaster=True)
    route = False
    if inner.startswith("@"):
        # A-d-l ":" Mailbox: a source route. RFC 5321 §4.1.1.3 says to ignore
        # it; we check its syntax and let relay control refuse it for strangers.
        adl, colon, inner = inner.partition(":")
        if not colon:
            raise AddressError("source route without ':'")
        for hop in adl.split(","):
            if not hop.startswith("@"):
                raise AddressError("bad source route")
            parse_domain(hop[1:], utf8)
        route = True
    return Path(parse_mailbox(inner, utf8), source_route=route)


def parse_mailbox(text: str, utf8: bool = False) -> Mailbox:
    if not text.isascii() and not utf8:
        raise NeedsSMTPUTF8("non-ASCII address without SMTPUTF8")
    if text.startswith('"'):
        local, rest = _parse_quoted(text)
        quoted = True
        if not rest.startswith("@"):
            raise AddressError("quoted local part must be followed by '@'")
        domain_text = rest[1:]
    else:
        local, at, domain_text = text.rpartition("@")
        if not at:
            raise AddressError("address has no domain")
        quoted = False
        atom = _ATOM_UTF8 if utf8 else _ATOM_ASCII
        if not local or not all(atom.fullmatch(part) for part in local.split(".")):
            raise AddressError("bad local part")
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise AddressError("local part longer than 64 octets")
    if domain_text.startswith("["):
        box = Mailbox(local, Domain._trusted(parse_literal(domain_text)), quoted, literal=True)
    else:
        box = Mailbox(local, Domain._trusted(parse_domain(domain_text, utf8)), quoted)
    # RFC 5321 §4.5.3.1.3: the path, angle brackets included, is at most 256
    # octets as it goes on: counted on the canonical form, here, where a refusal
    # is a reply (A-labels can be longer than the U-labels the client sent).
    if len(str(box).encode("utf-8")) + 2 > MAX_PATH:
        raise AddressError("path longer than 256 octets")
    return box


def _parse_quoted(text: str) -> tuple[str, str]:
    out = []
    i = 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text) or not (" " <= text[i + 1] <= "~"):
                raise AddressError("bad quoted pair")
            out.append(text[i + 1])
            i += 2
            continue
        if ch == '"':
            return "".join(out), text[i + 1 :]
        if ch < " " or ch == "\x7f":
            raise AddressError("control character in quoted local part")
        out.append(ch)
        i += 1
    raise AddressError("unterminated quoted local part")


def parse_domain(text: str, utf8: bool = False) -> str:
    """A domain name, returned in lower case with IDNA A-labels, without the
    trailing dot of its fully qualified form (``office.test.`` is ``office.test``)."""
    text = text.removesuffix(".")
    if not text:
        raise AddressError("empty domain")
    if not text.isascii():
        if not utf8:
            raise NeedsSMTPUTF8("non-ASCII domain without SMTPUTF8")
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise AddressError("bad internationalized domain") from exc
    if len(text) > MAX_DOMAIN:
        raise AddressError("domain longer than 255 octets")
    labels = text.split(".")
    if not all(DNS_LABEL.fullmatch(label) for label in labels):
        raise AddressError("bad domain")
    return text.lower()


def parse_literal(text: str) -> str:
    """An address literal such as [192.0.2.1] or [IPv6:2001:db8::1]."""
    if not (text.startswith("[") and text.endswith("]")):
        raise AddressError("bad address literal")
    inner = text[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            return f"[IPv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
        return f"[{ipaddress.IPv4Address(inner)}]"
    except ValueError as exc:
        raise AddressError("bad address literal") from exc


def parse_helo(text: str) -> str:
    """The argument of HELO/EHLO, kept as given.

    Printers and appliances send names like ``printer_1``; like Postfix we
    accept any single printable word and only record it.
    """
    word = text.strip(" ")
    if not word or len(word) > MAX_DOMAIN or any(ch <= " " or ch == "\x7f" for ch in word):
        raise AddressError("HELO needs one domain or address literal")
    return word


def set_entry(text: str) -> str:
    """An entry of an AddressSet, as a table file gives it: an address (lower case), or
    ``@domain`` for every address of the domain; AddressError says why it is neither."""
    try:
        if text.startswith("@"):
            return "@" + parse_domain(text[1:], utf8=True)
        mailbox = parse_path(f"<{text}>", utf8=True).mailbox
    except AddressError as exc:
        raise AddressError(f"{text!r} is not an address or @domain ({exc})") from None
    if mailbox is None:
        raise AddressError(f"{text!r} is not an address or @domain")
    return mailbox.address.lower()


@dataclass(frozen=True)
class AddressSet:
    """Addresses, and domains whose every address is in the set; compared without regard to case."""

    addresses: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()

    @classmethod
    def of(cls, entries: Iterable[str]) -> "AddressSet":
        """The set of ``entries`` (each from set_entry)."""
        entries = list(entries)
        domains = frozenset(e[1:] for e in entries if e.startswith("@"))
        return cls(frozenset(e for e in entries if not e.startswith("@")), domains)

    def has(self, address: str) -> bool:
        address = address.lower()
        return address in self.addresses or address.rpartition("@")[2] in self.domains
