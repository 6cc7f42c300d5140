"""``empathctl top``: a live view of the queue, redrawn every second.

It reads the database read-only (admin.open_readonly), so it works whether
the daemon runs or not, and a reader in WAL mode never holds up its writes.
``snapshot`` reads one frame's figures from the database; ``render`` turns
them into a rich renderable (pure), so tests render to a recording console.

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
from dataclasses import dataclass
from typing import Any

import peewee
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from empath import config as config_module
from empath.addresses import Domain
from empath.control import client, protocol
from empath.delivery.limits import CLOSED
from empath.delivery.routing import route_for
from empath.metrics import queue_counts
from empath.queue import admin, models, store
from empath.queue.admin import WAITING, event_id, format_age, tuples
from empath.queue.models import BOUNCED, DEFERRED, DELIVERED, HELD, QUEUED, Event, Message, Recipient

VERBS = ("top",)

RECEIVED, REMOVED = "received", "removed"  # the events of a message entering and leaving the queue
MINUTE_KINDS = (RECEIVED, REMOVED, DELIVERED, DEFERRED, BOUNCED)
RECENT_WINDOW = 10_000  # look for recent deliveries among this many latest events, not the whole history
UNKNOWN = "—"
BREAKER_TIMEOUT = 1.0  # seconds to wait for the daemon's breakers: a frame is due every second

BreakerOf = Callable[[Domain], str]  # a domain's breaker state


@dataclass(frozen=True)
class Backlog:
    domain: str
    recipients: int
    oldest_age: float
    last_error: str | None  # the latest queued recipient's reply that has one
    breaker: str | None  # None: not known here (only the daemon knows)


@dataclass(frozen=True)
class Finished:
    at: float
    kind: str  # delivered or bounced
    queue_id: str
    recipient: str | None
    detail: str


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    daemon_pid: int | None
    messages: int
    states: dict[str, int]  # recipients by state
    active: int  # recipients being delivered right now
    oldest_age: float | None
    last_minute: dict[str, int]  # events of the last 60 s by kind (MINUTE_KINDS)
    backlog: list[Backlog]
    recent: list[Finished]


def first_event_since(since: float) -> int | None:
    """The id of the first event at or after ``since`` (None: there is none).

    Events are written in time order, give or take one group commit, so a
    binary search over ids finds it in some twenty primary-key lookups however
    long the history grows.
    """
    # Two queries: SQLite answers MIN or MAX alone from the end of the key, both at once by a scan.
    hi = Event.select(peewee.fn.MAX(event_id)).scalar()
    if hi is None:
        return None
    lo = Event.select(peewee.fn.MIN(event_id)).scalar()
    hi += 1
    while lo < hi:
        mid = (lo + hi) // 2
        at = Event.select(Event.at).where(event_id >= mid).order_by(event_id).limit(1).scalar()
        if at < since:
            lo = mid + 1
        else:
            hi = mid
    return lo


def event_counts(since: float) -> dict[str, int]:
    """How many messages came in and went out, and attempts by result, since then."""
    counts = dict.fromkeys(MINUTE_KINDS, 0)
    first = first_event_since(since)
    if first is not None:
        query = Event.select(Event.kind, peewee.fn.COUNT(event_id)).where(
            event_id >= first, Event.at >= since, Event.kind.in_(MINUTE_KINDS)
        )
        counts.update(dict(tuples(query.group_by(Event.kind))))
    return counts


def _backlog(now: float, breaker_of: BreakerOf | None, limit: int) -> list[Backlog]:
    count = peewee.fn.COUNT(Recipient.id)
    query = (
        Recipient.select(Recipient.domain, count, peewee.fn.MIN(Message.received_at))
        .join(Message, on=Recipient.message == Message.queue_id)
        .where(Recipient.state.in_(WAITING))
        .group_by(Recipient.domain)
        .order_by(count.desc(), Recipient.domain)
        .limit(limit)
    )
    rows = []
    for domain, recipients, oldest in tuples(query):
        error = (
            Recipient.select(Recipient.last_reply)
            .where(Recipient.domain == domain, Recipient.state.in_(WAITING), Recipient.last_reply.is_null(False))
            .order_by(Recipient.id.desc())
            .limit(1)
            .scalar()
        )
        # Queue rows hold canonical domains: wrapped, not re-parsed.
        breaker = None if breaker_of is None else breaker_of(Domain._trusted(domain))
        rows.append(Backlog(domain, recipients, max(0.0, now - oldest), error, breaker))
    return rows


def _recent(limit: int) -> list[Finished]:
    last = Event.select(peewee.fn.MAX(event_id)).scalar() or 0
    query = (
        Event.select(Event.at, Event.kind, Event.queue_id, Event.recipient, Event.detail)
        .where(event_id > last - RECENT_WINDOW, Event.kind.in_((DELIVERED, BOUNCED)))
        .order_by(event_id.desc())
        .limit(limit)
    )
    return [Finished(*row) for row in tuples(query)]


def snapshot(
    now: float, daemon_pid: int | None = None, breaker_of: BreakerOf | None = None, rows: int = 10
) -> Snapshot:
    """One frame's figures, read through the models (bound to the queue database)
    in one read transaction, so that they agree with each other."""
    with models.database_proxy.atomic():
        by_state, first = queue_counts()
        return Snapshot(
            taken_at=now,
            daemon_pid=daemon_pid,
            messages=Message.select().count(),
            states=by_state,
            active=Recipient.select().where(Recipient.state.in_(WAITING), Recipient.lease_owner.is_null(False)).count(),
            oldest_age=max(0.0, now - first) if first is not None else None,
            last_minute=event_counts(now - 60),
            backlog=_backlog(now, breaker_of, rows),
            recent=_recent(rows),
        )


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
        ("Empath queue", "bold"), f"  {admin.format_time(snap.taken_at)}  ", daemon, "  (Ctrl-C quits)" if live else ""
    )

    queue = _table("Queue", "Messages", "Queued", "Deferred", "Held", "Being delivered", "Oldest")
    s = snap.states
    oldest = format_age(snap.oldest_age) if snap.oldest_age is not None else UNKNOWN
    queue.add_row(*map(str, (snap.messages, s.get(QUEUED, 0), s.get(DEFERRED, 0), s.get(HELD, 0), snap.active)), oldest)

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
        style = "red" if f.kind == BOUNCED else "green"
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

    def __init__(self, config: config_module.Config):
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


def command(args: argparse.Namespace, config: config_module.Config, console: Console | None = None) -> int:
    """Show the queue until Ctrl-C (exit 0); a database that cannot be read is one line and exit 1."""
    path = config.database_path
    if not path.exists():
        print(f"empathctl: top: there is no queue database at {path}", file=sys.stderr)
        return 1
    console = console or Console()
    breakers = DaemonBreakers(config)

    def frame() -> RenderableType:
        pid = store.lock_holder(config.data_dir)
        return render(snapshot(time.time(), pid, breakers.ask() if pid else None), live=not args.once)

    try:
        with admin.open_readonly(path):
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
