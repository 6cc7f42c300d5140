"""empathctl top's screen, rendered to a recording console."""

import io

from queue_helpers import NOW
from rich.console import Console

from empath.cmd.top import render
from empath.queue.states import State
from empath.queue.stats import Backlog, Finished, Snapshot


def text_of(renderable, width=160) -> str:
    console = Console(record=True, width=width, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


SNAP = Snapshot(
    taken_at=NOW,
    daemon_pid=4321,
    messages=7,
    states={State.QUEUED: 3, State.DEFERRED: 11, State.HELD: 2, State.DELIVERED: 1, State.BOUNCED: 0},
    active=4,
    oldest_age=2 * 86400 + 3 * 3600,
    last_minute={"received": 42, "removed": 40, State.DELIVERED: 39, State.DEFERRED: 5, State.BOUNCED: 1},
    backlog=[
        Backlog("slow.example", 9, 3700, "421 4.7.0 too many connections from your IP", "open"),
        Backlog("fine.example", 2, 65, None, "closed"),
    ],
    recent=[Finished(NOW - 3, State.BOUNCED, "01ABCDEFGHJKMNPQ", "nobody@x.example", "relay=mx dsn=5.1.1 550 no")],
)


def test_render_shows_every_figure():
    text = text_of(render(SNAP))
    assert "Empath queue" in text and "daemon running (pid 4321)" in text and "Ctrl-C quits" in text
    queue_row = next(line for line in text.splitlines() if " 11 " in line)
    assert queue_row.split() == ["7", "3", "11", "2", "4", "2d", "3h"]
    minute_row = next(line for line in text.splitlines() if line.startswith("42 "))
    assert minute_row.split() == ["42", "40", "39", "5", "1"]
    slow = next(line for line in text.splitlines() if "slow.example" in line)
    assert slow.split()[:4] == ["slow.example", "9", "1h", "1m"]
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


def test_the_live_screen_fits_80_by_24_and_shows_pauses():
    # The recent deliveries were pushed off a standard terminal, and a pause was not shown.
    error = "421 4.7.0 too many connections " * 3
    backlog = [Backlog(f"slow{i}.example.org", 9 + i, 3700, error, "open") for i in range(9)]
    recent = [
        Finished(NOW - i, State.DELIVERED, "01ABCDEFGHJKMNPQ", f"someone{i}@x.example.org", "250 2.0.0 Ok " * 5)
        for i in range(20)
    ]
    snap = Snapshot(NOW, 4321, 29, {State.QUEUED: 3}, 4, 3700, {"received": 42}, backlog, recent)
    paused = {"paused": False, "paused_domains": ["slow1.example.org", "b.test"]}
    console = Console(record=True, width=80, height=24, color_system=None, file=io.StringIO())
    console.print(render(snap, delivery=paused, height=24))
    lines = console.export_text().splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    assert lines[1] == "delivery: paused for slow1.example.org, b.test (empathctl resume D)"
    assert any(line.startswith("Recent deliveries") for line in lines)
    assert any(line.split()[:2] == ["slow0.example.org", "9"] for line in lines)
    assert any("delivered   01ABCDEFGHJKMNPQ   someone0@x" in line for line in lines)  # the newest
    stopped = text_of(render(snap, delivery={"paused": True, "paused_domains": []}), width=80)
    assert "delivery: PAUSED for every domain" in stopped
