"""Open the queue database, keep its schema current, and write new messages.

One connection writes; a lock gives it to one user at a time. What blocks
on the disk runs on the database thread, so the gevent hub never waits for
it: BEGIN (which may wait for another process's write lock), COMMIT (the
fsync, ``synchronous=FULL`` in WAL mode) and any write that may touch many
rows. A quick write (a message in, a delivery's result: a few rows through
indexes) runs on the hub between them: handing it to the thread cost more
than the write, and the two threads' GIL hand-offs slowed both. Sessions hand
their messages to the GroupCommitter, which writes all that is pending in
one transaction with one fsync, then wakes every session it carried.
"""

import errno
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import gevent
import gevent.event
import gevent.lock
import gevent.threadpool
import peewee

from empath import threads
from empath.addresses import Domain, EmailAddress, ReversePath
from empath.queue import models
from empath.queue.models import QUEUED, Recipient, SchemaInfo

log = logging.getLogger("empath.queue")
T = TypeVar("T")

# Upgrades from one schema version to the next: MIGRATIONS[n] turns version n
# into n + 1. Each runs inside the transaction that records the new version.
MIGRATIONS: dict[int, Callable[[peewee.SqliteDatabase], None]] = {
    # The metrics read the oldest message's age: MIN(received_at) from an index.
    1: lambda db: db.execute_sql("CREATE INDEX IF NOT EXISTS message_received_at ON message (received_at)"),
}


class QueueError(Exception):
    """The queue could not take the message; nothing was written."""


class StorageFull(QueueError):
    """The disk, or the configured queue size, has no room left."""


class SchemaTooNew(QueueError):
    pass


class AlreadyRunning(QueueError):
    pass


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
    body: bytes | bytearray  # as received; a session's DATA buffer is taken as it is, not copied
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
    events: list[tuple[str, str]] = field(default_factory=list)
    kind: str = models.MAIL
    # Header fields Empath puts in front of the body (Received, DKIM-Signature, ...).
    # Stored as head + body; kept apart here so a large body is never copied to join them.
    head: bytes = b""

    @property
    def size(self) -> int:
        return len(self.head) + len(self.body)


@dataclass(frozen=True)
class Write:
    """One write of a group commit: ``fn(*args)``. A quick one runs on the hub (see above)."""

    fn: Callable[..., Any]
    args: tuple
    quick: bool = False


def connect(path: Path, max_size: int = 0, readonly: bool = False) -> peewee.SqliteDatabase:
    """A peewee database on ``path`` with the pragmas the queue relies on."""
    pragmas: list[tuple[str, Any]] = [("foreign_keys", 1), ("busy_timeout", 5000)]
    if not readonly:
        pragmas += [("journal_mode", "wal"), ("synchronous", "full")]
    db = peewee.SqliteDatabase(
        str(path), pragmas=pragmas, thread_safe=False, check_same_thread=False, autoconnect=False
    )
    db.connect()
    if max_size:
        page_size = db.execute_sql("PRAGMA page_size").fetchone()[0]
        db.execute_sql(f"PRAGMA max_page_count = {max(1, max_size // page_size)}")
    return db


def ensure_schema(db: peewee.SqliteDatabase) -> int:
    """Create the tables in a new file, migrate an older one, refuse a newer one."""
    models.database_proxy.initialize(db)
    with db.atomic(lock_type="IMMEDIATE"):  # it reads, then writes: see Store.write_batch
        if not db.table_exists(SchemaInfo._meta.table_name):
            db.create_tables(models.MODELS)
            SchemaInfo.create(version=models.SCHEMA_VERSION)
            return models.SCHEMA_VERSION
        row = SchemaInfo.get_or_none()
        version = row.version if row else 0
        if version > models.SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the queue database has schema version {version}, newer than this Empath "
                f"understands ({models.SCHEMA_VERSION}); run a newer Empath or restore a backup"
            )
        while version < models.SCHEMA_VERSION:
            log.info("migrating queue schema from version %d to %d", version, version + 1)
            MIGRATIONS[version](db)
            version += 1
        SchemaInfo.update(version=version).execute()
    return version


def lock_data_dir(data_dir: Path) -> int:
    """Take the data directory's lock, so two daemons never share one queue."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "empath.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise AlreadyRunning(f"another Empath (pid {owner}) is using the data directory {data_dir}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def lock_holder(data_dir: Path) -> int | None:
    """The pid of the daemon holding the data directory's lock, or None when none runs."""
    try:
        fd = os.open(data_dir / "empath.lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else None
    finally:
        os.close(fd)  # closing also drops a lock we took
    return None


def free_space(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _classify(exc: BaseException) -> QueueError:
    if isinstance(exc, QueueError):
        return exc
    # On SQLITE_FULL (and some I/O errors) SQLite rolls the transaction back
    # itself; the ROLLBACK that follows then fails with "no transaction is
    # active" and hides the real cause, which is left in __context__.
    cause: BaseException | None = exc
    while cause is not None:
        text = str(cause).lower()
        if "full" in text or (isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)):
            return StorageFull(str(cause))
        cause = cause.__context__
    return QueueError(str(exc))


class Store:
    """The daemon's handle on the queue: the writing connection, its database
    thread and the lock that gives it to one user at a time; and a second
    connection for short reads on the hub."""

    def __init__(self, path: Path, max_size: int = 0):
        self.path = path
        self.max_size = max_size
        self._pool = gevent.threadpool.ThreadPool(1)
        self._lock = gevent.lock.Semaphore()
        self.db: peewee.SqliteDatabase | None = None
        self._reader: sqlite3.Connection | None = None

    def open(self) -> None:
        self.db = self.call(connect, self.path, self.max_size)
        self.call(ensure_schema, self.db)
        self.call(self._clear_leases)
        # No busy timeout: SQLite's busy handler sleeps, which would stall the hub (see read).
        self._reader = sqlite3.connect(self.path, timeout=0, isolation_level=None)

    def attach(self) -> None:
        """Open a queue that the daemon has opened already (an SMTP helper process): no
        schema work, and the daemon's leases left alone."""
        self.db = self.call(connect, self.path, self.max_size)
        models.database_proxy.initialize(self.db)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self.db is not None:
            self.call(self.db.close)
            self.db = None
        self._pool.kill()

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the database thread (see threads.call), once the connection is free."""
        with self._lock:
            return threads.call(self._pool, fn, *args)

    def read(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)``, a short read, on the hub with the read connection.

        In WAL mode a read waits for nobody, except while SQLite recovers the
        WAL after a crash; then it is run on the database thread instead,
        whose connection waits there for its turn, off the hub.
        """
        assert self._reader is not None
        try:
            return fn(self._reader, *args)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY:
                raise
        return self.call(lambda: fn(connection(), *args))

    def _clear_leases(self) -> None:
        """A lease held when the last daemon stopped is void: that work is due now."""
        Recipient.update(lease_owner=None, lease_until=None, next_attempt_at=time.time()).where(
            Recipient.lease_owner.is_null(False)
        ).execute()

    def write_batch(self, batch: list[Write]) -> list[tuple[bool, Any]]:
        """Run every write of the batch in one transaction (called on the hub).

        BEGIN, COMMIT and the writes that are not quick run on the database
        thread, the quick ones here. Each write runs in a savepoint of its
        own, so one that fails leaves the others to commit. Returns (ok,
        value or exception) per write. Raises QueueError if the transaction
        as a whole did not commit.
        """
        assert self.db is not None
        # IMMEDIATE: the write lock from the start. A batch that reads before it
        # writes (a claim, a delivery's record) would otherwise hold a read snapshot,
        # and if another process (an SMTP helper, sendmail) committed meanwhile,
        # SQLite would refuse its first write at once ("database is locked",
        # SQLITE_BUSY_SNAPSHOT) without waiting: nothing could make it succeed.
        transaction = self.db.atomic(lock_type="IMMEDIATE")
        with self._lock:
            try:
                threads.call(self._pool, transaction.__enter__)
                try:
                    outcomes = [self._write(w) for w in batch]
                except Exception as exc:
                    threads.call(self._pool, transaction.__exit__, type(exc), exc, exc.__traceback__)
                    raise
                threads.call(self._pool, transaction.__exit__, None, None, None)
            except (peewee.PeeweeException, sqlite3.Error, OSError) as exc:
                raise _classify(exc) from exc
        return outcomes

    def _write(self, write: Write) -> tuple[bool, Any]:
        """One write of a batch in a savepoint of its own: (ok, value or exception)."""
        conn = connection()
        # Plain SQL savepoints: peewee's name each one with a fresh uuid4, Python time per write.
        conn.execute("SAVEPOINT write")
        try:
            value = write.fn(*write.args) if write.quick else threads.call(self._pool, write.fn, *write.args)
        except Exception as exc:
            # SQLite itself may have rolled the whole transaction back (on
            # SQLITE_FULL, say): then nothing of the batch stands, and the
            # next statement must not run outside a transaction. Ask the
            # connection, not peewee, which only counts its own blocks.
            if not conn.in_transaction:
                raise
            conn.execute("ROLLBACK TO write")
            conn.execute("RELEASE write")
            return False, _classify(exc)
        conn.execute("RELEASE write")
        return True, value


def connection() -> sqlite3.Connection:
    """The SQLite connection the queue's models are bound to (the writing one).

    The hot writes (a message in, a claim, a delivery's record) use it with
    plain SQL: peewee builds each query's SQL anew, CPU taken from the
    sessions (one GIL). Same statements, same transaction.
    """
    return models.database_proxy.obj.connection()


INSERT_MESSAGE = (
    "INSERT INTO message (queue_id, sender, size, received_at, expires_at, client_address, client_helo, auth_user,"
    " listener, trace_id, smtputf8, body_type, dsn_ret, dsn_envid, held, kind)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)"
)
INSERT_RECIPIENT = (
    "INSERT INTO recipient (queue_id, address, domain, state, attempts, next_attempt_at, relayed,"
    " dsn_notify, dsn_orcpt) VALUES (?, ?, ?, ?, 0, ?, 0, ?, ?)"
)
INSERT_EVENT = "INSERT INTO event (queue_id, recipient, at, kind, detail) VALUES (?, ?, ?, ?, ?)"


def insert(msg: NewMessage) -> None:
    conn = connection()
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
        ),
    )
    _insert_body(conn, msg.queue_id, msg.head, msg.body)
    conn.executemany(
        INSERT_RECIPIENT,
        [
            (msg.queue_id, r.address, r.domain, QUEUED, msg.received_at, ",".join(r.notify) or None, r.orcpt)
            for r in msg.recipients
        ],
    )
    conn.executemany(INSERT_EVENT, [(msg.queue_id, None, msg.received_at, kind, detail) for kind, detail in msg.events])


# A body larger than this is written into its row piece by piece (SQLite's
# incremental blob I/O): bound whole, SQLite would keep two more copies of it
# in memory while it builds the row (one of the bound value, one of the row).
STREAM_BODY_OVER = 1 << 20
BODY_PIECE = 1 << 20


def _insert_body(conn: sqlite3.Connection, queue_id: str, head: bytes, body: bytes | bytearray) -> None:
    if len(body) <= STREAM_BODY_OVER:
        conn.execute("INSERT INTO body (queue_id, data) VALUES (?, ?)", (queue_id, head + body))
        return
    size = len(head) + len(body)
    row = conn.execute("INSERT INTO body (queue_id, data) VALUES (?, zeroblob(?))", (queue_id, size)).lastrowid
    assert row is not None
    view = memoryview(body)
    with conn.blobopen("body", "data", row) as blob:
        blob.write(head)
        for start in range(0, len(body), BODY_PIECE):
            blob.write(view[start : start + BODY_PIECE])


class GroupCommitter:
    """Many writers, one transaction at a time: every write pending at once goes
    into one transaction with one fsync, then everyone who waited is woken."""

    def __init__(self, store: Store, timeout: float, on_commit: Callable[[], None] = lambda: None):
        self.store = store
        self.timeout = timeout
        self.on_commit = on_commit  # the scheduler's wake-up: new mail is due at once
        self._pending: list[tuple[Write, gevent.event.AsyncResult]] = []
        self._wake = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None
        self._stopping = False

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Commit what is pending, then stop. Not a kill: a batch stopped between
        its BEGIN and COMMIT would leave its transaction open and the queue unclosable."""
        if self._greenlet is not None:
            self._stopping = True
            self._wake.set()
            self._greenlet.join()
            self._greenlet = None

    def write(self, fn: Callable[..., T], *args: Any, quick: bool = False) -> T:
        """Run ``fn(*args)`` in the next group commit; return its value once it is
        durable. Raises QueueError if it is not. ``quick``: it touches a few rows
        through indexes, and runs on the hub (see the module's doc)."""
        result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self._pending.append((Write(fn, args, quick), result))
        self._wake.set()
        try:
            return result.get(timeout=self.timeout)
        except gevent.Timeout:
            raise QueueError(f"the queue did not commit within {self.timeout:g}s") from None

    def enqueue(self, msg: NewMessage) -> None:
        """Return once ``msg`` is durably committed; raise QueueError if it is not."""
        # A large body is written on the database thread: SQLite copies it out to
        # the WAL file as its page cache fills, and that disk time stays off the hub.
        self.write(insert, msg, quick=msg.size <= STREAM_BODY_OVER)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if batch:
                self._commit(batch)
            if self._stopping and not self._pending:
                return

    def _commit(self, batch: list[tuple[Write, gevent.event.AsyncResult]]) -> None:
        started = time.monotonic()
        try:
            outcomes = self.store.write_batch([write for write, _ in batch])
        except QueueError as exc:
            log.error("queue write of %d item(s) failed: %s", len(batch), exc)
            for _, result in batch:
                result.set_exception(exc)
            return
        except Exception as exc:  # a bug must fail these writers, not stop the writer
            log.exception("queue write of %d item(s) failed unexpectedly", len(batch))
            for _, result in batch:
                result.set_exception(QueueError(f"internal error: {exc}"))
            return
        messages = sum(1 for write, _ in batch if write.fn is insert)
        log.debug(
            "committed %d message(s) and %d other write(s) in %.1f ms",
            messages,
            len(batch) - messages,
            (time.monotonic() - started) * 1000,
        )
        for (_, result), (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                result.set(value)
            else:
                result.set_exception(value)
        if messages:
            # Only new mail wakes the scheduler: its own writes (claim, record)
            # come through here too, and waking it for those made it claim,
            # commit and wake itself again in a loop that never slept.
            self.on_commit()
