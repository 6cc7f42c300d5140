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
    recent=[Finished(NOW - 3, State.BOUNCED, "01ABCDEFGHJKMNPQ", "nobody@x.example", "relay=mx status=5.1.1 550 no")],
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
