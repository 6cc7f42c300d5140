"""An SMTP helper process (see smtp/procs/pool.py): serves the sessions the daemon hands it.

It holds no listener and no lock: the daemon accepted each connection and
counted it. What a session accepts goes into the queue database through this
process's own group commit; a commit is reported to the daemon, and so is
each session's end and, every second, what the sessions counted.
"""

import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event

from empath import log as logs
from empath.config import Config
from empath.metrics import Counts, Metrics
from empath.plugins import loader as plugins_loader
from empath.queue.store import Queue
from empath.smtp.procs.channel import SESSION_ROWS_PER_MESSAGE, Channel
from empath.smtp.server import RecipientVerifier, SmtpServer
from empath.smtp.session import Listening

log = logging.getLogger("empath.smtp")

REPORT_INTERVAL = 1.0  # seconds between reports of the counters


# Makes the helper's recipient verifier (delivery/verify.py, which this layer may not import).
MakeVerifier = Callable[[Config, Queue, Metrics], RecipientVerifier]


class HelperProcess:
    def __init__(self, channel: Channel, config: Config, number: int, make_verifier: MakeVerifier):
        self.channel = channel
        self.number = number
        self.grace = config.timeouts.shutdown_grace
        self.queue = Queue(config.database_path, config.queue.max_size, config.queue.commit_timeout, self._queued)
        self.metrics = Metrics()
        self.plugins = plugins_loader.load(config)
        self.server = SmtpServer(
            config,
            self.queue,
            metrics=self.metrics,
            plugins=self.plugins,
            verifier=make_verifier(config, self.queue, self.metrics),
        )
        self.server.adopt_listeners()
        self.server.on_auth_failed = lambda address, when: self._send("auth_failed", address, when)
        self.listening: dict[str, Listening] = {ln.listener.name: ln for ln in self.server.listening}
        self._stop = gevent.event.Event()
        self._reported: Counts = {}

    def run(self) -> None:
        self.queue.attach()
        self.queue.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(sig, self._stop.set)
        reader = gevent.spawn(self._read)
        reporter = gevent.spawn(self._report_every, REPORT_INTERVAL)
        self.channel.send("ready")
        self._stop.wait()
        reader.kill()
        self.server.drain(self.grace)
        self.queue.stop()
        reporter.kill()
        self._report()
        self.queue.close()

    def _read(self) -> None:
        try:
            while True:
                message, fd = self.channel.receive()
                try:
                    self._handle(message, fd)
                except Exception:  # a bug here must not leave the helper deaf to its daemon
                    log.exception("SMTP helper %d could not handle a message from the daemon", self.number)
                    if fd is not None:
                        socket.close(fd)
                    if message[0] == "session":
                        self._send("ended", message[1], "error")  # the daemon stops waiting for it
        except (EOFError, OSError):
            log.warning("SMTP helper %d: the daemon is gone; stopping", self.number)
        self._stop.set()

    def _handle(self, message: tuple, fd: int | None) -> None:
        kind = message[0]
        if kind == "session":
            _, token, listener, client, stressed = message
            if fd is None:
                # The kernel drops a passed descriptor this process has no room for (RLIMIT_NOFILE).
                log.error(
                    "SMTP helper %d: a connection from %s came without its socket (out of files?)", self.number, client
                )
                self._send("ended", token, "error")
                return
            gevent.spawn(self._serve, token, self.listening[listener], socket.socket(fileno=fd), client, stressed)
        elif kind == "sessions":
            self._send_sessions(message[1])
        elif kind == "auth_failed":
            self.server.note_auth_failure(message[1], message[2])
        elif kind == "reload":
            self._reload(message[1])
        elif kind == "log_level":
            logs.set_level(message[1])
        elif kind == "stop":
            self.grace = message[1]
            self._stop.set()

    def _serve(self, token: int, listening: Listening, sock: socket.socket, client: str, stressed: bool) -> None:
        sessions = self.server.sessions
        sessions.add(gevent.getcurrent())
        outcome = "error"
        try:
            outcome = self.server.run_session(listening, sock, client, stressed)
        finally:
            sessions.discard(gevent.getcurrent())
            self._send("ended", token, outcome)

    def _send_sessions(self, token: int) -> None:
        now = time.time()
        rows = [self.server.describe(session, now) for session in self.server.active]
        step = SESSION_ROWS_PER_MESSAGE
        for start in range(0, max(len(rows), 1), step):
            self._send("sessions", token, rows[start : start + step], start + step >= len(rows))

    def _reload(self, config: Config) -> None:
        self.server.reconfigure(config)
        self.queue.timeout = config.queue.commit_timeout
        self.grace = config.timeouts.shutdown_grace
        logs.set_level(config.log_level)
        self.plugins.reload()

    def _queued(self) -> None:
        self._send("queued")

    def _report_every(self, interval: float) -> None:
        while True:
            gevent.sleep(interval)
            self._report()

    def _report(self) -> None:
        counts = self.metrics.session_counts()
        if counts != self._reported:
            self._send("counts", counts)
            self._reported = counts

    def _send(self, *message: Any) -> None:
        # If the daemon is gone, the reader sees it and stops this process.
        with contextlib.suppress(OSError):
            self.channel.send(*message)


def main(args: list[str], make_verifier: MakeVerifier) -> int:
    """``FD NUMBER``: this process's end of the channel, and its number among the helpers."""
    channel = Channel(socket.socket(fileno=int(args[0])))
    message, _ = channel.receive()  # the daemon sends its config first
    config: Config = message[1]
    logs.setup(config.log_level, config.log_format, config.log_file)
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)  # meant for the daemon, which tells helpers what concerns them
    HelperProcess(channel, config, int(args[1]), make_verifier).run()
    return 0
