"""Where a group commit's writes run: quick ones on the calling (hub) thread,
the rest on the database thread, and nothing else on the connection while a
batch is open; stopping the group commit lets its batch commit. Short reads run
on the hub with a connection of their own, or on the database thread when
SQLite is busy."""

import sqlite3
import threading

import gevent
import pytest
import queue_helpers

from empath.queue import claims, store
from empath.queue.database import QueueError
from empath.queue.insert import NewMessage
from empath.queue.store import Queue, Write


def thread_of(db) -> int:
    return threading.get_ident()


@pytest.fixture
def queue(tmp_path):
    opened = Queue(tmp_path / "queue.sqlite3", commit_timeout=30)
    opened.open()
    yield opened
    opened.close()  # a second close does nothing


def test_quick_writes_run_here_and_the_rest_on_the_database_thread(queue):
    ran_on = {}

    def write(db, name: str) -> str:
        ran_on[name] = threading.get_ident()
        return queue_helpers.add(db)

    outcomes = queue.write_batch([Write(write, ("quick",), quick=True), Write(write, ("bulk",))])
    assert [ok for ok, _ in outcomes] == [True, True]
    database_thread = queue.call(thread_of)
    assert ran_on == {"quick": threading.get_ident(), "bulk": database_thread}
    assert database_thread != threading.get_ident()
    assert queue.call(lambda db: db.connection().execute("SELECT count(*) FROM message").fetchone()[0]) == 2


def test_nothing_else_uses_the_connection_while_a_batch_is_open(queue):
    # Spawned first, so it asks for the database thread while the batch waits for its BEGIN.
    other = gevent.spawn(queue.call, lambda db: db.connection().in_transaction)
    queue.write_batch([Write(queue_helpers.add, (), quick=True)])
    assert other.get(timeout=10) is False  # it ran after the COMMIT, not inside the batch


def test_a_read_runs_here_with_its_own_connection(queue):
    [(ok, queue_id)] = queue.write_batch([Write(queue_helpers.add, (), quick=True)])
    seen = []

    def load(conn: sqlite3.Connection, queue_id: str) -> claims.Loaded | None:
        seen.append((conn, threading.get_ident()))
        return claims.load(conn, queue_id)

    loaded = queue.read(load, queue_id)
    assert ok and loaded is not None and loaded.data == b"Subject: x\r\n\r\nhello\r\n"
    [(conn, thread)] = seen
    assert thread == threading.get_ident() and conn is not queue.call(lambda db: db.connection())


def test_a_read_that_finds_sqlite_busy_runs_on_the_database_thread(queue):
    threads = []

    def read(conn: sqlite3.Connection) -> int:
        threads.append(threading.get_ident())
        if len(threads) == 1:
            busy = sqlite3.OperationalError("database is locked")
            busy.sqlite_errorcode = sqlite3.SQLITE_BUSY  # as SQLite sets it, here set by hand
            raise busy
        return conn.execute("SELECT count(*) FROM message").fetchone()[0]

    assert queue.read(read) == 0
    assert threads == [threading.get_ident(), queue.call(thread_of)]


def test_stopping_the_group_commit_mid_batch_commits_it_and_leaves_the_queue_closable(queue):
    queue.start()
    # Another process holds the write lock: the batch waits for its BEGIN on the database thread.
    other = sqlite3.connect(queue.path, timeout=0, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    writer = gevent.spawn(queue.write, queue_helpers.add, quick=True)
    gevent.sleep(0)  # the writer queues its write; the group commit starts the batch
    stopping = gevent.spawn(queue.stop)
    gevent.sleep(0)
    other.execute("COMMIT")
    other.close()
    stopping.get(timeout=10)
    queue_id = writer.get(timeout=10)  # committed, not abandoned
    assert queue.db.transaction_depth() == 0
    assert queue.read(claims.load, queue_id) is not None
    queue.close()  # a batch killed after its BEGIN made this fail: "transaction is open"


def new_message(n: int, size: int) -> NewMessage:
    return queue_helpers.new_message(f"Q00000000000000{n}", b"x" * size)


def test_large_messages_waiting_together_are_committed_in_batches_of_bounded_size(queue, monkeypatch):
    monkeypatch.setattr(store, "BATCH_BYTES", 100)
    batches = []
    write_batch = queue.write_batch

    def spy(batch):
        batches.append([w.size for w in batch])
        return write_batch(batch)

    monkeypatch.setattr(queue, "write_batch", spy)
    writers = [gevent.spawn(queue.enqueue, new_message(n, size)) for n, size in enumerate((60, 30, 60))]
    gevent.sleep(0)  # all three wait before the group commit starts
    queue.start()
    gevent.joinall(writers, raise_error=True)
    queue.stop()
    assert batches == [[60, 30], [60]]  # all three would make 150 bytes
    assert queue.call(lambda db: db.connection().execute("SELECT count(*) FROM message").fetchone()[0]) == 3


def test_a_message_whose_client_gave_up_is_never_committed_though_its_batch_is(queue):
    queue.timeout = 0.2
    queue.start()
    with queue._lock:  # the disk stalls: the first batch cannot begin
        first = gevent.spawn(queue.enqueue, new_message(1, 10))
        other = gevent.spawn(queue.write, queue_helpers.add, quick=True)  # a write that is never withdrawn
        for _ in range(1000):  # until the first batch is taken (its BEGIN waits for the lock) …
            if not queue._pending:
                break
            gevent.sleep(0)
        assert not queue._pending
        second = gevent.spawn(queue.enqueue, new_message(2, 10))  # … and the second waits behind it
        gevent.joinall([first, other, second])
    queue.stop()
    assert all(isinstance(g.exception, QueueError) for g in (first, other, second))
    # The first message was in a batch under way: it is undone there, and the rest of
    # the batch commits; the second never left the line. Each client's 451 is the truth.
    committed = queue.call(lambda db: [r[0] for r in db.connection().execute("SELECT queue_id FROM message")])
    assert len(committed) == 1 and committed[0] not in ("Q000000000000001", "Q000000000000002")
