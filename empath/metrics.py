"""Prometheus metrics: one registry per daemon, served over HTTP when configured.

The edges (sessions, the server, the scheduler) count events as they happen.
What the daemon already keeps (the queue, DNS and connection-pool counters,
circuit breakers) is read when Prometheus scrapes, by the collectors below,
through the functions and mappings the daemon hands them: this module knows
no other part of Empath, and the modules that decide stay free of it.

Ratios (success rate, cache hit rate) are left to recording rules.
"""

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

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

log = logging.getLogger("empath")

# The counters a session updates: a helper process reports them to the daemon,
# which serves them (smtp/procs/pool.py). Connections are counted by the daemon itself.
SESSION_COUNTERS = (
    "commands_rejected",
    "messages_received",
    "received_bytes",
    "tls_handshakes",
    "auth",
    "queue_in",
    "recipient_verifications",
)
Counts = dict[tuple[str, tuple[tuple[str, str], ...]], float]
# What the queue holds: recipients by state and the oldest message's receipt time
# (queue/stats.py); None while the queue is not open.
QueueCounts = tuple[Mapping[str, int], float | None]
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
        self.recipient_verifications = Counter(
            "empath_smtp_recipient_verifications_total",
            "Recipients of domains verified by callout: answered from the cache or by asking the next hop",
            ["source", "result"],
            registry=r,
        )
        self.stress = Gauge(
            "empath_smtp_stress", "1 while the strangers' connection slots are short (stress mode)", registry=r
        )

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

    def watch_queue(self, counts: Callable[[], QueueCounts | None], database: Path, data_dir: Path) -> None:
        self.watch(QueueCollector(counts, database, data_dir))

    def watch_delivery(
        self,
        dns: Mapping[str, int],
        pool: Mapping[str, int],
        open_breakers: Callable[[], Iterable[str]],
        destinations: Iterable[str],
    ) -> None:
        self.watch(DeliveryCollector(dns, pool, open_breakers, tuple(destinations)))

    def listener(self, name: str) -> None:
        """Start a listener's series at 0."""
        self.connections_open.labels(name)
        for outcome in OUTCOMES:
            self.connections.labels(name, outcome)

    def count_greenlets(self, *groups: Any) -> None:
        """The gauge is the sum of the groups' sizes (a gevent Group or Pool each)."""
        self.greenlets.set_function(lambda: sum(len(g) for g in groups))

    # -- what SMTP helper processes count (smtp/procs/pool.py) ------------------------

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

    def __init__(self, counts: Callable[[], QueueCounts | None], database: Path, data_dir: Path):
        self.counts = counts
        self.database = database
        self.data_dir = data_dir

    def collect(self) -> Iterator[Metric]:
        recipients = GaugeMetricFamily("empath_queue_recipients", "Recipients in the queue by state", labels=["state"])
        oldest = GaugeMetricFamily(
            "empath_queue_oldest_message_age_seconds", "Age of the oldest message in the queue (0 when empty)"
        )
        counted = None
        try:
            counted = self.counts()
        except Exception:  # noqa: BLE001 - a scrape must never break the daemon
            log.warning("metrics: cannot read the queue", exc_info=True)
        if counted is not None:
            by_state, first = counted
            for state, count in by_state.items():
                recipients.add_metric([state], count)
            oldest.add_metric([], max(0.0, time.time() - first) if first else 0.0)
            yield recipients
            yield oldest
        path = self.database
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


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


class DeliveryCollector:
    """DNS and connection-pool counters, and circuit breakers, read per scrape."""

    def __init__(
        self,
        dns: Mapping[str, int],
        pool: Mapping[str, int],
        open_breakers: Callable[[], Iterable[str]],
        destinations: tuple[str, ...],
    ):
        self.dns = dns  # the resolver's counters
        self.pool = pool  # the connection pool's counters
        self.open_breakers = open_breakers
        self.destinations = destinations  # the configured ones: each has a label value of its own

    def collect(self) -> Iterator[Metric]:
        stats = self.dns
        yield CounterMetricFamily("empath_dns_lookups", "DNS lookups asked for", stats.get("lookup", 0))
        yield CounterMetricFamily(
            "empath_dns_cache_hits", "DNS lookups answered from the cache", stats.get("cache_hit", 0)
        )
        yield CounterMetricFamily(
            "empath_dns_cache_misses", "DNS lookups that went to a nameserver", stats.get("cache_miss", 0)
        )
        failures = CounterMetricFamily("empath_dns_failures", "DNS queries that failed, by kind", labels=["kind"])
        for kind in DNS_FAILURES:
            failures.add_metric([kind], stats.get(kind, 0))
        yield failures

        reuse = CounterMetricFamily(
            "empath_delivery_connection_reuse", "Outbound connections taken from the idle pool", labels=["result"]
        )
        for result in ("hit", "miss", "stale"):
            reuse.add_metric([result], self.pool.get(f"reuse_{result}", 0))
        yield reuse

        open_by = dict.fromkeys((*self.destinations, "other"), 0)
        for key in self.open_breakers():
            open_by[key if key in open_by else "other"] += 1
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
    # Imported here: sendmail -bs runs a session, which counts into Metrics, and
    # needs no certificate; cryptography costs a start a few hundredths of a second.
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    return cert.not_valid_after_utc.timestamp()
