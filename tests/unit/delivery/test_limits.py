"""Per-destination limits: the circuit breaker and the rate limit, on a clock we pass in."""

import pytest

from empath.delivery.limits import CLOSED, HALF_OPEN, OPEN, Breaker, RateLimit

# -- the breaker ----------------------------------------------------------------


def opened(threshold: int = 3, cooldown: float = 60.0, at: float = 100.0) -> Breaker:
    breaker = Breaker(threshold, cooldown)
    for _ in range(threshold):
        assert breaker.allow(at)
        breaker.failure(at)
    return breaker


@pytest.mark.parametrize("threshold", [1, 2, 5])
def test_opens_after_threshold_consecutive_failures(threshold):
    breaker = Breaker(threshold, cooldown=60)
    for _ in range(threshold - 1):
        breaker.failure(100.0)
        assert breaker.state(100.0) == CLOSED
        assert breaker.allow(100.0)
    breaker.failure(100.0)
    assert breaker.state(100.0) == OPEN
    assert not breaker.allow(100.0)


def test_a_success_between_failures_starts_the_count_again():
    breaker = Breaker(3, cooldown=60)
    for outcome in ["fail", "fail", "ok", "fail", "fail"]:
        if outcome == "ok":
            breaker.success()
        else:
            breaker.failure(100.0)
    assert breaker.state(100.0) == CLOSED
    breaker.failure(100.0)
    assert breaker.state(100.0) == OPEN


def test_open_refuses_until_the_cooldown_is_over():
    breaker = opened(cooldown=60.0, at=100.0)
    for now in (100.0, 130.0, 159.999):
        assert breaker.state(now) == OPEN
        assert not breaker.allow(now)
        assert breaker.retry_at(now) == 160.0
    assert breaker.state(160.0) == HALF_OPEN
    assert breaker.retry_at(170.0) == 170.0


def test_half_open_lets_one_probe_through():
    breaker = opened(cooldown=60.0, at=100.0)
    assert breaker.allow(160.0)
    assert not breaker.allow(160.0)
    assert not breaker.allow(500.0)  # still only one, however long it takes


def test_mail_refused_while_a_probe_is_out_comes_back_a_cooldown_later():
    breaker = opened(cooldown=60.0, at=100.0)
    assert breaker.allow(200.0)  # the probe
    assert not breaker.allow(230.0)
    assert breaker.retry_at(230.0) == 290.0  # not now: it would spin until the probe ends
    breaker.abandon()
    assert breaker.retry_at(240.0) == 240.0


def test_probe_success_closes():
    breaker = opened()
    assert breaker.allow(1000.0)
    breaker.success()
    assert breaker.state(1000.0) == CLOSED
    assert breaker.failures == 0
    assert all(breaker.allow(1000.0) for _ in range(5))
    breaker.failure(1000.0)  # one failure after closing does not reopen a threshold-3 breaker
    assert breaker.state(1000.0) == CLOSED


def test_probe_failure_reopens_for_a_new_cooldown():
    breaker = opened(cooldown=60.0, at=100.0)
    assert breaker.allow(200.0)
    breaker.failure(200.0)
    assert breaker.state(200.0) == OPEN
    assert not breaker.allow(259.0)
    assert breaker.retry_at(210.0) == 260.0
    assert breaker.allow(260.0)  # the next probe
    assert not breaker.allow(260.0)


def test_abandon_frees_the_probe_without_a_verdict():
    breaker = opened(cooldown=60.0, at=100.0)
    assert breaker.allow(160.0)
    breaker.abandon()  # DNS failed: no host was tried
    assert breaker.state(160.0) == HALF_OPEN
    assert breaker.allow(160.0)  # another probe may go
    assert not breaker.allow(160.0)


def test_abandon_on_a_closed_breaker_changes_nothing():
    breaker = Breaker(2, 60)
    breaker.failure(1.0)
    breaker.abandon()
    assert (breaker.state(1.0), breaker.failures) == (CLOSED, 1)


# -- the rate limit ---------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.0, -1.0])
def test_zero_rate_is_unlimited(rate):
    limit = RateLimit(rate)
    assert [limit.wait(100.0) for _ in range(1000)] == [0.0] * 1000


@pytest.mark.parametrize(
    "rate, steps",
    [
        # (time, expected wait): a wait > 0 takes no token
        (1.0, [(0.0, 0.0), (0.0, 1.0), (0.5, 0.5), (1.0, 0.0), (1.0, 1.0)]),
        (10.0, [(0.0, 0.0), (0.0, 0.1), (0.05, 0.05), (0.1, 0.0), (0.15, 0.05)]),
        (1 / 60, [(0.0, 0.0), (30.0, 30.0), (60.0, 0.0)]),  # 1/m
        (1000 / 3600, [(0.0, 0.0), (0.0, 3.6), (3.6, 0.0)]),  # 1000/h
        # an idle bucket fills up to its burst (1) only: no backlog of tokens
        (1.0, [(0.0, 0.0), (100.0, 0.0), (100.0, 1.0)]),
    ],
)
def test_tokens_refill_at_the_rate(rate, steps):
    limit = RateLimit(rate)
    for now, expected in steps:
        assert limit.wait(now) == pytest.approx(expected), (now, expected)


def test_burst():
    limit = RateLimit(2.0, burst=3.0, tokens=3.0)
    assert [limit.wait(0.0) for _ in range(4)] == [0.0, 0.0, 0.0, pytest.approx(0.5)]
    assert limit.wait(10.0) == 0.0
    assert limit.wait(10.0) == 0.0
    assert limit.wait(10.0) == 0.0
    assert limit.wait(10.0) == pytest.approx(0.5)


def test_coming_back_after_the_wait_gets_a_token():
    limit = RateLimit(4.0)
    now = 50.0
    for _ in range(20):
        wait = limit.wait(now)
        if wait:
            now += wait
            assert limit.wait(now) == 0.0
    assert now == pytest.approx(50.0 + 19 * 0.25)
