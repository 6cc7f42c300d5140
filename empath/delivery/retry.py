"""The retry schedule: when to try a deferred recipient again, and when to give up.

Pure. The wait doubles after each failed attempt, from ``first`` up to
``maximum``; a message is given up (and bounced) once its lifetime is over.
With the defaults (5 minutes, doubling, capped at 4 hours, 5 days) the
attempts come 5, 10, 20, 40, 80, 160 minutes apart, then every 4 hours,
and one last attempt falls exactly when the lifetime ends.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    first: float = 300.0
    maximum: float = 14400.0
    factor: float = 2.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1 for the first)."""
        if failures < 1:
            return 0.0
        # Exponent capped so the float never overflows on a long-lived message.
        return min(self.first * self.factor ** min(failures - 1, 64), self.maximum)

    def next_attempt(self, failures: int, now: float, expires_at: float) -> float | None:
        """When to try next after a temporary failure; None when the lifetime is over."""
        if now >= expires_at:
            return None
        return min(now + self.delay(failures), expires_at)
