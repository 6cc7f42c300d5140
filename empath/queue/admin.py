"""What an operator asks of the queue: list, show, delete, hold, release, retry.

Every function takes the database first: the daemon runs them on its
database thread (``Queue.call`` for listings, ``Queue.write`` for actions,
which then commit with everyone else's writes), empathctl and mailq on a
file they opened themselves (``database.open_readonly`` for the listings).
Actions find their rows by queue id (message's primary key, recipient's and
event's queue_id indexes) or by state (recipient's (state, next_attempt_at)
index), run in one transaction
(a savepoint inside the group commit; on their own, one that takes the
write lock at BEGIN: they read, then write, and a deferred transaction would
be refused at its first write if another process committed in between),
write one ``operator`` event per message they changed, and return how many
messages they changed.

Holding: the scheduler claims only queued and deferred recipients, so a hold
moves a message's pending recipients to ``held`` and sets ``message.held``,
the operator's mark that listings show (mailq's ``!``); a release clears both.

A recipient being delivered right now holds a lease (``lease_owner``). No
action clears a lease or makes a leased row due, since the scheduler would
claim it a second time while the first delivery still runs. What the
delivery in flight reports is recorded over what an action did to the row,
so at-least-once delivery holds and nothing is lost; each action says what
that means for it.
"""

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import peewee

from empath.addresses import Domain
from empath.queue import ids
from empath.queue.models import Body, Event, Message, Recipient, event_id, tuples
from empath.queue.states import ACTIVE, PENDING, WAITING, State

_CHUNK = 500  # ids per statement, well under SQLite's limit on bound variables


def _recipients(db: peewee.Database, where: Any) -> Iterable[dict[str, Any]]:
    """Recipient rows as dicts; ``message`` is the queue id (no lookup of the message)."""
    return cast(Iterable[dict[str, Any]], Recipient.select().where(where).order_by(Recipient.id).dicts().execute(db))


@dataclass(frozen=True)
class QueueFilter:
    """Which messages a listing shows; every field given must match.

    ``state`` and ``domain`` match one recipient of the message (the same one
    when both are given); ``sender`` is an address (any case), ``<>`` for the
    null sender, or ``@domain`` for any sender there (a pattern, so text, not
    an address); ``older_than`` is in seconds since receipt.
    """

    state: str | None = None
    domain: Domain | None = None
    sender: str | None = None
    older_than: float | None = None


# -- listings ---------------------------------------------------------------------


def _message_conditions(flt: QueueFilter, now: float) -> list[Any]:
    where: list[Any] = []
    if flt.older_than is not None:
        where.append(Message.received_at <= now - flt.older_than)
    if flt.sender is not None:
        if flt.sender == "<>":
            where.append(Message.sender == "")
        elif flt.sender.startswith("@"):
            where.append(Message.sender.endswith(flt.sender))  # LIKE: any case
        else:
            where.append(peewee.fn.LOWER(Message.sender) == flt.sender.lower())
    rcpt: list[Any] = []
    if flt.state == ACTIVE:
        rcpt += [Recipient.state.in_(WAITING), Recipient.lease_owner.is_null(False)]
    elif flt.state is not None:
        rcpt.append(Recipient.state == flt.state)
    if flt.domain is not None:
        rcpt.append(Recipient.domain == flt.domain)
    if rcpt:
        where.append(Message.queue_id.in_(Recipient.select(Recipient.message).where(*rcpt)))
    return where


_LISTED = ("address", "state", "attempts", "next_attempt_at", "last_reply", "last_status", "remote_mta")


def _recipient(row: dict[str, Any]) -> dict[str, Any]:
    return {key: row[key] for key in _LISTED}


def list_messages(db: peewee.Database, flt: QueueFilter, now: float, limit: int | None = None) -> list[dict[str, Any]]:
    """The messages that match, oldest first, each with all its recipients (JSON-ready).

    ``active``: a recipient is being delivered right now; ``held``: an operator
    put the message on hold.
    """
    # Both reads in one transaction, one snapshot: other processes (the daemon,
    # sendmail) commit meanwhile, and a message that arrived between the two
    # would have recipients but no row here.
    with db.atomic():
        return _list_messages(db, flt, now, limit)


def _list_messages(db: peewee.Database, flt: QueueFilter, now: float, limit: int | None) -> list[dict[str, Any]]:
    chosen = Message.select(Message.queue_id).order_by(Message.received_at, Message.queue_id)
    if where := _message_conditions(flt, now):
        chosen = chosen.where(*where)
    if limit is not None:
        chosen = chosen.limit(limit)
    messages = Message.select(Message.queue_id, Message.size, Message.received_at, Message.sender, Message.held)
    messages = messages.where(Message.queue_id.in_(chosen)).order_by(Message.received_at, Message.queue_id)
    rows: dict[str, dict[str, Any]] = {
        queue_id: {
            "queue_id": queue_id,
            "size": size,
            "received_at": received_at,
            "age": max(0.0, now - received_at),
            "sender": sender,
            "held": bool(held),
            "active": False,
            "recipients": [],
        }
        for queue_id, size, received_at, sender, held in tuples(db, messages)
    }
    columns = [getattr(Recipient, name) for name in _LISTED]
    query = Recipient.select(Recipient.message, Recipient.lease_owner, *columns)
    for queue_id, lease_owner, *listed in tuples(db, query.where(Recipient.message.in_(chosen)).order_by(Recipient.id)):
        row = rows[queue_id]
        row["active"] = row["active"] or lease_owner is not None
        row["recipients"].append(dict(zip(_LISTED, listed, strict=True)))
    return list(rows.values())


def why(state: str, lease_until: float | None, last_reply: str | None, next_attempt_at: float, now: float) -> str:
    """Why a recipient is where it is, in a few words (pure)."""
    if lease_until is not None:
        # A lease outlives its delivery only when the daemon died: the next start clears it.
        return "being delivered now" if lease_until > now else "its delivery stopped; due again at the next start"
    if state == State.HELD:
        return "on hold (empathctl queue release)"
    if state == State.DEFERRED:
        return f"deferred: {last_reply}" if last_reply else "deferred"
    if state == State.QUEUED:
        if last_reply:  # put back without an attempt: a circuit breaker was open
            return f"waiting: {last_reply}"
        return "due now" if next_attempt_at <= now else "put back by a rate limit"
    return last_reply or state


def show_message(db: peewee.Database, queue_id: str, now: float, body: bool = False) -> dict[str, Any] | None:
    """One message in full: envelope, recipients (with why each waits), its history from the
    event table, and with ``body`` the message itself.

    The body is text: decoded as UTF-8, a byte that is not UTF-8 replaced by U+FFFD
    (readable for nearly all mail; ``body_bytes`` is the exact size). A message no
    longer in the queue still shows its history (``in_queue`` false); None when
    nothing is known of ``queue_id``.
    """
    events = [
        {"at": e.at, "kind": e.kind, "recipient": e.recipient, "detail": e.detail}
        for e in Event.select().where(Event.queue_id == queue_id).order_by(Event.at, event_id).execute(db)
    ]
    m = Message.select().where(Message.queue_id == queue_id).first(db)
    if m is None:
        return {"queue_id": queue_id, "in_queue": False, "events": events} if events else None
    recipients = []
    for r in _recipients(db, Recipient.message == queue_id):
        recipients.append(
            _recipient(r)
            | {
                "domain": r["domain"],
                "relayed": r["relayed"],
                "notified": r["notified"],
                "notify": r["dsn_notify"],
                "orcpt": r["dsn_orcpt"],
                "leased_until": r["lease_until"],
                "why": why(r["state"], r["lease_until"], r["last_reply"], r["next_attempt_at"], now),
            }
        )
    detail: dict[str, Any] = {
        "queue_id": m.queue_id,
        "in_queue": True,
        "sender": m.sender,
        "size": m.size,
        "received_at": m.received_at,
        "age": max(0.0, now - m.received_at),
        "expires_at": m.expires_at,
        "client_address": m.client_address,
        "client_helo": m.client_helo,
        "auth_user": m.auth_user,
        "listener": m.listener,
        "trace_id": m.trace_id,
        "kind": m.kind,
        "smtputf8": m.smtputf8,
        "body_type": m.body_type,
        "dsn_ret": m.dsn_ret,
        "dsn_envid": m.dsn_envid,
        "held": m.held,
        "active": any(r["leased_until"] is not None for r in recipients),
        "recipients": recipients,
        "events": events,
    }
    if body:
        data = bytes(Body.select(Body.data).where(Body.message == queue_id).scalar(db))
        detail["body"] = data.decode("utf-8", errors="replace")
        detail["body_bytes"] = len(data)
    return detail


# -- actions ----------------------------------------------------------------------


def _check(queue_ids: Sequence[str] | None) -> list[str] | None:
    if queue_ids is None:
        return None
    bad = [q for q in queue_ids if not ids.valid(q)]
    if bad:
        raise ValueError(f"not a queue id: {bad[0]!r}")
    return list(dict.fromkeys(queue_ids))


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _note(db: peewee.Database, queue_ids: Sequence[str], now: float, detail: str) -> None:
    # One prepared statement for every row: peewee would build the SQL of each
    # row anew, seconds of CPU for an action on a large queue.
    db.connection().executemany(
        "INSERT INTO event (queue_id, at, kind, detail) VALUES (?, ?, 'operator', ?)",
        [(q, now, detail) for q in queue_ids],
    )


def _messages(db: peewee.Database, queue_ids: list[str] | None, *where: Any) -> list[str]:
    """The queue ids of the messages (of ``queue_ids``, or every one) matching ``where``."""
    select = Message.select(Message.queue_id)
    if queue_ids is None:
        return [q for (q,) in tuples(db, select.where(*where) if where else select)]
    chunks = _chunks(queue_ids)
    return [q for chunk in chunks for (q,) in tuples(db, select.where(Message.queue_id.in_(chunk), *where))]


def _update(db: peewee.Database, queue_ids: list[str] | None, where: list[Any], fields: dict[str, Any]) -> list[str]:
    """Update the recipients matching ``where`` (of ``queue_ids``, or of every message);
    return the queue ids of the messages touched."""
    if queue_ids is None:
        batches: list[list[Any]] = [where]
    else:
        batches = [[*where, Recipient.message.in_(chunk)] for chunk in _chunks(queue_ids)]
    touched: dict[str, None] = {}
    for conditions in batches:
        for (queue_id,) in tuples(db, Recipient.select(Recipient.message).where(*conditions).distinct()):
            touched[queue_id] = None
        Recipient.update(fields).where(*conditions).execute(db)
    return list(touched)


def delete(db: peewee.Database, queue_ids: Sequence[str] | None, now: float | None = None) -> int:
    """Remove messages (None: every message) with their bodies and recipients; returns how many.

    A delivery in flight cannot be called back: it ends, and the mail may still
    arrive; what it reports finds no message.
    """
    chosen = _check(queue_ids)
    now = time.time() if now is None else now
    with db.atomic(lock_type="IMMEDIATE"):
        gone = _messages(db, chosen)
        for chunk in _chunks(gone):
            Message.delete().where(Message.queue_id.in_(chunk)).execute(db)  # body and recipients cascade
        _note(db, gone, now, "deleted by the operator")
    return len(gone)


def hold(db: peewee.Database, queue_ids: Sequence[str] | None, now: float | None = None) -> int:
    """Put messages (None: every message) on hold: their queued and deferred
    recipients become held and are not delivered until released; returns how many.

    A recipient being delivered is marked held too, and its delivery runs on:
    delivered or bounced stands; put back (a rate limit or open breaker) or
    deferred, it stays held (claims.record); the daemon dying leaves it held.
    """
    chosen = _check(queue_ids)
    now = time.time() if now is None else now
    with db.atomic(lock_type="IMMEDIATE"):
        touched = _update(db, chosen, [Recipient.state.in_(PENDING)], {"state": State.HELD})
        for chunk in _chunks(touched):
            Message.update(held=True).where(Message.queue_id.in_(chunk)).execute(db)
        _note(db, touched, now, "held by the operator")
    return len(touched)


def release(db: peewee.Database, queue_ids: Sequence[str] | None, now: float) -> int:
    """Release held messages (None: every one): their held recipients are due now,
    deferred if they were tried before, else queued; returns how many.

    A held recipient still being delivered keeps its lease and is not made due
    (that would start a second delivery beside the first).
    """
    chosen = _check(queue_ids)
    held = [Recipient.state == State.HELD]
    with db.atomic(lock_type="IMMEDIATE"):
        touched = _update(db, chosen, [*held, Recipient.lease_owner.is_null()], {"next_attempt_at": now})
        touched += _update(db, chosen, [*held, Recipient.attempts > 0], {"state": State.DEFERRED})
        touched += _update(db, chosen, held, {"state": State.QUEUED})
        released = list(dict.fromkeys(touched + _messages(db, chosen, Message.held == True)))  # noqa: E712 - SQL, not Python
        for chunk in _chunks(released):
            Message.update(held=False).where(Message.queue_id.in_(chunk)).execute(db)
        _note(db, released, now, "released by the operator")
    return len(released)


def waiting_domains(db: peewee.Database, queue_ids: Sequence[str]) -> list[Domain]:
    """The domains of these messages' recipients still waiting for delivery."""
    found: dict[Domain, None] = {}
    for chunk in _chunks(list(queue_ids)):
        query = Recipient.select(Recipient.domain).where(Recipient.state.in_(PENDING), Recipient.message.in_(chunk))
        for (domain,) in tuples(db, query.distinct()):
            found[Domain(domain)] = None
    return list(found)


def retry(db: peewee.Database, queue_ids: Sequence[str] | None, domain: Domain | None, now: float) -> int:
    """Process now: queued and deferred recipients waiting for a later attempt (of
    these messages, of this domain, or every one) are due now; returns how many messages.

    Held recipients stay held, and one being delivered keeps its lease (making
    it due would start a second delivery beside the first). The daemon's
    scheduler still needs a wake-up to act at once.
    """
    chosen = _check(queue_ids)
    where = [Recipient.state.in_(PENDING), Recipient.lease_owner.is_null(), Recipient.next_attempt_at > now]
    if domain is not None:
        where.append(Recipient.domain == domain)
    with db.atomic(lock_type="IMMEDIATE"):
        touched = _update(db, chosen, where, {"next_attempt_at": now})
        _note(db, touched, now, "retry now" + (f" (domain {domain})" if domain else "") + ", by the operator")
    return len(touched)
