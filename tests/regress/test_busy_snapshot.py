"""SQLITE_BUSY_SNAPSHOT: a write refused at once because another process committed.

Found by the drain benchmark with SMTP helper processes: the daemon's writes
that read before they write (recording a delivery's result, claiming work)
ran in a deferred transaction. When a helper committed between the read and
the first write, SQLite refused that write at once with "database is
locked" (no busy timeout helps: the snapshot is stale), the delivery's
result was lost and its recipients sat leased for half an hour. Every
write batch now begins IMMEDIATE, holding the write lock from its first
statement; the other process waits for it instead.
"""

import sqlite3
import time

import queue_helpers

from empath.queue.insert import INSERT_EVENT
from empath.queue.models import Recipient
from empath.queue.store import Queue, Write


def test_a_batch_that_reads_first_is_not_refused_when_another_process_commits(tmp_path):
    queue = Queue(tmp_path / "queue.sqlite3")
    queue.open()
    # Another process's connection (an SMTP helper, sendmail) that does not wait for locks.
    other = sqlite3.connect(queue.path, timeout=0, isolation_level=None, check_same_thread=False)
    seen = {}

    def read_then_write(db) -> None:
        Recipient.select().count(db)  # the read: a deferred transaction's snapshot starts here
        try:
            other.execute(INSERT_EVENT, ("01M87BBBBBBBBBBB", None, time.time(), "other", ""))
            seen["other"] = "committed in between"
        except sqlite3.OperationalError as exc:
            seen["other"] = str(exc)
        queue_helpers.add(db)

    try:
        [(ok, value)] = queue.write_batch([Write(read_then_write, ())])
        assert ok, value
        assert seen["other"] == "database is locked"  # it had to wait for the batch, not the other way round
        assert queue.call(lambda db: Recipient.select().count(db)) == 1
    finally:
        other.close()
        queue.close()
