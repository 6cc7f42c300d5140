"""``sendmail -bs``: an SMTP dialogue on stdin and stdout, as PHP mailers and
some mail clients speak it to /usr/sbin/sendmail.

It is the listeners' session (smtp/session.py) run over a pipe: the same
loop, protocol machine, connection (lines read with their hard limit,
replies flushed before each read, so pipelined commands are answered
together) and DATA reader. What differs is what surrounds it: the client is
the local user, trusted as plain sendmail is (any recipient), with no TLS,
AUTH or plug-ins to offer; each message is handed to the store function the
sendmail command gives, which writes it to the queue database before its 250
(the daemon may not be running) and nudges the daemon; input that ends
inside a message queues nothing of it. The session's log events go nowhere
(sendmail gives them no handler): what went wrong is said on stderr, and in
the exit code sendmail makes of how the session ended.
"""

import contextlib
import dataclasses
import os
import socket
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, cast

from gevent import select

from empath.addresses import EmailAddress
from empath.aliases import Aliases
from empath.config import Config, Listener
from empath.config.files import alias_tables, rewriter_of
from empath.message import dkim, submit
from empath.metrics import Metrics
from empath.plugins.loader import Plugins
from empath.queue.insert import NewMessage
from empath.queue.spool import Spool
from empath.recipients import Existence
from empath.smtp.connection import Connection
from empath.smtp.machine import Policy, Transaction
from empath.smtp.session import Listening, Session
from empath.users import Users


class Pipe:
    """stdin and stdout with the calls Connection makes of a socket. Each waits in
    the gevent hub first, so the connection's timeouts hold."""

    def __init__(self, stdin: int, stdout: int):
        self.stdin = stdin
        self.stdout = stdout

    def recv(self, size: int) -> bytes:
        select.select([self.stdin], [], [])
        return os.read(self.stdin, size)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            select.select([], [self.stdout], [])
            # At most PIPE_BUF at a time: a pipe that is writable takes that much without blocking.
            view = view[os.write(self.stdout, view[: select.PIPE_BUF]) :]

    def close(self) -> None:
        """The descriptors are the process's own: they close when sendmail exits."""


class LocalHost:
    """What a session over stdin and stdout has in place of the daemon's SMTP server."""

    def __init__(self, config: Config, store: Callable[..., None], aliases: Aliases):
        self.config = config
        self.metrics = Metrics()  # counted, never served
        self.plugins = Plugins()
        self.users: Users | None = None
        self.enqueue = store
        self.aliases = aliases
        self.rewriter = rewriter_of(config)
        # Its spool never leaves memory: there is nothing to wait for.
        self.whole_messages: AbstractContextManager[Any] = contextlib.nullcontext()

    def is_trusted(self, address: str) -> bool:
        return True

    # No AUTH is offered on stdin: there is nothing to count.
    def auth_blocked(self, address: str) -> bool:
        return False

    def auth_failed(self, address: str) -> None:
        pass

    # A local program's recipients are taken as given (its policy names no callout domains).
    def verify_recipient(self, address: EmailAddress, trace_id: str) -> Existence:
        return Existence.EXISTS


# The listener a local session is on, for its name: it binds nothing.
STDIN = Listener("stdin", 0, "smtp")


class LocalSession(Session):
    linger = 0.0  # a pipe has nothing to linger over

    def __init__(self, config: Config, user: str, pipe: Pipe, store: Callable[..., None]):
        aliases = alias_tables(config)
        policy = Policy(config.hostname, "smtp", config.limits, aliases.ours, expand=aliases.expand)
        # Connection asks nothing of a socket but recv, sendall and close, which Pipe has.
        conn = Connection(cast(socket.socket, pipe), write_timeout=config.timeouts.command)
        super().__init__(Listening(LocalHost(config, store, aliases), STDIN, policy), conn, client_address="")
        self.origin = submit.LocalUser(user, via="sendmail -bs")

    def _opening(self) -> bool:
        return True  # a program on this host: no pregreet test, no connect plug-ins, no TLS

    def _origin(self, transaction: Transaction) -> submit.Origin:
        return self.origin

    def _new_spool(self) -> Spool:
        return Spool()  # in this process's memory: the message is its user's, sendmail's process their own

    def _envelope(self, transaction: Transaction, data: Spool) -> submit.Envelope:
        # Local mail is taken for what it is, not for what BODY= said (as plain sendmail does).
        envelope = super()._envelope(transaction, data)
        return dataclasses.replace(envelope, body_type="7BIT" if data.isascii() else "8BITMIME")

    def _queued(self, message: NewMessage, signing: dkim.Signing) -> None:
        for line in signing.warnings():
            print(f"sendmail: {line}", file=sys.stderr)
