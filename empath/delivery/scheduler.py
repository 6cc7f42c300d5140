"""The scheduler: wakes when mail is queued or falls due, leases due
recipients, and hands them, grouped by message and route, to a pool of
worker greenlets.

The queue table is the schedule: nothing is kept in memory that the
database does not also say, so a restart loses no work.
"""

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace

import gevent
import gevent.event
import gevent.lock
import gevent.pool
import peewee

from empath.addresses import AddressError, Domain, Mailbox, ReversePath
from empath.config import Config, values
from empath.config.files import srs_of
from empath.config.model import DomainPolicy
from empath.delivery import content
from empath.delivery import results as recording
from empath.delivery.courier import Courier, Outcome
from empath.delivery.limits import Breaker, RateLimit, tripped
from empath.delivery.results import NoticeSettings, Settled
from empath.delivery.retry import Schedule
from empath.delivery.routing import SMARTHOST, Destination, NextHopId, Route, route_for
from empath.log import event, reply_code
from empath.metrics import Metrics
from empath.queue import claims
from empath.queue.claims import Claimed, Loaded, PutBack, Result
from empath.queue.states import DONE, State
from empath.queue.store import Queue
from empath.srs import Srs, SrsError

log = logging.getLogger("empath.delivery")

CLAIM_BATCH = 500
# Sleep at most this long, so that work written by other processes (the
# sendmail command) is found even if their nudge was lost.
MAX_IDLE = 60.0
# Mail of a paused domain that was claimed is put back this far ahead
# (resume makes it due at once).
PAUSED_RECHECK = 300.0


class Scheduler:
    def __init__(
        self,
        config: Config,
        queue: Queue,
        courier: Courier,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ):
        self.config = config
        self.metrics = metrics or Metrics()
        self.queue = queue  # its writes are group-committed with everyone else's
        self.courier = courier
        self.clock = clock
        self.owner = uuid.uuid4().hex[:12]  # this daemon's name on its leases
        d = config.delivery
        self.schedule = Schedule(d.retry_first, d.retry_max)
        self.workers = gevent.pool.Pool(d.workers)
        self.breakers: dict[Destination, Breaker] = {}
        self.rates: dict[Destination, RateLimit] = {}
        self.slots: dict[Destination, gevent.lock.Semaphore] = {}
        # The operator's, until restart or reload: limits set by `domain set`, and pauses.
        self.overrides: dict[Destination, DomainPolicy] = {}
        self.paused_all = False
        self.paused_domains: set[Domain] = set()
        self.notice_settings = _notice_settings(config)
        self._wake = gevent.event.Event()
        self._greenlet: gevent.Greenlet | None = None
        self._stopping = False

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def wake(self) -> None:
        self._wake.set()

    def flush(self) -> None:
        """Make every deferred recipient due now, as Postfix's ``postqueue -f``, which
        also forgets the hosts it found dead: every open circuit breaker is closed."""
        self.close_breakers(None)
        self.queue.write(claims.flush, self.clock())
        self.wake()

    def reconfigure(self, config: Config) -> None:
        """Take a reloaded config: new limits apply from the next delivery; the
        operator's overrides end; breakers keep their state with the new thresholds."""
        self.config = config
        self.schedule = Schedule(config.delivery.retry_first, config.delivery.retry_max)
        self.notice_settings = _notice_settings(config)
        self.overrides.clear()
        self.rates.clear()
        self.slots.clear()
        for key, breaker in self.breakers.items():
            policy = self.policy(key)
            breaker.threshold, breaker.cooldown = policy.breaker_failures, policy.breaker_cooldown

    # -- what the operator asks (the control socket) -------------------------------

    def policy(self, key: Destination) -> DomainPolicy:
        """The limits of a destination (a domain, or "smarthost"): the operator's, else the config's."""
        configured = self.config.delivery.defaults if key == SMARTHOST else self.config.domain_policy(key)
        return self.overrides.get(key) or configured

    def set_limits(self, key: Destination, rate: float | None, concurrency: int | None) -> DomainPolicy:
        """Change a destination's rate and concurrency until restart or reload."""
        policy = self.policy(key)
        policy = replace(
            policy,
            rate=policy.rate if rate is None else rate,
            concurrency=policy.concurrency if concurrency is None else concurrency,
        )
        self.overrides[key] = policy
        self.rates[key] = RateLimit(policy.rate)
        # Deliveries running now release the old semaphore; new ones take this one.
        self.slots[key] = gevent.lock.Semaphore(policy.concurrency)
        return policy

    def reset_breaker(self, key: Destination) -> str | None:
        """Close a destination's breaker and make the mail it held back due; its state before, or None."""
        breaker = self.breakers.get(key)
        if breaker is None:
            return None
        was = breaker.state(self.clock())
        breaker.success()
        self.queue.write(claims.flush, self.clock(), None if key == SMARTHOST else key)
        self.wake()
        return was

    def close_breakers(self, domains: list[Domain] | None) -> list[Destination]:
        """The operator asked for mail to go now: close the open breakers of the
        destinations that ``domains`` (None: all) go through; those closed."""
        closed = sorted(tripped(self.breakers, self.clock()))
        if domains is not None:
            keys = {route_for(domain, self.config).policy_key for domain in domains}
            closed = [key for key in closed if key in keys]
        for key in closed:
            self.breakers[key].success()
            event(log, "breaker_closed", destination=key, by="the operator's retry")
        return closed

    def open_breakers(self) -> list[Destination]:
        """The destinations whose circuit breaker is open or half-open now (for the metrics)."""
        return tripped(self.breakers, self.clock())

    def pause(self, domain: Domain | None = None) -> None:
        """Stop claiming mail (of one recipient domain, or all); what is in flight finishes."""
        if domain is None:
            self.paused_all = True
        else:
            self.paused_domains.add(domain)

    def resume(self, domain: Domain | None = None) -> list[Domain]:
        """Undo pause (None: every pause); the domains resumed have their waiting mail made due now."""
        domains = sorted(self.paused_domains) if domain is None else [domain] if domain in self.paused_domains else []
        if domain is None:
            self.paused_all = False
        self.paused_domains.difference_update(domains)
        for name in domains:
            self.queue.write(claims.flush, self.clock(), name)
        self.wake()
        return domains

    def stop(self, grace: float) -> None:
        """Stop claiming; let deliveries in flight finish within ``grace``. Those
        killed keep their leases, which the next start clears."""
        self._stopping = True
        self.wake()
        if self._greenlet is not None:
            self._greenlet.join(timeout=5)
            self._greenlet.kill()
        self.workers.join(timeout=grace)
        self.workers.kill(timeout=5)

    # -- the loop ---------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            if self.paused_all:
                self._wake.wait(timeout=MAX_IDLE)
                continue
            try:
                more = self._claim_and_spawn()
            except Exception:  # the scheduler must outlive any one bad tick
                log.exception("scheduler tick failed")
                more = False
            if more:
                continue
            self._wake.wait(timeout=self._idle_time())

    def _idle_time(self) -> float:
        due = self.queue.call(claims.next_due)
        if due is None:
            return MAX_IDLE
        return min(MAX_IDLE, max(0.0, due - self.clock()))

    def _claim_and_spawn(self) -> bool:
        """Claim what is due and start its deliveries; True if more may be due."""
        if self.workers.free_count() == 0:
            self.workers.wait_available()
        if self._stopping:
            return False
        now = self.clock()
        claimed = self.queue.write(claims.claim, now, self.owner, self.config.delivery.lease_time, CLAIM_BATCH)
        paused = [c for c in claimed if c.domain in self.paused_domains]
        if paused:
            self.queue.write(_put_back, paused, now + PAUSED_RECHECK, now, self.notice_settings)
        groups: dict[tuple[str, NextHopId], list[Claimed]] = defaultdict(list)
        routes: dict[tuple[str, NextHopId], Route] = {}
        for c in claimed:
            if c.domain in self.paused_domains:
                continue
            route = route_for(c.domain, self.config)
            key = (c.queue_id, route.key)
            groups[key].append(c)
            routes.setdefault(key, route)
        for key, recipients in groups.items():
            self.workers.spawn(self._deliver, routes[key], recipients)
        return len(claimed) == CLAIM_BATCH

    # -- one job ------------------------------------------------------------------

    def _deliver(self, route: Route, recipients: list[Claimed]) -> None:
        queue_id = recipients[0].queue_id
        try:
            held = self._held_back(route, recipients)
            # Mail that a rate limit or an open breaker holds back is not sent: its body stays on disk.
            message = self.queue.read(claims.load, queue_id, held is None)
            if message is None:
                self.breakers[route.policy_key].abandon()  # no probe was made, if one was allowed
                return  # deleted by an operator meanwhile
            results: list[Result | PutBack] = (
                [*held] if held is not None else [*self._attempt(route, message, recipients)]
            )
            settled = self.queue.write(
                recording.record, queue_id, results, self.clock(), self.notice_settings, quick=True
            )
            self._count(route, message, results, settled)
            for notice in settled.notices:
                event(log, "notice", queue_id=notice, original=queue_id, trace_id=message.trace_id)
        except Exception:  # the lease runs out and the work is tried again
            log.exception("delivery of %s failed unexpectedly", queue_id)
        finally:
            self.wake()

    def _held_back(self, route: Route, recipients: list[Claimed]) -> list[PutBack] | None:
        """The recipients put back, when the destination's rate limit or
        open breaker holds this delivery back; None when it may go now."""
        key = route.policy_key
        policy = self.policy(key)
        breaker = self.breakers.setdefault(key, Breaker(policy.breaker_failures, policy.breaker_cooldown))
        rate = self.rates.setdefault(key, RateLimit(policy.rate))
        now = self.clock()
        wait = rate.wait(now)
        if wait > 0:
            self.metrics.rate_limited.inc()
            self.metrics.rate_limit_delay.inc(wait)
            # Mail not tried yet says why it waits; tried mail keeps the reason of its deferral.
            text = f"waiting for the rate limit of {key} ({values.rate_text(policy.rate)})"
            return [PutBack(r.recipient_id, now + wait, *(() if r.attempts else (text, "4.4.5"))) for r in recipients]
        if not breaker.allow(now):
            text = f"delivery to {key} suspended after {breaker.failures} connection failures in a row"
            if breaker.last_failure:
                text += f"; the last: {breaker.last_failure}"
            return [PutBack(r.recipient_id, breaker.retry_at(now), text, "4.4.1") for r in recipients]
        return None

    def _attempt(self, route: Route, message: Loaded, recipients: list[Claimed]) -> list[Result]:
        key = route.policy_key
        breaker = self.breakers[key]  # made by _held_back
        slots = self.slots.setdefault(key, gevent.lock.Semaphore(self.policy(key).concurrency))
        with slots:
            started = self.clock()
            outcome = self.courier.deliver(route, message, content.of(self.queue.read, message), recipients)
        if outcome.tls is not None:
            self.metrics.delivery_tls.labels("yes" if outcome.tls else "no").inc()
        if outcome.connected is None:
            breaker.abandon()
        elif outcome.connected:
            if breaker.opened_at is not None:
                # The probe got through: the mail the breaker held back may go now.
                self.queue.write(claims.flush, self.clock(), None if route.smarthost else route.domain)
            breaker.success()
        else:
            breaker.failure(self.clock(), outcome.verdicts[-1].reply if outcome.verdicts else "")
        return self._results(message, recipients, outcome, started)

    def _count(self, route: Route, message: Loaded, results: list[Result | PutBack], settled: Settled) -> None:
        """Count what was recorded: attempts per recipient, time in the queue, messages that left it."""
        m = self.metrics
        domain_class = "smarthost" if route.smarthost else "mx" if route.uses_mx else "routed"
        in_queue = max(0.0, self.clock() - message.received_at)
        for r in results:
            if isinstance(r, PutBack):
                continue  # held back by a rate limit or breaker: no attempt was made
            m.attempts.labels(r.state, domain_class).inc()
            if r.state in DONE:
                m.time_in_queue.observe(in_queue)
            if r.state == State.DELIVERED:
                m.latency.observe(in_queue)
        m.queue_in.inc(len(settled.notices))
        if settled.removed is not None:
            m.queue_out.labels(settled.removed).inc()

    def _results(self, message: Loaded, recipients: list[Claimed], outcome: Outcome, started: float) -> list[Result]:
        now = self.clock()
        by_address = {v.address: v for v in outcome.verdicts}
        results = []
        for r in recipients:
            v = by_address[r.address]
            kind, status, reply = v.kind, v.status, v.reply
            next_at = None
            if kind == State.DEFERRED:
                next_at = self.schedule.next_attempt(r.attempts + 1, now, message.expires_at)
                if next_at is None:
                    kind, status = State.BOUNCED, "5.4.7"
                    reply = f"gave up after {_age(now - message.received_at)} in the queue; last error: {reply}"
            results.append(Result(r.recipient_id, kind, reply, status, v.remote, next_at, v.relayed))
            event(
                log,
                "delivery",
                level=logging.INFO if kind != State.DEFERRED else logging.WARNING,
                queue_id=message.queue_id,
                to=r.address,
                domain=r.domain,
                relay=outcome.relay or "none",
                delay=round(now - message.received_at, 3),
                attempt=r.attempts + 1,
                status={"delivered": "sent"}.get(kind, kind),
                code=reply_code(reply),
                dsn=status,
                reply=reply,
                next_attempt=round(next_at - now) if next_at else None,
                trace_id=message.trace_id,
                took=round(now - started, 3),
            )
        return results


def _notice_settings(config: Config) -> NoticeSettings:
    postmaster = Mailbox("postmaster", config.local_domains[0] if config.local_domains else config.hostname).address
    d, lifetime = config.delivery, config.queue.lifetime
    return NoticeSettings(config.hostname, postmaster, d.delay_warning, lifetime, _unforward(srs_of(config)))


def _unforward(srs: Srs | None) -> Callable[[ReversePath], ReversePath]:
    """The sender a forwarded copy's notices go to: the one its SRS sender stands for (one
    that no longer reverses, expired, keeps it: the notice goes there and fails, to the postmaster)."""

    def back(sender: ReversePath) -> ReversePath:
        if srs is None or sender.is_null:
            return sender
        try:
            original = srs.original(sender, time.time())
            return ReversePath(original) if original is not None else sender  # parsed: it came from outside
        except (SrsError, AddressError):
            return sender

    return back


def _put_back(
    db: peewee.SqliteDatabase, claimed: list[Claimed], due: float, now: float, settings: NoticeSettings
) -> None:
    """Release the leases of paused mail without an attempt (on the database thread)."""
    by_message: dict[str, list[Result | PutBack]] = defaultdict(list)
    for c in claimed:
        text = f"delivery to {c.domain} is paused by the operator"
        by_message[c.queue_id].append(PutBack(c.recipient_id, due, text, "4.4.5"))
    for queue_id, results in by_message.items():
        recording.record(db, queue_id, results, now, settings)


def _age(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.0f} minutes"
