"""The ``empathctl expand`` and ``empathctl senders`` verbs: what the tables say of an
address or a user, without sending mail (Postfix's ``postmap -q`` and ``sendmail -bv``).
They read the files the config names; no daemon is needed. (Whether a recipient
verifies by callout is the daemon's to ask: ``empathctl verify``.)"""

import argparse
import sys

from empath import addresses, senders
from empath.aliases import PROBLEMS
from empath.config import Config
from empath.config.files import alias_tables
from empath.watched import FileError

VERBS = ("expand", "senders")


def add_verbs(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    expand = verbs.add_parser("expand", help="where mail for an address goes: its aliases, expanded")
    expand.add_argument("addresses", nargs="+", metavar="ADDRESS", help="an address, or a local name (root)")
    owner = verbs.add_parser("senders", help="the envelope senders a user logged in may use")
    owner.add_argument("user")


def command(args: argparse.Namespace, config: Config) -> int:
    try:
        lines = expand(config, args.addresses) if args.verb == "expand" else [owned(config, args.user)]
    except FileError as exc:
        print(f"empathctl: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


def expand(config: Config, given: list[str]) -> list[str]:
    """``ADDRESS: TARGET, ...`` for each, as a RCPT (or sendmail) would have it."""
    tables = alias_tables(config)
    lines = []
    for given_text in given:
        text = given_text.strip().strip("<>")  # as sendmail takes it, brackets or not
        try:
            mailbox = addresses.parse_mailbox(text if "@" in text else f"{text}@{config.hostname}", utf8=True)
        except addresses.AddressError as exc:
            lines.append(f"{text}: not an address ({exc})")
            continue
        result = tables.expand(mailbox.address)
        if result.problem is not None:
            lines.append(f"{mailbox.address}: refused: {PROBLEMS[result.problem]}")
        elif not result.aliased:
            lines.append(f"{mailbox.address}: not aliased (delivered as it is)")
        else:
            lines.append(f"{mailbox.address}: {', '.join(result.targets)}")
    return lines


def owned(config: Config, user: str) -> str:
    table = senders.Senders(config.senders_file).value if config.senders_file is not None else {}
    entry = table.get(user)
    if entry is not None:
        given = sorted(entry.addresses) + sorted(f"@{d}" for d in entry.domains)
        return f"{user}: {', '.join(given)} (the senders table {config.senders_file})"
    if "@" in user:
        return f"{user}: {user} (the login itself: no line in the senders table)"
    domains = ", ".join(f"{user}@{d}" for d in config.local_domains) or "nothing (no local domains)"
    return f"{user}: {domains} (the login at each local domain: no line in the senders table)"
