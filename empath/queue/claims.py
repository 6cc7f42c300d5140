"""The queue's side of delivery: claim due recipients, load what a delivery
needs, and record what happened, with the notices that follow.

The writes run in a group commit (GroupCommitter.write), each in a savepoint
of its own, and touch rows through indexes only.
"""

import sqlite3
from dataclasses import dataclass
from typing import NamedTuple

from empath.addresses import NULL_SENDER, Domain, EmailAddress, ReversePath
from empath.delivery import notices
from empath.message import dsn
from empath.queue import ids, models, store
from empath.queue.models import BOUNCED, DEFERRED, DELIVERED, HELD, PENDING, Recipient
from empath.queue.store import NewMessage, NewRecipient, insert


@dataclass(frozen=True)
class Claimed:
    recipient_id: int
    queue_id: str
    address: EmailAddress
    domain: Domain
    attempts: int
    notify: str | None
    orcpt: str | None


@dataclass(frozen=True)
class Loaded:
    queue_id: str
    sender: ReversePath
    body: bytes
    smtputf8: bool
    body_type: str
    ret: str | None
    envid: str | None
    received_at: float
    expires_at: float
    trace_id: str
    kind: str


@dataclass(frozen=True)
class Result:
    recipient_id: int
    state: str  # delivered, deferred or bounced; "retry" puts it back without counting an attempt
    reply: str  # what the remote said, or what went wrong
    status: str  # enhanced status code
    remote: str | None = None
    next_attempt_at: float | None = None  # for deferred and retry
    relayed: bool = False


RETRY = "retry"


@dataclass(frozen=True)
class Recorded:
    notices: list[str]  # queue ids of the notices made
    removed: str | None = None  # the message left the queue: "bounced" if any recipient was, else "delivered"


def claim(now: float, owner: str, lease_time: float, limit: int) -> list[Claimed]:
    """Lease up to ``limit`` due recipients, oldest due first.

    The lease moves next_attempt_at to its end, so a leased row is not due
    again unless its lease runs out (the daemon died mid-delivery).
    """
    conn = store.connection()
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


def next_due() -> float | None:
    """When the earliest pending recipient is due (leased ones: when their lease ends)."""
    marks = ", ".join("?" * len(PENDING))
    sql = f"SELECT MIN(next_attempt_at) FROM recipient WHERE state IN ({marks})"
    return store.connection().execute(sql, PENDING).fetchone()[0]


def flush(now: float, domain: Domain | None = None) -> int:
    """Make pending, unleased recipients (of one domain, or all) due now; returns how many."""
    where = [Recipient.state.in_(PENDING), Recipient.lease_owner.is_null(), Recipient.next_attempt_at > now]
    if domain is not None:
        where.append(Recipient.domain == domain)
    return Recipient.update(next_attempt_at=now).where(*where).execute()


def load(conn: sqlite3.Connection, queue_id: str, body: bool = True) -> Loaded | None:
    """The message as a delivery needs it; without ``body``, its envelope only (the body is b"").

    Run with Store.read, on the hub: one indexed lookup costs less than a thread hop.
    """
    row = conn.execute(_LOAD if body else _LOAD_ENVELOPE, (queue_id,)).fetchone()
    if row is None:
        return None
    queue_id, sender, data, smtputf8, *rest = row
    return Loaded(queue_id, ReversePath._trusted(sender), data, bool(smtputf8), *rest)


_LOAD = (
    "SELECT m.queue_id, m.sender, b.data, m.smtputf8, m.body_type, m.dsn_ret, m.dsn_envid, m.received_at,"
    " m.expires_at, m.trace_id, m.kind FROM message m JOIN body b ON b.queue_id = m.queue_id WHERE m.queue_id = ?"
)
_LOAD_ENVELOPE = _LOAD.replace("b.data", "x''")


@dataclass(frozen=True)
class NoticeSettings:
    hostname: str
    postmaster: EmailAddress  # where failed notices about null-sender mail go
    delay_warning: float
    lifetime: float


class _Row(NamedTuple):
    """What record and the notices read of a recipient."""

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


class _Message(NamedTuple):
    """What the notices read of a message."""

    kind: str
    sender: str
    received_at: float
    expires_at: float
    dsn_envid: str | None
    dsn_ret: str | None
    trace_id: str


_ROWS = f"SELECT {', '.join(_Row._fields)} FROM recipient WHERE queue_id = ?"
_MESSAGE = f"SELECT {', '.join(_Message._fields)} FROM message WHERE queue_id = ?"
_CLEAR = "UPDATE recipient SET lease_owner = NULL, lease_until = NULL"
_RETRY = f"{_CLEAR}, next_attempt_at = ? WHERE id = ?"
_RETRY_SAYING = f"{_CLEAR}, next_attempt_at = ?, last_reply = ?, last_status = ? WHERE id = ?"
# next_attempt_at changes only for a deferral (given); other outcomes pass NULL and keep it.
# A recipient put on hold while its delivery was under way stays held if that
# attempt is deferred; delivered or bounced, it is done whatever the hold.
_OUTCOME = (
    f"{_CLEAR}, state = CASE WHEN state = '{HELD}' AND :state = '{DEFERRED}' THEN state ELSE :state END,"
    " last_reply = :reply, last_status = :status, remote_mta = :remote, relayed = :relayed,"
    " attempts = attempts + 1, next_attempt_at = coalesce(:next_at, next_attempt_at) WHERE id = :id"
)


def record(queue_id: str, results: list[Result], now: float, settings: NoticeSettings) -> Recorded:
    """Store the outcome of one delivery; queue any notices owed; drop the
    message once every recipient is done. Returns the notices made and whether it was dropped."""
    conn = store.connection()
    for r in results:
        if r.state == RETRY:
            if r.reply:  # say why it waits (an open circuit breaker)
                conn.execute(_RETRY_SAYING, (r.next_attempt_at, r.reply, r.status, r.recipient_id))
            else:
                conn.execute(_RETRY, (r.next_attempt_at, r.recipient_id))
        else:
            next_at = r.next_attempt_at if r.state == DEFERRED else None
            outcome = dict(state=r.state, reply=r.reply, status=r.status, remote=r.remote, relayed=r.relayed)
            conn.execute(_OUTCOME, {**outcome, "next_at": next_at, "id": r.recipient_id})
    rows = {row.id: row for row in map(_Row._make, conn.execute(_ROWS, (queue_id,)))}
    message = conn.execute(_MESSAGE, (queue_id,)).fetchone()
    if message is None:
        return Recorded([])  # deleted by an operator meanwhile: nothing is left to record
    attempts = [r for r in results if r.state != RETRY]
    conn.executemany(
        store.INSERT_EVENT,
        [(queue_id, rows[r.recipient_id].address, now, r.state, _attempt_detail(r)) for r in attempts],
    )
    if any(row.lease_owner is not None for row in rows.values()):
        return Recorded([])  # another delivery of this message is under way; the last one reports
    made = _notices(queue_id, _Message._make(message), list(rows.values()), now, settings)
    if all(row.state in (DELIVERED, BOUNCED) for row in rows.values()):
        # The body and recipients go with it (ON DELETE CASCADE); the events stay.
        conn.execute("DELETE FROM message WHERE queue_id = ?", (queue_id,))
        conn.execute(store.INSERT_EVENT, (queue_id, None, now, "removed", "every recipient is done"))
        return Recorded(made, BOUNCED if any(row.state == BOUNCED for row in rows.values()) else DELIVERED)
    return Recorded(made)


def _attempt_detail(r: Result) -> str:
    return f"relay={r.remote or 'none'} status={r.status} {r.reply}"[:2000]


def _notices(queue_id: str, message: _Message, rows: list[_Row], now: float, settings: NoticeSettings) -> list[str]:
    target = notices.report_target(message.kind, ReversePath._trusted(message.sender), settings.postmaster)
    if target is None:
        return []
    to, kind = target
    pending = [
        notices.Pending(
            EmailAddress._trusted(row.address),
            row.state,
            tuple((row.dsn_notify or "").split(",")) if row.dsn_notify else (),
            row.notified,
            bool(row.relayed),
        )
        for row in rows
    ]
    owed = notices.owed(pending, message.received_at, now, settings.delay_warning, to_sender=kind == models.DSN)
    if not owed:
        return []
    conn = store.connection()
    by_address = {row.address: row for row in rows}
    original = conn.execute("SELECT data FROM body WHERE queue_id = ?", (queue_id,)).fetchone()[0]
    made = []
    for action, due in owed.items():
        recipients = tuple(_dsn_recipient(by_address[p.address], action, message, now) for p in due)
        report = dsn.Report(
            reporting_mta=settings.hostname,
            sender=to,
            queue_id=queue_id,
            arrival=message.received_at,
            original=original,
            recipients=recipients,
            now=now,
            message_id=f"{ids.new_id(now)}.dsn@{settings.hostname}",
            envid=message.dsn_envid,
            # RET asks for the message back in failure reports (RFC 3461 §4.3);
            # delay and success reports carry its headers only.
            ret=message.dsn_ret if action == notices.FAILED else "HDRS",
        )
        body = dsn.render(report)
        new_id = ids.new_id(now)
        insert(
            NewMessage(
                queue_id=new_id,
                sender=NULL_SENDER,
                body=body,
                recipients=[NewRecipient(to, to.domain)],
                received_at=now,
                expires_at=now + settings.lifetime,
                client_address="",
                client_helo="",
                listener="notices",
                trace_id=message.trace_id,
                kind=kind,
                # A report quoting 8-bit or internationalized mail is itself so.
                body_type="7BIT" if body.isascii() else "8BITMIME",
                smtputf8=b"message/global-delivery-status" in body,
                events=[("received", f"{action} notice for {queue_id}")],
            )
        )
        conn.executemany(
            "UPDATE recipient SET notified = ? WHERE id = ?", [(action, by_address[p.address].id) for p in due]
        )
        conn.execute(store.INSERT_EVENT, (queue_id, None, now, "notice", f"{action} notice {new_id} to <{to}>"))
        made.append(new_id)
    return made


def _dsn_recipient(row: _Row, action: str, message: _Message, now: float) -> dsn.DsnRecipient:
    return dsn.DsnRecipient(
        address=EmailAddress._trusted(row.address),
        action=action,
        status=row.last_status or ("2.0.0" if action == notices.RELAYED else "4.0.0"),
        diagnostic=row.last_reply,
        remote_mta=row.remote_mta,
        orcpt=row.dsn_orcpt,
        last_attempt=now,
        will_retry_until=message.expires_at if action == notices.DELAYED else None,
    )
