"""A new message into the queue: its row, its body, its recipients and its first events.

``insert`` runs inside a transaction its caller holds (the daemon's group
commit, or ``insert_alone`` for a process of its own such as sendmail). It
writes fixed SQL on the connection: peewee would build each query's SQL
anew, CPU taken from the sessions of the process (one GIL).
"""

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import peewee

from empath.addresses import Domain, EmailAddress, ReversePath
from empath.queue import database
from empath.queue.spool import Spool
from empath.queue.states import Kind, State


@dataclass(frozen=True)
class NewRecipient:
    address: EmailAddress
    domain: Domain
    notify: tuple[str, ...] = ()
    orcpt: str | None = None


@dataclass
class NewMessage:
    queue_id: str
    sender: ReversePath
    body: Spool  # as received, in memory or in its spool file
    recipients: list[NewRecipient]
    received_at: float
    expires_at: float
    client_address: str
    client_helo: str
    listener: str
    trace_id: str
    auth_user: str | None = None
    smtputf8: bool = False
    body_type: str = "7BIT"
    dsn_ret: str | None = None
    dsn_envid: str | None = None
    # From a client neither trusted nor logged in: its sender may be forged, so a
    # failure notice returns only its headers (delivery/results.py).
    stranger: bool = False
    events: list[tuple[str, str]] = field(default_factory=list)
    kind: Kind = Kind.MAIL
    # Header fields Empath puts in front of the body (Received, DKIM-Signature, ...).
    # Stored as head + body; kept apart here so a large body is never copied to join them.
    head: bytes = b""

    @property
    def size(self) -> int:
        return len(self.head) + len(self.body)


INSERT_MESSAGE = (
    "INSERT INTO message (queue_id, sender, size, received_at, expires_at, client_address, client_helo, auth_user,"
    " listener, trace_id, smtputf8, body_type, dsn_ret, dsn_envid, held, kind, stranger)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)"
)
INSERT_RECIPIENT = (
    "INSERT INTO recipient (queue_id, address, domain, state, attempts, next_attempt_at, relayed,"
    " dsn_notify, dsn_orcpt) VALUES (?, ?, ?, ?, 0, ?, 0, ?, ?)"
)
INSERT_EVENT = "INSERT INTO event (queue_id, recipient, at, kind, detail) VALUES (?, ?, ?, ?, ?)"


def insert(db: peewee.SqliteDatabase, msg: NewMessage) -> None:
    conn = db.connection()
    conn.execute(
        INSERT_MESSAGE,
        (
            msg.queue_id,
            msg.sender,
            msg.size,
            msg.received_at,
            msg.expires_at,
            msg.client_address,
            msg.client_helo,
            msg.auth_user,
            msg.listener,
            msg.trace_id,
            msg.smtputf8,
            msg.body_type,
            msg.dsn_ret,
            msg.dsn_envid,
            msg.kind,
            msg.stranger,
        ),
    )
    _insert_body(conn, msg.queue_id, msg.head, msg.body)
    conn.executemany(
        INSERT_RECIPIENT,
        [
            (msg.queue_id, r.address, r.domain, State.QUEUED, msg.received_at, ",".join(r.notify) or None, r.orcpt)
            for r in msg.recipients
        ],
    )
    conn.executemany(INSERT_EVENT, [(msg.queue_id, None, msg.received_at, kind, detail) for kind, detail in msg.events])


# A body larger than this is written into its row piece by piece (SQLite's
# incremental blob I/O), as the spool gives it: bound whole, it would be read
# into memory, and SQLite would keep two more copies while it builds the row.
STREAM_BODY_OVER = 1 << 20


def _insert_body(conn: sqlite3.Connection, queue_id: str, head: bytes, body: Spool) -> None:
    if len(body) <= STREAM_BODY_OVER:
        conn.execute("INSERT INTO body (queue_id, data) VALUES (?, ?)", (queue_id, b"".join([head, *body.pieces()])))
        return
    size = len(head) + len(body)
    row = conn.execute("INSERT INTO body (queue_id, data) VALUES (?, zeroblob(?))", (queue_id, size)).lastrowid
    assert row is not None
    with conn.blobopen("body", "data", row) as blob:
        blob.write(head)
        for piece in body.pieces():
            blob.write(piece)


def insert_all(db: peewee.SqliteDatabase, messages: tuple[NewMessage, ...]) -> None:
    """The entries one accepted message became (a forwarded copy has its own): all or none."""
    for msg in messages:
        insert(db, msg)


def insert_alone(path: Path, messages: tuple[NewMessage, ...], max_size: int = 0) -> None:
    """Write ``messages`` into the queue file at ``path`` in a transaction of their own, for a
    process that is not the daemon (sendmail). SQLite serializes it with the daemon's writes."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    db = database.connect(path, max_size)
    try:
        database.ensure_schema(db)
        with db.atomic(lock_type="IMMEDIATE"):
            insert_all(db, messages)
    finally:
        db.close()
