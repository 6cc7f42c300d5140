"""The queue's side of delivery: claim due recipients, load what a delivery
needs, and record what happened, with the notices that follow.

Every function here runs on the database thread (Store.call), each in one
transaction, and touches rows through indexes only.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from empath.delivery import dsn, notices
from empath.queue import ids, models
from empath.queue.models import BOUNCED, DEFERRED, DELIVERED, PENDING, Body, Event, Message, Recipient
from empath.queue.store import NewMessage, NewRecipient, insert


@dataclass(frozen=True)
class Claimed:
    recipient_id: int
    queue_id: str
    address: str
    domain: str
    attempts: int
    notify: str | None
    orcpt: str | None


@dataclass(frozen=True)
class Loaded:
    queue_id: str
    sender: str
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
    columns = (
        Recipient.id,
        Recipient.message,
        Recipient.address,
        Recipient.domain,
        Recipient.attempts,
        Recipient.dsn_notify,
        Recipient.dsn_orcpt,
    )
    # One bounded range scan of (state, next_attempt_at) per state: a single
    # query with state IN (...) would sort every due row before the LIMIT.
    due = [
        row
        for state in PENDING
        # peewee's stubs type .tuples() as yielding models; it yields tuples.
        for row in cast(
            Iterable[tuple[Any, ...]],
            Recipient.select(Recipient.next_attempt_at, *columns)
            .where(Recipient.state == state, Recipient.next_attempt_at <= now)
            .order_by(Recipient.next_attempt_at)
            .limit(limit)
            .tuples(),
        )
    ]
    due.sort(key=lambda row: row[0])
    rows = [row[1:] for row in due[:limit]]
    if rows:
        Recipient.update(lease_owner=owner, lease_until=now + lease_time, next_attempt_at=now + lease_time).where(
            Recipient.id.in_([r[0] for r in rows])
        ).execute()
    return [Claimed(*row) for row in rows]


def next_due() -> float | None:
    """When the earliest pending recipient is due (leased ones: when their lease ends)."""
    return (
        Recipient.select(models.peewee.fn.MIN(Recipient.next_attempt_at)).where(Recipient.state.in_(PENDING)).scalar()
    )


def flush(now: float, domain: str | None = None) -> int:
    """Make pending, unleased recipients (of one domain, or all) due now; returns how many."""
    where = [Recipient.state.in_(PENDING), Recipient.lease_owner.is_null(), Recipient.next_attempt_at > now]
    if domain is not None:
        where.append(Recipient.domain == domain)
    return Recipient.update(next_attempt_at=now).where(*where).execute()


def load(queue_id: str) -> Loaded | None:
    m = Message.get_or_none(Message.queue_id == queue_id)
    if m is None:
        return None
    body = Body.get(Body.message == queue_id).data
    return Loaded(
        m.queue_id,
        m.sender,
        bytes(body),
        m.smtputf8,
        m.body_type,
        m.dsn_ret,
        m.dsn_envid,
        m.received_at,
        m.expires_at,
        m.trace_id,
        m.kind,
    )


@dataclass(frozen=True)
class NoticeSettings:
    hostname: str
    postmaster: str  # where failed notices about null-sender mail go
    delay_warning: float
    lifetime: float


def record(queue_id: str, results: list[Result], now: float, settings: NoticeSettings) -> Recorded:
    """Store the outcome of one delivery; queue any notices owed; drop the
    message once every recipient is done. Returns the notices made and whether it was dropped."""
    for r in results:
        fields: dict = {"lease_owner": None, "lease_until": None}
        if r.state == RETRY:
            fields["next_attempt_at"] = r.next_attempt_at
            if r.reply:  # say why it waits (an open circuit breaker)
                fields.update(last_reply=r.reply, last_status=r.status)
        else:
            fields.update(
                state=r.state,
                last_reply=r.reply,
                last_status=r.status,
                remote_mta=r.remote,
                relayed=r.relayed,
                attempts=Recipient.attempts + 1,
            )
            if r.state == DEFERRED:
                fields["next_attempt_at"] = r.next_attempt_at
        Recipient.update(fields).where(Recipient.id == r.recipient_id).execute()
    rows = {row.id: row for row in Recipient.select().where(Recipient.message == queue_id)}
    for r in results:
        if r.state != RETRY:
            row = rows[r.recipient_id]
            detail = f"relay={r.remote or 'none'} status={r.status} {r.reply}"
            Event.create(queue_id=queue_id, recipient=row.address, at=now, kind=r.state, detail=detail[:2000])
    if any(row.lease_owner is not None for row in rows.values()):
        return Recorded([])  # another delivery of this message is under way; the last one reports
    made = _notices(queue_id, list(rows.values()), now, settings)
    if all(row.state in (DELIVERED, BOUNCED) for row in rows.values()):
        Message.delete().where(Message.queue_id == queue_id).execute()
        Event.create(queue_id=queue_id, at=now, kind="removed", detail="every recipient is done")
        return Recorded(made, BOUNCED if any(row.state == BOUNCED for row in rows.values()) else DELIVERED)
    return Recorded(made)


def _notices(queue_id: str, rows: list[Recipient], now: float, settings: NoticeSettings) -> list[str]:
    message = Message.get(Message.queue_id == queue_id)
    target = notices.report_target(message.kind, message.sender, settings.postmaster)
    if target is None:
        return []
    to, kind = target
    pending = [
        notices.Pending(
            row.address,
            row.state,
            tuple((row.dsn_notify or "").split(",")) if row.dsn_notify else (),
            row.notified,
            row.relayed,
        )
        for row in rows
    ]
    owed = notices.owed(pending, message.received_at, now, settings.delay_warning, to_sender=kind == models.DSN)
    if not owed:
        return []
    by_address = {row.address: row for row in rows}
    original = bytes(Body.get(Body.message == queue_id).data)
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
                sender="",
                body=body,
                recipients=[NewRecipient(to, to.rpartition("@")[2].lower())],
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
        Recipient.update(notified=action).where(Recipient.id.in_([by_address[p.address].id for p in due])).execute()
        Event.create(queue_id=queue_id, at=now, kind="notice", detail=f"{action} notice {new_id} to <{to}>")
        made.append(new_id)
    return made


def _dsn_recipient(row: Recipient, action: str, message: Message, now: float) -> dsn.DsnRecipient:
    return dsn.DsnRecipient(
        address=row.address,
        action=action,
        status=row.last_status or ("2.0.0" if action == notices.RELAYED else "4.0.0"),
        diagnostic=row.last_reply,
        remote_mta=row.remote_mta,
        orcpt=row.dsn_orcpt,
        last_attempt=now,
        will_retry_until=message.expires_at if action == notices.DELAYED else None,
    )
