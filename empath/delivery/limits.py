"""Per-destination limits: a circuit breaker and a rate limit.

Pure state machines with the clock passed in, so they are tested without
waiting. The scheduler keeps one of each per destination.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half-open"

K = TypeVar("K")


@dataclass
class Breaker:
    """Opens after ``threshold`` consecutive connection-level failures; while
    open, deliveries are deferred without connecting; after ``cooldown`` one
    probe is let through, and its result closes or reopens the breaker."""

    threshold: int
    cooldown: float
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    last_failure: str = ""  # the reason of the last failure, for the mail it holds back

    def state(self, now: float) -> str:
        if self.opened_at is None:
            return CLOSED
        if now - self.opened_at >= self.cooldown:
            return HALF_OPEN
        return OPEN

    def allow(self, now: float) -> bool:
        """May a delivery connect now? In half-open state, only one probe at a time."""
        state = self.state(now)
        if state == CLOSED:
            return True
        if state == HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def retry_at(self, now: float) -> float:
        """When a delivery refused by the breaker should come back."""
        if self.opened_at is None:
            return now
        if self.probing and self.state(now) == HALF_OPEN:
            # A probe is in flight and may take minutes: come back after another
            # cooldown, not now, or the refused mail would spin through the queue
            # (claimed, refused, due again) until the probe ends.
            return now + self.cooldown
        return max(now, self.opened_at + self.cooldown)

    def abandon(self) -> None:
        """The delivery let through never reached a host (DNS failed, say): no verdict."""
        self.probing = False

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None
        self.probing = False

    def failure(self, now: float, why: str = "") -> None:
        self.failures += 1
        self.last_failure = why
        self.probing = False
        if self.opened_at is not None or self.failures >= self.threshold:
            self.opened_at = now


def tripped(breakers: Mapping[K, Breaker], now: float) -> list[K]:
    """The keys whose breaker is open or half-open at ``now``."""
    return [key for key, breaker in list(breakers.items()) if breaker.state(now) != CLOSED]


@dataclass
class RateLimit:
    """A token bucket: ``rate`` deliveries a second, in bursts of up to ``burst``."""

    rate: float  # 0: no limit
    burst: float = 1.0
    tokens: float = 1.0
    updated: float | None = None

    def wait(self, now: float) -> float:
        """Seconds until a delivery may start; 0 means now, and the token is taken."""
        if self.rate <= 0:
            return 0.0
        if self.updated is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate
