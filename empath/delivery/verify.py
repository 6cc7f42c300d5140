"""Recipient verification by callout (Postfix's reject_unverified_recipient).

Before a recipient of a local domain with ``verify = "callout"`` is taken,
the domain's route is asked whether the address exists: MAIL FROM:<>,
RCPT TO:<address>, RSET, on a connection kept in the delivery pool. A 2xx
means it exists, a 5xx that it does not (550 5.1.1 to the client, at
RCPT: never taken and bounced later); anything else (the next hop down, a
4xx, no answer within the timeout) is a 450 4.1.1, which the client tries
again. The answers are kept in the queue database (queue/verified.py),
shared by every process and kept across restarts, with Postfix's times: an
answer is used until it expires, and once it is due for a refresh it is
asked again in the background while it still serves.
"""

import logging
import sqlite3
import time
from typing import Any

import gevent
import gevent.event
import gevent.lock

from empath.addresses import EmailAddress
from empath.config import Config
from empath.config.model import Verification
from empath.delivery import client
from empath.delivery.connections import ConnectionPool
from empath.delivery.courier import Courier, Loop
from empath.delivery.dns import DnsError, Resolver
from empath.delivery.routing import route_for
from empath.log import event
from empath.metrics import Metrics
from empath.queue import verified
from empath.queue.database import QueueError
from empath.queue.store import Queue
from empath.recipients import Existence
from empath.smtp.replies import Reply

log = logging.getLogger("empath.delivery")

BUSY = "every callout slot is taken"
PRUNE_INTERVAL = 3600.0  # seconds between sweeps of expired answers (Postfix: 12h)


def judge(answer: verified.Answer | None, now: float, settings: Verification) -> tuple[Existence | None, bool]:
    """What a kept answer says now (None: nothing, ask and wait), and whether to ask again."""
    if answer is None:
        return None, True
    if answer.exists:
        expire, refresh = settings.positive_expire, settings.positive_refresh
    else:
        expire, refresh = settings.negative_expire, settings.negative_refresh
    age = now - answer.checked_at
    if not 0 <= age < expire:  # expired, or from a clock that has since gone back
        return None, True
    return (Existence.EXISTS if answer.exists else Existence.UNKNOWN), age >= refresh


def existence_of(reply: Reply) -> Existence:
    """What the next hop's reply to RCPT says of the address."""
    if reply.code < 300:
        return Existence.EXISTS
    if reply.code >= 500:
        return Existence.UNKNOWN
    return Existence.UNVERIFIED  # greylisted, over quota for now, busy: no answer yet


def standalone(config: Config, queue: Queue, metrics: Metrics) -> "Verifier":
    """A verifier with a resolver and a connection pool of its own: an SMTP helper process's."""
    d = config.delivery
    pool = ConnectionPool(d.idle_time, d.max_messages_per_connection)
    pool.start()
    return Verifier(config, queue, Resolver(d.nameservers, d.dns_timeout), pool, metrics)


class Verifier:
    """Asks, remembers, and answers each RCPT within the configured timeout."""

    def __init__(self, config: Config, queue: Queue, resolver: Resolver, pool: ConnectionPool, metrics: Metrics):
        self.queue = queue
        self.resolver = resolver
        self.pool = pool
        self.metrics = metrics
        # One callout per address at a time: the sessions asking for it meanwhile wait for its answer.
        self._asking: dict[str, gevent.event.AsyncResult] = {}
        self._concurrency = config.verification.concurrency
        self._slots = gevent.lock.BoundedSemaphore(self._concurrency)
        self._pruner: gevent.Greenlet | None = None
        self._room = 0  # answers this process may still keep, as last counted
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        s, d = config.verification, config.delivery
        # A callout is bounded by the RCPT's patience, not by a delivery's 5-minute command timeout.
        timeouts = client.ClientTimeouts(min(d.connect_timeout, s.timeout), s.timeout, s.timeout)
        self.courier = Courier(config, self.resolver, self.pool, timeouts=timeouts)
        if s.concurrency != self._concurrency:
            self._concurrency = s.concurrency
            self._slots = gevent.lock.BoundedSemaphore(s.concurrency)  # callouts under way release the old one
        self.config = config

    # -- answering a RCPT -------------------------------------------------------------

    def verify(self, address: EmailAddress, trace_id: str = "") -> Existence:
        """Within verification.timeout, all told: the wait for a slot and for the answer."""
        settings = self.config.verification
        existence, ask = judge(self._kept(address), time.time(), settings)
        if existence is not None:
            if ask:
                self._start(address, trace_id, wait=0)  # a refresh, if a slot is free
            self._count("cache", existence)
            return existence
        existence, said = self._ask_now(address, trace_id)
        if said == BUSY:
            event(log, "callout", level=logging.WARNING, to=address, result="busy", trace_id=trace_id or None)
        self._count("callout", existence)
        return existence

    def _ask_now(self, address: EmailAddress, trace_id: str) -> tuple[Existence, str]:
        """A callout's answer within verification.timeout, all told (the wait for a slot and
        for the answer); if none comes, UNVERIFIED and why. A callout that outlives the wait
        goes on, and keeps its answer for next time."""
        timeout = self.config.verification.timeout
        deadline = time.monotonic() + timeout
        pending = self._start(address, trace_id, wait=timeout)
        if pending is None:
            return Existence.UNVERIFIED, BUSY
        try:
            return pending.get(timeout=max(0.0, deadline - time.monotonic()))
        except gevent.Timeout:
            return Existence.UNVERIFIED, f"no answer within {timeout:g}s"

    def describe(self, address: EmailAddress, ask: bool = False) -> dict[str, Any]:
        """What ``empathctl verify`` shows: the answer kept for ``address`` and what it says
        now; with ``ask``, the next hop's answer to a callout made now (kept, if it is one)."""
        settings = self.config.verification
        if ask:
            existence, said = self._ask_now(address, "")
            return {"result": existence.value, "source": "callout", "reply": said}
        answer = self._kept(address)
        now = time.time()
        kept, due = judge(answer, now, settings)
        if answer is None or kept is None:
            return {"result": None, "source": "nothing kept" if answer is None else "expired"}
        return {
            "result": kept.value,
            "source": "cache",
            "reply": answer.reply,
            "age": round(now - answer.checked_at, 1),
            "refresh_due": due,
        }

    def forget(self, address: EmailAddress) -> bool:
        """Drop the answer kept for ``address``: its next RCPT asks the next hop. Was there one?"""
        return bool(self.queue.write(verified.forget, address, quick=True))

    # The answers are kept by the address as sent: the next hop decides whether case matters
    # in a local part (Kate@ and kate@ may be two mailboxes), and a case folded here could
    # make one address's answer another's. The domain is canonical (lower case) already.

    def _kept(self, address: EmailAddress) -> verified.Answer | None:
        try:
            return self.queue.read(verified.lookup, address)
        except (sqlite3.Error, QueueError) as exc:  # the database busy or broken: ask the next hop instead
            log.warning("recipient verification: cannot read the answer kept for %s: %s", address, exc)
            return None

    def _start(self, address: EmailAddress, trace_id: str, wait: float) -> gevent.event.AsyncResult | None:
        """The callout under way for ``address``, or a new one once a slot is free within
        ``wait`` seconds; None if none is."""
        pending = self._asking.get(address)
        if pending is not None:
            return pending
        slots = self._slots
        if not slots.acquire(blocking=wait > 0, timeout=wait if wait > 0 else None):
            return None
        pending = self._asking.get(address)  # started while this one waited for a slot
        if pending is not None:
            slots.release()
            return pending
        pending = self._asking[address] = gevent.event.AsyncResult()
        gevent.spawn(self._callout, address, trace_id, pending, slots)
        return pending

    def _callout(
        self,
        address: EmailAddress,
        trace_id: str,
        pending: gevent.event.AsyncResult,
        slots: gevent.lock.BoundedSemaphore,
    ) -> None:
        """Ask, answer those waiting, keep the answer; only then let go of the address, so
        that a RCPT coming meanwhile takes this answer rather than asking again."""
        started = time.monotonic()
        existence, said = Existence.UNVERIFIED, ""
        try:
            try:
                existence, said = self._ask(address)
            except Exception:  # a bug must cost this answer, not the slot or the sessions waiting for it
                log.exception("recipient verification of %s failed", address)
                said = "internal error (see the log)"
            pending.set((existence, said))
            event(
                log,
                "callout",
                level=logging.WARNING if existence is Existence.UNVERIFIED else logging.INFO,
                to=address,
                result=existence.value,
                reply=said,
                ms=round((time.monotonic() - started) * 1000),
                trace_id=trace_id or None,
            )
            if existence is not Existence.UNVERIFIED:
                self._keep(verified.Answer(address, existence is Existence.EXISTS, said, time.time()))
        finally:
            if not pending.ready():
                pending.set((existence, said))
            del self._asking[address]
            slots.release()

    def _keep(self, answer: verified.Answer) -> None:
        """Write the answer, unless the table is full: its bound holds between the hourly
        sweeps, whatever strangers try (made-up names, or a real mailbox in every case)."""
        if self._room <= 0:
            try:
                self._room = self.config.verification.max_entries - self.queue.read(verified.count)
            except (sqlite3.Error, QueueError):
                self._room = 0
        if self._room <= 0:
            return
        self._room -= 1
        try:
            self.queue.write(verified.remember, answer, quick=True)
        except QueueError as exc:
            log.warning("recipient verification: cannot keep the answer for %s: %s", answer.address, exc)

    def _ask(self, address: EmailAddress) -> tuple[Existence, str]:
        """The next hop's answer, and what it said (with its name) or why there is none."""
        try:
            reply, host = self.courier.ask(route_for(address.domain, self.config), address)
        except client.SmtpError as exc:
            return Existence.UNVERIFIED, f"{exc.step}: {exc.text}"
        except (DnsError, Loop) as exc:
            return Existence.UNVERIFIED, str(exc)
        return existence_of(reply), f"{host} said: {reply.summary}"

    def _count(self, source: str, existence: Existence) -> None:
        self.metrics.recipient_verifications.labels(source, existence.value).inc()

    # -- keeping the cache small ---------------------------------------------------------

    def start(self) -> None:
        """Sweep expired answers every hour (the daemon; its helpers share the file)."""
        self._pruner = gevent.spawn(self._prune_forever)

    def stop(self) -> None:
        if self._pruner is not None:
            self._pruner.kill()

    def _prune_forever(self) -> None:
        while True:
            self.prune(time.time())
            gevent.sleep(PRUNE_INTERVAL)

    def prune(self, now: float) -> None:
        s = self.config.verification
        before = (now - s.positive_expire, now - s.negative_expire, s.max_entries)
        try:
            dropped = self.queue.write(verified.prune, *before)
        except QueueError as exc:
            log.warning("recipient verification: cannot drop expired answers: %s", exc)
            return
        if dropped:
            log.info("recipient verification: dropped %d expired or surplus answer(s)", dropped)
