"""The queue verbs and stats when the daemon is down: empathctl opens the database itself.

Stats then come from the queue's history (the event table) instead of the
daemon's counters: recipients by state, and what came in and went out in the
last hour and day.

Listings open it read-only (SQLite ``mode=ro``), so they work beside anything.
Actions take the data directory's lock first (a daemon starting meanwhile
waits for nothing: it finds the lock taken and refuses to start, with the
holder's pid), open the file as the daemon does, and write the same
``control`` audit line (``via=database``) to the daemon's log.
"""

import os
import sqlite3
import time
from typing import Any

import peewee

from empath import log
from empath.config import Config
from empath.control import audit
from empath.control.client import ControlError
from empath.control.protocol import VERBS, Request, VerbError
from empath.control.queue_verbs import QueueVerbs
from empath.queue import database, stats

QUEUE_VERBS = tuple(name for name in VERBS if name.startswith("queue-"))
OFFLINE_VERBS = (*QUEUE_VERBS, "stats")


def run(config: Config, request: Request) -> Any:
    """Serve a queue verb from the database file; ControlError says why it cannot."""
    if VERBS[request.verb].mutating:
        # Before the action, so that an action done is never reported as failed
        # (nor left out of the audit log) because the log could not be opened.
        try:
            log.setup(config.log_level, config.log_format, config.log_file)
        except OSError as exc:
            raise ControlError(f"cannot open the log {config.log_file} for the audit line: {exc}") from None
    try:
        return _run(config, request)
    except VerbError as exc:
        if VERBS[request.verb].mutating:
            _audit(request, f"refused: {exc}")
        raise ControlError(str(exc)) from None
    except (database.QueueError, peewee.PeeweeException, sqlite3.Error, OSError) as exc:
        raise ControlError(f"cannot use the queue database {config.database_path}: {exc}") from None


def _audit(request: Request, result: str) -> None:
    uid = os.getuid()
    audit.action(f"uid:{uid}", uid, request.verb, request.args, result, via="database")


def history(db: peewee.Database, now: float) -> dict[str, Any]:
    by_state, oldest = stats.counts(db)
    return {
        "source": "database",
        "recipients": by_state,
        "oldest_age": None if oldest is None else round(now - oldest, 1),
        "last_hour": stats.event_counts(db, now - 3600),
        "last_day": stats.event_counts(db, now - 86400),
    }


def _on(db: peewee.Database) -> QueueVerbs:
    """The queue verbs, run straight on ``db``."""

    def run(fn: Any, *args: Any) -> Any:
        return fn(db, *args)

    return QueueVerbs(run, run)


def _run(config: Config, request: Request) -> Any:
    path = config.database_path
    if not path.exists():
        raise ControlError(f"there is no queue database at {path}")
    if request.verb == "stats":
        with database.open_readonly(path) as db:
            return history(db, time.time())
    if not VERBS[request.verb].mutating:
        with database.open_readonly(path) as db:
            return _on(db).handlers()[request.verb](request.args)
    try:
        lock = database.lock_data_dir(config.data_dir)
    except database.AlreadyRunning as exc:
        raise ControlError(f"{exc}, but its control socket {config.control_socket} does not answer") from None
    try:
        db = database.connect(path)
        try:
            database.ensure_schema(db)
            result = _on(db).handlers()[request.verb](request.args)
        finally:
            db.close()
    finally:
        os.close(lock)
    _audit(request, audit.summary(result))
    return result
