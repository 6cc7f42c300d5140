"""A delivery's results into the queue, with what they call for: the notices
owed to the sender (or the postmaster), and the message leaving the queue
once every recipient is done.

``record`` runs in the group commit (``Queue.write(results.record, ...)``),
so the rows, the notices and the removal commit together or not at all. The
queue does the writing (queue/claims.py, queue/insert.py); what is owed is
decided here (notices.py) and rendered by message/dsn.py.
"""

from collections.abc import Callable
from dataclasses import dataclass

import peewee

from empath.addresses import NULL_SENDER, EmailAddress, ReversePath
from empath.delivery import notices
from empath.message import dsn
from empath.queue import claims, ids
from empath.queue.claims import MessageRow, PutBack, RecipientRow, Result
from empath.queue.insert import NewMessage, NewRecipient, insert
from empath.queue.spool import Spool
from empath.queue.states import DONE, Kind, State


@dataclass(frozen=True)
class NoticeSettings:
    hostname: str
    postmaster: EmailAddress  # where failed notices about null-sender mail go
    delay_warning: float
    lifetime: float
    # A forwarded copy's sender is an SRS address of ours: its notices go to the sender it stands for.
    unforward: Callable[[ReversePath], ReversePath] = lambda sender: sender


@dataclass(frozen=True)
class Settled:
    notices: list[str]  # queue ids of the notices made
    removed: State | None = None  # the message left the queue: bounced if any recipient was, else delivered


def record(
    db: peewee.SqliteDatabase, queue_id: str, results: list[Result | PutBack], now: float, settings: NoticeSettings
) -> Settled:
    """Store the outcome of one delivery; queue any notices owed; drop the
    message once every recipient is done. Returns the notices made and whether it was dropped."""
    recorded = claims.record(db, queue_id, results, now)
    if recorded.message is None or recorded.busy:
        return Settled([])  # deleted meanwhile, or another delivery of it will report
    rows = recorded.recipients
    made = _notices(db, queue_id, recorded.message, rows, now, settings)
    if all(row.state in DONE for row in rows):
        claims.remove(db, queue_id, now)
        return Settled(made, State.BOUNCED if any(row.state == State.BOUNCED for row in rows) else State.DELIVERED)
    return Settled(made)


def _notices(
    db: peewee.SqliteDatabase,
    queue_id: str,
    message: MessageRow,
    rows: list[RecipientRow],
    now: float,
    settings: NoticeSettings,
) -> list[str]:
    sender = settings.unforward(ReversePath._trusted(message.sender))
    target = notices.report_target(message.kind, sender, settings.postmaster)
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
    owed = notices.owed(pending, message.received_at, now, settings.delay_warning, to_sender=kind == Kind.DSN)
    if not owed:
        return []
    by_address = {row.address: row for row in rows}
    original = claims.original(db, queue_id, dsn.RETURN_LIMIT + 1)  # enough to tell it is too long to quote
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
            # A stranger's sender may be forged: a notice must not mail the whole message to a victim.
            stranger=bool(message.stranger),
        )
        body = dsn.render(report)
        new_id = ids.new_id(now)
        insert(
            db,
            NewMessage(
                queue_id=new_id,
                sender=NULL_SENDER,
                body=Spool.holding(body),
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
            ),
        )
        claims.notified(db, queue_id, [by_address[p.address].id for p in due], action, new_id, to, now)
        made.append(new_id)
    return made


def _dsn_recipient(row: RecipientRow, action: str, message: MessageRow, now: float) -> dsn.DsnRecipient:
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
