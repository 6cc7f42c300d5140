"""The sweep of idle outbound connections raced the deliveries (found by
scripts/bench/attack.py: 48 messages of 30 MB delivered at once).

The sweeper sent QUIT to a connection idle too long while it was still in
the pool; a QUIT waits for its reply, and meanwhile a delivery taking a
connection found the same one, too old, and closed it under the QUIT
("RuntimeError: reentrant call inside BufferedReader": the delivery failed
and waited for its lease to run out). A connection given back meanwhile was
lost when the sweeper put back the list it had read before. Now expired
connections leave the pool before any QUIT is sent.
"""

import time

from empath.delivery.connections import ConnectionPool

KEY = ("192.0.2.1", 25, "opportunistic", "")


class Connection:
    """What the pool uses of a connection; ``meanwhile`` runs while its QUIT waits for the reply."""

    def __init__(self, name: str):
        self.name = name
        self.messages = 1
        self.idle = False
        self.broken = False
        self.calls: list[str] = []
        self.meanwhile = lambda: None

    def quit(self) -> None:
        self.calls.append("quit")
        self.meanwhile()
        self.calls.append("quit answered")

    def close(self) -> None:
        self.calls.append("close")


def test_a_connection_said_goodbye_to_is_out_of_the_pool_and_one_given_meanwhile_is_kept():
    pool = ConnectionPool(idle_time=5.0, max_messages=3)
    expired, fresh = Connection("expired"), Connection("fresh")
    pool.give(KEY, expired)
    taken = []

    def another_delivery() -> None:
        taken.append(pool.take(KEY))
        pool.give(KEY, fresh)

    expired.meanwhile = another_delivery
    pool.sweep(time.monotonic() + 10)
    assert expired.calls == ["quit", "quit answered"]  # never closed under its QUIT
    assert taken == [None]
    assert pool.take(KEY) is fresh
