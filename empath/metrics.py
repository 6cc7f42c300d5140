"""Prometheus metrics: one registry per daemon, served over HTTP when configured.

The edges (sessions, the server, the scheduler) count events as they happen.
What the daemon already keeps (the queue, DNS and connection-pool counters,
circuit breakers) is read when Prometheus scrapes, by the collectors below,
so the modules that decide stay free of this one.

Ratios (success rate, cache hit rate) are left to recording rules.
"""

import logging
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gevent.pywsgi import WSGIServer
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from empath import __version__
from empath.delivery.limits import CLOSED
from empath.queue import models
from empath.queue.models import Message, Recipient

if TYPE_CHECKING:
    from empath.delivery.connections import ConnectionPool
    from empath.delivery.dns import Resolver
    from empath.delivery.limits import Breaker
    from empath.delivery.routing import Destination
    from empath.queue.store import Store

log = logging.getLogger("empath")

# The counters a session updates: a helper process reports them to the daemon,
# which serves them (smtp/helpers.py). Connections are counted by the daemon itself.
SESSION_COUNTERS = ("commands_rejected", "messages_received", "received_bytes", "tls_handshakes", "auth", "queue_in")
Counts = dict[tuple[str, tuple[tuple[str, str], ...]], float]
# Connection outcomes (label values of empath_smtp_connections_total).
OUTCOMES = ("closed", "client_hung_up", "timeout", "shutdown", "error", "refused")
# Resolver.stats keys counted as failures, by kind.
DNS_FAILURES = ("nxdomain", "servfail", "timeout", "no_answer", "unreachable", "error")
# From 50 ms to the queue's default lifetime of 5 days.
QUEUE_TIME_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    7200,
    14400,
    43200,
    86400,
    172800,
    432000,
)


class Metrics:
    """Every metric of one daemon, on a registry of its own (never the global one)."""

    def __init__(self) -> None:
        # No *_created series: they double the output and no rule here needs them.
        # (A process-wide switch; the daemon is the only user of the client.)
        disable_created_metrics()
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

        # SMTP
        self.connections_open = Gauge(
            "empath_smtp_connections_open", "SMTP connections being served", ["listener"], registry=r
        )
        self.connections = Counter(
            "empath_smtp_connections_total", "SMTP connections by how they ended", ["listener", "outcome"], registry=r
        )
        self.commands_rejected = Counter(
            "empath_smtp_commands_rejected_total",
            "4xx and 5xx replies to SMTP clients, by the reply's catalogue name",
            ["reason"],
            registry=r,
        )
        self.messages_received = Counter(
            "empath_smtp_messages_received_total", "Messages accepted (250 after DATA)", ["listener"], registry=r
        )
        self.received_bytes = Counter(
            "empath_smtp_received_bytes_total", "Bytes of the messages accepted", ["listener"], registry=r
        )
        self.tls_handshakes = Counter(
            "empath_smtp_tls_handshakes_total", "Inbound TLS handshakes", ["result"], registry=r
        )
        self.auth = Counter("empath_smtp_auth_total", "AUTH attempts that checked a password", ["result"], registry=r)

        # Queue
        self.queue_in = Counter(
            "empath_queue_messages_in_total", "Messages committed to the queue (received and notices)", registry=r
        )
        self.queue_out = Counter(
            "empath_queue_messages_out_total",
            "Messages removed from the queue: bounced if any recipient bounced",
            ["result"],
            registry=r,
        )

        # Delivery
        self.attempts = Counter(
            "empath_delivery_attempts_total",
            "Delivery results per recipient",
            ["result", "domain_class"],
            registry=r,
        )
        self.time_in_queue = Histogram(
            "empath_delivery_time_in_queue_seconds",
            "From receipt to the final result (delivered or bounced), per recipient",
            buckets=QUEUE_TIME_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "empath_delivery_latency_seconds",
            "From receipt to delivery, per delivered recipient",
            buckets=QUEUE_TIME_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter(
            "empath_delivery_rate_limited_total", "Deliveries put back by a destination's rate limit", registry=r
        )
        self.rate_limit_delay = Counter(
            "empath_delivery_rate_limit_delay_seconds_total", "Delay imposed by rate limits", registry=r
        )
        self.delivery_tls = Counter(
            "empath_delivery_tls_total", "Outbound transactions by whether TLS was used", ["used"], registry=r
        )

        # Process
        self.greenlets = Gauge("empath_greenlets", "Greenlets running sessions and deliveries", registry=r)
        Gauge("empath_build_info", "Empath's version", ["version"], registry=r).labels(__version__).set(1)
        # Series that exist from the start, at 0, so that rates over them are defined.
        for result in ("success", "failure"):
            self.tls_handshakes.labels(result)
            self.auth.labels(result)
        for result in ("delivered", "bounced"):
            self.queue_out.labels(result)
        for used in ("yes", "no"):
            self.delivery_tls.labels(used)
        for result in ("delivered", "deferred", "bounced"):
            for domain_class in ("routed", "smarthost", "mx"):
                self.attempts.labels(result, domain_class)
        self._server: WSGIServer | None = None

    # -- what is read at scrape time -----------------------------------------------

    def watch(self, collector: Any) -> None:
        self.registry.register(collector)

    def watch_queue(self, store: "Store", data_dir: Path) -> None:
        self.watch(QueueCollector(store, data_dir))

    def watch_delivery(
        self,
        resolver: "Resolver",
        pool: "ConnectionPool",
        breakers: dict["Destination", "Breaker"],
        destinations: Iterable[str],
        clock: Callable[[], float],
    ) -> None:
        self.watch(DeliveryCollector(resolver, pool, breakers, tuple(destinations), clock))

    def listener(self, name: str) -> None:
        """Start a listener's series at 0."""
        self.connections_open.labels(name)
        for outcome in OUTCOMES:
            self.connections.labels(name, outcome)

    def count_greenlets(self, *groups: Any) -> None:
        """The gauge is the sum of the groups' sizes (a gevent Group or Pool each)."""
        self.greenlets.set_function(lambda: sum(len(g) for g in groups))

    # -- what SMTP helper processes count (smtp/helpers.py) ------------------------

    def session_counts(self) -> Counts:
        """The running totals of the counters a session touches, by attribute and labels."""
        totals = {}
        for attr in SESSION_COUNTERS:
            for family in getattr(self, attr).collect():
                for sample in family.samples:
                    if sample.name.endswith("_total"):
                        totals[(attr, tuple(sorted(sample.labels.items())))] = sample.value
        return totals

    def add_counts(self, totals: Counts, before: Counts) -> Counts:
        """Add what a helper counted since it last reported (``before``); returns ``totals`` for next time."""
        for (attr, labels), total in totals.items():
            grown = total - before.get((attr, labels), 0.0)
            if grown > 0:
                counter = getattr(self, attr)
                (counter.labels(**dict(labels)) if labels else counter).inc(grown)
        return totals

    def watch_certificate(self, path: Path | None) -> None:
        if path is None:
            return
        expiry = certificate_expiry(path)
        if expiry is None:
            log.warning("metrics: cannot read the expiry of the certificate %s", path)
            return
        # Only with a certificate: a 0 would read as long expired.
        Gauge(
            "empath_tls_certificate_expiry_timestamp_seconds",
            "When the server's TLS certificate expires (UNIX time)",
            registry=self.registry,
        ).set(expiry)

    # -- serving -------------------------------------------------------------------

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics on host:port; raise OSError naming the address if it cannot be bound."""
        name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot serve metrics on {name}: {exc.strerror}") from None
        sock.listen(64)
        self._server = WSGIServer(sock, make_wsgi_app(self.registry), log=None, error_log=log)
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)
            self._server = None

    @property
    def address(self) -> tuple[str, int] | None:
        return self._server.address if self._server is not None else None


class QueueCollector:
    """Recipients by state, the oldest message's age and the files' sizes, read per scrape."""

    def __init__(self, store: "Store", data_dir: Path):
        self.store = store
        self.data_dir = data_dir

    def collect(self) -> Iterator[Metric]:
        recipients = GaugeMetricFamily("empath_queue_recipients", "Recipients in the queue by state", labels=["state"])
        oldest = GaugeMetricFamily(
            "empath_queue_oldest_message_age_seconds", "Age of the oldest message in the queue (0 when empty)"
        )
        counted = None
        if self.store.db is not None:
            try:
                counted = self.store.call(queue_counts)
            except Exception:  # noqa: BLE001 - a scrape must never break the daemon
                log.warning("metrics: cannot read the queue", exc_info=True)
        if counted is not None:
            by_state, first = counted
            for state in models.STATES:
                recipients.add_metric([state], by_state.get(state, 0))
            oldest.add_metric([], max(0.0, time.time() - first) if first else 0.0)
            yield recipients
            yield oldest
        path = self.store.path
        yield GaugeMetricFamily("empath_queue_database_bytes", "Size of the queue database file", _size(path))
        wal = path.with_name(path.name + "-wal")
        yield GaugeMetricFamily("empath_queue_wal_bytes", "Size of the queue's write-ahead log", _size(wal))
        try:
            st = os.statvfs(self.data_dir)
        except OSError:
            return
        yield GaugeMetricFamily(
            "empath_data_dir_free_bytes",
            "Space free for the daemon on the data directory's filesystem",
            st.f_bavail * st.f_frsize,
        )


def queue_counts() -> tuple[dict[str, int], float | None]:
    """Recipients per state and the oldest receipt time; on the database thread.

    One count per state (a range of the (state, next_attempt_at) index) and the
    minimum of message.received_at (its own index): no table scans.
    """
    by_state = {state: Recipient.select().where(Recipient.state == state).count() for state in models.STATES}
    first = Message.select(models.peewee.fn.MIN(Message.received_at)).scalar()
    return by_state, first


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class DeliveryCollector:
    """DNS and connection-pool counters, and circuit breakers, read per scrape."""

    def __init__(
        self,
        resolver: "Resolver",
        pool: "ConnectionPool",
        breakers: dict["Destination", "Breaker"],
        destinations: tuple[str, ...],
        clock: Callable[[], float],
    ):
        self.resolver = resolver
        self.pool = pool
        self.breakers = breakers
        self.destinations = destinations  # the configured ones: each has a label value of its own
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        stats = self.resolver.stats
        yield CounterMetricFamily("empath_dns_lookups", "DNS lookups asked for", stats["lookup"])
        yield CounterMetricFamily("empath_dns_cache_hits", "DNS lookups answered from the cache", stats["cache_hit"])
        yield CounterMetricFamily(
            "empath_dns_cache_misses", "DNS lookups that went to a nameserver", stats["cache_miss"]
        )
        failures = CounterMetricFamily("empath_dns_failures", "DNS queries that failed, by kind", labels=["kind"])
        for kind in DNS_FAILURES:
            failures.add_metric([kind], stats[kind])
        yield failures

        reuse = CounterMetricFamily(
            "empath_delivery_connection_reuse", "Outbound connections taken from the idle pool", labels=["result"]
        )
        reuse.add_metric(["hit"], self.pool.stats["reuse_hit"])
        reuse.add_metric(["miss"], self.pool.stats["reuse_miss"])
        reuse.add_metric(["stale"], self.pool.stats["reuse_stale"])
        yield reuse

        now = self.clock()
        open_by = dict.fromkeys((*self.destinations, "other"), 0)
        for key, breaker in list(self.breakers.items()):
            label: str = key if key in open_by else "other"
            if breaker.state(now) != CLOSED:
                open_by[label] += 1
        breakers = GaugeMetricFamily(
            "empath_delivery_breaker_open",
            "Circuit breakers open or half-open (1) by destination; other: the sum for unconfigured domains",
            labels=["destination"],
        )
        for label, value in open_by.items():
            breakers.add_metric([label], value)
        yield breakers


def certificate_expiry(path: Path) -> float | None:
    """The notAfter of the first certificate in a PEM file, as UNIX time."""
    try:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(path.read_bytes())
        return cert.not_valid_after_utc.timestamp()
    except ImportError:
        pass
    except (OSError, ValueError):
        return None
    try:
        decoded = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]  # noqa: SLF001
        return float(ssl.cert_time_to_seconds(decoded["notAfter"]))
    except (OSError, ssl.SSLError, KeyError, ValueError, AttributeError):
        return None
