"""``empathctl top``: a live view of the queue, redrawn every second.

It reads the database read-only (database.open_readonly), so it works whether
the daemon runs or not, and a reader in WAL mode never holds up its writes.
``stats.snapshot`` reads one frame's figures from the database; ``render``
turns them into a rich renderable (pure), so tests render to a recording console.

Circuit breakers live in the daemon's memory, not in the database: while
the daemon runs, each frame asks it (``breaker-list`` on the control socket,
with $EMPATH_TOKEN if set); otherwise, or if it refuses, the column shows ``—``.
"""

import argparse
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import peewee
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from empath.config import Config
from empath.control import client, protocol
from empath.control.render import format_age, format_time
from empath.delivery.limits import CLOSED
from empath.delivery.routing import route_for
from empath.queue import database, stats
from empath.queue.states import State
from empath.queue.stats import MINUTE_KINDS, BreakerOf, Snapshot

VERBS = ("top",)

UNKNOWN = "—"
BREAKER_TIMEOUT = 1.0  # seconds to wait for the daemon's breakers: a frame is due every second


def _table(title: str, *columns: str, **options: Any) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", expand=False, **options)
    for column in columns:
        # Nothing is cut off on a narrow terminal: text wraps, and a queue id stays whole.
        table.add_column(column, overflow="fold", min_width=16 if column == "Queue ID" else None)
    return table


def render(snap: Snapshot, live: bool = True) -> RenderableType:
    """The screen for one snapshot (pure); ``live`` adds how to quit."""
    daemon = f"daemon running (pid {snap.daemon_pid})" if snap.daemon_pid else "daemon not running"
    header = Text.assemble(
        ("Empath queue", "bold"), f"  {format_time(snap.taken_at)}  ", daemon, "  (Ctrl-C quits)" if live else ""
    )

    queue = _table("Queue", "Messages", "Queued", "Deferred", "Held", "Being delivered", "Oldest")
    s = snap.states
    oldest = format_age(snap.oldest_age) if snap.oldest_age is not None else UNKNOWN
    queue.add_row(
        *map(str, (snap.messages, s.get(State.QUEUED, 0), s.get(State.DEFERRED, 0), s.get(State.HELD, 0), snap.active)),
        oldest,
    )

    minute = _table("Last minute", "In", "Out", "Delivered", "Deferred", "Bounced")
    minute.add_row(*(str(snap.last_minute.get(kind, 0)) for kind in MINUTE_KINDS))

    caption = "breaker states are known only to the daemon" if any(b.breaker is None for b in snap.backlog) else None
    backlog = _table("Largest backlogs", "Domain", "Recipients", "Oldest", "Breaker", "Last error", caption=caption)
    for b in snap.backlog:
        backlog.add_row(b.domain, str(b.recipients), format_age(b.oldest_age), b.breaker or UNKNOWN, b.last_error or "")
    if not snap.backlog:
        backlog.add_row("(nothing waits)", "", "", "", "")

    recent = _table("Recent deliveries and bounces", "Time", "Result", "Queue ID", "Recipient", "Reply")
    for f in snap.recent:
        style = "red" if f.kind == State.BOUNCED else "green"
        when = time.strftime("%H:%M:%S", time.localtime(f.at))
        recent.add_row(when, Text(f.kind, style=style), f.queue_id, f.recipient or "", f.detail)
    if not snap.recent:
        recent.add_row("", "(none lately)", "", "", "")
    return Group(header, queue, minute, backlog, recent)


# -- the verb -------------------------------------------------------------------------


def _interval(text: str) -> float:
    value = float(text)
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError("must be between 0.1 and 3600 seconds")
    return value


def add_verbs(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    top = verbs.add_parser("top", help="a live view of the queue (read-only; works with the daemon stopped)")
    top.add_argument("--once", action="store_true", help="print one frame and exit")
    top.add_argument("--interval", type=_interval, default=1.0, help="seconds between frames (default 1)")


class DaemonBreakers:
    """The running daemon's breaker states, asked over the control socket once a frame.

    A daemon that is down may start: it is asked again next frame. One that
    refuses (a token is needed, no permission) is not asked again, so that
    its audit log does not fill with one denial a second.
    """

    def __init__(self, config: Config):
        self.config = config
        self.refused = False

    def ask(self) -> BreakerOf | None:
        if self.refused:
            return None
        line = protocol.encode_request("breaker-list", {}, os.environ.get("EMPATH_TOKEN") or None)
        try:
            rows = client.call(self.config.control_socket, line, BREAKER_TIMEOUT)
        except client.DaemonDown:
            return None
        except client.ControlError:
            self.refused = True
            return None
        states = {row["destination"]: row["state"] for row in rows}
        # A destination never tried since the daemon started has no breaker yet: closed.
        return lambda domain: states.get(route_for(domain, self.config).policy_key, CLOSED)


def _live(console: Console, frame: Callable[[], RenderableType], interval: float) -> None:
    """Redraw until SIGINT (Ctrl-C) or SIGTERM.

    The signals only set a flag that the wait between frames sees: a
    KeyboardInterrupt raised in the middle of drawing would leave the
    terminal in the alternate screen with the cursor hidden.
    """
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Live(frame(), console=console, screen=console.is_terminal, auto_refresh=False) as live:
            while not stop.wait(interval):
                live.update(frame(), refresh=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def command(args: argparse.Namespace, config: Config, console: Console | None = None) -> int:
    """Show the queue until Ctrl-C (exit 0); a database that cannot be read is one line and exit 1."""
    path = config.database_path
    if not path.exists():
        print(f"empathctl: top: there is no queue database at {path}", file=sys.stderr)
        return 1
    console = console or Console()
    breakers = DaemonBreakers(config)
    try:
        with database.open_readonly(path) as db:

            def frame() -> RenderableType:
                pid = database.lock_holder(config.data_dir)
                snap = stats.snapshot(db, time.time(), pid, breakers.ask() if pid else None)
                return render(snap, live=not args.once)

            if args.once:
                console.print(frame())
            else:
                _live(console, frame, args.interval)
    except KeyboardInterrupt:  # --once, or before the handlers were in place
        return 0
    except (sqlite3.Error, peewee.PeeweeException) as exc:
        print(f"empathctl: top: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    return 0
