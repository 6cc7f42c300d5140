"""empathctl top's parts: the snapshot read from a real temporary queue, and
the screen rendered to a recording console."""

import io

import queue_helpers
from queue_helpers import NOW, SETTINGS, add
from rich.console import Console

from empath.cmd.top import Backlog, Finished, Snapshot, first_event_since, render, snapshot
from empath.queue import claims as work
from empath.queue.models import BOUNCED, DEFERRED, DELIVERED, HELD, QUEUED, Event

db = queue_helpers.db  # the fixture: a new queue database


def text_of(renderable, width=160) -> str:
    console = Console(record=True, width=width, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def test_first_event_since_finds_the_boundary(db):
    assert first_event_since(NOW) is None
    Event.insert_many([{"queue_id": "Q", "at": NOW - 100 + i, "kind": "x"} for i in range(100)]).execute()
    first = first_event_since(NOW - 60)
    assert Event.get_by_id(first).at == NOW - 60 and Event.get_by_id(first - 1).at == NOW - 61
    assert first_event_since(NOW + 1) == Event.select().count() + 1  # past the end: nothing since
    assert first_event_since(0) == 1


def test_snapshot_reads_the_queue(db):
    slow = add(rcpts=["a@slow.test", "b@slow.test", "c@slow.test"], age=7200)
    ok = add(rcpts=["x@ok.test"], age=30)
    gone = add(rcpts=["y@bad.test"], age=20)
    [a, b, c] = work.claim(NOW - 7100, "owner", 86400, 3)

    def result(claimed, state, reply, remote, next_at=None):
        return [work.Result(claimed.recipient_id, state, reply, reply.split()[1], remote, next_at)]

    work.record(slow, result(a, DEFERRED, "451 4.7.1 slow down", "mx.slow", NOW), NOW - 7000, SETTINGS)
    work.record(slow, result(b, DEFERRED, "421 4.4.2 timeout", "mx.slow", NOW), NOW - 6000, SETTINGS)
    # c stays leased: being delivered
    [x, y] = work.claim(NOW - 10, "owner", 300, 10)
    work.record(ok, result(x, DELIVERED, "250 2.0.0 ok", "mx.ok"), NOW - 5, SETTINGS)
    work.record(gone, result(y, BOUNCED, "550 5.1.1 no such user", "mx.bad"), NOW - 4, SETTINGS)
    notices = [e.queue_id for e in Event.select().where(Event.kind == "notice")]
    assert len(notices) == 1  # the bounce's failure notice, queued at NOW - 4 to a@b.test (domain b.test)

    snap = snapshot(NOW, daemon_pid=1234)
    assert snap.daemon_pid == 1234
    assert snap.messages == 2  # slow, and the notice; ok and gone have left
    assert snap.states[DEFERRED] == 2 and snap.states[QUEUED] == 2 and snap.states[HELD] == 0
    assert snap.active == 1
    assert snap.oldest_age == 7200
    # In the last minute: ok, gone and the notice arrived; ok and gone left.
    assert snap.last_minute == {"received": 3, "removed": 2, DELIVERED: 1, DEFERRED: 0, BOUNCED: 1}
    assert snap.backlog == [
        Backlog("slow.test", 3, 7200, "421 4.4.2 timeout", None),
        Backlog("b.test", 1, 4, None, None),
    ]
    assert [(f.kind, f.queue_id, f.recipient) for f in snap.recent] == [
        (BOUNCED, gone, "y@bad.test"),
        (DELIVERED, ok, "x@ok.test"),
    ]
    assert "550 5.1.1 no such user" in snap.recent[0].detail
    assert snapshot(NOW, breaker_of={"slow.test": "open"}.get, rows=1).backlog == [
        Backlog("slow.test", 3, 7200, "421 4.4.2 timeout", "open")
    ]


def test_snapshot_of_an_empty_queue(db):
    snap = snapshot(NOW)
    assert snap.messages == 0 and snap.oldest_age is None and snap.backlog == [] and snap.recent == []
    assert set(snap.last_minute.values()) == {0}


SNAP = Snapshot(
    taken_at=NOW,
    daemon_pid=4321,
    messages=7,
    states={QUEUED: 3, DEFERRED: 11, HELD: 2, DELIVERED: 1, BOUNCED: 0},
    active=4,
    oldest_age=2 * 86400 + 3 * 3600,
    last_minute={"received": 42, "removed": 40, DELIVERED: 39, DEFERRED: 5, BOUNCED: 1},
    backlog=[
        Backlog("slow.example", 9, 3700, "421 4.7.0 too many connections from your IP", "open"),
        Backlog("fine.example", 2, 65, None, "closed"),
    ],
    recent=[Finished(NOW - 3, BOUNCED, "01ABCDEFGHJKMNPQ", "nobody@x.example", "relay=mx status=5.1.1 550 no")],
)


def test_render_shows_every_figure():
    text = text_of(render(SNAP))
    assert "Empath queue" in text and "daemon running (pid 4321)" in text and "Ctrl-C quits" in text
    queue_row = next(line for line in text.splitlines() if " 11 " in line)
    assert queue_row.split() == ["│", "7", "│", "3", "│", "11", "│", "2", "│", "4", "│", "2d", "3h", "│"]
    minute_row = next(line for line in text.splitlines() if " 42 " in line)
    assert minute_row.split() == ["│", "42", "│", "40", "│", "39", "│", "5", "│", "1", "│"]
    slow = next(line for line in text.splitlines() if "slow.example" in line)
    assert slow.split()[:8] == ["│", "slow.example", "│", "9", "│", "1h", "1m", "│"]
    assert "open" in slow and "421 4.7.0 too many connections from your IP" in slow
    assert "fine.example" in text and "breaker states are known only" not in text
    recent = next(line for line in text.splitlines() if "01ABCDEFGHJKMNPQ" in line)
    assert "bounced" in recent and "nobody@x.example" in recent and "550 no" in recent


def test_render_without_daemon_or_breakers_or_mail():
    empty = Snapshot(NOW, None, 0, {}, 0, None, {}, [], [])
    text = text_of(render(empty), width=100)
    assert "daemon not running" in text and "Ctrl-C" not in text_of(render(empty, live=False))
    assert "(nothing waits)" in text and "(none lately)" in text
    unknown = text_of(render(Snapshot(NOW, None, 1, {}, 0, 5.0, {}, [Backlog("d.test", 1, 5.0, None, None)], [])))
    row = next(line for line in unknown.splitlines() if "d.test" in line)
    assert "—" in row and "breaker states are known only to the daemon" in unknown


def test_render_fits_a_narrow_terminal():
    text = text_of(render(SNAP), width=60)
    assert all(len(line) <= 60 for line in text.splitlines())
    assert "01ABCDEFGHJKMNPQ" in text and "slow.exa" in text and "2d 3h" in text


def test_snapshot_reads_the_history_by_key_never_by_scan(db):
    add(rcpts=["a@x.test"], age=10)
    Event.insert_many([{"queue_id": "Q", "at": NOW - 100 + i, "kind": DELIVERED} for i in range(100)]).execute()
    statements: list[str] = []
    db.connection().set_trace_callback(statements.append)
    try:
        snapshot(NOW)
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
