"""The daemon's wiring: queue, writer, listeners, delivery, the control socket, signals,
reloads, and a clean stop."""

import logging
import os
import signal
import time

import gevent
import gevent.event

from empath import __version__
from empath import config as config_module
from empath.config import Config, reader, risks
from empath.config.files import read_password
from empath.control import reload as reloading
from empath.control import settings as control_settings
from empath.control import sockfile, tokens
from empath.control.server import ControlServer
from empath.control.verbs import DaemonVerbs
from empath.delivery.connections import ConnectionPool
from empath.delivery.courier import Courier, source_problems
from empath.delivery.dns import Resolver
from empath.delivery.scheduler import Scheduler
from empath.delivery.verify import Verifier
from empath.log import audit, event, set_level
from empath.message import dkim
from empath.metrics import Metrics
from empath.plugins import loader as plugins_loader
from empath.queue import stats
from empath.queue.database import lock_data_dir
from empath.queue.store import Queue
from empath.smtp.procs.pool import HelperPool
from empath.smtp.server import SmtpServer

log = logging.getLogger("empath")


def check(config: Config) -> list[str]:
    """What stops ``config`` from running, found on this system: the files it names
    load, the plug-ins import, the DKIM keys sign, the control group and tokens exist.
    ``empath --check`` and every reload run it."""
    found = [
        *plugins_loader.problems(config),
        *config_module.check_files(config),
        *control_settings.problems(config.control),
        *dkim.problems(config.dkim),
        *source_problems(config),
    ]
    return reader.located(config.path, found)


def _credentials(config: Config) -> tuple[str, str] | None:
    smarthost = config.smarthost
    if smarthost is not None and smarthost.username and smarthost.password_file:
        return smarthost.username, read_password(smarthost.password_file)
    return None


def _tokens(config: Config) -> tuple[tokens.Token, ...] | None:
    path = config.control.tokens_file
    return tokens.read(path) if path is not None else None


class Daemon:
    def __init__(self, config: Config):
        self.config = config
        self.started_at = time.time()
        self.restart_needed: list[str] = []  # settings a reload changed that wait for a restart
        d = config.delivery
        self.queue = Queue(config.database_path, config.queue.max_size, config.queue.commit_timeout)
        self.pool = ConnectionPool(d.idle_time, d.max_messages_per_connection)
        self.resolver = Resolver(d.nameservers, d.dns_timeout)
        self.plugins = plugins_loader.load(config)
        courier = Courier(config, self.resolver, self.pool, _credentials(config), self.plugins)
        self.metrics = Metrics()
        self.scheduler = Scheduler(config, self.queue, courier, metrics=self.metrics)
        self.queue.on_commit = self.scheduler.wake
        self.verifier = Verifier(config, self.queue, self.resolver, self.pool, self.metrics)
        self.server = SmtpServer(config, self.queue, metrics=self.metrics, plugins=self.plugins, verifier=self.verifier)
        self.helpers: HelperPool | None = None
        if config.smtp_processes > 1:
            self.helpers = self.server.helpers = HelperPool(
                config, self.metrics, on_queued=self.scheduler.wake, on_auth_failed=self.server.note_auth_failure
            )
            self.server.on_auth_failed = self.helpers.auth_failed
        self._watch(self.resolver)
        self.control = ControlServer(config.control_socket, config.control.group, _tokens(config), DaemonVerbs(self))
        self._stop = gevent.event.Event()
        self._lock_fd: int | None = None

    def start(self) -> None:
        self._lock_fd = lock_data_dir(self.config.data_dir)
        try:
            self.control.bind()
        except sockfile.SocketFileError as exc:
            raise OSError(str(exc)) from None
        self.queue.open()
        if self.config.metrics_address is not None:
            self.metrics.serve(*self.config.metrics_address)
        self.queue.start()
        if self.helpers is not None:
            self.helpers.start()  # after the queue is open: they attach to it
        self.server.start()
        self.pool.start()
        self.verifier.start()
        self.scheduler.start()
        self.control.serve()
        event(log, "started", version=__version__, pid=os.getpid(), data_dir=str(self.config.data_dir))
        self._warn(self.config)

    @staticmethod
    def _warn(config: Config) -> None:
        """What --check warns of, in the log of every start and reload."""
        for line in risks.warnings(config):
            event(log, "config_warning", level=logging.WARNING, config=str(config.path), warning=line)

    def _watch(self, resolver: Resolver) -> None:
        """What the metrics read when scraped."""
        config, m = self.config, self.metrics
        queue = self.queue
        m.watch_queue(lambda: queue.call(stats.counts) if queue.is_open else None, queue.path, config.data_dir)
        destinations = (*config.domains, "smarthost") if config.smarthost is not None else tuple(config.domains)
        m.watch_delivery(resolver.stats, self.pool.stats, self.scheduler.open_breakers, destinations)
        m.count_greenlets(self.server.sessions, self.scheduler.workers)
        m.watch_certificate(config.tls_certificate)

    def request_stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        """Start, serve until SIGTERM or SIGINT, then stop without losing accepted mail.

        SIGUSR1 makes every deferred message due now (as ``postqueue -f``);
        SIGUSR2 wakes the scheduler to look for new mail (the sendmail command's nudge);
        SIGHUP reloads the config (as ``empathctl reload``).
        """
        self.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, self.request_stop)
        gevent.signal_handler(signal.SIGUSR1, lambda: gevent.spawn(self.scheduler.flush))
        gevent.signal_handler(signal.SIGUSR2, self.scheduler.wake)  # sendmail queued something
        gevent.signal_handler(signal.SIGHUP, lambda: gevent.spawn(self._reload_on_signal))
        self._stop.wait()
        self.stop()

    def stop(self) -> None:
        grace = self.config.timeouts.shutdown_grace
        event(log, "stopping", grace=grace)
        self.server.stop_listening()
        # The helpers' sessions and the daemon's own get the same grace, at the same time.
        helpers = gevent.spawn(self.helpers.stop, grace) if self.helpers is not None else None
        self.server.drain(grace)
        if helpers is not None:
            helpers.join()
        self.scheduler.stop(grace)
        self.verifier.stop()
        self.control.stop()
        # Every session and delivery is done, so nothing waits on the group commit any more.
        self.queue.stop()
        self.pool.close_all()
        self.metrics.stop()
        self.queue.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        event(log, "stopped")

    # -- reload -----------------------------------------------------------------------

    def reload(self) -> dict:
        """Read and check the config file again, and put it in force.

        A config that does not validate is refused (ReloadRefused with its
        problems) and the running one stays. Settings that only a restart can
        change keep their running values (control/reload.py) and are reported.
        """
        path = self.config.path
        try:
            new = config_module.load(path)
            problems = check(new)
            if problems:
                raise config_module.ConfigError(problems)
        except config_module.ConfigError as exc:
            audit("reload", level=logging.WARNING, config=str(path), result="refused", problems=exc.problems)
            raise reloading.ReloadRefused(exc.problems) from None
        config, self.restart_needed = reloading.effective(self.config, new)
        self._apply(config)
        self._warn(config)
        self.plugins.reload()  # plug-ins re-read their own files (the block list)
        audit("reload", config=str(path), result="applied", restart_needed=self.restart_needed or None)
        return {"config": str(path), "restart_needed": self.restart_needed}

    def _apply(self, config: Config) -> None:
        """Swap ``config`` into every part that holds it; new sessions and deliveries see it."""
        self.server.reconfigure(config)
        if self.helpers is not None:
            self.helpers.reconfigure(config)
        self.queue.timeout = config.queue.commit_timeout
        self.scheduler.courier = Courier(config, self.resolver, self.pool, _credentials(config), self.plugins)
        self.scheduler.reconfigure(config)
        self.control.tokens = _tokens(config)
        set_level(config.log_level)  # the helpers set theirs from the config they were sent
        self.config = config

    def set_log_level(self, name: str) -> None:
        set_level(name)
        if self.helpers is not None:
            self.helpers.set_log_level(name)

    def _reload_on_signal(self) -> None:
        try:
            self.reload()
        except reloading.ReloadRefused as exc:
            log.warning("SIGHUP: the config was not reloaded; the running one stays: %s", "; ".join(exc.problems))
