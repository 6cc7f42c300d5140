"""The operator's queue actions and listings (empath/queue/admin.py) on a real
SQLite queue in a temporary directory: filters, each action, a leased
recipient, id validation, and the text they print."""

import sqlite3

import peewee
import pytest
import queue_helpers
from queue_helpers import NOW, SETTINGS, add

from empath.addresses import Domain
from empath.queue import admin, ids
from empath.queue import claims as work
from empath.queue.admin import QueueFilter
from empath.queue.models import BOUNCED, DEFERRED, DELIVERED, HELD, QUEUED, Event, Message, Recipient

db = queue_helpers.db  # the fixture: a new queue database


def states(queue_id):
    return {r.address: r.state for r in Recipient.select().where(Recipient.message == queue_id)}


def defer(queue_id, address, reply="451 4.3.0 try later", due=NOW + 3600):
    Recipient.update(state=DEFERRED, attempts=1, last_reply=reply, last_status="4.3.0", next_attempt_at=due).where(
        Recipient.message == queue_id, Recipient.address == address
    ).execute()


def operator_events(queue_id):
    return [e.detail for e in Event.select().where(Event.queue_id == queue_id, Event.kind == "operator")]


# -- ids and filters ----------------------------------------------------------------


@pytest.mark.parametrize("text", [ids.new_id(), ids.new_id(0), "0123456789ABCDEF"])
def test_valid_queue_ids(text):
    assert admin.valid_queue_id(text)


@pytest.mark.parametrize(
    "text",
    ["", "../x", "1;id", "0123456789ABCDE", "0123456789ABCDEFG", "0123456789abcdef", "0123456789ABCDEI"]
    + ["01234567\n9ABCDEF", "0123456789ABCDEF\n", " 0123456789ABCDEF", "0123456789ABCDE/", "0" * 200],
)
def test_invalid_queue_ids(text):
    assert not admin.valid_queue_id(text)


def test_parse_age_and_filter():
    assert admin.parse_age("90") == 90.0
    assert admin.parse_age("1.5") == 1.5
    assert admin.parse_age("2h") == 7200.0
    assert admin.parse_age(" 5d ") == 5 * 86400
    for bad in ("", "2x", "-3h", "h", "nan", "inf", "1e9", "-5"):
        with pytest.raises(ValueError, match="not an age"):
            admin.parse_age(bad)
    parsed = admin.parse_filter("deferred", " One.Test ", "<>", "30m")
    assert parsed == QueueFilter("deferred", "one.test", "<>", 1800.0)
    with pytest.raises(ValueError, match="unknown state 'lost'"):
        admin.parse_filter(state="lost")
    with pytest.raises(ValueError, match="empty domain"):
        admin.parse_filter(domain=" ")
    with pytest.raises(ValueError, match="null sender"):
        admin.parse_filter(sender="")


def listed(flt=None, limit=None):
    return [row["queue_id"] for row in admin.list_messages(flt or QueueFilter(), NOW, limit)]


def test_list_filters(db):
    old = add(sender="Boss@Corp.test", rcpts=("x@one.test", "y@two.test"), age=7200)
    new = add(sender="", rcpts=("z@two.test",), age=60)
    defer(old, "y@two.test")
    assert listed() == [old, new]  # oldest first
    assert listed(limit=1) == [old]
    assert listed(QueueFilter(state=DEFERRED)) == [old]
    assert listed(QueueFilter(state=QUEUED)) == [old, new]
    assert listed(QueueFilter(domain=Domain("two.test"))) == [old, new]
    assert listed(QueueFilter(domain=Domain("ONE.test"))) == [old]
    # state and domain match the same recipient: old's deferred one is at two.test, not one.test
    assert listed(QueueFilter(state=DEFERRED, domain="one.test")) == []
    assert listed(QueueFilter(state=DEFERRED, domain="two.test")) == [old]
    assert listed(QueueFilter(sender="boss@corp.TEST")) == [old]
    assert listed(QueueFilter(sender="@corp.test")) == [old]
    assert listed(QueueFilter(sender="oss@corp.test")) == []
    assert listed(QueueFilter(sender="<>")) == [new]
    assert listed(QueueFilter(older_than=3600)) == [old]
    assert listed(QueueFilter(older_than=10, sender="<>")) == [new]
    assert listed(QueueFilter(state=admin.ACTIVE)) == []
    work.claim(NOW, "owner", 300, 1)  # leases the oldest due recipient: old's x@one.test
    assert listed(QueueFilter(state=admin.ACTIVE)) == [old]


def test_list_rows_are_json_ready(db):
    queue_id = add(rcpts=("x@one.test", "y@two.test"), age=30)
    defer(queue_id, "y@two.test")
    [row] = admin.list_messages(QueueFilter(), NOW)
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
                "state": QUEUED,
                "attempts": 0,
                "next_attempt_at": NOW - 30,
                "last_reply": None,
                "last_status": None,
                "remote_mta": None,
            },
            {
                "address": "y@two.test",
                "state": DEFERRED,
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
    queue_id = add(rcpts=("x@one.test", "y@two.test"), age=600, body=b"Subject: caf\xc3\xa9\r\n\r\nbad \xff byte\r\n")
    work.record(
        queue_id,
        [work.Result(1, DEFERRED, "451 4.7.1 greylisted", "4.7.1", "mx.one.test", NOW + 900)],
        NOW - 10,
        SETTINGS,
    )
    detail = admin.show_message(queue_id, NOW, body=True)
    assert detail is not None
    assert detail["in_queue"] and detail["sender"] == "a@b.test" and detail["age"] == 600.0
    assert detail["client_helo"] == "client.test" and detail["trace_id"] == "trace-1"
    x, y = detail["recipients"]
    assert x["state"] == DEFERRED and x["attempts"] == 1 and x["remote_mta"] == "mx.one.test"
    assert x["next_attempt_at"] == NOW + 900 and x["why"] == "deferred: 451 4.7.1 greylisted"
    assert y["state"] == QUEUED and y["why"] == "due now"
    assert [e["kind"] for e in detail["events"]] == ["received", DEFERRED]
    assert detail["events"][1]["recipient"] == "x@one.test"
    assert "451 4.7.1 greylisted" in detail["events"][1]["detail"]
    assert detail["body"] == "Subject: café\r\n\r\nbad \ufffd byte\r\n" and detail["body_bytes"] == 30
    assert "body" not in admin.show_message(queue_id, NOW)


def test_show_of_a_message_that_left_keeps_its_history(db):
    queue_id = add()
    work.record(queue_id, [work.Result(1, DELIVERED, "250 ok", "2.0.0", "mx.one.test")], NOW, SETTINGS)
    detail = admin.show_message(queue_id, NOW)
    assert detail == {"queue_id": queue_id, "in_queue": False, "events": detail["events"]}
    assert [e["kind"] for e in detail["events"]] == ["received", DELIVERED, "removed"]
    assert admin.show_message(ids.new_id(), NOW) is None


@pytest.mark.parametrize(
    "args, expected",
    [
        ((HELD, None, None, NOW, NOW), "on hold (empathctl queue release)"),
        ((DEFERRED, None, None, NOW, NOW), "deferred"),
        ((QUEUED, None, "suspended after 5 failures", NOW + 60, NOW), "waiting: suspended after 5 failures"),
        ((QUEUED, None, None, NOW + 60, NOW), "put back by a rate limit"),
        ((QUEUED, NOW + 60, None, NOW + 60, NOW), "being delivered now"),
        ((DEFERRED, NOW - 60, "451 x", NOW - 60, NOW), "its delivery stopped; due again at the next start"),
        ((BOUNCED, None, "550 no such user", NOW, NOW), "550 no such user"),
    ],
)
def test_why(args, expected):
    assert admin.why(*args) == expected


# -- actions ---------------------------------------------------------------------------


def test_delete_some_and_all(db):
    a, b, c = add(age=3), add(age=2), add(age=1)
    assert admin.delete([a, a, ids.new_id()], NOW) == 1  # duplicates and unknown ids count nothing
    assert listed() == [b, c]
    assert Recipient.select().where(Recipient.message == a).count() == 0
    assert db.execute_sql("SELECT COUNT(*) FROM body WHERE queue_id = ?", (a,)).fetchone() == (0,)
    assert operator_events(a) == ["deleted by the operator"]
    assert admin.delete(None, NOW) == 2
    assert listed() == [] and operator_events(c) == ["deleted by the operator"]
    assert admin.delete(None, NOW) == 0


def test_actions_refuse_malformed_ids_and_change_nothing(db):
    queue_id = add()
    for action in (admin.delete, admin.hold):
        with pytest.raises(ValueError, match="not a queue id: '../x'"):
            action([queue_id, "../x"])
    with pytest.raises(ValueError, match="not a queue id: '1;id'"):
        admin.retry(["1;id"], None, NOW)
    with pytest.raises(ValueError, match="not a queue id"):
        admin.release([""], NOW)
    assert listed() == [queue_id] and states(queue_id) == {"r@one.test": QUEUED}


def test_hold_and_release(db):
    tried = add(rcpts=("x@one.test", "y@one.test"), age=3)
    fresh = add(rcpts=("z@two.test",), age=2)
    other = add(rcpts=("w@two.test",), age=1)
    defer(tried, "x@one.test")
    Recipient.update(state=DELIVERED).where(Recipient.address == "y@one.test").execute()
    assert admin.hold([tried, fresh], NOW) == 2
    assert states(tried) == {"x@one.test": HELD, "y@one.test": DELIVERED}
    assert states(fresh) == {"z@two.test": HELD}
    assert [row["held"] for row in admin.list_messages(QueueFilter(), NOW)] == [True, True, False]
    assert admin.hold([tried], NOW) == 0  # already held
    assert [c.address for c in work.claim(NOW + 7200, "owner", 300, 10)] == ["w@two.test"]

    assert admin.release([tried, fresh, other], NOW + 10) == 2
    assert states(tried) == {"x@one.test": DEFERRED, "y@one.test": DELIVERED}  # tried before: deferred
    assert states(fresh) == {"z@two.test": QUEUED}
    assert not any(row["held"] for row in admin.list_messages(QueueFilter(), NOW))
    # Due at once, the deferred one too (it was due in an hour).
    assert sorted(c.address for c in work.claim(NOW + 10, "owner", 300, 10)) == ["x@one.test", "z@two.test"]
    assert operator_events(tried) == ["held by the operator", "released by the operator"]
    assert operator_events(other) == []


def test_hold_and_release_all(db):
    a, b = add(), add()
    assert admin.hold(None, NOW) == 2
    assert work.claim(NOW, "owner", 300, 10) == []
    assert admin.release(None, NOW) == 2
    assert len(work.claim(NOW, "owner", 300, 10)) == 2
    assert operator_events(a) == operator_events(b) == ["held by the operator", "released by the operator"]


def test_retry_makes_waiting_recipients_due_now(db):
    a = add(rcpts=("x@one.test", "y@two.test"))
    b = add(rcpts=("z@two.test",))
    c = add(rcpts=("h@two.test",))
    for queue_id, address in ((a, "x@one.test"), (a, "y@two.test"), (b, "z@two.test"), (c, "h@two.test")):
        defer(queue_id, address)
    admin.hold([c], NOW)
    assert admin.retry([a], "two.test", NOW) == 1
    assert [x.address for x in work.claim(NOW, "owner", 300, 10)] == ["y@two.test"]
    assert admin.retry(None, Domain("TWO.test"), NOW) == 1  # b; c is held, a's is leased now
    assert admin.retry(None, None, NOW) == 1  # a's x@one.test
    assert admin.retry(None, None, NOW) == 0  # nothing waits any more
    assert sorted(x.address for x in work.claim(NOW, "owner", 300, 10)) == ["x@one.test", "z@two.test"]
    assert states(c) == {"h@two.test": HELD}
    assert operator_events(b) == ["retry now (domain two.test), by the operator"]


def test_actions_on_a_leased_recipient_never_start_a_second_delivery(db):
    queue_id = add(rcpts=("x@one.test",))
    [claimed] = work.claim(NOW, "owner", 300, 10)
    # retry: the leased row is not made due, so the scheduler cannot claim it twice.
    assert admin.retry([queue_id], None, NOW) == 0
    assert work.claim(NOW + 1, "owner", 300, 10) == []
    # hold marks it; the delivery in flight runs on and keeps its lease.
    assert admin.hold([queue_id], NOW) == 1
    row = Recipient.get_by_id(claimed.recipient_id)
    assert row.state == HELD and row.lease_owner == "owner"
    # release does not make it due while its delivery runs.
    assert admin.release([queue_id], NOW + 1) == 1
    row = Recipient.get_by_id(claimed.recipient_id)
    assert row.state == QUEUED and row.lease_owner == "owner" and row.next_attempt_at == NOW + 300
    assert work.claim(NOW + 2, "owner", 300, 10) == []
    # hold again; the delivery is put back (an open breaker): it stays held.
    admin.hold([queue_id], NOW + 3)
    work.record(queue_id, [work.Result(claimed.recipient_id, work.RETRY, "", "", None, NOW + 60)], NOW + 4, SETTINGS)
    row = Recipient.get_by_id(claimed.recipient_id)
    assert row.state == HELD and row.lease_owner is None
    assert work.claim(NOW + 120, "owner", 300, 10) == []


def test_a_held_recipient_whose_delivery_defers_stays_held(db):
    """A hold given while a delivery was in flight outlasts that attempt's deferral."""
    queue_id = add(rcpts=("x@one.test", "y@two.test"))
    claimed = work.claim(NOW, "owner", 300, 10)
    admin.hold([queue_id], NOW)
    deferred = [work.Result(c.recipient_id, DEFERRED, "451 later", "4.0.0", "mx", NOW + 600) for c in claimed]
    work.record(queue_id, deferred, NOW + 1, SETTINGS)
    assert states(queue_id) == {"x@one.test": HELD, "y@two.test": HELD}
    assert work.claim(NOW + 700, "owner", 300, 10) == []
    assert admin.release([queue_id], NOW + 2) == 1
    assert states(queue_id) == {"x@one.test": DEFERRED, "y@two.test": DEFERRED}


def test_a_held_recipient_whose_delivery_succeeds_is_done(db):
    queue_id = add(rcpts=("x@one.test", "y@two.test"))
    first, second = work.claim(NOW, "owner", 300, 10)
    admin.hold([queue_id], NOW)
    work.record(queue_id, [work.Result(first.recipient_id, DELIVERED, "250 ok", "2.0.0", "mx")], NOW + 1, SETTINGS)
    assert states(queue_id)[first.address] == DELIVERED


def test_delete_during_a_delivery(db):
    queue_id = add()
    [claimed] = work.claim(NOW, "owner", 300, 10)
    assert admin.delete([queue_id], NOW) == 1
    assert work.load(db.connection(), queue_id) is None  # a worker that had not loaded it yet gives up
    # One that had: its outcome finds nothing to record, and says so without failing.
    delivered = work.Result(claimed.recipient_id, DELIVERED, "250 ok", "2.0.0", "mx")
    assert work.record(queue_id, [delivered], NOW + 1, SETTINGS) == work.Recorded([])
    assert listed() == [] and operator_events(queue_id) == ["deleted by the operator"]


def test_actions_by_id_search_indexes(db):
    queue_id = add()
    statements: list[str] = []
    db.connection().set_trace_callback(statements.append)
    try:
        admin.hold([queue_id], NOW)
        admin.release([queue_id], NOW)
        admin.retry([queue_id], "one.test", NOW)
        admin.delete([queue_id], NOW)
        admin.show_message(queue_id, NOW)
    finally:
        db.connection().set_trace_callback(None)
    queries = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE"))]
    assert len(queries) > 10
    for sql in queries:
        steps = [row[3] for row in db.execute_sql("EXPLAIN QUERY PLAN " + sql)]
        assert not any(step.startswith("SCAN") for step in steps), (sql, steps)  # peewee's tables: "SCAN t1"


def test_open_readonly_reads_and_refuses_writes(db, tmp_path):
    queue_id = add()
    db.close()
    with admin.open_readonly(tmp_path / "queue.sqlite3"):
        assert listed() == [queue_id]
        with pytest.raises((peewee.OperationalError, sqlite3.OperationalError), match="readonly"):
            admin.delete(None, NOW)
    db.connect()  # the models are bound to the fixture's database again
    assert Message.select().count() == 1


# -- text ------------------------------------------------------------------------------


def row(queue_id, size, sender, recipients, held=False, active=False):
    return {
        "queue_id": queue_id,
        "size": size,
        "received_at": 0.0,
        "age": 0.0,
        "sender": sender,
        "held": held,
        "active": active,
        "recipients": [
            {"address": a, "state": s, "attempts": 0, "next_attempt_at": 0.0, "last_reply": reply}
            for a, s, reply in recipients
        ],
    }


def test_format_list_matches_postfix_layout():
    rows = [
        row("01AAAAAAAAAAAAAA", 2048, "", [("a@x.test", QUEUED, None)], active=True),
        row(
            "01BBBBBBBBBBBBBB",
            100,
            "s@y.test",
            [
                ("b@x.test", DEFERRED, "connect: refused"),
                ("c@x.test", DEFERRED, "connect: refused"),
                ("done@x.test", DELIVERED, "250 ok"),
            ],
        ),
        row("01CCCCCCCCCCCCCC", 10, "s@y.test", [("d@x.test", HELD, None)], held=True, active=True),
    ]
    text = admin.format_list(rows)
    lines = text.splitlines()
    assert lines[0].startswith("-Queue ID-")
    assert lines[1].startswith("01AAAAAAAAAAAAAA*     2048 ") and lines[1].endswith("MAILER-DAEMON")
    assert lines[2] == " " * 43 + "a@x.test"
    assert "(connect: refused)" in text and text.count("(connect: refused)") == 1
    assert "done@x.test" not in text
    assert "01CCCCCCCCCCCCCC!" in text  # held wins over active
    assert lines[-1] == "-- 3 Kbytes in 3 Requests."
    assert admin.format_list([]) == "Mail queue is empty\n"


def test_format_list_of_a_real_queue(db):
    queue_id = add(sender="", rcpts=("x@one.test",))
    defer(queue_id, "x@one.test", reply="421 4.7.0 too busy")
    text = admin.format_list(admin.list_messages(QueueFilter(), NOW))
    assert f"{queue_id}        21 " in text and "MAILER-DAEMON" in text
    assert "(421 4.7.0 too busy)" in text and text.endswith("-- 1 Kbytes in 1 Request.\n")


def test_format_show(db):
    queue_id = add(rcpts=("x@one.test", "y@two.test"), age=3700, body=b"Subject: hi\r\n\r\nbody line\r\n")
    deferral = work.Result(1, DEFERRED, "451 4.3.0 later", "4.3.0", "mx.one.test", NOW + 60)
    work.record(queue_id, [deferral], NOW, SETTINGS)
    admin.hold([queue_id], NOW)
    text = admin.format_show(admin.show_message(queue_id, NOW, body=True))
    assert f"Queue ID:   {queue_id}\nStatus:     on hold\nSender:     <a@b.test>\n" in text
    assert "(1h 1m ago)" in text and "helo=client.test listener=smtp" in text
    assert "  <x@one.test>  held, 1 attempt, next attempt " in text
    assert "      on hold (empathctl queue release) (from mx.one.test)\n" in text
    assert "  <y@two.test>  held, 0 attempts" in text
    assert "deferred <x@one.test>: relay=mx.one.test status=4.3.0 451 4.3.0 later" in text
    assert "operator: held by the operator" in text
    assert text.endswith("Message (26 bytes):\nSubject: hi\n\nbody line\n")
    admin.delete([queue_id], NOW)
    gone = admin.format_show(admin.show_message(queue_id, NOW))
    assert "Status:     no longer in the queue\n" in gone and "operator: deleted by the operator" in gone


@pytest.mark.parametrize(
    "seconds, text", [(0, "0s"), (45.9, "45s"), (61, "1m 1s"), (3600, "1h 0m"), (3 * 86400 + 7200, "3d 2h"), (-5, "0s")]
)
def test_format_age(seconds, text):
    assert admin.format_age(seconds) == text


def test_a_listing_reads_one_snapshot(db, monkeypatch):
    """Its two reads (messages, then their recipients) share one transaction: a message
    that sendmail or the daemon commits between them is either whole in the listing or
    absent, never recipients without their message (a KeyError once)."""
    add()
    inside = []
    real = admin.tuples

    def watched(query):
        inside.append(db.in_transaction())
        return real(query)

    monkeypatch.setattr(admin, "tuples", watched)
    assert len(admin.list_messages(QueueFilter(), NOW)) == 1
    assert inside == [True, True]
