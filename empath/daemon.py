"""The daemon's wiring: queue, writer, listeners, signals, and a clean stop."""

import logging
import os
import signal

import gevent
import gevent.event

from empath import __version__
from empath.config import Config
from empath.log import event
from empath.queue.store import GroupCommitter, Store, lock_data_dir
from empath.smtp.server import SmtpServer

log = logging.getLogger("empath")


class Daemon:
    def __init__(self, config: Config):
        self.config = config
        self.store = Store(config.database_path, config.queue.max_size)
        self.committer = GroupCommitter(self.store, config.queue.commit_timeout)
        self.server = SmtpServer(config, self.committer)
        self._stop = gevent.event.Event()
        self._lock_fd: int | None = None

    def start(self) -> None:
        self._lock_fd = lock_data_dir(self.config.data_dir)
        self.store.open()
        self.committer.start()
        self.server.start()
        event(log, "started", version=__version__, pid=os.getpid(), data_dir=str(self.config.data_dir))

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop without losing accepted mail."""
        self.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, self.request_stop)
        self._stop.wait()
        self.stop()

    def stop(self) -> None:
        event(log, "stopping", grace=self.config.timeouts.shutdown_grace)
        self.server.stop_listening()
        self.server.drain(self.config.timeouts.shutdown_grace)
        # Every session is gone, so nothing waits on the writer any more.
        self.committer.stop()
        self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        event(log, "stopped")
