"""The queue's read-only statistics (queue/stats.py), read from a real temporary queue."""

import queue_helpers
from queue_helpers import NOW, SETTINGS, add

from empath.delivery import results
from empath.queue import claims, stats
from empath.queue.models import Event
from empath.queue.states import State
from empath.queue.stats import Backlog

db = queue_helpers.db  # the fixture: a new queue database


def test_first_event_since_finds_the_boundary(db):
    assert stats.first_event_since(db, NOW) is None
    Event.insert_many([{"queue_id": "Q", "at": NOW - 100 + i, "kind": "x"} for i in range(100)]).execute(db)
    first = stats.first_event_since(db, NOW - 60)
    assert (
        Event.select().where(Event.id == first).get(db).at == NOW - 60
        and Event.select().where(Event.id == first - 1).get(db).at == NOW - 61
    )
    assert stats.first_event_since(db, NOW + 1) == Event.select().count(db) + 1  # past the end: nothing since
    assert stats.first_event_since(db, 0) == 1


def test_snapshot_reads_the_queue(db):
    slow = add(db, rcpts=["a@slow.test", "b@slow.test", "c@slow.test"], age=7200)
    ok = add(db, rcpts=["x@ok.test"], age=30)
    gone = add(db, rcpts=["y@bad.test"], age=20)
    [a, b, c] = claims.claim(db, NOW - 7100, "owner", 86400, 3)

    def result(claimed, state, reply, remote, next_at=None):
        return [claims.Result(claimed.recipient_id, state, reply, reply.split()[1], remote, next_at)]

    results.record(db, slow, result(a, State.DEFERRED, "451 4.7.1 slow down", "mx.slow", NOW), NOW - 7000, SETTINGS)
    results.record(db, slow, result(b, State.DEFERRED, "421 4.4.2 timeout", "mx.slow", NOW), NOW - 6000, SETTINGS)
    # c stays leased: being delivered
    [x, y] = claims.claim(db, NOW - 10, "owner", 300, 10)
    results.record(db, ok, result(x, State.DELIVERED, "250 2.0.0 ok", "mx.ok"), NOW - 5, SETTINGS)
    results.record(db, gone, result(y, State.BOUNCED, "550 5.1.1 no such user", "mx.bad"), NOW - 4, SETTINGS)
    notices = [e.queue_id for e in Event.select().where(Event.kind == "notice").execute(db)]
    assert len(notices) == 1  # the bounce's failure notice, queued at NOW - 4 to a@b.test (domain b.test)

    snap = stats.snapshot(db, NOW, daemon_pid=1234)
    assert snap.daemon_pid == 1234
    assert snap.messages == 2  # slow, and the notice; ok and gone have left
    assert snap.states[State.DEFERRED] == 2 and snap.states[State.QUEUED] == 2 and snap.states[State.HELD] == 0
    assert snap.active == 1
    assert snap.oldest_age == 7200
    # In the last minute: ok, gone and the notice arrived; ok and gone left.
    assert snap.last_minute == {"received": 3, "removed": 2, State.DELIVERED: 1, State.DEFERRED: 0, State.BOUNCED: 1}
    assert snap.backlog == [
        Backlog("slow.test", 3, 7200, "421 4.4.2 timeout", None),
        Backlog("b.test", 1, 4, None, None),
    ]
    assert [(f.kind, f.queue_id, f.recipient) for f in snap.recent] == [
        (State.BOUNCED, gone, "y@bad.test"),
        (State.DELIVERED, ok, "x@ok.test"),
    ]
    assert "550 5.1.1 no such user" in snap.recent[0].detail
    assert stats.snapshot(db, NOW, breaker_of={"slow.test": "open"}.get, rows=1).backlog == [
        Backlog("slow.test", 3, 7200, "421 4.4.2 timeout", "open")
    ]


def test_snapshot_of_an_empty_queue(db):
    snap = stats.snapshot(db, NOW)
    assert snap.messages == 0 and snap.oldest_age is None and snap.backlog == [] and snap.recent == []
    assert set(snap.last_minute.values()) == {0}


def test_snapshot_reads_the_history_by_key_never_by_scan(db):
    add(db, rcpts=["a@x.test"], age=10)
    Event.insert_many([{"queue_id": "Q", "at": NOW - 100 + i, "kind": State.DELIVERED} for i in range(100)]).execute(db)
    statements: list[str] = []
    db.connection().set_trace_callback(statements.append)
    try:
        stats.snapshot(db, NOW)
    finally:
        db.connection().set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) > 10
    for sql in selects:
        steps = [row[3] for row in db.execute_sql("EXPLAIN QUERY PLAN " + sql)]
        # peewee names tables t1, t2: a scan shows as "SCAN t1". The one allowed
        # is the count of messages, which reads the smallest index whole.
        scans = [step for step in steps if step.startswith("SCAN")]
        assert scans in ([], ["SCAN t1 USING COVERING INDEX message_received_at"]), (sql, steps)
