"""Reuse of connections: an idle connection to a next hop is kept for a few
seconds. The next transaction on it starts with RSET (Connection.idle),
pipelined where the remote allows; if the remote closed it meanwhile, the
courier takes the next idle one or opens a new one (client.Stale)."""

import time
from collections import Counter, defaultdict

import gevent

from empath.delivery.client import Connection

Key = tuple[str, int, str, str, str]  # address, port, TLS policy, AUTH user, source address ("" for none)


class ConnectionPool:
    def __init__(self, idle_time: float, max_messages: int):
        self.idle_time = idle_time
        self.max_messages = max_messages
        self._idle: dict[Key, list[tuple[float, Connection]]] = defaultdict(list)
        self.stats: Counter = Counter()  # reuse_hit, reuse_miss, reuse_stale
        self._sweeper: gevent.Greenlet | None = None

    def start(self) -> None:
        self._sweeper = gevent.spawn(self._sweep_forever)

    def take(self, key: Key) -> Connection | None:
        """An idle connection for ``key`` not idle too long, or None."""
        idle = self._idle.get(key)
        while idle:
            since, conn = idle.pop()
            if time.monotonic() - since <= self.idle_time:
                self.stats["reuse_hit"] += 1
                conn.idle = True
                return conn
            conn.close()
        self.stats["reuse_miss"] += 1
        return None

    def discard_stale(self, conn: Connection) -> None:
        """A connection taken here whose RSET failed (client.Stale): the remote
        had closed it. Counted, so that the reuse metric tells hits from these."""
        self.stats["reuse_stale"] += 1
        conn.close()

    def give(self, key: Key, conn: Connection) -> None:
        # A broken one (a reply timed out, say after a refusal's RSET) may still
        # owe a late reply, which the next transaction would read as its own.
        if conn.broken or self.idle_time <= 0 or conn.messages >= self.max_messages:
            conn.quit()
            return
        self._idle[key].append((time.monotonic(), conn))

    def close_all(self) -> None:
        if self._sweeper is not None:
            self._sweeper.kill()
        for idle in self._idle.values():
            for _, conn in idle:
                conn.quit()
        self._idle.clear()

    def _sweep_forever(self) -> None:
        while True:
            gevent.sleep(max(self.idle_time, 1.0))
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        """Say goodbye to connections idle longer than idle_time.

        They leave the pool first, all at once: a QUIT waits for its reply, and
        meanwhile deliveries take and give connections. One still in the pool
        then could be closed under the QUIT by a take, and a connection given
        meanwhile would be dropped with the old list."""
        expired = []
        for key in list(self._idle):
            keep = []
            for since, conn in self._idle[key]:
                if now - since > self.idle_time:
                    expired.append(conn)
                else:
                    keep.append((since, conn))
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        for conn in expired:
            conn.quit()
