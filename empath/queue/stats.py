"""What the queue holds and what went through it, read-only: the figures the
metrics, ``empathctl status``/``stats``/``top`` and offline stats all read.

Every query runs through an index (a range of recipient's (state,
next_attempt_at), message's received_at, event's primary key), so a frame of
``top`` or a scrape stays quick with a million rows.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import peewee

from empath.addresses import Domain
from empath.queue.models import Event, Message, Recipient, event_id, tuples
from empath.queue.states import WAITING, State

RECEIVED, REMOVED = "received", "removed"  # the events of a message entering and leaving the queue
MINUTE_KINDS = (RECEIVED, REMOVED, State.DELIVERED, State.DEFERRED, State.BOUNCED)
RECENT_WINDOW = 10_000  # look for recent deliveries among this many latest events, not the whole history

BreakerOf = Callable[[Domain], str]  # a domain's breaker state, which only the daemon knows


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


def counts(db: peewee.Database) -> tuple[dict[str, int], float | None]:
    """Recipients per state and the oldest receipt time.

    One count per state (a range of the (state, next_attempt_at) index) and the
    minimum of message.received_at (its own index): no table scans.
    """
    by_state: dict[str, int] = {state: Recipient.select().where(Recipient.state == state).count(db) for state in State}
    first = Message.select(peewee.fn.MIN(Message.received_at)).scalar(db)
    return by_state, first


def first_event_since(db: peewee.Database, since: float) -> int | None:
    """The id of the first event at or after ``since`` (None: there is none).

    Events are written in time order, give or take one group commit, so a
    binary search over ids finds it in some twenty primary-key lookups however
    long the history grows.
    """
    # Two queries: SQLite answers MIN or MAX alone from the end of the key, both at once by a scan.
    hi = Event.select(peewee.fn.MAX(event_id)).scalar(db)
    if hi is None:
        return None
    lo = cast(int, Event.select(peewee.fn.MIN(event_id)).scalar(db))
    hi += 1
    while lo < hi:
        mid = (lo + hi) // 2
        at = Event.select(Event.at).where(event_id >= mid).order_by(event_id).limit(1).scalar(db)
        if at < since:
            lo = mid + 1
        else:
            hi = mid
    return lo


def event_counts(db: peewee.Database, since: float) -> dict[str, int]:
    """How many messages came in and went out, and attempts by result, since then."""
    found = dict.fromkeys(MINUTE_KINDS, 0)
    first = first_event_since(db, since)
    if first is not None:
        query = Event.select(Event.kind, peewee.fn.COUNT(event_id)).where(
            event_id >= first, Event.at >= since, Event.kind.in_(MINUTE_KINDS)
        )
        found.update(dict(tuples(db, query.group_by(Event.kind))))
    return found


def _backlog(db: peewee.Database, now: float, breaker_of: BreakerOf | None, limit: int) -> list[Backlog]:
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
    for domain, recipients, oldest in tuples(db, query):
        error = (
            Recipient.select(Recipient.last_reply)
            .where(Recipient.domain == domain, Recipient.state.in_(WAITING), Recipient.last_reply.is_null(False))
            .order_by(Recipient.id.desc())
            .limit(1)
            .scalar(db)
        )
        # Queue rows hold canonical domains: wrapped, not re-parsed.
        breaker = None if breaker_of is None else breaker_of(Domain._trusted(domain))
        rows.append(Backlog(domain, recipients, max(0.0, now - oldest), error, breaker))
    return rows


def _recent(db: peewee.Database, limit: int) -> list[Finished]:
    last = Event.select(peewee.fn.MAX(event_id)).scalar(db) or 0
    query = (
        Event.select(Event.at, Event.kind, Event.queue_id, Event.recipient, Event.detail)
        .where(event_id > last - RECENT_WINDOW, Event.kind.in_((State.DELIVERED, State.BOUNCED)))
        .order_by(event_id.desc())
        .limit(limit)
    )
    return [Finished(*row) for row in tuples(db, query)]


def snapshot(
    db: peewee.Database,
    now: float,
    daemon_pid: int | None = None,
    breaker_of: BreakerOf | None = None,
    rows: int = 10,
) -> Snapshot:
    """One frame's figures, in one read transaction, so that they agree with each other."""
    with db.atomic():
        by_state, first = counts(db)
        active = Recipient.select().where(Recipient.state.in_(WAITING), Recipient.lease_owner.is_null(False))
        return Snapshot(
            taken_at=now,
            daemon_pid=daemon_pid,
            messages=Message.select().count(db),
            states=by_state,
            active=active.count(db),
            oldest_age=max(0.0, now - first) if first is not None else None,
            last_minute=event_counts(db, now - 60),
            backlog=_backlog(db, now, breaker_of, rows),
            recent=_recent(db, rows),
        )
