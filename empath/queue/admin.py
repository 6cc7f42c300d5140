"""What an operator asks of the queue: list, show, delete, hold, release, retry.

Every function works on the models bound through ``models.database_proxy``:
on the daemon's database thread (``GroupCommitter.write(fn, *args)``, so an
action commits with everyone else's writes), or in a process that opened the
file itself (``open_readonly`` for the listings). Actions find their rows by
queue id (message's primary key, recipient's and event's queue_id indexes) or
by state (recipient's (state, next_attempt_at) index), run in one transaction
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

import re
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import peewee

from empath.addresses import AddressError, Domain
from empath.config import values
from empath.queue import models
from empath.queue.models import DEFERRED, HELD, PENDING, QUEUED, STATES, Body, Event, Message, Recipient

ACTIVE = "active"  # a filter state: recipients being delivered right now (leased)
FILTER_STATES = (*STATES, ACTIVE)
WAITING = (*PENDING, HELD)  # recipients still to deliver, as listings show them

# ids.new_id: sixteen characters of Crockford's base32 (no I, L, O, U).
_QUEUE_ID = re.compile(r"[0-9A-HJKMNP-TV-Z]{16}")
_SECONDS = re.compile(r"\d+(\.\d+)?")  # a bare number of seconds: no nan, inf or exponent
_CHUNK = 500  # ids per statement, well under SQLite's limit on bound variables
# peewee's implicit id of the event table: the order events were written in.
event_id = cast(peewee.AutoField, Event._meta.primary_key)


def tuples(query: Any) -> Iterable[tuple[Any, ...]]:
    """A query's rows as SQLite gives them (a boolean is 0 or 1): peewee's
    conversion of every value takes most of the time of a large listing."""
    return cast(Iterable[tuple[Any, ...]], models.database_proxy.execute(query))


def _recipients(where: Any) -> Iterable[dict[str, Any]]:
    """Recipient rows as dicts; ``message`` is the queue id (no lookup of the message)."""
    return cast(Iterable[dict[str, Any]], Recipient.select().where(where).order_by(Recipient.id).dicts())


def valid_queue_id(text: str) -> bool:
    """Is ``text`` a queue id as ids.new_id makes them (upper case, exactly 16 characters)?"""
    return isinstance(text, str) and _QUEUE_ID.fullmatch(text) is not None


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


def parse_age(text: str) -> float:
    """Seconds from an age as the command line gives it: ``90``, ``1.5``, ``30m``, ``2h``, ``5d``."""
    text = text.strip()
    try:
        return float(text) if _SECONDS.fullmatch(text) else values.duration(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an age such as 90, 30m, 2h or 5d") from None


def parse_filter(
    state: str | None = None, domain: str | None = None, sender: str | None = None, older_than: str | None = None
) -> QueueFilter:
    """A QueueFilter from the command line's words; ValueError names what is wrong."""
    if state is not None and state not in FILTER_STATES:
        raise ValueError(f"unknown state {state!r} (one of {', '.join(FILTER_STATES)})")
    if domain is not None and not domain.strip():
        raise ValueError("empty domain")
    if sender is not None and not sender.strip():
        raise ValueError("empty sender (use <> for the null sender)")
    try:
        wanted = Domain.name(domain.strip().rstrip(".")) if domain is not None else None
    except AddressError as exc:
        raise ValueError(f"{domain!r} is not a domain name: {exc}") from None
    return QueueFilter(
        state,
        wanted,
        sender.strip() if sender is not None else None,
        parse_age(older_than) if older_than is not None else None,
    )


@contextmanager
def open_readonly(path: Path) -> Iterator[peewee.SqliteDatabase]:
    """Bind the models to ``path`` opened read-only (SQLite's mode=ro), beside a running daemon or not."""
    db = peewee.SqliteDatabase(
        f"file:{urllib.parse.quote(str(path))}?mode=ro",
        uri=True,
        pragmas=[("busy_timeout", 5000)],
        autoconnect=False,
    )
    db.connect()
    previous = models.database_proxy.obj
    models.database_proxy.initialize(db)
    try:
        yield db
    finally:
        db.close()
        models.database_proxy.initialize(previous)


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


def list_messages(flt: QueueFilter, now: float, limit: int | None = None) -> list[dict[str, Any]]:
    """The messages that match, oldest first, each with all its recipients (JSON-ready).

    ``active``: a recipient is being delivered right now; ``held``: an operator
    put the message on hold.
    """
    # Both reads in one transaction, one snapshot: other processes (the daemon,
    # sendmail) commit meanwhile, and a message that arrived between the two
    # would have recipients but no row here.
    with models.database_proxy.atomic():
        return _list_messages(flt, now, limit)


def _list_messages(flt: QueueFilter, now: float, limit: int | None) -> list[dict[str, Any]]:
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
        for queue_id, size, received_at, sender, held in tuples(messages)
    }
    columns = [getattr(Recipient, name) for name in _LISTED]
    query = Recipient.select(Recipient.message, Recipient.lease_owner, *columns)
    for queue_id, lease_owner, *listed in tuples(query.where(Recipient.message.in_(chosen)).order_by(Recipient.id)):
        row = rows[queue_id]
        row["active"] = row["active"] or lease_owner is not None
        row["recipients"].append(dict(zip(_LISTED, listed, strict=True)))
    return list(rows.values())


def why(state: str, lease_until: float | None, last_reply: str | None, next_attempt_at: float, now: float) -> str:
    """Why a recipient is where it is, in a few words (pure)."""
    if lease_until is not None:
        # A lease outlives its delivery only when the daemon died: the next start clears it.
        return "being delivered now" if lease_until > now else "its delivery stopped; due again at the next start"
    if state == HELD:
        return "on hold (empathctl queue release)"
    if state == DEFERRED:
        return f"deferred: {last_reply}" if last_reply else "deferred"
    if state == QUEUED:
        if last_reply:  # put back without an attempt: a circuit breaker was open
            return f"waiting: {last_reply}"
        return "due now" if next_attempt_at <= now else "put back by a rate limit"
    return last_reply or state


def show_message(queue_id: str, now: float, body: bool = False) -> dict[str, Any] | None:
    """One message in full: envelope, recipients (with why each waits), its history from the
    event table, and with ``body`` the message itself.

    The body is text: decoded as UTF-8, a byte that is not UTF-8 replaced by U+FFFD
    (readable for nearly all mail; ``body_bytes`` is the exact size). A message no
    longer in the queue still shows its history (``in_queue`` false); None when
    nothing is known of ``queue_id``.
    """
    events = [
        {"at": e.at, "kind": e.kind, "recipient": e.recipient, "detail": e.detail}
        for e in Event.select().where(Event.queue_id == queue_id).order_by(Event.at, event_id)
    ]
    m = Message.get_or_none(Message.queue_id == queue_id)
    if m is None:
        return {"queue_id": queue_id, "in_queue": False, "events": events} if events else None
    recipients = []
    for r in _recipients(Recipient.message == queue_id):
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
        data = bytes(Body.get(Body.message == queue_id).data)
        detail["body"] = data.decode("utf-8", errors="replace")
        detail["body_bytes"] = len(data)
    return detail


# -- actions ----------------------------------------------------------------------


def _check(queue_ids: Sequence[str] | None) -> list[str] | None:
    if queue_ids is None:
        return None
    bad = [q for q in queue_ids if not valid_queue_id(q)]
    if bad:
        raise ValueError(f"not a queue id: {bad[0]!r}")
    return list(dict.fromkeys(queue_ids))


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _note(queue_ids: Sequence[str], now: float, detail: str) -> None:
    # One prepared statement for every row: peewee would build the SQL of each
    # row anew, seconds of CPU for an action on a large queue.
    models.database_proxy.connection().executemany(
        "INSERT INTO event (queue_id, at, kind, detail) VALUES (?, ?, 'operator', ?)",
        [(q, now, detail) for q in queue_ids],
    )


def _messages(queue_ids: list[str] | None, *where: Any) -> list[str]:
    """The queue ids of the messages (of ``queue_ids``, or every one) matching ``where``."""
    select = Message.select(Message.queue_id)
    if queue_ids is None:
        return [q for (q,) in tuples(select.where(*where) if where else select)]
    return [q for chunk in _chunks(queue_ids) for (q,) in tuples(select.where(Message.queue_id.in_(chunk), *where))]


def _update(queue_ids: list[str] | None, where: list[Any], fields: dict[str, Any]) -> list[str]:
    """Update the recipients matching ``where`` (of ``queue_ids``, or of every message);
    return the queue ids of the messages touched."""
    if queue_ids is None:
        batches: list[list[Any]] = [where]
    else:
        batches = [[*where, Recipient.message.in_(chunk)] for chunk in _chunks(queue_ids)]
    touched: dict[str, None] = {}
    for conditions in batches:
        for (queue_id,) in tuples(Recipient.select(Recipient.message).where(*conditions).distinct()):
            touched[queue_id] = None
        Recipient.update(fields).where(*conditions).execute()
    return list(touched)


def delete(queue_ids: Sequence[str] | None, now: float | None = None) -> int:
    """Remove messages (None: every message) with their bodies and recipients; returns how many.

    A delivery in flight cannot be called back: it ends, and the mail may still
    arrive; what it reports finds no message.
    """
    ids = _check(queue_ids)
    now = time.time() if now is None else now
    with models.database_proxy.atomic(lock_type="IMMEDIATE"):
        gone = _messages(ids)
        for chunk in _chunks(gone):
            Message.delete().where(Message.queue_id.in_(chunk)).execute()  # body and recipients cascade
        _note(gone, now, "deleted by the operator")
    return len(gone)


def hold(queue_ids: Sequence[str] | None, now: float | None = None) -> int:
    """Put messages (None: every message) on hold: their queued and deferred
    recipients become held and are not delivered until released; returns how many.

    A recipient being delivered is marked held too, and its delivery runs on:
    delivered or bounced stands; put back (a rate limit or open breaker) or
    deferred, it stays held (work.record); the daemon dying leaves it held.
    """
    ids = _check(queue_ids)
    now = time.time() if now is None else now
    with models.database_proxy.atomic(lock_type="IMMEDIATE"):
        touched = _update(ids, [Recipient.state.in_(PENDING)], {"state": HELD})
        for chunk in _chunks(touched):
            Message.update(held=True).where(Message.queue_id.in_(chunk)).execute()
        _note(touched, now, "held by the operator")
    return len(touched)


def release(queue_ids: Sequence[str] | None, now: float) -> int:
    """Release held messages (None: every one): their held recipients are due now,
    deferred if they were tried before, else queued; returns how many.

    A held recipient still being delivered keeps its lease and is not made due
    (that would start a second delivery beside the first).
    """
    ids = _check(queue_ids)
    held = [Recipient.state == HELD]
    with models.database_proxy.atomic(lock_type="IMMEDIATE"):
        touched = _update(ids, [*held, Recipient.lease_owner.is_null()], {"next_attempt_at": now})
        touched += _update(ids, [*held, Recipient.attempts > 0], {"state": DEFERRED})
        touched += _update(ids, held, {"state": QUEUED})
        released = list(dict.fromkeys(touched + _messages(ids, Message.held == True)))  # noqa: E712 - SQL, not Python
        for chunk in _chunks(released):
            Message.update(held=False).where(Message.queue_id.in_(chunk)).execute()
        _note(released, now, "released by the operator")
    return len(released)


def retry(queue_ids: Sequence[str] | None, domain: Domain | None, now: float) -> int:
    """Process now: queued and deferred recipients waiting for a later attempt (of
    these messages, of this domain, or every one) are due now; returns how many messages.

    Held recipients stay held, and one being delivered keeps its lease (making
    it due would start a second delivery beside the first). The daemon's
    scheduler still needs a wake-up to act at once.
    """
    ids = _check(queue_ids)
    where = [Recipient.state.in_(PENDING), Recipient.lease_owner.is_null(), Recipient.next_attempt_at > now]
    if domain is not None:
        where.append(Recipient.domain == domain)
    with models.database_proxy.atomic(lock_type="IMMEDIATE"):
        touched = _update(ids, where, {"next_attempt_at": now})
        _note(touched, now, "retry now" + (f" (domain {domain})" if domain else "") + ", by the operator")
    return len(touched)


# -- text -------------------------------------------------------------------------


def format_age(seconds: float) -> str:
    """``45s``, ``12m 5s``, ``3h 20m``, ``2d 4h`` (pure)."""
    s = max(0, int(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit} {s % size // sub_size}{sub}"
    return f"{s}s"


def format_time(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(at))


def format_list(rows: list[dict[str, Any]]) -> str:
    """Postfix's mailq layout (pure): ``*`` after the id marks a message being
    delivered, ``!`` one on hold; each reason for deferral once, in parentheses,
    above the recipients it holds back. Recipients already done are not shown."""
    if not rows:
        return "Mail queue is empty\n"
    out = ["-Queue ID-        --Size-- ----Arrival Time---- -Sender/Recipient-------"]
    for row in rows:
        mark = "!" if row["held"] else "*" if row["active"] else " "
        arrival = time.strftime("%a %b %d %H:%M:%S", time.localtime(row["received_at"]))
        out.append(f"{row['queue_id']}{mark} {row['size']:>8} {arrival}  {row['sender'] or 'MAILER-DAEMON'}")
        shown = set()
        for r in row["recipients"]:
            if r["state"] not in WAITING:
                continue
            reason = r["last_reply"] if r["state"] == DEFERRED else None
            if reason and reason not in shown:
                out.append(f"{'':43}({reason[:200]})")
                shown.add(reason)
            out.append(f"{'':43}{r['address']}")
        out.append("")
    kbytes = (sum(row["size"] for row in rows) + 1023) // 1024
    requests = len(rows)
    out.append(f"-- {kbytes} Kbytes in {requests} Request{'s' if requests != 1 else ''}.")
    return "\n".join(out) + "\n"


def format_show(detail: dict[str, Any]) -> str:
    """One message as ``queue show`` prints it (pure): envelope, recipients, history, body."""
    out = [f"Queue ID:   {detail['queue_id']}"]
    if not detail["in_queue"]:
        out.append("Status:     no longer in the queue")
    else:
        status = "on hold" if detail["held"] else "being delivered" if detail["active"] else "waiting"
        out += [
            f"Status:     {status}",
            f"Sender:     <{detail['sender']}>",
            f"Size:       {detail['size']} bytes ({detail['body_type']}{', SMTPUTF8' if detail['smtputf8'] else ''})",
            f"Received:   {format_time(detail['received_at'])} ({format_age(detail['age'])} ago)",
            f"From:       [{detail['client_address']}] helo={detail['client_helo'] or '-'}"
            f" listener={detail['listener']}" + (f" auth={detail['auth_user']}" if detail["auth_user"] else ""),
            f"Expires:    {format_time(detail['expires_at'])}",
            f"Kind:       {detail['kind']}"
            + (f" (DSN RET={detail['dsn_ret']})" if detail["dsn_ret"] else "")
            + (f" ENVID={detail['dsn_envid']}" if detail["dsn_envid"] else ""),
            f"Trace:      {detail['trace_id']}",
            "",
            "Recipients:",
        ]
        for r in detail["recipients"]:
            line = f"  <{r['address']}>  {r['state']}, {r['attempts']} attempt{'s' if r['attempts'] != 1 else ''}"
            if r["state"] in WAITING and r["leased_until"] is None:
                line += f", next attempt {format_time(r['next_attempt_at'])}"
            out.append(line)
            out.append(f"      {r['why']}" + (f" (from {r['remote_mta']})" if r["remote_mta"] else ""))
    out += ["", "History:"]
    for e in detail["events"]:
        who = f" <{e['recipient']}>" if e["recipient"] else ""
        out.append(f"  {format_time(e['at'])}  {e['kind']}{who}: {e['detail']}")
    if not detail["events"]:
        out.append("  (none recorded)")
    if "body" in detail:
        out += ["", f"Message ({detail['body_bytes']} bytes):", detail["body"].replace("\r\n", "\n").rstrip("\n")]
    return "\n".join(out) + "\n"
