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
from rich import box
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
DAEMON_TIMEOUT = 1.0  # seconds to wait for the daemon's answers: a frame is due every second


# Lines of the screen that are not table rows: the two header lines, then per table its
# title, column heads and the rule under them.
HEADER_LINES = 2
TABLE_LINES = 3
BACKLOG_ROWS = 5  # at most, when the screen is short: the recent deliveries get the rest
WIDE = ("Domain", "Last error", "Recipient", "Reply")  # cut with an ellipsis, never wrapped


def _table(title: str, *columns: str, **options: Any) -> Table:
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        # A table with text columns fills the width; they share what the figures leave.
        expand=any(column in WIDE for column in columns),
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        **options,
    )
    for column in columns:
        # One line a row, whatever the width: long text is cut, a queue id stays whole.
        table.add_column(
            column,
            no_wrap=True,
            overflow="ellipsis" if column in WIDE else "fold",
            min_width=16 if column == "Queue ID" else None,
            ratio=1 if column in WIDE else None,
        )
    return table


def _delivery(delivery: dict[str, Any] | None) -> str:
    """The second header line: is delivery paused (only the daemon knows)."""
    if delivery is None:
        return f"delivery: {UNKNOWN} (known only to the running daemon)"
    if delivery["paused"]:
        return "delivery: PAUSED for every domain (empathctl resume)"
    if delivery["paused_domains"]:
        return "delivery: paused for " + ", ".join(delivery["paused_domains"]) + " (empathctl resume D)"
    return "delivery: running"


def render(
    snap: Snapshot, live: bool = True, delivery: dict[str, Any] | None = None, height: int | None = None
) -> RenderableType:
    """The screen for one snapshot (pure); ``live`` adds how to quit. ``delivery``: the
    daemon's pause state (status' "delivery"). ``height``: the lines there are; the
    tables then show as many rows as fit, the recent deliveries giving way first."""
    daemon = f"daemon running (pid {snap.daemon_pid})" if snap.daemon_pid else "daemon not running"
    # Live, the time of day is enough, and the line fits 80 columns with how to quit.
    when = time.strftime("%H:%M:%S", time.localtime(snap.taken_at)) if live else format_time(snap.taken_at)
    header = Text.assemble(("Empath queue", "bold"), f"  {when}  ", daemon, "  Ctrl-C quits" if live else "")
    paused = delivery is not None and (delivery["paused"] or delivery["paused_domains"])
    state = Text(_delivery(delivery), style="bold red" if paused else "")
    for line in (header, state):
        line.no_wrap, line.overflow = True, "ellipsis"

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
    backlog_rows, recent_rows = _rows(height, len(snap.backlog), caption is not None)
    backlog = _table("Largest backlogs", "Domain", "Recipients", "Oldest", "Breaker", "Last error", caption=caption)
    for b in snap.backlog[:backlog_rows]:
        backlog.add_row(b.domain, str(b.recipients), format_age(b.oldest_age), b.breaker or UNKNOWN, b.last_error or "")
    if not snap.backlog:
        backlog.add_row("(nothing waits)", "", "", "", "")

    recent = _table("Recent deliveries and bounces", "Time", "Result", "Queue ID", "Recipient", "Reply")
    for f in snap.recent[:recent_rows]:
        style = "red" if f.kind == State.BOUNCED else "green"
        when = time.strftime("%H:%M:%S", time.localtime(f.at))
        recent.add_row(when, Text(f.kind, style=style), f.queue_id, f.recipient or "", f.detail)
    if not snap.recent:
        recent.add_row("", "(none lately)", "", "", "")
    return Group(header, state, queue, minute, backlog, recent)


def _rows(height: int | None, backlog: int, caption: bool) -> tuple[int | None, int | None]:
    """How many backlog and recent rows fit in ``height`` lines (None: all of them)."""
    if height is None:
        return None, None
    # The fixed lines: two header lines, the queue and minute tables with their one row
    # each, and the titles and heads of the other two; a backlog row even when empty.
    left = height - HEADER_LINES - 4 * TABLE_LINES - 2 - caption
    shown = max(1, min(backlog, BACKLOG_ROWS, left - 1))
    return shown, max(1, left - shown)


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


class DaemonState:
    """What only the running daemon knows, its breakers and its pauses, asked over the
    control socket once a frame.

    A daemon that is down may start: it is asked again next frame. One that
    refuses (a token is needed, no permission) is not asked again, so that
    its audit log does not fill with one denial a second.
    """

    def __init__(self, config: Config):
        self.config = config
        self.refused = False

    def _ask(self, verb: str) -> Any:
        if self.refused:
            return None
        line = protocol.encode_request(verb, {}, os.environ.get("EMPATH_TOKEN") or None)
        try:
            return client.call(self.config.control_socket, line, DAEMON_TIMEOUT)
        except client.DaemonDown:
            return None
        except client.ControlError:
            self.refused = True
            return None

    def breakers(self) -> BreakerOf | None:
        rows = self._ask("breaker-list")
        if rows is None:
            return None
        states = {row["destination"]: row["state"] for row in rows}
        # A destination never tried since the daemon started has no breaker yet: closed.
        return lambda domain: states.get(route_for(domain, self.config).policy_key, CLOSED)

    def delivery(self) -> dict[str, Any] | None:
        """Is delivery paused, for every domain or some: status' "delivery"."""
        status = self._ask("status")
        return None if status is None else status["delivery"]


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
    daemon = DaemonState(config)
    try:
        with database.open_readonly(path) as db:

            def frame() -> RenderableType:
                pid = database.lock_holder(config.data_dir)
                snap = stats.snapshot(db, time.time(), pid, daemon.breakers() if pid else None)
                delivery = daemon.delivery() if pid else None
                # Live, the screen is the terminal's: what does not fit is left out, not scrolled away.
                height = None if args.once else console.size.height
                return render(snap, live=not args.once, delivery=delivery, height=height)

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
