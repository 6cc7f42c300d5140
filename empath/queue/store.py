"""The queue as a running process uses it: one ``Queue`` object, passed to
every part that reads or writes it.

One connection writes; a lock gives it to one user at a time. What blocks
on the disk runs on the database thread, so the gevent hub never waits for
it: BEGIN (which may wait for another process's write lock), COMMIT (the
fsync, ``synchronous=FULL`` in WAL mode) and any write that may touch many
rows. A quick write (a message in, a delivery's result: a few rows through
indexes) runs on the hub between them: it takes less time than the hand-off
to the thread would, and every hand-off makes both threads wait for the GIL.
Writers hand their work to the group commit, which runs all that is pending
in one transaction with one fsync, then wakes every writer it carried.

Every function run through a Queue gets the database as its first argument:
``call`` and ``write`` hand it the writing connection (peewee), ``read`` the
hub's read connection (sqlite3).
"""

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import gevent
import gevent.event
import gevent.lock
import gevent.threadpool
import peewee

from empath import threads
from empath.queue import database
from empath.queue.database import QueueError
from empath.queue.insert import NewMessage, insert_all
from empath.queue.models import Recipient

log = logging.getLogger("empath.queue")
T = TypeVar("T")


@dataclass
class Write:
    """One write of a group commit: ``fn(db, *args)``. A quick one runs on the hub (see above)."""

    fn: Callable[..., Any]
    args: tuple
    quick: bool = False
    size: int = 0  # the bytes of message it writes
    abandoned: bool = False  # its writer gave up waiting and wants it undone


# A batch holds messages of this many bytes at most (a larger one goes alone): when
# large messages arrive together, the first are committed and answered while the
# rest wait, not all of them at the end, past their clients' commit_timeout.
BATCH_BYTES = 64 << 20
WITHDRAWN = "withdrawn: its writer stopped waiting"


class Queue:
    """The writing connection with its database thread and lock, a read
    connection for the hub, and the group commit."""

    def __init__(
        self, path: Path, max_size: int = 0, commit_timeout: float = 120.0, on_commit: Callable[[], None] = lambda: None
    ):
        self.path = path
        self.max_size = max_size
        self.timeout = commit_timeout
        self.on_commit = on_commit  # the scheduler's wake-up: new mail is due at once
        self.db: peewee.SqliteDatabase | None = None
        self._reader: sqlite3.Connection | None = None
        self._pool = gevent.threadpool.ThreadPool(1)
        self._lock = gevent.lock.Semaphore()
        self._pending: list[tuple[Write, gevent.event.AsyncResult]] = []
        self._wake = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None
        self._stopping = False

    # -- the file -----------------------------------------------------------------

    def open(self) -> None:
        """Open the file as the daemon: the schema made current, the last daemon's leases
        cleared. QueueError names the file and what is wrong with it."""
        try:
            self.db = self._thread(database.connect, self.path, self.max_size)
            self.call(database.ensure_schema)
            self.call(_clear_leases, time.time())
            # No busy timeout: SQLite's busy handler sleeps, which would stall the hub (see read).
            self._reader = sqlite3.connect(self.path, timeout=0, isolation_level=None)
        except database.UNUSABLE as exc:
            self.close()
            raise QueueError(f"cannot use the queue database {self.path}: {exc}") from None

    def attach(self) -> None:
        """Open a queue that the daemon has opened already (an SMTP helper process): no
        schema work, and the daemon's leases left alone."""
        self.db = self._thread(database.connect, self.path, self.max_size)
        self._reader = sqlite3.connect(self.path, timeout=0, isolation_level=None)

    @property
    def is_open(self) -> bool:
        return self.db is not None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self.db is not None:
            self._thread(self.db.close)
            self.db = None
        self._pool.kill()

    # -- running work ---------------------------------------------------------------

    def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the database thread (see threads.call), once the connection is free."""
        with self._lock:
            return threads.call(self._pool, fn, *args)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(db, *args)`` on the database thread, outside the group commit (reads, the schema)."""
        return self._thread(fn, self.db, *args)

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
        return self.call(lambda db: fn(db.connection(), *args))

    # -- the group commit -------------------------------------------------------------

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
        """Run ``fn(db, *args)`` in the next group commit; return its value once it is
        durable. Raises QueueError if it is not. ``quick``: it touches a few rows
        through indexes, and runs on the hub (see the module's doc). A write that
        times out still runs, later: a delivery's result is recorded even so."""
        return self._wait(Write(fn, args, quick), withdraw=False)

    def enqueue(self, *messages: NewMessage) -> None:
        """Return once ``messages`` (what one accepted message became) are durably committed,
        all in one transaction; raise QueueError if they are not.

        Those whose client stops waiting (commit_timeout) are withdrawn, unless their batch
        is already committing, so that the client's 451 and the queue agree: its retry is
        not a second copy.
        """
        # A body in a spool file is read and written on the database thread: the file
        # reads and SQLite copying it out to the WAL as its page cache fills stay off the hub.
        quick = not any(m.body.spilled for m in messages)
        size = sum(m.size for m in messages)
        self._wait(Write(insert_all, (messages,), quick=quick, size=size), withdraw=True)

    def _wait(self, write: Write, withdraw: bool) -> Any:
        result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        entry = (write, result)
        self._pending.append(entry)
        self._wake.set()
        try:
            return result.get(timeout=self.timeout)
        except gevent.Timeout:
            if withdraw:
                self._withdraw(entry)
            raise QueueError(f"the queue did not commit within {self.timeout:g}s") from None

    def _withdraw(self, entry: tuple[Write, gevent.event.AsyncResult]) -> None:
        """Take a write out of the queue, or mark it to be undone if its batch has it."""
        waiting = [i for i, pending in enumerate(self._pending) if pending is entry]
        if waiting:
            del self._pending[waiting[0]]
        else:
            entry[0].abandoned = True

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            batch = self._next_batch()
            if batch:
                self._commit(batch)
            if self._pending:
                self._wake.set()  # more than one batch was waiting
            elif self._stopping:
                return

    def _next_batch(self) -> list[tuple[Write, gevent.event.AsyncResult]]:
        """The writes waiting, in order, up to BATCH_BYTES of messages."""
        taken = size = 0
        for write, _ in self._pending:
            size += write.size
            if taken and size > BATCH_BYTES:
                break
            taken += 1
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        return batch

    def _commit(self, batch: list[tuple[Write, gevent.event.AsyncResult]]) -> None:
        started = time.monotonic()
        try:
            outcomes = self.write_batch([write for write, _ in batch])
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
        accepted = [write for write, _ in batch if write.fn is insert_all]
        messages = sum(len(write.args[0]) for write in accepted)
        log.debug(
            "committed %d message(s) and %d other write(s) in %.1f ms",
            messages,
            len(batch) - len(accepted),
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
                raise database.classify(exc) from exc
        return outcomes

    def _write(self, write: Write) -> tuple[bool, Any]:
        """One write of a batch in a savepoint of its own: (ok, value or exception)."""
        db = self.db
        assert db is not None
        conn = db.connection()
        # Plain SQL savepoints: peewee's name each one with a fresh uuid4, Python time per write.
        conn.execute("SAVEPOINT write")
        try:
            if write.abandoned:  # before its turn: its session may have let go of the spool meanwhile
                raise QueueError(WITHDRAWN)
            value = write.fn(db, *write.args) if write.quick else threads.call(self._pool, write.fn, db, *write.args)
            if write.abandoned:  # while it ran (a large body takes seconds): undone
                raise QueueError(WITHDRAWN)
        except Exception as exc:
            # SQLite itself may have rolled the whole transaction back (on
            # SQLITE_FULL, say): then nothing of the batch stands, and the
            # next statement must not run outside a transaction. Ask the
            # connection, not peewee, which only counts its own blocks.
            if not conn.in_transaction:
                raise
            conn.execute("ROLLBACK TO write")
            conn.execute("RELEASE write")
            return False, database.classify(exc)
        conn.execute("RELEASE write")
        return True, value


def _clear_leases(db: peewee.SqliteDatabase, now: float) -> None:
    """A lease held when the last daemon stopped is void: that work is due now."""
    Recipient.update(lease_owner=None, lease_until=None, next_attempt_at=now).where(
        Recipient.lease_owner.is_null(False)
    ).execute(db)
