"""The text empathctl and mailq print (control/render.py, pure), from results and from a real queue."""

import pytest
import queue_helpers
from queue_helpers import NOW, SETTINGS, add, defer

from empath.control.render import format_age, format_list, format_show, render
from empath.delivery import results
from empath.queue import admin, claims
from empath.queue.admin import QueueFilter
from empath.queue.states import State

db = queue_helpers.db  # the fixture: a new queue database


STATUS = {
    "version": "0.1.0",
    "pid": 7,
    "hostname": "mx.test",
    "config": "/etc/empath/empath.toml",
    "started_at": 0.0,
    "uptime": 7260.0,
    "listeners": ["smtp@0.0.0.0:25"],
    "accepting": True,
    "sessions": 2,
    "queue": {"queued": 1, "deferred": 4, "held": 0},
    "oldest_age": 600.0,
    "delivery": {
        "paused": False,
        "paused_domains": ["slow.test"],
        "in_flight": 3,
        "overrides": {"slow.test": {"rate": 0.5, "concurrency": 2}},
    },
    "restart_needed": ["listeners"],
}


def test_status_text():
    text = render("status", STATUS, {})
    assert "empath 0.1.0, pid 7, up 2h 1m" in text
    assert "queue:      5 recipients waiting: queued 1, deferred 4, held 0 (oldest 10m 0s)" in text
    assert "delivery:   paused for slow.test, 3 in flight" in text
    assert "override:   slow.test: rate 30/m, concurrency 2" in text
    assert text.endswith("restart needed for: listeners\n")


def test_tables_and_short_results():
    rows = [{"client": "192.0.2.1", "listener": "smtp@0.0.0.0:25", "state": "mail", "tls": None, "age": 5.0}]
    rows[0] |= {"helo": "h.test", "user": None}
    table = render("connections", rows, {}).splitlines()
    assert table[0].split() == ["CLIENT", "LISTENER", "STATE", "TLS", "AGE", "HELO", "USER", "AUTH", "FAILS", "STRESS"]
    assert table[1].split() == ["192.0.2.1", "smtp@0.0.0.0:25", "mail", "-", "5s", "h.test", "-", "0", "-"]
    assert render("breaker-list", [], {}) == "no circuit breakers yet (none until a delivery is tried)\n"
    assert render("queue-hold", {"messages": 1}, {}) == "1 message held\n"
    assert render("queue-retry", {"messages": 3}, {}) == "3 messages due now\n"
    closed = {"messages": 1, "breakers_closed": ["a.test", "smarthost"]}
    assert render("queue-retry", closed, {}).splitlines() == [
        "1 message due now",
        "circuit breaker closed: a.test, smarthost (its mail may try to connect again)",
    ]
    assert render("pause", {"paused": True, "paused_domains": []}, {}) == "delivery: PAUSED (all)\n"
    listing = render("queue-list", [], {"limit": 0})
    assert listing.startswith("Mail queue is empty\n") and "--limit for more" in listing


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
        row("01AAAAAAAAAAAAAA", 2048, "", [("a@x.test", State.QUEUED, None)], active=True),
        row(
            "01BBBBBBBBBBBBBB",
            100,
            "s@y.test",
            [
                ("b@x.test", State.DEFERRED, "connect: refused"),
                ("c@x.test", State.DEFERRED, "connect: refused"),
                ("done@x.test", State.DELIVERED, "250 ok"),
            ],
        ),
        row("01CCCCCCCCCCCCCC", 10, "s@y.test", [("d@x.test", State.HELD, None)], held=True, active=True),
    ]
    text = format_list(rows)
    lines = text.splitlines()
    assert lines[0].startswith("-Queue ID-")
    assert lines[1].startswith("01AAAAAAAAAAAAAA*     2048 ") and lines[1].endswith("MAILER-DAEMON")
    assert lines[2] == " " * 43 + "a@x.test"
    assert "(connect: refused)" in text and text.count("(connect: refused)") == 1
    assert "done@x.test" not in text
    assert "01CCCCCCCCCCCCCC!" in text  # held wins over active
    assert lines[-1] == "-- 3 Kbytes in 3 Requests."
    assert format_list([]) == "Mail queue is empty\n"


def test_format_list_of_a_real_queue(db):
    queue_id = add(db, sender="", rcpts=("x@one.test",))
    defer(db, queue_id, "x@one.test", reply="421 4.7.0 too busy")
    text = format_list(admin.list_messages(db, QueueFilter(), NOW))
    assert f"{queue_id}        21 " in text and "MAILER-DAEMON" in text
    assert "(421 4.7.0 too busy)" in text and text.endswith("-- 1 Kbytes in 1 Request.\n")


def test_format_show(db):
    queue_id = add(db, rcpts=("x@one.test", "y@two.test"), age=3700, body=b"Subject: hi\r\n\r\nbody line\r\n")
    deferral = claims.Result(1, State.DEFERRED, "451 4.3.0 later", "4.3.0", "mx.one.test", NOW + 60)
    results.record(db, queue_id, [deferral], NOW, SETTINGS)
    admin.hold(db, [queue_id], NOW)
    text = format_show(admin.show_message(db, queue_id, NOW, body=True))
    assert f"Queue ID:   {queue_id}\nStatus:     on hold\nSender:     <a@b.test>\n" in text
    assert "(1h 1m ago)" in text and "helo=client.test listener=smtp" in text
    assert "  <x@one.test>  held, 1 attempt, next attempt " in text
    assert "      on hold (empathctl queue release) (from mx.one.test)\n" in text
    assert "  <y@two.test>  held, 0 attempts" in text
    assert "deferred <x@one.test>: relay=mx.one.test dsn=4.3.0 451 4.3.0 later" in text
    assert "operator: held by the operator" in text
    assert text.endswith("Message (26 bytes):\nSubject: hi\n\nbody line\n")
    admin.delete(db, [queue_id], NOW)
    gone = format_show(admin.show_message(db, queue_id, NOW))
    assert "Status:     no longer in the queue\n" in gone and "operator: deleted by the operator" in gone


@pytest.mark.parametrize(
    "seconds, text", [(0, "0s"), (45.9, "45s"), (61, "1m 1s"), (3600, "1h 0m"), (3 * 86400 + 7200, "3d 2h"), (-5, "0s")]
)
def test_format_age(seconds, text):
    assert format_age(seconds) == text


@pytest.mark.parametrize(
    "result, text",
    [
        (
            {"way": "none", "result": "exists"},
            "a@local.test: exists (local.test is not verified: every address is taken)\n",
        ),
        (
            {"way": "callout", "result": None, "source": "expired"},
            "a@local.test: not known yet (expired: the next RCPT asks the next hop)\n",
        ),
        (
            {
                "way": "callout",
                "result": "exists",
                "source": "cache",
                "reply": "mx said: 250 ok",
                "age": 8 * 86400.0,
                "refresh_due": True,
            },
            "a@local.test: exists (callout answer kept 8d 0h, asked again at the next RCPT: mx said: 250 ok)\n",
        ),
        (
            {
                "way": "callout",
                "result": "unverified",
                "source": "callout",
                "reply": "connect: refused",
                "forgot": False,
            },
            "a@local.test: unverified (no answer was kept; asked now: connect: refused)\n",
        ),
    ],
)
def test_verify(result, text):
    assert render("verify", {"address": "a@local.test", "domain": "local.test", **result}, {}) == text
