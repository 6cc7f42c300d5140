"""The answers of recipient verification (delivery/verify.py), kept in the queue
database so that they outlive a restart and are shared by every process:
whether a next hop said an address exists, what it said, and when."""

import sqlite3
from dataclasses import dataclass

import peewee

from empath.queue.models import Verified


@dataclass(frozen=True)
class Answer:
    address: str  # as it was sent to the next hop
    exists: bool
    reply: str  # the next hop's reply to RCPT, and who gave it
    checked_at: float


def lookup(conn: sqlite3.Connection, address: str) -> Answer | None:
    """The answer kept for ``address``, if any; a read on the hub (Queue.read)."""
    row = conn.execute("SELECT found, reply, checked_at FROM verified WHERE address = ?", (address,)).fetchone()
    return None if row is None else Answer(address, bool(row[0]), row[1], row[2])


def count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM verified").fetchone()[0]


def remember(db: peewee.SqliteDatabase, answer: Answer) -> None:
    Verified.replace(
        address=answer.address, found=answer.exists, reply=answer.reply, checked_at=answer.checked_at
    ).execute(db)


def forget(db: peewee.SqliteDatabase, address: str) -> int:
    """Drop the answer kept for ``address``: the next RCPT asks again. How many were dropped (0 or 1)."""
    return Verified.delete().where(Verified.address == address).execute(db)


def prune(db: peewee.SqliteDatabase, positive_before: float, negative_before: float, keep: int) -> int:
    """Drop the answers that expired (checked before these times), then the oldest beyond
    ``keep`` entries, unknown addresses first: strangers asking for made-up names must not
    fill the disk. How many were dropped."""
    expired = (
        Verified.delete()
        .where(
            (Verified.found & (Verified.checked_at < positive_before))
            | (~Verified.found & (Verified.checked_at < negative_before))
        )
        .execute(db)
    )
    excess = Verified.select().count(db) - keep
    if excess <= 0:
        return expired
    oldest = Verified.select(Verified.address).order_by(Verified.found, Verified.checked_at).limit(excess)
    return expired + Verified.delete().where(Verified.address.in_(oldest)).execute(db)
