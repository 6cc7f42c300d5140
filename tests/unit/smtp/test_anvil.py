"""Per-client counters across sessions (smtp/anvil.py), on a clock the test moves."""

from empath.smtp.anvil import Anvil

T = 1_000_000.0


def test_a_burst_of_the_rate_then_one_a_refill():
    anvil = Anvil()
    assert all(anvil.connect("192.0.2.1", T, rate=0.1) for _ in range(6))
    assert not anvil.connect("192.0.2.1", T, rate=0.1)  # the seventh at once
    assert anvil.connect("192.0.2.2", T, rate=0.1)  # another address has its own
    assert not anvil.connect("192.0.2.1", T + 9, rate=0.1)  # 0.9 of a connection refilled
    assert anvil.connect("192.0.2.1", T + 10, rate=0.1)  # one every ten seconds
    assert not anvil.connect("192.0.2.1", T + 10, rate=0.1)


def test_refused_connections_do_not_earn_a_refill_and_zero_is_no_limit():
    anvil = Anvil()
    assert anvil.connect("192.0.2.1", T, rate=1 / 60)
    for second in range(59):
        assert not anvil.connect("192.0.2.1", T + second, rate=1 / 60)
    assert anvil.connect("192.0.2.1", T + 60, rate=1 / 60)
    assert all(anvil.connect("192.0.2.1", T, rate=0) for _ in range(1000))


def test_auth_failures_in_a_sliding_window():
    anvil = Anvil()
    assert anvil.auth_blocked_until("192.0.2.1", T, limit=3, window=60) is None
    for offset in (0, 10, 20):
        anvil.auth_failed("192.0.2.1", T + offset, window=60)
    assert anvil.auth_failures("192.0.2.1", T + 20, window=60) == 3
    # Blocked until the first of the three leaves the window.
    assert anvil.auth_blocked_until("192.0.2.1", T + 20, limit=3, window=60) == T + 60
    assert anvil.auth_blocked_until("192.0.2.1", T + 60, limit=3, window=60) is None
    assert anvil.auth_failures("192.0.2.1", T + 60, window=60) == 2
    assert anvil.auth_blocked_until("192.0.2.2", T + 20, limit=3, window=60) is None
    assert anvil.auth_blocked_until("192.0.2.1", T + 20, limit=0, window=60) is None  # 0: no limit


def test_memory_is_bounded_and_the_stalest_address_is_forgotten():
    anvil = Anvil(max_clients=3)
    for n in range(3):
        anvil.auth_failed(f"192.0.2.{n}", T, window=60)
    anvil.connect("192.0.2.0", T + 1, rate=1 / 600)  # heard from again: now the freshest
    anvil.auth_failed("192.0.2.9", T + 2, window=60)  # a fourth address pushes out the stalest
    assert anvil.auth_failures("192.0.2.1", T + 2, window=60) == 0
    assert anvil.auth_failures("192.0.2.0", T + 2, window=60) == 1
    assert len(anvil._clients) == 3


def test_a_password_failure_first_does_not_make_the_next_connection_too_fast():
    # A trusted client is never rate-counted, so its first entry may come from AUTH.
    anvil = Anvil()
    anvil.auth_failed("192.0.2.1", T, window=60)
    assert anvil.connect("192.0.2.1", T + 0.001, rate=1.0)
