"""``sendmail -bs``: an SMTP dialogue on stdin and stdout, as PHP mailers and
some mail clients speak it to /usr/sbin/sendmail.

The listeners' own parts do the work: the protocol machine (smtp/machine.py)
decides every reply, the connection (smtp/connection.py) reads lines with its
hard limit and flushes replies before each read (so pipelined commands are
answered together), and the DATA reader (smtp/data.py) reads the message.
The client is the local user, trusted as plain sendmail is: any recipient,
no AUTH or STARTTLS to offer. Each message is written to the queue database
before its 250, as plain sendmail writes it, and the daemon is nudged; input
that ends inside a message queues nothing of it.
"""

import contextlib
import os
import signal
import socket
import sys
import time
import uuid
from typing import cast

import gevent
from gevent import select

from empath.cmd.sendmail import EX_OK, EX_PROTOCOL, EX_SOFTWARE, EX_TEMPFAIL, enqueue, nudge, warn_unsigned
from empath.config import Config
from empath.message import submit
from empath.queue import ids
from empath.smtp import replies
from empath.smtp.connection import Connection, ConnectionClosed
from empath.smtp.data import DataReader
from empath.smtp.machine import Action, Machine, Policy, Step


class Pipe:
    """stdin and stdout with the two calls Connection makes of a socket. Each
    waits in the gevent hub first, so the connection's timeouts hold."""

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


def serve(config: Config, user: str, stdin: int = 0, stdout: int = 1) -> int:
    """Run one dialogue to its end; the sendmail exit code."""
    return LocalSession(config, user, Pipe(stdin, stdout)).run()


class LocalSession:
    def __init__(self, config: Config, user: str, pipe: Pipe):
        self.config = config
        self.origin = submit.LocalUser(user, via="sendmail -bs")
        self.trace_id = uuid.uuid4().hex
        # Connection asks nothing of a socket but recv and sendall, which Pipe has.
        self.conn = Connection(cast(socket.socket, pipe), write_timeout=config.timeouts.command)
        policy = Policy(config.hostname, "smtp", config.limits, config.local_domains)
        self.machine = Machine(policy, client_address="", trusted=True)
        self._body = b""

    def run(self) -> int:
        try:
            self._serve()
        except (ConnectionClosed, BrokenPipeError):
            if self.machine.envelope is not None:
                print("sendmail: the input ended inside a mail transaction; it was not queued", file=sys.stderr)
                return EX_PROTOCOL
        except gevent.Timeout:
            self._last_words(replies.TIMEOUT)
            print("sendmail: timed out waiting for the client", file=sys.stderr)
            return EX_TEMPFAIL
        except Exception as exc:  # noqa: BLE001 - a bug ends the dialogue with a reply and one line, not a traceback
            self._last_words(replies.INTERNAL_ERROR)
            print(f"sendmail: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EX_SOFTWARE
        return EX_OK

    def _last_words(self, reply: replies.Reply) -> None:
        self.conn.send(reply.render())
        with contextlib.suppress(OSError, gevent.Timeout):  # the client is gone or stuck: the exit code says so
            self.conn.flush()

    def _serve(self) -> None:
        self.conn.send(self.machine.greeting().render(enhanced=False))
        while True:
            line, overflow = self.conn.read_line(self.config.limits.line_length, self.config.timeouts.command)
            if overflow:
                step = self.machine.line_too_long()
            elif not line.endswith(b"\r\n"):
                step = self.machine.bare_lf()
            else:
                step = self.machine.handle(line[:-2])
            if not self._perform(step):
                return

    def _perform(self, step: Step) -> bool:
        """Send the step's replies and run its action; False when the dialogue is over."""
        for reply in step.replies:
            self.conn.send(reply.render(enhanced=bool(reply.status)))
        if step.action is Action.CLOSE:
            self.conn.flush()
            return False
        if step.action is Action.READ_DATA:
            return self._perform(self._read_data())
        if step.action is Action.ENQUEUE:
            return self._perform(self._enqueue())
        # No TLS, AUTH or plug-ins are offered here, so the machine asks for nothing else.
        assert step.action is Action.NONE, step.action
        return True

    def _read_data(self) -> Step:
        limits = self.config.limits
        reader = DataReader(limits.max_message_size, limits.text_line_length, limits.max_received_headers)
        while True:
            line, overflow = self.conn.read_line(limits.text_line_length + 2, self.config.timeouts.data)
            if reader.feed(line, overflow):
                break
        self._body = bytes(reader.body) if reader.error is None else b""
        return self.machine.data_end(reader.error, reader.fatal)

    def _enqueue(self) -> Step:
        transaction = self.machine.envelope
        assert transaction is not None
        data, self._body = self._body, b""
        now = time.time()
        queue_id = ids.new_id(now)
        # Local mail is taken for what it is, not for what BODY= said (as plain sendmail does).
        envelope = submit.smtp_envelope(transaction, "7BIT" if data.isascii() else "8BITMIME")
        message, signing = submit.compose(self.config, self.origin, envelope, data, queue_id, now, self.trace_id)
        try:
            enqueue(self.config, message)
        except Exception as exc:  # noqa: BLE001 - sqlite errors too: a 451 and one line, not a traceback
            print(f"sendmail: cannot queue the message in {self.config.database_path}: {exc}", file=sys.stderr)
            return self.machine.queue_failed(replies.QUEUE_FAILURE)
        warn_unsigned(signing)
        nudge(self.config, signal.SIGUSR2)
        return self.machine.queued(queue_id)
