"""What a kept callout answer says now, and what a next hop's reply to RCPT means (delivery/verify.py)."""

import pytest
from config_helpers import GOOD, check
from peer import Peer

from empath.addresses import Domain
from empath.config.model import Verification
from empath.delivery.client import ClientTimeouts
from empath.delivery.connections import ConnectionPool
from empath.delivery.courier import Candidate, Courier
from empath.delivery.dns import Resolver
from empath.delivery.routing import NextHopId, Route
from empath.delivery.verify import existence_of, judge
from empath.queue.verified import Answer
from empath.recipients import Existence
from empath.smtp.replies import Reply

NOW = 1_800_000_000.0
HOUR, DAY = 3600.0, 86400.0
S = Verification()  # Postfix's times: positive 31d / refresh 7d, negative 3d / refresh 3h


def kept(exists: bool, age: float) -> Answer:
    return Answer("a@local.test", exists, "mx said", NOW - age)


@pytest.mark.parametrize(
    "answer, said, ask_again",
    [
        (None, None, True),  # never asked: ask, and wait for the answer
        (kept(True, 0), Existence.EXISTS, False),
        (kept(True, 7 * DAY - 1), Existence.EXISTS, False),
        (kept(True, 7 * DAY), Existence.EXISTS, True),  # due for a refresh: still serves meanwhile
        (kept(True, 31 * DAY - 1), Existence.EXISTS, True),
        (kept(True, 31 * DAY), None, True),  # expired
        (kept(False, 0), Existence.UNKNOWN, False),
        (kept(False, 3 * HOUR - 1), Existence.UNKNOWN, False),
        (kept(False, 3 * HOUR), Existence.UNKNOWN, True),
        (kept(False, 3 * DAY - 1), Existence.UNKNOWN, True),
        (kept(False, 3 * DAY), None, True),
        (kept(True, -60), None, True),  # from the future: the clock went back; not trusted
    ],
)
def test_judge(answer, said, ask_again):
    assert judge(answer, NOW, S) == (said, ask_again)


@pytest.mark.parametrize(
    "code, existence",
    [
        (250, Existence.EXISTS),
        (251, Existence.EXISTS),  # user not local; will forward
        (252, Existence.EXISTS),
        (450, Existence.UNVERIFIED),  # mailbox busy, greylisted
        (451, Existence.UNVERIFIED),
        (452, Existence.UNVERIFIED),
        (550, Existence.UNKNOWN),
        (551, Existence.UNKNOWN),
        (553, Existence.UNKNOWN),
        (554, Existence.UNKNOWN),
    ],
)
def test_existence_of_a_reply_to_rcpt(code, existence):
    assert existence_of(Reply.heard(code, ["x"])) is existence


def test_a_connection_from_the_pool_keeps_the_patience_of_whoever_takes_it():
    """A callout's connection, pooled, must not give a delivery 10 s for its final dot;
    nor a delivery's give a callout 5 minutes a reply."""
    config = check(GOOD)
    pool = ConnectionPool(idle_time=60, max_messages=100)
    callouts, deliveries = ClientTimeouts(2, 10, 10), ClientTimeouts(30, 300, 600)
    route = Route(NextHopId.route(Domain("local.test")), Domain("local.test"), (), "none")
    with Peer("127.0.0.1") as peer:
        candidate = Candidate("mx.local.test", "127.0.0.1", peer.port)
        for first, then in ((callouts, deliveries), (deliveries, callouts)):
            opener = Courier(config, Resolver(), pool, timeouts=first)
            conn = opener._connection(route, candidate)
            assert conn.timeouts == first
            pool.give(opener._key(route, candidate), conn)
            taken = Courier(config, Resolver(), pool, timeouts=then)._connection(route, candidate)
            assert taken is conn and taken.timeouts == then
            taken.quit()
