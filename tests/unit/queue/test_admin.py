"""The operator's queue actions and listings (empath/queue/admin.py) on a real
SQLite queue in a temporary directory: filters, each action, a leased recipient."""

import sqlite3

import peewee
import pytest
import queue_helpers
from queue_helpers import NOW, SETTINGS, add, defer

from empath.addresses import Domain
from empath.delivery import results
from empath.queue import admin, claims, database, ids
from empath.queue.admin import QueueFilter
from empath.queue.models import Event, Message, Recipient
from empath.queue.states import ACTIVE, State

db = queue_helpers.db  # the fixture: a new queue database


def states(db, queue_id):
    query = Recipient.select().where(Recipient.message == queue_id)
    return {r.address: r.state for r in query.execute(db)}


def operator_events(db, queue_id):
    query = Event.select().where(Event.queue_id == queue_id, Event.kind == "operator")
    return [e.detail for e in query.execute(db)]


# -- listings ---------------------------------------------------------------------


def listed(db, flt=None, limit=None):
    return [row["queue_id"] for row in admin.list_messages(db, flt or QueueFilter(), NOW, limit)]


def test_list_filters(db):
    old = add(db, sender="Boss@Corp.test", rcpts=("x@one.test", "y@two.test"), age=7200)
    new = add(db, sender="", rcpts=("z@two.test",), age=60)
    defer(db, old, "y@two.test")
    assert listed(db) == [old, new]  # oldest first
    assert listed(db, limit=1) == [old]
    assert listed(db, QueueFilter(state=State.DEFERRED)) == [old]
    assert listed(db, QueueFilter(state=State.QUEUED)) == [old, new]
    assert listed(db, QueueFilter(domain=Domain("two.test"))) == [old, new]
    assert listed(db, QueueFilter(domain=Domain("ONE.test"))) == [old]
    # state and domain match the same recipient: old's deferred one is at two.test, not one.test
    assert listed(db, QueueFilter(state=State.DEFERRED, domain="one.test")) == []
    assert listed(db, QueueFilter(state=State.DEFERRED, domain="two.test")) == [old]
    assert listed(db, QueueFilter(sender="boss@corp.TEST")) == [old]
    assert listed(db, QueueFilter(sender="@corp.test")) == [old]
    assert listed(db, QueueFilter(sender="oss@corp.test")) == []
    assert listed(db, QueueFilter(sender="<>")) == [new]
    assert listed(db, QueueFilter(older_than=3600)) == [old]
    assert listed(db, QueueFilter(older_than=10, sender="<>")) == [new]
    assert listed(db, QueueFilter(state=ACTIVE)) == []
    claims.claim(db, NOW, "owner", 300, 1)  # leases the oldest due recipient: old's x@one.test
    assert listed(db, QueueFilter(state=ACTIVE)) == [old]


def test_list_rows_are_json_ready(db):
    queue_id = add(db, rcpts=("x@one.test", "y@two.test"), age=30)
    defer(db, queue_id, "y@two.test")
    [row] = admin.list_messages(db, QueueFilter(), NOW)
    assert row == {
        "queue_id": queue_id,
        "size": 21,
        "received_at": NOW - 30,
        "age": 30.0,
        "sender": "a@b.test",
        "held": False,
        "active": False,
        "recipients": [
            {
                "address": "x@one.test",
                "state": State.QUEUED,
                "attempts": 0,
                "next_attempt_at": NOW - 30,
                "last_reply": None,
                "last_status": None,
                "remote_mta": None,
            },
            {
                "address": "y@two.test",
                "state": State.DEFERRED,
                "attempts": 1,
                "next_attempt_at": NOW + 3600,
                "last_reply": "451 4.3.0 try later",
                "last_status": "4.3.0",
                "remote_mta": None,
            },
        ],
    }


# -- show -------------------------------------------------------------------------------


def test_show_message_with_history_and_body(db):
    queue_id = add(
        db, rcpts=("x@one.test", "y@two.test"), age=600, body=b"Subject: caf\xc3\xa9\r\n\r\nbad \xff byte\r\n"
    )
    results.record(
        db,
        queue_id,
        [claims.Result(1, State.DEFERRED, "451 4.7.1 greylisted", "4.7.1", "mx.one.test", NOW + 900)],
        NOW - 10,
        SETTINGS,
    )
    detail = admin.show_message(db, queue_id, NOW, body=True)
    assert detail is not None
    assert detail["in_queue"] and detail["sender"] == "a@b.test" and detail["age"] == 600.0
    assert detail["client_helo"] == "client.test" and detail["trace_id"] == "trace-1"
    x, y = detail["recipients"]
    assert x["state"] == State.DEFERRED and x["attempts"] == 1 and x["remote_mta"] == "mx.one.test"
    assert x["next_attempt_at"] == NOW + 900 and x["why"] == "deferred: 451 4.7.1 greylisted"
    assert y["state"] == State.QUEUED and y["why"] == "due now"
    assert [e["kind"] for e in detail["events"]] == ["received", State.DEFERRED]
    assert detail["events"][1]["recipient"] == "x@one.test"
    assert "451 4.7.1 greylisted" in detail["events"][1]["detail"]
    assert detail["body"] == "Subject: café\r\n\r\nbad \ufffd byte\r\n" and detail["body_bytes"] == 30
    assert "body" not in admin.show_message(db, queue_id, NOW)


def test_show_of_a_message_that_left_keeps_its_history(db):
    queue_id = add(db)
    results.record(db, queue_id, [claims.Result(1, State.DELIVERED, "250 ok", "2.0.0", "mx.one.test")], NOW, SETTINGS)
    detail = admin.show_message(db, queue_id, NOW)
    assert detail == {"queue_id": queue_id, "in_queue": False, "events": detail["events"]}
    assert [e["kind"] for e in detail["events"]] == ["received", State.DELIVERED, "removed"]
    assert admin.show_message(db, ids.new_id(), NOW) is None


@pytest.mark.parametrize(
    "args, expected",
    [
        ((State.HELD, None, None, NOW, NOW), "on hold (empathctl queue release)"),
        ((State.DEFERRED, None, None, NOW, NOW), "deferred"),
        ((State.QUEUED, None, "suspended after 5 failures", NOW + 60, NOW), "waiting: suspended after 5 failures"),
        ((State.QUEUED, None, None, NOW + 60, NOW), "put back by a rate limit"),
        ((State.QUEUED, NOW + 60, None, NOW + 60, NOW), "being delivered now"),
        ((State.DEFERRED, NOW - 60, "451 x", NOW - 60, NOW), "its delivery stopped; due again at the next start"),
        ((State.BOUNCED, None, "550 no such user", NOW, NOW), "550 no such user"),
    ],
)
def test_why(args, expected):
    assert admin.why(*args) == expected


# -- actions ---------------------------------------------------------------------------


def test_delete_some_and_all(db):
    a, b, c = add(db, age=3), add(db, age=2), add(db, age=1)
    assert admin.delete(db, [a, a, ids.new_id()], NOW) == 1  # duplicates and unknown ids count nothing
    assert listed(db) == [b, c]
    assert Recipient.select().where(Recipient.message == a).count(db) == 0
    assert db.execute_sql("SELECT COUNT(*) FROM body WHERE queue_id = ?", (a,)).fetchone() == (0,)
    assert operator_events(db, a) == ["deleted by the operator"]
    assert admin.delete(db, None, NOW) == 2
    assert listed(db) == [] and operator_events(db, c) == ["deleted by the operator"]
    assert admin.delete(db, None, NOW) == 0


def test_actions_refuse_malformed_ids_and_change_nothing(db):
    queue_id = add(db)
    for action in (admin.delete, admin.hold):
        with pytest.raises(ValueError, match="not a queue id: '../x'"):
            action(db, [queue_id, "../x"])
    with pytest.raises(ValueError, match="not a queue id: '1;id'"):
        admin.retry(db, ["1;id"], None, NOW)
    with pytest.raises(ValueError, match="not a queue id"):
        admin.release(db, [""], NOW)
    assert listed(db) == [queue_id] and states(db, queue_id) == {"r@one.test": State.QUEUED}


def test_hold_and_release(db):
    tried = add(db, rcpts=("x@one.test", "y@one.test"), age=3)
    fresh = add(db, rcpts=("z@two.test",), age=2)
    other = add(db, rcpts=("w@two.test",), age=1)
    defer(db, tried, "x@one.test")
    Recipient.update(state=State.DELIVERED).where(Recipient.address == "y@one.test").execute(db)
    assert admin.hold(db, [tried, fresh], NOW) == 2
    assert states(db, tried) == {"x@one.test": State.HELD, "y@one.test": State.DELIVERED}
    assert states(db, fresh) == {"z@two.test": State.HELD}
    assert [row["held"] for row in admin.list_messages(db, QueueFilter(), NOW)] == [True, True, False]
    assert admin.hold(db, [tried], NOW) == 0  # already held
    assert [c.address for c in claims.claim(db, NOW + 7200, "owner", 300, 10)] == ["w@two.test"]

    assert admin.release(db, [tried, fresh, other], NOW + 10) == 2
    assert states(db, tried) == {"x@one.test": State.DEFERRED, "y@one.test": State.DELIVERED}  # tried before: deferred
    assert states(db, fresh) == {"z@two.test": State.QUEUED}
    assert not any(row["held"] for row in admin.list_messages(db, QueueFilter(), NOW))
    # Due at once, the deferred one too (it was due in an hour).
    assert sorted(c.address for c in claims.claim(db, NOW + 10, "owner", 300, 10)) == ["x@one.test", "z@two.test"]
    assert operator_events(db, tried) == ["held by the operator", "released by the operator"]
    assert operator_events(db, other) == []


def test_hold_and_release_all(db):
    a, b = add(db), add(db)
    assert admin.hold(db, None, NOW) == 2
    assert claims.claim(db, NOW, "owner", 300, 10) == []
    assert admin.release(db, None, NOW) == 2
    assert len(claims.claim(db, NOW, "owner", 300, 10)) == 2
    assert operator_events(db, a) == operator_events(db, b) == ["held by the operator", "released by the operator"]


def test_retry_makes_waiting_recipients_due_now(db):
    a = add(db, rcpts=("x@one.test", "y@two.test"))
    b = add(db, rcpts=("z@two.test",))
    c = add(db, rcpts=("h@two.test",))
    for queue_id, address in ((a, "x@one.test"), (a, "y@two.test"), (b, "z@two.test"), (c, "h@two.test")):
        defer(db, queue_id, address)
    admin.hold(db, [c], NOW)
    assert admin.retry(db, [a], "two.test", NOW) == 1
    assert [x.address for x in claims.claim(db, NOW, "owner", 300, 10)] == ["y@two.test"]
    assert admin.retry(db, None, Domain("TWO.test"), NOW) == 1  # b; c is held, a's is leased now
    assert admin.retry(db, None, None, NOW) == 1  # a's x@one.test
    assert admin.retry(db, None, None, NOW) == 0  # nothing waits any more
    assert sorted(x.address for x in claims.claim(db, NOW, "owner", 300, 10)) == ["x@one.test", "z@two.test"]
    assert states(db, c) == {"h@two.test": State.HELD}
    assert operator_events(db, b) == ["retry now (domain two.test), by the operator"]


def test_actions_on_a_leased_recipient_never_start_a_second_delivery(db):
    queue_id = add(db, rcpts=("x@one.test",))
    [claimed] = claims.claim(db, NOW, "owner", 300, 10)
    # retry: the leased row is not made due, so the scheduler cannot claim it twice.
    assert admin.retry(db, [queue_id], None, NOW) == 0
    assert claims.claim(db, NOW + 1, "owner", 300, 10) == []
    # hold marks it; the delivery in flight runs on and keeps its lease.
    assert admin.hold(db, [queue_id], NOW) == 1
    row = Recipient.select().where(Recipient.id == claimed.recipient_id).get(db)
    assert row.state == State.HELD and row.lease_owner == "owner"
    # release does not make it due while its delivery runs.
    assert admin.release(db, [queue_id], NOW + 1) == 1
    row = Recipient.select().where(Recipient.id == claimed.recipient_id).get(db)
    assert row.state == State.QUEUED and row.lease_owner == "owner" and row.next_attempt_at == NOW + 300
    assert claims.claim(db, NOW + 2, "owner", 300, 10) == []
    # hold again; the delivery is put back (an open breaker): it stays held.
    admin.hold(db, [queue_id], NOW + 3)
    results.record(db, queue_id, [claims.PutBack(claimed.recipient_id, NOW + 60)], NOW + 4, SETTINGS)
    row = Recipient.select().where(Recipient.id == claimed.recipient_id).get(db)
    assert row.state == State.HELD and row.lease_owner is None
    assert claims.claim(db, NOW + 120, "owner", 300, 10) == []


def test_a_held_recipient_whose_delivery_defers_stays_held(db):
    """A hold given while a delivery was in flight outlasts that attempt's deferral."""
    queue_id = add(db, rcpts=("x@one.test", "y@two.test"))
    claimed = claims.claim(db, NOW, "owner", 300, 10)
    admin.hold(db, [queue_id], NOW)
    deferred = [claims.Result(c.recipient_id, State.DEFERRED, "451 later", "4.0.0", "mx", NOW + 600) for c in claimed]
    results.record(db, queue_id, deferred, NOW + 1, SETTINGS)
    assert states(db, queue_id) == {"x@one.test": State.HELD, "y@two.test": State.HELD}
    assert claims.claim(db, NOW + 700, "owner", 300, 10) == []
    assert admin.release(db, [queue_id], NOW + 2) == 1
    assert states(db, queue_id) == {"x@one.test": State.DEFERRED, "y@two.test": State.DEFERRED}


def test_a_held_recipient_whose_delivery_succeeds_is_done(db):
    queue_id = add(db, rcpts=("x@one.test", "y@two.test"))
    first, second = claims.claim(db, NOW, "owner", 300, 10)
    admin.hold(db, [queue_id], NOW)
    results.record(
        db, queue_id, [claims.Result(first.recipient_id, State.DELIVERED, "250 ok", "2.0.0", "mx")], NOW + 1, SETTINGS
    )
    assert states(db, queue_id)[first.address] == State.DELIVERED


def test_delete_during_a_delivery(db):
    queue_id = add(db)
    [claimed] = claims.claim(db, NOW, "owner", 300, 10)
    assert admin.delete(db, [queue_id], NOW) == 1
    assert claims.load(db.connection(), queue_id) is None  # a worker that had not loaded it yet gives up
    # One that had: its outcome finds nothing to record, and says so without failing.
    delivered = claims.Result(claimed.recipient_id, State.DELIVERED, "250 ok", "2.0.0", "mx")
    assert results.record(db, queue_id, [delivered], NOW + 1, SETTINGS) == results.Settled([])
    assert listed(db) == [] and operator_events(db, queue_id) == ["deleted by the operator"]


def test_actions_by_id_search_indexes(db):
    queue_id = add(db)
    statements: list[str] = []
    db.connection().set_trace_callback(statements.append)
    try:
        admin.hold(db, [queue_id], NOW)
        admin.release(db, [queue_id], NOW)
        admin.retry(db, [queue_id], "one.test", NOW)
        admin.delete(db, [queue_id], NOW)
        admin.show_message(db, queue_id, NOW)
    finally:
        db.connection().set_trace_callback(None)
    queries = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE"))]
    assert len(queries) > 10
    for sql in queries:
        steps = [row[3] for row in db.execute_sql("EXPLAIN QUERY PLAN " + sql)]
        assert not any(step.startswith("SCAN") for step in steps), (sql, steps)  # peewee's tables: "SCAN t1"


def test_open_readonly_reads_and_refuses_writes(db, tmp_path):
    queue_id = add(db)
    db.close()
    with database.open_readonly(tmp_path / "queue.sqlite3") as readonly:
        assert listed(readonly) == [queue_id]
        with pytest.raises((peewee.OperationalError, sqlite3.OperationalError), match="readonly"):
            admin.delete(readonly, None, NOW)
    db.connect()  # the fixture's own connection, open again
    assert Message.select().count(db) == 1


def test_a_listing_reads_one_snapshot(db, monkeypatch):
    """Its two reads (messages, then their recipients) share one transaction: a message
    that sendmail or the daemon commits between them is either whole in the listing or
    absent, never recipients without their message (a KeyError once)."""
    add(db)
    inside = []
    real = admin.tuples

    def watched(queue_db, query):
        inside.append(queue_db.in_transaction())
        return real(queue_db, query)

    monkeypatch.setattr(admin, "tuples", watched)
    assert len(admin.list_messages(db, QueueFilter(), NOW)) == 1
    assert inside == [True, True]
