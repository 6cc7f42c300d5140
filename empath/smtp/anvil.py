"""What one client address did across its sessions, as Postfix's anvil keeps it:
how fast it connects, and how many passwords it got wrong lately.

Pure: the clock is passed in. Bounded: at most ``max_clients`` addresses are
remembered, the one heard from longest ago forgotten first, so a flood of
addresses costs a fixed amount of memory (and forgetting one only lets it
start afresh).
"""

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field

MAX_CLIENTS = 50_000


@dataclass
class _Client:
    tokens: float  # connections it may still open at once (a token bucket)
    refilled_at: float
    failures: deque[float] = field(default_factory=deque)  # when its recent AUTH failures were


class Anvil:
    def __init__(self, max_clients: int = MAX_CLIENTS):
        self.max_clients = max_clients
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def _client(self, address: str, now: float, burst: float) -> _Client:
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = _Client(tokens=burst, refilled_at=now)
            if len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(address)
        return client

    def connect(self, address: str, now: float, rate: float) -> bool:
        """Count a connection; False when the address opens them faster than ``rate``
        a second (a minute's worth at once is allowed). 0: no limit."""
        if rate <= 0:
            return True
        burst = rate * 60
        client = self._client(address, now, burst)
        client.tokens = min(burst, client.tokens + (now - client.refilled_at) * rate)
        client.refilled_at = now
        if client.tokens < 1:
            return False
        client.tokens -= 1
        return True

    def auth_failed(self, address: str, now: float, window: float) -> int:
        """Count a failed password; how many the address got wrong in the last ``window`` seconds."""
        # Heard of first through a password, it has opened no connection through connect():
        # its bucket starts full (connect() caps it at the burst), not empty.
        client = self._client(address, now, math.inf)
        client.failures.append(now)
        return self.auth_failures(address, now, window)

    def auth_failures(self, address: str, now: float, window: float) -> int:
        """How many passwords the address got wrong in the last ``window`` seconds."""
        client = self._clients.get(address)
        if client is None:
            return 0
        while client.failures and client.failures[0] <= now - window:
            client.failures.popleft()
        return len(client.failures)

    def auth_blocked_until(self, address: str, now: float, limit: int, window: float) -> float | None:
        """When the address may try a password again, if ``limit`` failures in ``window``
        seconds keep it from trying now; None when it may."""
        if limit <= 0 or self.auth_failures(address, now, window) < limit:
            return None
        failures = self._clients[address].failures
        # The oldest failure that counts must leave the window for the count to fall under the limit.
        return failures[len(failures) - limit] + window
