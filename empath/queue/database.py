"""The queue's file: opening it, its schema and migrations, the data directory's
lock, and the errors the queue reports.

Every process that uses the queue opens it here: the daemon and its SMTP
helpers (through queue/store.py), and the commands that work on the file
themselves (sendmail, mailq, empathctl with the daemon down, backups).
"""

import contextlib
import errno
import fcntl
import logging
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import peewee

from empath.queue import models
from empath.queue.models import SchemaInfo

log = logging.getLogger("empath.queue")

# Upgrades from one schema version to the next: MIGRATIONS[n] turns version n
# into n + 1. Each runs inside the transaction that records the new version.
MIGRATIONS: dict[int, Callable[[peewee.SqliteDatabase], None]] = {
    # The metrics read the oldest message's age: MIN(received_at) from an index.
    1: lambda db: db.execute_sql("CREATE INDEX IF NOT EXISTS message_received_at ON message (received_at)"),
    # The answers of recipient verification by callout (queue/verified.py), and who a
    # message came from, for the notices (a stranger's return only its headers).
    2: lambda db: _to_3(db),
}


def _to_3(db: peewee.SqliteDatabase) -> None:
    peewee.SchemaManager(models.Verified, db).create_all()
    db.execute_sql("ALTER TABLE message ADD COLUMN stranger INTEGER NOT NULL DEFAULT 0")  # older mail: ours


class QueueError(Exception):
    """The queue could not take the message; nothing was written."""


class StorageFull(QueueError):
    """The disk, or the configured queue size, has no room left."""


class SchemaTooNew(QueueError):
    pass


class AlreadyRunning(QueueError):
    pass


def connect(path: Path, max_size: int = 0) -> peewee.SqliteDatabase:
    """A peewee database on ``path`` with the pragmas the queue relies on; a new file
    is the daemon's user's alone (0600), as SQLite then makes its WAL and shared
    memory files."""
    # An empty file is an empty database to SQLite; one that exists keeps its mode.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    pragmas: list[tuple[str, Any]] = [("foreign_keys", 1), ("busy_timeout", 5000)]
    pragmas += [("journal_mode", "wal"), ("synchronous", "full")]
    db = peewee.SqliteDatabase(
        str(path), pragmas=pragmas, thread_safe=False, check_same_thread=False, autoconnect=False
    )
    db.connect()
    if max_size:
        page_size = db.execute_sql("PRAGMA page_size").fetchone()[0]
        db.execute_sql(f"PRAGMA max_page_count = {max(1, max_size // page_size)}")
    return db


@contextmanager
def open_readonly(path: Path) -> Iterator[peewee.SqliteDatabase]:
    """``path`` opened read-only (SQLite's mode=ro), beside a running daemon or not."""
    db = peewee.SqliteDatabase(
        f"file:{urllib.parse.quote(str(path))}?mode=ro",
        uri=True,
        pragmas=[("busy_timeout", 5000)],
        autoconnect=False,
    )
    db.connect()
    try:
        yield db
    finally:
        db.close()


def ensure_schema(db: peewee.SqliteDatabase) -> int:
    """Create the tables in a new file, migrate an older one, refuse a newer one."""
    with db.atomic(lock_type="IMMEDIATE"):  # it reads, then writes: see Queue.write_batch
        if not db.table_exists(SchemaInfo._meta.table_name):
            for model in models.MODELS:
                peewee.SchemaManager(model, db).create_all()
            SchemaInfo.insert(version=models.SCHEMA_VERSION).execute(db)
            return models.SCHEMA_VERSION
        row = SchemaInfo.select(SchemaInfo.version).tuples().first(db)
        version = row[0] if row else 0
        if version > models.SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the queue database has schema version {version}, newer than this Empath "
                f"understands ({models.SCHEMA_VERSION}); run a newer Empath or restore a backup"
            )
        while version < models.SCHEMA_VERSION:
            log.info("migrating queue schema from version %d to %d", version, version + 1)
            MIGRATIONS[version](db)
            version += 1
        SchemaInfo.update(version=version).execute(db)
    return version


def lock_data_dir(data_dir: Path) -> int:
    """Take the data directory's lock, so two daemons never share one queue.
    A data directory made here is the daemon's user's alone (0700)."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
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


def classify(exc: BaseException) -> QueueError:
    """What a failed write means for the client: no room (452), or any other failure (451)."""
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


UNUSABLE = (peewee.PeeweeException, sqlite3.Error)  # what a file that is not a queue (or not readable) raises
