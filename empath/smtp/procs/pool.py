"""SMTP helper processes: more than one core for receiving mail.

One process runs Python on one core at a time, and a busy relay spends most of
that core serving SMTP sessions. With ``[server] smtp_processes = N`` (N > 1)
the daemon starts N helper processes (smtp/procs/child.py). It still listens and
accepts every connection itself, so the connection limits stay exact and
counted in one place, then hands the socket to the helper serving the fewest
sessions. A helper runs the session as the daemon would and commits what it
accepts into the same queue database with a group commit of its own
(SQLite's write lock puts the processes' commits in order); after each commit
it tells the daemon, whose scheduler then looks for the new mail at once.

Until a helper has said it is ready, and while one that died is replaced, the
daemon serves the session itself: a connection is never refused for want of
a helper.
"""

import contextlib
import itertools
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event

from empath.config import Config
from empath.log import event
from empath.metrics import Counts, Metrics
from empath.smtp.procs.channel import Channel

log = logging.getLogger("empath.smtp")

# A helper that dies sooner than this after starting is replaced only after
# the same wait, so that one that cannot start does not spin.
RESTART_DELAY = 1.0
# How long `empathctl connections` waits for a helper's list of sessions.
QUERY_TIMEOUT = 5.0


class Child:
    """One helper process, seen from the daemon."""

    def __init__(self, number: int, pool: "HelperPool"):
        self.number = number
        self.pool = pool
        self.channel, theirs = Channel.pair()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "empath.cmd.smtp_helper", str(theirs.fileno()), str(number)],
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        self.started = time.monotonic()
        self.ready = False
        self.open: dict[int, gevent.event.AsyncResult] = {}  # sessions handed over, by token
        self.counts: Counts = {}  # the helper's counters as last reported
        self.queries: dict[int, tuple[list, gevent.event.AsyncResult]] = {}
        self.channel.send("config", pool.config)
        self.reader = gevent.spawn(self._read)

    def serve(self, listener: str, sock: socket.socket, client: str, stressed: bool) -> str | None:
        """Hand one accepted connection over and wait for the session to end: how it ended.

        None if the helper could not take it (it has just gone): the caller serves it.
        """
        token = next(self.pool.tokens)
        result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self.open[token] = result
        try:
            self.channel.send("session", token, listener, client, stressed, fd=sock.fileno())
        except OSError:
            del self.open[token]
            return None
        sock.close()  # the helper has its own copy now
        return result.get()

    def sessions(self) -> list[dict[str, Any]]:
        token = next(self.pool.tokens)
        rows: list[dict[str, Any]] = []
        done: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self.queries[token] = (rows, done)
        try:
            self.channel.send("sessions", token)
            done.get(timeout=QUERY_TIMEOUT)
        except (OSError, gevent.Timeout):
            pass  # a helper that is gone or stuck lists nothing; its sessions end with it
        finally:
            self.queries.pop(token, None)
        return rows

    def _read(self) -> None:
        try:
            while True:
                message, fd = self.channel.receive()
                if fd is not None:
                    socket.close(fd)  # never sent this way; do not leak one that is
                try:
                    self._handle(message)
                except Exception:  # a bug here must not stop the daemon hearing from the helper
                    log.exception("SMTP helper %d sent a message the daemon could not handle", self.number)
        except (EOFError, OSError):
            pass
        finally:
            self._gone()

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "ended":
            _, token, outcome = message
            result = self.open.pop(token, None)
            if result is not None:
                result.set(outcome)
        elif kind == "queued":
            self.pool.on_queued()
        elif kind == "auth_failed":
            _, address, when = message
            self.pool.auth_failed(address, when, self)
        elif kind == "counts":
            self.counts = self.pool.metrics.add_counts(message[1], self.counts)
        elif kind == "sessions":
            _, token, rows, last = message
            query = self.queries.get(token)
            if query is not None:
                query[0].extend(rows)
                if last:
                    query[1].set()
        elif kind == "ready":
            self.ready = True
            event(log, "smtp_helper_ready", helper=self.number, pid=self.proc.pid)

    def _gone(self) -> None:
        """The helper's end closed: it exited (or is about to). Its sessions ended with it."""
        self.ready = False
        status = self.proc.wait()
        for result in self.open.values():
            result.set("shutdown" if self.pool.stopping else "error")
        self.open.clear()
        for _, done in self.queries.values():
            done.set()
        self.channel.close()
        self.pool.gone(self, status)


class HelperPool:
    """The helper processes, started with the daemon and stopped with it."""

    def __init__(
        self,
        config: Config,
        metrics: Metrics,
        on_queued: Callable[[], None],
        on_auth_failed: Callable[[str, float], None] = lambda address, when: None,
    ):
        self.config = config
        self.metrics = metrics
        self.on_queued = on_queued
        self.on_auth_failed = on_auth_failed  # the daemon's own count of wrong passwords
        self.tokens = itertools.count(1)
        self.helpers: list[Child] = []
        self.turn = 0
        self.stopping = False

    def start(self) -> None:
        self.helpers = [Child(number, self) for number in range(1, self.config.smtp_processes + 1)]

    def serve(self, listener: str, sock: socket.socket, client: str, stressed: bool) -> str | None:
        """Hand the connection to a ready helper and wait for its session to end: how it
        ended; None while no helper is ready (or the one picked has just gone)."""
        child = self.pick()
        return child.serve(listener, sock, client, stressed) if child is not None else None

    def auth_failed(self, address: str, when: float, source: "Child | None" = None) -> None:
        """A wrong password in a helper (``source``) or the daemon: every other process counts it too."""
        if source is not None:
            self.on_auth_failed(address, when)
        for child in list(self.helpers):
            if child is not source:
                with contextlib.suppress(OSError):  # gone: its replacement starts counting afresh
                    child.channel.send("auth_failed", address, when)

    def pick(self) -> Child | None:
        """The ready helper serving the fewest sessions, taking turns among equals; None while none is ready."""
        ready = [h for h in self.helpers if h.ready]
        if not ready:
            return None
        self.turn = (self.turn + 1) % len(ready)
        return min(ready[self.turn :] + ready[: self.turn], key=lambda h: len(h.open))

    def gone(self, helper: Child, status: int) -> None:
        if helper in self.helpers:
            self.helpers.remove(helper)
        if self.stopping:
            return
        # Status 0: it was told to stop by someone else (SIGTERM to the process group); else it failed.
        level = logging.WARNING if status == 0 else logging.ERROR
        event(log, "smtp_helper_exited", level=level, helper=helper.number, pid=helper.proc.pid, status=status)
        wait = max(0.0, RESTART_DELAY - (time.monotonic() - helper.started))
        gevent.spawn_later(wait, self._replace, helper.number)

    def _replace(self, number: int) -> None:
        if not self.stopping:
            self.helpers.append(Child(number, self))

    def reconfigure(self, config: Config) -> None:
        """A reload: every helper takes the new config (and its plug-ins re-read their files)."""
        self.config = config
        self._tell("reload", config)

    def set_log_level(self, name: str) -> None:
        self._tell("log_level", name)

    def _tell(self, *message: Any) -> None:
        for helper in list(self.helpers):
            try:
                helper.channel.send(*message)
            except OSError:
                continue  # it is gone; its replacement starts from self.config

    def sessions(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for helper in list(self.helpers):
            rows += helper.sessions()
        return rows

    def describe(self) -> list[dict[str, Any]]:
        """What `empathctl status` shows of each helper."""
        return [
            {"helper": h.number, "pid": h.proc.pid, "ready": h.ready, "sessions": len(h.open)}
            for h in sorted(self.helpers, key=lambda h: h.number)
        ]

    def stop(self, grace: float) -> None:
        """Stop every helper: their sessions get ``grace`` seconds to finish, as the daemon's do."""
        self.stopping = True
        self._tell("stop", grace)
        for helper in list(self.helpers):
            try:
                helper.proc.wait(timeout=grace + 15)
            except subprocess.TimeoutExpired:
                log.error("SMTP helper %d (pid %d) did not stop; killing it", helper.number, helper.proc.pid)
                helper.proc.kill()
            helper.reader.join()
