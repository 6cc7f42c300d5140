"""The Verifier (delivery/verify.py) over a real queue database, with a scripted next hop in
place of the courier: the cache, refreshes, the slots, failures, the table's bound."""

import dataclasses
import time

import gevent
import gevent.event
import pytest
from config_helpers import GOOD, check

from empath.addresses import EmailAddress
from empath.config.model import Verification
from empath.delivery.client import SmtpError
from empath.delivery.connections import ConnectionPool
from empath.delivery.dns import Resolver
from empath.delivery.verify import Verifier
from empath.metrics import Metrics
from empath.queue import verified
from empath.queue.store import Queue
from empath.recipients import Existence
from empath.smtp.replies import Reply

DAY = 86400.0


class NextHop:
    """What Courier.ask would say: a reply per address, an error, or a wait."""

    def __init__(self):
        self.replies: dict[str, Reply] = {}
        self.asked: list[str] = []
        self.hold = gevent.event.Event()
        self.hold.set()

    def ask(self, route, address):
        self.asked.append(address)
        self.hold.wait()
        if address.startswith("boom"):
            raise RuntimeError("a bug")
        if address.startswith("down"):
            raise SmtpError("connect", "cannot connect: Connection refused")
        return self.replies.get(address, Reply.heard(250, ["2.1.5 ok"])), "mx[127.0.0.1]:25"


@pytest.fixture
def setup(tmp_path):
    queue = Queue(tmp_path / "queue.sqlite3", commit_timeout=30)
    queue.open()
    queue.start()
    config = dataclasses.replace(check(GOOD), verification=Verification(timeout=0.3, concurrency=1, max_entries=3))
    metrics = Metrics()
    verifier = Verifier(config, queue, Resolver(), ConnectionPool(0, 1), metrics)
    hop = verifier.courier = NextHop()
    yield verifier, hop, queue, metrics
    queue.stop()
    queue.close()


def kept(queue: Queue) -> dict[str, bool]:
    return {
        a: bool(f) for a, f in queue.call(lambda db: db.execute_sql("SELECT address, found FROM verified").fetchall())
    }


def settle(verifier: Verifier) -> None:
    """Wait until no callout is under way (its answer written)."""
    deadline = time.monotonic() + 5
    while verifier._asking and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert not verifier._asking


def test_an_answer_is_asked_once_then_kept(setup):
    verifier, hop, queue, metrics = setup
    hop.replies["nobody@far.test"] = Reply.heard(550, ["5.1.1 no such user"])
    assert verifier.verify(EmailAddress("nobody@far.test")) is Existence.UNKNOWN
    settle(verifier)
    assert verifier.verify(EmailAddress("nobody@far.test")) is Existence.UNKNOWN
    assert hop.asked == ["nobody@far.test"]
    assert kept(queue) == {"nobody@far.test": False}
    shown = verifier.describe(EmailAddress("nobody@far.test"))
    assert shown["result"] == "unknown" and shown["source"] == "cache" and "no such user" in shown["reply"]
    assert verifier.forget(EmailAddress("nobody@far.test")) and not verifier.forget(EmailAddress("nobody@far.test"))
    assert verifier.describe(EmailAddress("nobody@far.test")) == {"result": None, "source": "nothing kept"}
    samples = {
        (s.labels["source"], s.labels["result"]): s.value for s in metrics.recipient_verifications.collect()[0].samples
    }
    assert samples[("callout", "unknown")] == 1 and samples[("cache", "unknown")] == 1


def test_a_due_answer_serves_while_it_is_asked_again(setup):
    verifier, hop, queue, _ = setup
    old = verified.Answer("bob@far.test", True, "250 ok", time.time() - 8 * DAY)  # past the 7-day refresh
    queue.write(verified.remember, old, quick=True)
    hop.replies["bob@far.test"] = Reply.heard(550, ["5.1.1 gone since"])
    assert verifier.verify(EmailAddress("bob@far.test")) is Existence.EXISTS  # the old answer, at once
    settle(verifier)
    assert hop.asked == ["bob@far.test"] and kept(queue) == {"bob@far.test": False}
    expired = verified.Answer("carol@far.test", True, "250 ok", time.time() - 40 * DAY)
    queue.write(verified.remember, expired, quick=True)
    assert verifier.describe(EmailAddress("carol@far.test")) == {"result": None, "source": "expired"}


def test_no_slot_free_and_no_answer_in_time_are_450s_never_250(setup):
    verifier, hop, _, _ = setup
    hop.hold.clear()  # the next hop hangs
    waiting = gevent.spawn(verifier.verify, EmailAddress("a@far.test"))
    assert verifier.verify(EmailAddress("b@far.test")) is Existence.UNVERIFIED  # the one slot is taken
    assert waiting.get(timeout=2) is Existence.UNVERIFIED  # no answer within the timeout
    shown = verifier.describe(EmailAddress("c@far.test"), ask=True)
    assert shown == {"result": "unverified", "source": "callout", "reply": "every callout slot is taken"}
    hop.hold.set()
    settle(verifier)
    assert verifier.verify(EmailAddress("a@far.test")) is Existence.EXISTS  # kept when it came


def test_a_failing_next_hop_or_a_bug_costs_the_answer_not_the_slot(setup):
    verifier, hop, queue, _ = setup
    assert verifier.verify(EmailAddress("down@far.test")) is Existence.UNVERIFIED
    assert verifier.verify(EmailAddress("boom@far.test")) is Existence.UNVERIFIED
    settle(verifier)
    assert verifier.describe(EmailAddress("x@far.test"), ask=True)["result"] == "exists"  # the slot is free
    assert "down@far.test" not in kept(queue) and "boom@far.test" not in kept(queue)


def test_the_table_keeps_no_more_than_max_entries_and_the_sweep_drops_the_expired(setup):
    verifier, hop, queue, _ = setup
    for n in range(5):
        verifier.verify(EmailAddress(f"u{n}@far.test"))
        settle(verifier)
    assert len(kept(queue)) == 3  # max_entries
    queue.write(verified.remember, verified.Answer("old@far.test", False, "550", time.time() - 4 * DAY), quick=True)
    verifier.prune(time.time())
    assert "old@far.test" not in kept(queue) and len(kept(queue)) <= 3


def test_a_reload_that_changes_the_concurrency_makes_new_slots(setup):
    verifier, _, _, _ = setup
    before = verifier._slots
    config = dataclasses.replace(verifier.config, verification=Verification(concurrency=4))
    verifier.reconfigure(config)
    assert verifier._slots is not before and verifier._slots.counter == 4
