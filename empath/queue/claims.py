"""The queue's side of delivery: claim due recipients, load what a delivery
needs, and record what happened.

The writes run in the group commit (Queue.write), each in a savepoint of its
own, and touch rows through indexes only. What a delivery's results call for
beyond the rows (notices, the message leaving the queue) is decided by the
delivery side (delivery/results.py), in the same transaction, through the
functions here.
"""

import sqlite3
from dataclasses import dataclass
from typing import NamedTuple

import peewee

from empath.addresses import Domain, EmailAddress, ReversePath
from empath.queue.insert import INSERT_EVENT
from empath.queue.models import Recipient
from empath.queue.states import PENDING, State


@dataclass(frozen=True)
class Claimed:
    recipient_id: int
    queue_id: str
    address: EmailAddress
    domain: Domain
    attempts: int
    notify: str | None
    orcpt: str | None


# A message up to this size is loaded whole with its envelope; a larger one is
# read a piece of this size at a time while it is sent (delivery/content.py).
WHOLE_UP_TO = 256 * 1024


@dataclass(frozen=True)
class Loaded:
    queue_id: str
    sender: ReversePath
    data: bytes | None  # the message, when it is at most WHOLE_UP_TO bytes and was asked for
    size: int
    smtputf8: bool
    body_type: str
    ret: str | None
    envid: str | None
    received_at: float
    expires_at: float
    trace_id: str
    kind: str  # a Kind, as stored


@dataclass(frozen=True)
class Result:
    """The outcome of an attempt at one recipient."""

    recipient_id: int
    state: State  # delivered, deferred or bounced
    reply: str  # what the remote said, or what went wrong
    status: str  # enhanced status code
    remote: str | None = None
    next_attempt_at: float | None = None  # deferred: when to try again
    relayed: bool = False


@dataclass(frozen=True)
class PutBack:
    """A recipient handed back without an attempt (a rate limit, an open breaker, a
    pause): due again at ``next_attempt_at``; ``reply`` says why it waits, when given."""

    recipient_id: int
    next_attempt_at: float
    reply: str = ""
    status: str = ""


class RecipientRow(NamedTuple):
    """What a record and the notices read of a recipient."""

    id: int
    address: str
    state: str
    dsn_notify: str | None
    dsn_orcpt: str | None
    notified: str | None
    relayed: int
    last_status: str | None
    last_reply: str | None
    remote_mta: str | None
    lease_owner: str | None


class MessageRow(NamedTuple):
    """What the notices read of a message."""

    kind: str
    sender: str
    received_at: float
    expires_at: float
    dsn_envid: str | None
    dsn_ret: str | None
    trace_id: str
    stranger: bool


@dataclass(frozen=True)
class Recorded:
    """Where a message stands once a delivery's results are written."""

    message: MessageRow | None  # None: an operator deleted it meanwhile
    recipients: list[RecipientRow]
    busy: bool = False  # another delivery of it is under way: the last one to finish reports


def claim(db: peewee.SqliteDatabase, now: float, owner: str, lease_time: float, limit: int) -> list[Claimed]:
    """Lease up to ``limit`` due recipients, oldest due first.

    The lease moves next_attempt_at to its end, so a leased row is not due
    again unless its lease runs out (the daemon died mid-delivery).
    """
    conn = db.connection()
    # One bounded range scan of (state, next_attempt_at) per state: a single
    # query with state IN (...) would sort every due row before the LIMIT.
    due = [row for state in PENDING for row in conn.execute(_DUE, (state, now, limit))]
    due.sort(key=lambda row: row[0])
    rows = [row[1:] for row in due[:limit]]
    if rows:
        conn.executemany(_LEASE, [(owner, now + lease_time, now + lease_time, row[0]) for row in rows])
    # The queue holds only canonical text (written from typed values): wrap, don't re-parse.
    return [Claimed(i, q, EmailAddress._trusted(a), Domain._trusted(d), *rest) for i, q, a, d, *rest in rows]


_DUE = (
    "SELECT next_attempt_at, id, queue_id, address, domain, attempts, dsn_notify, dsn_orcpt FROM recipient"
    " WHERE state = ? AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?"
)
_LEASE = "UPDATE recipient SET lease_owner = ?, lease_until = ?, next_attempt_at = ? WHERE id = ?"


def next_due(db: peewee.SqliteDatabase) -> float | None:
    """When the earliest pending recipient is due (leased ones: when their lease ends)."""
    marks = ", ".join("?" * len(PENDING))
    sql = f"SELECT MIN(next_attempt_at) FROM recipient WHERE state IN ({marks})"
    return db.connection().execute(sql, PENDING).fetchone()[0]


def flush(db: peewee.SqliteDatabase, now: float, domain: Domain | None = None) -> int:
    """Make pending, unleased recipients (of one domain, or all) due now; returns how many."""
    where = [Recipient.state.in_(PENDING), Recipient.lease_owner.is_null(), Recipient.next_attempt_at > now]
    if domain is not None:
        where.append(Recipient.domain == domain)
    return Recipient.update(next_attempt_at=now).where(*where).execute(db)


def load(conn: sqlite3.Connection, queue_id: str, body: bool = True) -> Loaded | None:
    """The message as a delivery needs it; without ``body``, its envelope only (no data).

    Run with Queue.read, on the hub: one indexed lookup costs less than a thread hop.
    """
    row = conn.execute(_LOAD if body else _LOAD_ENVELOPE, (queue_id,)).fetchone()
    if row is None:
        return None
    queue_id, sender, data, size, smtputf8, body_type, ret, envid, received_at, expires_at, trace_id, kind = row
    return Loaded(
        queue_id,
        ReversePath._trusted(sender),
        data,
        size,
        bool(smtputf8),
        body_type,
        ret,
        envid,
        received_at,
        expires_at,
        trace_id,
        kind,
    )


_DATA = f"CASE WHEN length(b.data) <= {WHOLE_UP_TO} THEN b.data END"
_LOAD = (
    f"SELECT m.queue_id, m.sender, {_DATA}, length(b.data), m.smtputf8, m.body_type, m.dsn_ret, m.dsn_envid,"
    " m.received_at, m.expires_at, m.trace_id, m.kind FROM message m JOIN body b ON b.queue_id = m.queue_id"
    " WHERE m.queue_id = ?"
)
_LOAD_ENVELOPE = _LOAD.replace(_DATA, "NULL")


def read_body(conn: sqlite3.Connection, queue_id: str, offset: int, size: int) -> bytes | None:
    """Up to ``size`` bytes of the stored message from ``offset``; None once it is gone.

    Run with Queue.read, a piece at a time: each read is a transaction of its own,
    so a slow delivery never holds one open (it would stop the WAL's checkpoints).
    The row is found by its queue ID and read by its rowid in one transaction: a
    rowid freed by a deletion may be taken by the next message.
    """
    conn.execute("BEGIN")
    try:
        row = conn.execute("SELECT rowid FROM body WHERE queue_id = ?", (queue_id,)).fetchone()
        if row is None:
            return None
        with conn.blobopen("body", "data", row[0], readonly=True) as blob:
            blob.seek(offset)
            return blob.read(size)
    finally:
        conn.execute("COMMIT")


_ROWS = f"SELECT {', '.join(RecipientRow._fields)} FROM recipient WHERE queue_id = ?"
_MESSAGE = f"SELECT {', '.join(MessageRow._fields)} FROM message WHERE queue_id = ?"
_CLEAR = "UPDATE recipient SET lease_owner = NULL, lease_until = NULL"
_PUT_BACK = f"{_CLEAR}, next_attempt_at = ? WHERE id = ?"
_PUT_BACK_SAYING = f"{_CLEAR}, next_attempt_at = ?, last_reply = ?, last_status = ? WHERE id = ?"
# next_attempt_at changes only for a deferral (given); other outcomes pass NULL and keep it.
# A recipient put on hold while its delivery was under way stays held if that
# attempt is deferred; delivered or bounced, it is done whatever the hold.
_OUTCOME = (
    f"{_CLEAR}, state = CASE WHEN state = '{State.HELD}' AND :state = '{State.DEFERRED}' THEN state ELSE :state END,"
    " last_reply = :reply, last_status = :status, remote_mta = :remote, relayed = :relayed,"
    " attempts = attempts + 1, next_attempt_at = coalesce(:next_at, next_attempt_at) WHERE id = :id"
)


def record(db: peewee.SqliteDatabase, queue_id: str, results: list[Result | PutBack], now: float) -> Recorded:
    """Store the outcome of one delivery, with an event per attempt; returns where the message stands."""
    conn = db.connection()
    for r in results:
        if isinstance(r, PutBack):
            if r.reply:  # say why it waits (an open circuit breaker)
                conn.execute(_PUT_BACK_SAYING, (r.next_attempt_at, r.reply, r.status, r.recipient_id))
            else:
                conn.execute(_PUT_BACK, (r.next_attempt_at, r.recipient_id))
        else:
            next_at = r.next_attempt_at if r.state == State.DEFERRED else None
            outcome = dict(state=r.state, reply=r.reply, status=r.status, remote=r.remote, relayed=r.relayed)
            conn.execute(_OUTCOME, {**outcome, "next_at": next_at, "id": r.recipient_id})
    rows = {row.id: row for row in map(RecipientRow._make, conn.execute(_ROWS, (queue_id,)))}
    message = conn.execute(_MESSAGE, (queue_id,)).fetchone()
    if message is None:
        return Recorded(None, [])  # deleted by an operator meanwhile: nothing is left to record
    attempts = [r for r in results if isinstance(r, Result)]
    conn.executemany(
        INSERT_EVENT,
        [(queue_id, rows[r.recipient_id].address, now, r.state, _attempt_detail(r)) for r in attempts],
    )
    busy = any(row.lease_owner is not None for row in rows.values())
    return Recorded(MessageRow._make(message), list(rows.values()), busy)


def _attempt_detail(r: Result) -> str:
    return f"relay={r.remote or 'none'} dsn={r.status} {r.reply}"[:2000]


def original(db: peewee.SqliteDatabase, queue_id: str, limit: int) -> bytes:
    """The first ``limit`` bytes of the message as stored (all of it, when no longer),
    for a notice that quotes it: a large message is never read whole for its notice."""
    conn = db.connection()
    row = conn.execute("SELECT rowid FROM body WHERE queue_id = ?", (queue_id,)).fetchone()
    with conn.blobopen("body", "data", row[0], readonly=True) as blob:
        return blob.read(limit)


def notified(
    db: peewee.SqliteDatabase, queue_id: str, recipient_ids: list[int], action: str, notice: str, to: str, now: float
) -> None:
    """Note that ``notice`` reported ``action`` for these recipients to ``to``."""
    conn = db.connection()
    conn.executemany("UPDATE recipient SET notified = ? WHERE id = ?", [(action, i) for i in recipient_ids])
    conn.execute(INSERT_EVENT, (queue_id, None, now, "notice", f"{action} notice {notice} to <{to}>"))


def remove(db: peewee.SqliteDatabase, queue_id: str, now: float) -> None:
    """The message leaves the queue; the body and recipients go with it (ON DELETE CASCADE), the events stay."""
    conn = db.connection()
    conn.execute("DELETE FROM message WHERE queue_id = ?", (queue_id,))
    conn.execute(INSERT_EVENT, (queue_id, None, now, "removed", "every recipient is done"))
