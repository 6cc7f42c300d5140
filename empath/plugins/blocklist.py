"""A shipped plug-in: refuse senders and recipients listed in a file.

The file has one entry per line; ``#`` starts a comment, and anything after
the first word is ignored, so a Postfix access file (``spam@example.com
REJECT``) can be used as it is. An entry is ``user@example.com`` (that
address), ``example.com`` (every address at that domain) or ``user@`` (that
local part at any domain); case does not matter. The null sender is never
refused.

    [[plugins]]
    name = "blocklist"
    hook = ["mail", "rcpt"]
    call = "empath.plugins.blocklist:check"
    options = { file = "/etc/empath/blocked" }

The file is read at the first message and again after ``reload()``, which
the daemon calls when it reloads its config.
"""

from pathlib import Path

from empath.plugins.api import Context, Reject

_lists: dict[str, frozenset[str]] = {}  # by file name; replaced whole, so threads may read it


def parse(text: str) -> frozenset[str]:
    entries = (line.split("#", 1)[0].split() for line in text.splitlines())
    return frozenset(words[0].lower() for words in entries if words)


def blocked(address: str, entries: frozenset[str]) -> bool:
    address = address.lower()
    local, at, domain = address.rpartition("@")
    if not at:
        return False
    return address in entries or domain in entries or f"{local}@" in entries


def check(ctx: Context) -> Reject | None:
    if ctx.hook == "mail":
        address, role = ctx.sender, "Sender"
    elif ctx.hook in ("rcpt", "before_delivery"):
        address, role = ctx.recipient, "Recipient"
    else:
        return None
    path = str(ctx.options["file"])
    entries = _lists.get(path)
    if entries is None:
        entries = _lists[path] = parse(Path(path).read_text(encoding="utf-8"))
    if address and blocked(address, entries):
        # A reply is ASCII (an SMTPUTF8 address would make the decision invalid): escape the rest.
        shown = address.encode("ascii", "backslashreplace").decode("ascii")
        return Reject(550, "5.7.1", f"{role} address rejected: <{shown}> is blocked here")
    return None


def reload() -> None:
    """Forget every file read, so the next message reads it again."""
    _lists.clear()
