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
        courier = Courier(config, Resolver(d.nameservers, d.dns_timeout), self.pool, credentials)
        self.committer = GroupCommitter(self.store, config.queue.commit_timeout)
        self.scheduler = Scheduler(config, self.store, self.committer, courier)
        self.committer.on_commit = self.scheduler.wake
        self.server = SmtpServer(config, self.committer)
        self._stop = gevent.event.Event()
        self._lock_fd: int | None = None

    def start(self) -> None:
        self._lock_fd = lock_data_dir(self.config.data_dir)
        self.store.open()
        self.committer.start()
        self.server.start()
        self.pool.start()
        self.scheduler.start()
        event(log, "started", version=__version__, pid=os.getpid(), data_dir=str(self.config.data_dir))

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop without losing accepted mail.

        SIGUSR1 makes every deferred message due now (as ``postqueue -f``).
        """
        self.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, self.request_stop)
        gevent.signal_handler(signal.SIGUSR1, lambda: gevent.spawn(self.scheduler.flush))
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
        self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        event(log, "stopped")
