"""Aliases: where mail for an address really goes.

Two tables, both optional (``[aliases]`` in the config):

- the **aliases file**, in ``/etc/aliases`` syntax, for local names: what
  ``sendmail root`` and mail to ``root@<hostname>`` or ``root@localhost``
  reach (Postfix's ``alias_maps``)::

      postmaster: root
      root: it@office.test
      backups: :include:/etc/empath/backup-team

- the **virtual alias table**, for addresses of the local domains
  (Postfix's ``virtual_alias_maps``)::

      sales@office.test     alice@office.test, bob@office.test
      alice@office.test     alice@office.test, alice@home.example   # keep a copy, forward one
      @branch.test          it@office.test                           # a catch-all

A target is an address (mail to one outside the local domains is
forwarded), a local name (looked up in the aliases file), or
``:include:/path``, a file of targets. Pipes (``|command``) and files
(``/path``) are refused: Empath delivers by SMTP only. Lines that start with
white space continue the one before; ``#`` starts a comment.

Expansion (``expand``, pure) is recursive and happens once, when a
recipient is accepted: an address whose expansion names it again keeps that
copy and is not expanded further; an address met again further down its own
chain is a loop; more than ``limit`` addresses is a runaway. A local name
with no alias has nowhere to go (there are no local mailboxes): it is
unknown.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

from empath import addresses
from empath.addresses import AddressError, Domain, EmailAddress
from empath.srs import Srs, SrsError, is_srs
from empath.watched import Watched, read_text, uncommented

MAX_INCLUDE_DEPTH = 10  # :include: files within :include: files
MAX_DEPTH = 100  # aliases of aliases, however long the chain
MAX_STEPS_PER_LIMIT = 10  # targets looked at, per address the expansion may reach
NAME_DOMAINS = ("localhost",)  # besides the hostname: the domains of local names


class AliasesFileError(ValueError):
    pass


class BrokenAlias(ValueError):
    """An address whose aliases loop or run away: the aliases' fault, not the address's."""


@dataclass(frozen=True)
class Table:
    """One file's aliases: a key (a local name, an address, or ``@domain``; lower case) →
    its targets (addresses, or local names: without ``@``), with where each key was written."""

    targets: dict[str, tuple[str, ...]] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)  # key → "FILE, line N"
    includes: tuple[Path, ...] = ()  # the :include: files read


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each entry: continuation lines joined, comments dropped."""
    out: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = uncommented(raw).rstrip()
        if not line.strip():
            continue
        if raw[:1] in (" ", "\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + line.strip())
        else:
            out.append((number, line.strip()))
    return out


def _local_name(text: str) -> str:
    """A local name as a key or target: a valid local part, lower case."""
    try:
        addresses.parse_mailbox(f"{text}@localhost", utf8=True)
    except AddressError as exc:
        raise AddressError(f"{text!r} is not a local name or an address ({exc})") from None
    return text.lower()


def _target(text: str, base: Path, depth: int, includes: dict[Path, list[str] | None]) -> list[str]:
    """The targets ``text`` names: itself, or an :include: file's."""
    if text.startswith('"') and text.endswith('"') and len(text) > 1:
        text = text[1:-1]
    if text.startswith("|"):
        raise AddressError(f"{text!r}: pipes are not run (Empath delivers by SMTP only): alias it to an address")
    if text.startswith("/"):
        raise AddressError(f"{text!r}: files are not written (Empath delivers by SMTP only): alias it to an address")
    if text.lower().startswith(":include:"):
        return _include(text[len(":include:") :].strip(), base, depth, includes)
    if "@" in text:
        mailbox = addresses.parse_path(f"<{text}>", utf8=True).mailbox
        if mailbox is None:
            raise AddressError(f"{text!r} is not an address")
        return [mailbox.address]
    return [_local_name(text)]


def _include(name: str, base: Path, depth: int, includes: dict[Path, list[str] | None]) -> list[str]:
    """The targets of an :include: file, each file read once however often it is named
    (``includes``: those read, None while one is being read)."""
    path = base / name if not name.startswith("/") else Path(name)
    if path in includes:
        done = includes[path]
        if done is None:
            raise AddressError(f":include:{name}: includes itself")
        return done
    if depth >= MAX_INCLUDE_DEPTH:
        raise AddressError(f":include:{name}: more than {MAX_INCLUDE_DEPTH} files deep")
    try:
        text = read_text(path)
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise AddressError(f":include:{name}: cannot read it: {exc}") from None
    includes[path] = None
    out = []
    for number, line in _logical_lines(text):
        try:
            for item in _split(line):
                out += _target(item, path.parent, depth + 1, includes)
        except AddressError as exc:
            raise AddressError(f"{path}, line {number}: {exc}") from None
    includes[path] = out = list(dict.fromkeys(out))
    return out


def _split(targets: str) -> list[str]:
    """The targets of an entry: separated by commas or white space, except within quotes."""
    items, current, quoted = [], "", False
    for ch in targets:
        if ch == '"':
            quoted = not quoted
        if not quoted and (ch == "," or ch.isspace()):
            items.append(current)
            current = ""
        else:
            current += ch
    return [item for item in [*items, current] if item]


def parse(text: str, path: Path, virtual: bool) -> Table:
    """One file's table; AliasesFileError names the file and line of the first problem.
    ``virtual``: keys are addresses or @domain, the colon after them optional;
    else (the aliases file) keys are local names followed by a colon."""
    targets: dict[str, tuple[str, ...]] = {}
    where: dict[str, str] = {}
    includes: dict[Path, list[str] | None] = {}
    for number, line in _logical_lines(text):
        at = f"{path}, line {number}"
        if virtual:
            key_text, rest = (line.split(None, 1) + [""])[:2]  # a space or a tab after the key
            key_text, colon, after = key_text.partition(":")
            rest = f"{after} {rest}" if colon else rest
        else:
            key_text, colon, rest = line.partition(":")
            if not colon:
                raise AliasesFileError(f"{at}: not name: target, target, ...")
        key_text = key_text.strip().strip('"')
        try:
            key = _virtual_key(key_text) if virtual else _local_name(key_text)
            found = [t for item in _split(rest) for t in _target(item, path.parent, 0, includes)]
        except AddressError as exc:
            raise AliasesFileError(f"{at}: {exc}") from None
        if not found:
            raise AliasesFileError(f"{at}: {key_text!r} is given no target")
        if key in targets:
            raise AliasesFileError(f"{at}: {key_text!r} is aliased twice (first at {where[key]})")
        targets[key] = tuple(dict.fromkeys(found))
        where[key] = at
    return Table(targets, where, tuple(includes))


def _virtual_key(text: str) -> str:
    if not text:
        raise AddressError("no address before the targets")
    return addresses.set_entry(text)


@dataclass(frozen=True)
class Expansion:
    """Where mail for one address goes: its final recipients, or why it cannot go."""

    targets: tuple[EmailAddress, ...] = ()
    problem: str | None = None  # "unknown", "loop", "too_many" or "srs" (a bad SRS address)
    aliased: bool = False  # an alias of it was found (it exists, whatever else says so)
    bounces_only: bool = False  # an SRS address: taken with the null sender only (srs.py)


def name_domains(hostname: str) -> tuple[str, ...]:
    """The domains of local names, with an aliases file (Postfix's mydestination)."""
    return (hostname, *NAME_DOMAINS)


class _Stop(Exception):
    def __init__(self, problem: str):
        self.problem = problem


def expand(
    address: EmailAddress,
    local: Table | None,
    virtual: Table,
    hostname: str,
    limit: int = 1000,
    names: tuple[str, ...] | None = None,
    mailboxes: tuple[str, ...] = (),
) -> Expansion:
    """The final recipients of ``address`` (pure): the virtual table first (the address,
    then, for a local name, the aliases file, then the domain's catch-all), recursively.
    ``names``: the domains of local names (default: the hostname and localhost); none
    when ``local`` is None (no aliases file). ``mailboxes``: local domains, whose
    addresses the aliases file does not name are delivered to their route like any
    other's (a hostname that is also the mail domain), not refused as unknown.

    Each address is expanded once, however many aliases lead to it, and the work is
    bounded: a file cannot make a RCPT take exponential time, or any time to speak of."""
    if local is None:
        names = ()
    elif names is None:
        names = name_domains(hostname)
    final: dict[str, EmailAddress] = {}
    done: set[str] = set()
    steps = 0

    def targets_of(addr: EmailAddress) -> tuple[str, ...] | None:
        found = virtual.targets.get(addr.lower())
        if found is None and local is not None and addr.domain in names:
            found = local.targets.get(addr.local.lower())
        if found is None:
            found = virtual.targets.get(f"@{addr.domain}")
        return found

    def keep(addr: EmailAddress) -> None:
        if addr.domain in names and addr.domain not in mailboxes:
            raise _Stop("unknown")  # a local name with nowhere to go: there are no local mailboxes
        final.setdefault(addr.lower(), addr)
        if len(final) > limit:
            raise _Stop("too_many")

    def walk(addr: EmailAddress, chain: tuple[str, ...]) -> None:
        nonlocal steps
        found = targets_of(addr)
        if found is None:
            keep(addr)
            return
        if len(chain) > MAX_DEPTH:
            raise _Stop("loop")
        for text in found:
            steps += 1
            if steps > MAX_STEPS_PER_LIMIT * limit:
                raise _Stop("too_many")
            target = EmailAddress._trusted(text if "@" in text else f"{text}@{hostname}")
            key = target.lower()
            if key == addr.lower():  # itself among its targets: this copy stays here
                keep(target)
            elif key in chain:
                raise _Stop("loop")
            elif key not in done:
                walk(target, (*chain, addr.lower()))
                done.add(key)

    aliased = targets_of(address) is not None
    try:
        walk(address, ())
    except _Stop as stop:
        return Expansion(problem=stop.problem, aliased=aliased)
    return Expansion(tuple(final.values()), aliased=aliased)


NO_TABLE = Table()  # the virtual table when the config names none


class AliasesFile(Watched[Table]):
    """An aliases or virtual file, read again when it or one of its :include: files changes."""

    def __init__(self, path: Path, virtual: bool):
        what = "virtual alias table" if virtual else "aliases file"
        super().__init__(path, lambda text: parse(text, path, virtual), what, lambda table: table.includes)


class Aliases:
    """The aliases the config names, each file watched: what ``expand`` asks of them."""

    def __init__(
        self,
        file: Path | None,
        virtual: Path | None,
        hostname: str,
        limit: int,
        srs: Srs | None = None,
        local_domains: tuple[str, ...] = (),
    ):
        self.local = AliasesFile(file, virtual=False) if file is not None else None
        self.virtual = AliasesFile(virtual, virtual=True) if virtual is not None else None
        self.hostname = hostname
        self.limit = limit
        self.local_domains = local_domains
        self.srs = srs  # a bounce to a rewritten sender goes back to the sender it stands for

    @property
    def name_domains(self) -> tuple[str, ...]:
        """The domains whose addresses are local names: none without an aliases file."""
        return name_domains(self.hostname) if self.local is not None else ()

    def _unforward(self, address: EmailAddress) -> Expansion:
        """An SRS address of ours, as an alias of the sender it stands for, for bounces
        only; forged or expired: refused."""
        assert self.srs is not None
        try:
            original = self.srs.original(address, time.time())
            assert original is not None
            target = addresses.parse_mailbox(original, utf8=True).address
        except (SrsError, AddressError):
            return Expansion(problem="srs", aliased=True)
        return Expansion((target,), aliased=True, bounces_only=True)

    @property
    def ours(self) -> tuple[Domain, ...]:
        """The local domains and, with an aliases file, the domains of local names after them
        (mail for them is taken from anyone, as Postfix's mydestination)."""
        local = tuple(Domain._trusted(d) for d in self.local_domains)
        return (*local, *(Domain._trusted(d) for d in self.name_domains if d not in self.local_domains))

    def expand_all(self, given: list[EmailAddress]) -> list[tuple[EmailAddress, tuple[EmailAddress, ...]]]:
        """Each address with what its aliases expand to (() if none); AddressError names one
        that is unknown, BrokenAlias one whose aliases are at fault (a loop, a runaway). What
        sendmail does with its recipients, as a session does at RCPT."""
        out = []
        for address in given:
            expansion = self.expand(address)
            if expansion.problem in ("loop", "too_many"):
                raise BrokenAlias(f"{address}: {PROBLEMS[expansion.problem]}")
            if expansion.problem is not None:
                raise AddressError(f"{address}: {PROBLEMS[expansion.problem]}")
            out.append((address, expansion.targets if expansion.aliased else ()))
        return out

    def expand(self, address: EmailAddress) -> Expansion:
        if self.srs is not None and address.domain == self.srs.domain and is_srs(address.local):
            return self._unforward(address)
        local = self.local.current() if self.local is not None else None
        virtual = self.virtual.current() if self.virtual is not None else NO_TABLE
        return expand(address, local, virtual, self.hostname, self.limit, mailboxes=self.local_domains)

    def problems(self) -> list[tuple[str, str]]:
        """What --check finds wrong with entries that parse (key, why): a virtual key outside the
        local domains, every key whose expansion loops, runs away or reaches an unaliased local
        name, and a postmaster who reaches nobody (RFC 5321 §4.5.1: it must be taken)."""
        found = []
        ours = (*self.local_domains, *self.name_domains)
        for watched, kind in ((self.virtual, "virtual"), (self.local, "file")):
            if watched is None:
                continue
            table = watched.value
            for key, where in table.where.items():
                domain = key.rpartition("@")[2] if kind == "virtual" else self.hostname
                if domain not in ours:
                    found.append((f"aliases.{kind}", f"{where}: {key}: not an address of a local domain"))
                    continue
                sample = key if "@" in key[1:] else f"{key}@{domain}" if kind == "file" else f"x{key}"
                problem = self.expand(EmailAddress._trusted(sample)).problem
                if problem is not None:
                    found.append((f"aliases.{kind}", f"{where}: {key}: {PROBLEMS[problem]}"))
        if self.local is not None and self.hostname not in self.local_domains:
            postmaster = self.expand(EmailAddress._trusted(f"postmaster@{self.hostname}"))
            if postmaster.problem is not None and "postmaster" not in self.local.value.where:
                found.append(("aliases.file", "postmaster has no alias: mail to the postmaster must reach someone"))
        return found


# What --check says of a key whose expansion fails, and the RCPT refusals say too.
PROBLEMS = {
    "unknown": "leads to a local name with no alias, and there are no local mailboxes: alias it to an address",
    "loop": "its aliases loop back to it",
    "too_many": "expands to more addresses than aliases.expansion_limit",
    "srs": "is not a rewritten sender of ours (SRS): forged, expired or malformed",
}
