"""Reuse of idle connections: take, give and sweep, on a clock the test moves.

The connections are small stand-ins with the parts the pool uses: the
``idle`` mark (the next transaction starts with RSET: tests/unit/delivery/test_client.py),
``quit``, ``close`` and the count of messages carried.
"""

from types import SimpleNamespace

import pytest

from empath.delivery import connections
from empath.delivery.connections import ConnectionPool

KEY = ("192.0.2.1", 25, "opportunistic", "")
OTHER = ("192.0.2.2", 25, "opportunistic", "")


class FakeConnection:
    def __init__(self, name: str, messages: int = 1):
        self.name = name
        self.messages = messages
        self.idle = False
        self.broken = False
        self.ended: str | None = None  # "quit" or "close"

    def quit(self) -> None:
        self.ended = self.ended or "quit"

    def close(self) -> None:
        self.ended = self.ended or "close"

    def __repr__(self) -> str:
        return f"<{self.name}>"


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(connections, "time", SimpleNamespace(monotonic=clock))
    return clock


@pytest.fixture
def pool(clock) -> ConnectionPool:
    return ConnectionPool(idle_time=5.0, max_messages=3)


def test_an_empty_pool_has_nothing(pool):
    assert pool.take(KEY) is None
    assert pool.stats == {"reuse_miss": 1}


def test_a_given_connection_is_taken_back_marked_idle(pool):
    conn = FakeConnection("a")
    pool.give(KEY, conn)
    assert conn.ended is None
    assert pool.take(KEY) is conn
    assert conn.idle  # its next transaction checks it with RSET
    assert pool.take(KEY) is None  # taken: not in the pool twice
    assert pool.stats == {"reuse_hit": 1, "reuse_miss": 1}


def test_connections_are_kept_by_key(pool):
    a, b = FakeConnection("a"), FakeConnection("b")
    pool.give(KEY, a)
    pool.give(OTHER, b)
    assert pool.take(("192.0.2.1", 25, "required", "")) is None  # another TLS policy
    assert pool.take(("192.0.2.1", 25, "opportunistic", "relay")) is None  # another login
    assert pool.take(OTHER) is b
    assert pool.take(KEY) is a


def test_the_most_recent_is_taken_first(pool, clock):
    old, new = FakeConnection("old"), FakeConnection("new")
    pool.give(KEY, old)
    clock.now += 1
    pool.give(KEY, new)
    assert pool.take(KEY) is new
    assert pool.take(KEY) is old


@pytest.mark.parametrize("idle, reused", [(0.0, True), (4.9, True), (5.0, True), (5.1, False), (60.0, False)])
def test_idle_too_long_is_not_reused(pool, clock, idle, reused):
    conn = FakeConnection("a")
    pool.give(KEY, conn)
    clock.now += idle
    if reused:
        assert pool.take(KEY) is conn
    else:
        assert pool.take(KEY) is None
        assert conn.ended == "close"


def test_the_fresh_one_is_taken_and_a_too_old_one_closed_when_reached(pool, clock):
    old = FakeConnection("old")
    pool.give(KEY, old)
    clock.now += 6
    fresh = FakeConnection("fresh")
    pool.give(KEY, fresh)
    assert pool.take(KEY) is fresh
    assert old.ended is None
    assert pool.take(KEY) is None
    assert (old.ended, fresh.ended) == ("close", None)
    assert pool.stats == {"reuse_hit": 1, "reuse_miss": 1}


def test_a_broken_connection_is_never_kept(pool):
    # e.g. the RSET after a refusal timed out: its late reply would be read
    # as the next transaction's and put every reply one step out.
    conn = FakeConnection("a")
    conn.broken = True
    pool.give(KEY, conn)
    assert conn.ended == "quit"  # quit() closes a broken one without a word
    assert pool.take(KEY) is None


@pytest.mark.parametrize("messages, kept", [(0, True), (2, True), (3, False), (10, False)])
def test_max_messages(pool, messages, kept):
    conn = FakeConnection("a", messages=messages)
    pool.give(KEY, conn)
    if kept:
        assert conn.ended is None
        assert pool.take(KEY) is conn
    else:
        assert conn.ended == "quit"  # a polite goodbye
        assert pool.take(KEY) is None


@pytest.mark.parametrize("idle_time", [0.0, -1.0])
def test_no_reuse_when_idle_time_is_zero(clock, idle_time):
    pool = ConnectionPool(idle_time=idle_time, max_messages=100)
    conn = FakeConnection("a")
    pool.give(KEY, conn)
    assert conn.ended == "quit"
    assert pool.take(KEY) is None


def test_sweep_says_goodbye_to_the_idle(pool, clock):
    old, young, other = FakeConnection("old"), FakeConnection("young"), FakeConnection("other")
    pool.give(KEY, old)
    pool.give(OTHER, other)
    clock.now += 3
    pool.give(KEY, young)
    pool.sweep(clock.now + 5.0)  # old and other idle 8s, young 5s
    assert (old.ended, other.ended, young.ended) == ("quit", "quit", None)
    assert pool.take(OTHER) is None
    assert pool.take(KEY) is young
    assert pool.take(KEY) is None


def test_sweep_of_an_empty_pool(pool, clock):
    pool.sweep(clock.now)
    pool.sweep(clock.now + 1000)
    assert pool.take(KEY) is None


def test_close_all(pool):
    conns = [FakeConnection(f"c{i}") for i in range(3)]
    pool.give(KEY, conns[0])
    pool.give(KEY, conns[1])
    pool.give(OTHER, conns[2])
    pool.close_all()
    assert [c.ended for c in conns] == ["quit"] * 3
    assert pool.take(KEY) is None and pool.take(OTHER) is None
