"""The daemon's wiring: queue, writer, listeners, delivery, signals, and a clean stop."""

import logging
import os
import signal

import gevent
import gevent.event

from empath import __version__
from empath.config import Config
from empath.config.load import read_password
from empath.delivery.connections import ConnectionPool
from empath.delivery.courier import Courier
from empath.delivery.dns import Resolver
from empath.delivery.scheduler import Scheduler
from empath.log import event
from empath.metrics import Metrics
from empath.queue.store import GroupCommitter, Store, lock_data_dir
from empath.smtp.server import SmtpServer

log = logging.getLogger("empath")


class Daemon:
    def __init__(self, config: Config):
        self.config = config
        d = config.delivery
        self.store = Store(config.database_path, config.queue.max_size)
        self.pool = ConnectionPool(d.idle_time, d.max_messages_per_connection)
        smarthost = config.smarthost
        credentials = None
        if smarthost is not None and smarthost.username and smarthost.password_file:
            credentials = (smarthost.username, read_password(smarthost.password_file))
        resolver = Resolver(d.nameservers, d.dns_timeout)
        courier = Courier(config, resolver, self.pool, credentials)
        self.committer = GroupCommitter(self.store, config.queue.commit_timeout)
        self.metrics = Metrics()
        self.scheduler = Scheduler(config, self.store, self.committer, courier, metrics=self.metrics)
        self.committer.on_commit = self.scheduler.wake
        self.server = SmtpServer(config, self.committer, metrics=self.metrics)
        self._watch(resolver)
        self._stop = gevent.event.Event()
        self._lock_fd: int | None = None

    def start(self) -> None:
        self._lock_fd = lock_data_dir(self.config.data_dir)
        self.store.open()
        if self.config.metrics_address is not None:
            self.metrics.serve(*self.config.metrics_address)
        self.committer.start()
        self.server.start()
        self.pool.start()
        self.scheduler.start()
        event(log, "started", version=__version__, pid=os.getpid(), data_dir=str(self.config.data_dir))

    def _watch(self, resolver: Resolver) -> None:
        """What the metrics read when scraped."""
        config, m = self.config, self.metrics
        m.watch_queue(self.store, config.data_dir)
        destinations = (*config.domains, "smarthost") if config.smarthost is not None else tuple(config.domains)
        m.watch_delivery(resolver, self.pool, self.scheduler.breakers, destinations, self.scheduler.clock)
        m.count_greenlets(self.server.sessions, self.scheduler.workers)
        m.watch_certificate(config.tls_certificate)

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop without losing accepted mail.

        SIGUSR1 makes every deferred message due now (as ``postqueue -f``);
        SIGUSR2 wakes the scheduler to look for new mail (the sendmail command's nudge).
        """
        self.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, self.request_stop)
        gevent.signal_handler(signal.SIGUSR1, lambda: gevent.spawn(self.scheduler.flush))
        gevent.signal_handler(signal.SIGUSR2, self.scheduler.wake)  # sendmail queued something
        self._stop.wait()
        self.stop()

    def stop(self) -> None:
        grace = self.config.timeouts.shutdown_grace
        event(log, "stopping", grace=grace)
        self.server.stop_listening()
        self.server.drain(grace)
        self.scheduler.stop(grace)
        # Every session and delivery is done, so nothing waits on the writer any more.
        self.committer.stop()
        self.pool.close_all()
        self.metrics.stop()
        self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        event(log, "stopped")
