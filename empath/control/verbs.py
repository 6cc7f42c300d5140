"""The verbs a running daemon answers on its control socket.

Each takes the request's checked arguments (protocol.VERBS) and returns a
JSON-ready result, or raises VerbError with the text the client shows.
"""

import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client import Counter

from empath import __version__
from empath.addresses import Domain
from empath.config import Config
from empath.control.protocol import Request, VerbError
from empath.control.queue_verbs import QueueVerbs
from empath.control.reload import ReloadRefused
from empath.delivery.routing import SMARTHOST, route_for
from empath.delivery.scheduler import Scheduler
from empath.delivery.verify import Verifier
from empath.metrics import Metrics
from empath.queue import stats
from empath.queue.states import WAITING
from empath.queue.store import Queue
from empath.smtp.procs.pool import HelperPool
from empath.smtp.server import SmtpServer


class Running(Protocol):
    """What the verbs ask of the running daemon (daemon.py): its parts, its reload."""

    config: Config
    started_at: float
    restart_needed: list[str]  # settings a reload changed that wait for a restart
    queue: Queue
    scheduler: Scheduler
    server: SmtpServer
    verifier: Verifier
    helpers: HelperPool | None
    metrics: Metrics

    def reload(self) -> dict: ...

    def set_log_level(self, name: str) -> None: ...


def total(metric: Counter, **labels: str) -> int:
    """A counter's value summed over the label values that match ``labels``."""
    return int(
        sum(
            sample.value
            for family in metric.collect()
            for sample in family.samples
            if sample.name.endswith("_total") and all(sample.labels.get(k) == v for k, v in labels.items())
        )
    )


class DaemonVerbs:
    def __init__(self, daemon: Running):
        self.daemon = daemon
        scheduler = daemon.scheduler
        queue = QueueVerbs(
            daemon.queue.call, daemon.queue.write, scheduler.wake, scheduler.clock, scheduler.close_breakers
        )
        self.handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "status": self.status,
            "connections": self.connections,
            "stats": self.stats,
            "reload": self.reload,
            "log-level": self.log_level,
            "domain-set": self.domain_set,
            "breaker-list": self.breaker_list,
            "breaker-reset": self.breaker_reset,
            "pause": self.pause,
            "resume": self.resume,
            "verify": self.verify,
            **queue.handlers(),
        }

    def __call__(self, request: Request) -> Any:
        return self.handlers[request.verb](request.args)

    def status(self, args: dict[str, Any]) -> dict[str, Any]:
        d = self.daemon
        by_state, first = d.queue.call(stats.counts)
        # What waits now: delivered and bounced rows only linger until their message is done.
        waiting = {state: n for state, n in by_state.items() if state in WAITING}
        now = time.time()
        s = d.scheduler
        return {
            "version": __version__,
            "pid": os.getpid(),
            "hostname": d.config.hostname,
            "config": str(d.config.path),
            "started_at": d.started_at,
            "uptime": round(now - d.started_at, 1),
            "listeners": [listening.listener.name for listening in d.server.listening],
            "accepting": d.server.accepting,
            "sessions": len(d.server.sessions),
            "smtp_helpers": d.helpers.describe() if d.helpers is not None else [],
            "queue": waiting,
            "oldest_age": round(max(0.0, now - first), 1) if first else 0.0,
            "delivery": {
                "paused": s.paused_all,
                "paused_domains": sorted(s.paused_domains),
                "in_flight": len(s.workers),
                "overrides": {k: {"rate": p.rate, "concurrency": p.concurrency} for k, p in s.overrides.items()},
            },
            "restart_needed": d.restart_needed,
        }

    def connections(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        return self.daemon.server.describe_sessions()

    def stats(self, args: dict[str, Any]) -> dict[str, Any]:
        d = self.daemon
        m = d.metrics
        return {
            "since": d.started_at,
            "uptime": round(time.time() - d.started_at, 1),
            "received": total(m.messages_received),
            "received_bytes": total(m.received_bytes),
            "delivered": total(m.attempts, result="delivered"),
            "deferred": total(m.attempts, result="deferred"),
            "bounced": total(m.attempts, result="bounced"),
            "rejected": total(m.commands_rejected),
            "connections": total(m.connections),
            "connections_refused": total(m.connections, outcome="refused"),
            "auth_failures": total(m.auth, result="failure"),
            "rate_limited": total(m.rate_limited),
        }

    def reload(self, args: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.daemon.reload()
        except ReloadRefused as exc:
            raise VerbError("the config was not reloaded; the running one stays:\n" + "\n".join(exc.problems)) from None

    def log_level(self, args: dict[str, Any]) -> dict[str, str]:
        self.daemon.set_log_level(args["level"])
        return {"level": args["level"]}

    def domain_set(self, args: dict[str, Any]) -> dict[str, Any]:
        key = args["destination"]
        if key != SMARTHOST and route_for(Domain(key), self.daemon.config).policy_key != key:
            # Its mail goes through the smarthost, whose limits apply: this one would never be read.
            raise VerbError(f"{key}'s mail goes through the smarthost: set its limits with: domain set smarthost …")
        policy = self.daemon.scheduler.set_limits(key, args.get("rate"), args.get("concurrency"))
        until = "restart or reload"
        return {"destination": key, "rate": policy.rate, "concurrency": policy.concurrency, "until": until}

    def breaker_list(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        s = self.daemon.scheduler
        now = s.clock()
        return [
            {
                "destination": key,
                "state": breaker.state(now),
                "failures": breaker.failures,
                "opened_at": breaker.opened_at,
                "retry_at": breaker.retry_at(now) if breaker.opened_at is not None else None,
            }
            for key, breaker in sorted(s.breakers.items())
        ]

    def breaker_reset(self, args: dict[str, Any]) -> dict[str, Any]:
        key = args["destination"]
        was = self.daemon.scheduler.reset_breaker(key)
        if was is None:
            raise VerbError(f"no circuit breaker for {key}: nothing was delivered there since the start")
        return {"destination": key, "was": was, "state": "closed"}

    def pause(self, args: dict[str, Any]) -> dict[str, Any]:
        s = self.daemon.scheduler
        s.pause(args.get("domain"))
        return {"paused": s.paused_all, "paused_domains": sorted(s.paused_domains)}

    def resume(self, args: dict[str, Any]) -> dict[str, Any]:
        s = self.daemon.scheduler
        domain = args.get("domain")
        if domain is not None and domain not in s.paused_domains:
            hint = " (all delivery is: resume with no domain)" if s.paused_all else ""
            raise VerbError(f"delivery to {domain} is not paused{hint}")
        resumed = s.resume(domain)
        return {"resumed": domain or "all", "paused": s.paused_all, "paused_domains": sorted(s.paused_domains)} | (
            {"retried_domains": resumed} if resumed else {}
        )

    def verify(self, args: dict[str, Any]) -> dict[str, Any]:
        """Would a RCPT to this address be taken, and on whose word (sendmail -bv, postmap -q)?"""
        d = self.daemon
        address = args["address"]
        domain = address.domain
        shown = {"address": address, "domain": domain}
        if domain not in d.config.local_domains:
            return shown | {"way": "relayed", "result": None}
        if address.local.lower() == "postmaster":
            return shown | {"way": "postmaster", "result": "exists"}
        table = d.server.recipients.get(domain)
        if table is not None:
            return shown | {"way": "table", "table": str(table.path), "result": _exists(table.has(address))}
        if not d.config.domain_policy(domain).callout:
            return shown | {"way": "none", "result": "exists"}
        forgot = d.verifier.forget(address) if args.get("forget") else None
        found = d.verifier.describe(address, ask=bool(args.get("ask")))
        return shown | {"way": "callout"} | found | ({"forgot": forgot} if forgot is not None else {})


def _exists(found: bool) -> str:
    return "exists" if found else "unknown"
