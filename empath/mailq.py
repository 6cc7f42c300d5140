"""``mailq``: the queue in Postfix's format, read straight from the database.

Works whether the daemon runs or not (the database is opened read-only).
``*`` after a queue id marks a message being delivered right now, ``!`` one
on hold; a deferred recipient shows why, in parentheses.
"""

import argparse
import sqlite3
import sys
import time
from dataclasses import dataclass, field

from empath.config import DEFAULT_PATH, Config, ConfigError, load, local_config_path
from empath.queue.models import DEFERRED, HELD, PENDING

EX_OK = 0
EX_TEMPFAIL = 75
EX_CONFIG = 78


@dataclass
class Entry:
    queue_id: str
    size: int
    received_at: float
    sender: str
    active: bool = False
    held: bool = False
    recipients: list[tuple[str, str | None]] = field(default_factory=list)  # (address, reason)


def read(path: str) -> list[Entry]:
    """Messages with recipients still to deliver, oldest first."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute(
            "SELECT m.queue_id, m.size, m.received_at, m.sender, r.address, r.state, r.last_reply, r.lease_owner"
            " FROM message m JOIN recipient r ON r.queue_id = m.queue_id"
            f" WHERE r.state IN ({', '.join('?' * (len(PENDING) + 1))})"
            " ORDER BY m.received_at, m.queue_id, r.id",
            (*PENDING, HELD),
        ).fetchall()
    finally:
        db.close()
    entries: dict[str, Entry] = {}
    for queue_id, size, received_at, sender, address, state, reply, lease in rows:
        entry = entries.setdefault(queue_id, Entry(queue_id, size, received_at, sender))
        entry.active = entry.active or lease is not None
        entry.held = entry.held or state == HELD
        entry.recipients.append((address, reply if state == DEFERRED else None))
    return list(entries.values())


def render(entries: list[Entry]) -> str:
    """Postfix's mailq layout (pure)."""
    if not entries:
        return "Mail queue is empty\n"
    out = ["-Queue ID-        --Size-- ----Arrival Time---- -Sender/Recipient-------"]
    for e in entries:
        mark = "!" if e.held else "*" if e.active else " "
        arrival = time.strftime("%a %b %d %H:%M:%S", time.localtime(e.received_at))
        out.append(f"{e.queue_id}{mark} {e.size:>8} {arrival}  {e.sender or 'MAILER-DAEMON'}")
        shown = set()
        for address, reason in e.recipients:
            if reason and reason not in shown:
                out.append(f"{'':43}({reason[:200]})")
                shown.add(reason)
            out.append(f"{'':43}{address}")
        out.append("")
    kbytes = (sum(e.size for e in entries) + 1023) // 1024
    requests = len(entries)
    out.append(f"-- {kbytes} Kbytes in {requests} Request{'s' if requests != 1 else ''}.")
    return "\n".join(out) + "\n"


def show(config: Config) -> int:
    if not config.database_path.exists():
        sys.stdout.write(render([]))
        return EX_OK
    try:
        entries = read(str(config.database_path))
    except sqlite3.Error as exc:
        print(f"mailq: cannot read {config.database_path}: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    sys.stdout.write(render(entries))
    return EX_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailq", description="List the Empath mail queue")
    parser.add_argument("-C", "--config", help=f"the config file (default: $EMPATH_CONFIG or {DEFAULT_PATH})")
    args = parser.parse_args(argv)
    try:
        config = load(local_config_path(args.config))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"mailq: {problem}", file=sys.stderr)
        return EX_CONFIG
    return show(config)


if __name__ == "__main__":
    sys.exit(main())
