"""The retry schedule: doubling waits up to a cap, and a last attempt exactly at expiry.

hypothesis is not installed, so the properties run over a table of cases.
"""

import itertools

import pytest

from empath.delivery.retry import Schedule

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0

DEFAULT = Schedule()  # 5 minutes, doubling, capped at 4 hours


@pytest.mark.parametrize(
    "failures, minutes",
    [
        (1, 5),
        (2, 10),
        (3, 20),
        (4, 40),
        (5, 80),
        (6, 160),
        (7, 240),  # 320 is over the cap
        (8, 240),
        (50, 240),
        (10_000, 240),  # a very old message: the exponent is capped, no overflow
    ],
)
def test_default_delays(failures, minutes):
    assert DEFAULT.delay(failures) == minutes * MINUTE


@pytest.mark.parametrize("failures", [0, -1])
def test_no_failure_no_wait(failures):
    assert DEFAULT.delay(failures) == 0.0


@pytest.mark.parametrize(
    "schedule, expected",
    [
        (Schedule(first=60, maximum=300), [60, 120, 240, 300, 300]),
        (Schedule(first=10, maximum=10), [10, 10, 10, 10, 10]),
        (Schedule(first=1, maximum=100, factor=3), [1, 3, 9, 27, 81, 100]),
        (Schedule(first=30, maximum=1000, factor=1), [30, 30, 30, 30]),
    ],
)
def test_configured_delays(schedule, expected):
    assert [schedule.delay(n) for n in range(1, len(expected) + 1)] == expected


SCHEDULES = [DEFAULT, Schedule(60, 300), Schedule(1, 1), Schedule(0.5, 7200, 3.0)]
NOW = [0.0, 1000.0, 1.7e9]
LIFETIMES = [0.0, 1.0, 299.0, 300.0, 301.0, HOUR, 5 * DAY]
FAILURES = [1, 2, 3, 7, 8, 64, 65, 1000]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_delays_never_shrink_and_never_pass_the_cap(schedule):
    delays = [schedule.delay(n) for n in range(1, 200)]
    assert delays == sorted(delays)
    assert all(0 < d <= schedule.maximum for d in delays)
    assert delays[-1] == schedule.maximum


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_next_attempt_is_after_now_and_never_after_expiry(schedule):
    for now, lifetime, failures in itertools.product(NOW, LIFETIMES, FAILURES):
        expires_at = now + lifetime
        at = schedule.next_attempt(failures, now, expires_at)
        if lifetime <= 0:
            assert at is None
            continue
        assert now < at <= expires_at, (now, lifetime, failures, at)
        assert at == min(now + schedule.delay(failures), expires_at)


@pytest.mark.parametrize("past", [0.0, 0.001, 1.0, DAY])
def test_no_attempt_once_the_lifetime_is_over(past):
    expires_at = 1000.0
    assert DEFAULT.next_attempt(3, expires_at + past, expires_at) is None


def test_last_attempt_falls_exactly_at_expiry():
    # 5 days of retries, the way the scheduler walks them: each attempt fails at
    # the time it was scheduled for.
    received = 1_700_000_000.0
    expires_at = received + 5 * DAY
    now, failures, attempts = received, 0, [received]
    while True:
        failures += 1
        at = DEFAULT.next_attempt(failures, now, expires_at)
        if at is None:
            break
        assert at > now
        attempts.append(at)
        now = at
    assert attempts[-1] == expires_at
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[:7] == [5 * MINUTE, 10 * MINUTE, 20 * MINUTE, 40 * MINUTE, 80 * MINUTE, 160 * MINUTE, 4 * HOUR]
    assert all(g == 4 * HOUR for g in gaps[6:-1])
    assert 0 < gaps[-1] <= 4 * HOUR
    # 6 doubling gaps (315 minutes), then 28 four-hour gaps fit in the 6885
    # minutes left, then the last, shorter one (165 minutes).
    assert len(attempts) == 1 + 6 + 28 + 1
    assert gaps[-1] == 165 * MINUTE


def test_next_attempt_is_monotonic_in_failures_and_now():
    expires_at = 10 * DAY
    for now in (0.0, 100.0, DAY, 9 * DAY):
        times = [DEFAULT.next_attempt(n, now, expires_at) for n in range(1, 30)]
        assert times == sorted(times)
    for failures in (1, 4, 9):
        times = [DEFAULT.next_attempt(failures, now, expires_at) for now in range(0, int(10 * DAY), 3571)]
        assert times == sorted(times)
