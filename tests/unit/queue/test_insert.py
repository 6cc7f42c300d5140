"""insert writes a message as it was given, whatever its size: small
bodies are bound whole, large ones streamed into the row in pieces, from
memory or from their spool file; load and read_body give them back."""

import os
import time

import pytest
import queue_helpers

from empath.queue import claims, database
from empath.queue.insert import STREAM_BODY_OVER, NewMessage, NewRecipient, insert
from empath.queue.spool import Spool
from empath.queue.store import Queue, Write

db = queue_helpers.db  # the fixture: a new queue database


def message(queue_id: str, body: bytes | Spool) -> NewMessage:
    now = time.time()
    return NewMessage(
        queue_id=queue_id,
        sender="a@b.test",
        body=body if isinstance(body, Spool) else Spool.holding(body),
        recipients=[NewRecipient("x@local.test", "local.test", ("SUCCESS", "FAILURE"), "rfc822;x@local.test")],
        received_at=now,
        expires_at=now + 86400,
        client_address="127.0.0.1",
        client_helo="h",
        listener="smtp",
        trace_id="t",
        events=[("received", "from h")],
    )


def stored(db, queue_id: str) -> bytes:
    """The message as stored, read back as delivery reads a large one: a piece at a time."""
    loaded = claims.load(db.connection(), queue_id)
    assert loaded is not None
    if loaded.data is not None:
        return loaded.data
    step = claims.WHOLE_UP_TO
    return b"".join(claims.read_body(db.connection(), queue_id, at, step) for at in range(0, loaded.size, step))


@pytest.mark.parametrize(
    "size",
    [0, 1, claims.WHOLE_UP_TO, claims.WHOLE_UP_TO + 1, STREAM_BODY_OVER, STREAM_BODY_OVER + 1, 3 * STREAM_BODY_OVER],
    ids=["empty", "one byte", "loaded whole", "read in pieces", "at the limit", "just over", "several pieces"],
)
@pytest.mark.parametrize("spilled", [False, True], ids=["in memory", "spooled to a file"])
def test_a_body_reads_back_byte_for_byte(db, tmp_path, size, spilled):
    body = os.urandom(size)
    spool = Spool(tmp_path if spilled else None, in_memory=100)
    spool.write(b"\r\n")  # no header: everything after this may go to the file
    spool.write(body)
    assert spool.spilled == (spilled and size > 98)
    with db.atomic():
        insert(db, message("Q000000000000001", spool))
    loaded = claims.load(db.connection(), "Q000000000000001")
    assert loaded is not None and loaded.size == size + 2
    assert (loaded.data is None) == (size + 2 > claims.WHOLE_UP_TO)
    assert stored(db, "Q000000000000001") == b"\r\n" + body
    assert db.execute_sql("SELECT size FROM message").fetchone()[0] == size + 2
    assert db.execute_sql("SELECT dsn_notify, dsn_orcpt, state FROM recipient").fetchone() == (
        "SUCCESS,FAILURE",
        "rfc822;x@local.test",
        "queued",
    )
    assert db.execute_sql("SELECT kind, detail FROM event").fetchall() == [("received", "from h")]


@pytest.mark.parametrize("size", [10, STREAM_BODY_OVER + 1], ids=["bound whole", "streamed"])
def test_the_head_is_stored_in_front_of_the_body(db, size):
    head, body = b"Received: from h\r\n", os.urandom(size)
    entry = message("Q000000000000003", body)
    entry.head = head
    with db.atomic():
        insert(db, entry)
    assert stored(db, "Q000000000000003") == head + body
    assert db.execute_sql("SELECT size FROM message").fetchone()[0] == len(head) + size == entry.size


def test_a_body_read_after_it_was_deleted_is_none(db):
    with db.atomic():
        insert(db, message("Q000000000000006", b"x" * 10))
    assert claims.read_body(db.connection(), "Q000000000000006", 5, 100) == b"x" * 5
    db.execute_sql("DELETE FROM message")
    assert claims.read_body(db.connection(), "Q000000000000006", 0, 100) is None


def test_a_write_that_fails_leaves_the_rest_of_its_batch_to_commit(tmp_path):
    queue = Queue(tmp_path / "queue.sqlite3")
    queue.open()
    try:
        first, second = message("Q000000000000004", b"one\r\n"), message("Q000000000000005", b"two\r\n")
        outcomes = queue.write_batch([Write(insert, (m,), quick=True) for m in (first, first, second)])
        assert [ok for ok, _ in outcomes] == [True, False, True]
        assert isinstance(outcomes[1][1], database.QueueError)
        assert queue.db.execute_sql("SELECT queue_id FROM message ORDER BY queue_id").fetchall() == [
            ("Q000000000000004",),
            ("Q000000000000005",),
        ]
        assert queue.db.execute_sql("SELECT count(*) FROM recipient").fetchone()[0] == 2
    finally:
        queue.close()


def test_envelope_only_load_leaves_the_body_out(db):
    with db.atomic():
        insert(db, message("Q000000000000002", b"Subject: x\r\n\r\nbody\r\n"))
    loaded = claims.load(db.connection(), "Q000000000000002", body=False)
    assert loaded is not None and loaded.data is None and loaded.sender == "a@b.test"
    assert claims.load(db.connection(), "Q000000000000009") is None


@pytest.mark.parametrize("quick", [False, True], ids=["on the database thread", "on the hub"])
def test_a_streamed_body_too_big_for_the_queue_is_storage_full_and_leaves_nothing(tmp_path, quick):
    queue = Queue(tmp_path / "queue.sqlite3", max_size=STREAM_BODY_OVER)
    queue.db = database.connect(queue.path, queue.max_size)
    database.ensure_schema(queue.db)
    big = message("Q000000000000003", os.urandom(3 * STREAM_BODY_OVER))
    try:
        # SQLite rolls the whole transaction back on SQLITE_FULL: the batch fails as one.
        with pytest.raises(database.StorageFull):
            queue.write_batch([Write(insert, (big,), quick)])
        assert queue.db.transaction_depth() == 0
        assert queue.db.execute_sql("SELECT count(*) FROM message").fetchone()[0] == 0
        assert queue.db.execute_sql("SELECT count(*) FROM body").fetchone()[0] == 0
    finally:
        queue.db.close()
        queue._pool.kill()
