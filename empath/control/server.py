"""The daemon's end of the control socket: one greenlet per connection.

A connection sends request lines and gets one reply line for each. Reads and
writes time out, lines are capped (``protocol.MAX_LINE``), and there are at
most ``MAX_CONNECTIONS`` at once, so a stuck or hostile client holds one
greenlet for a while and nothing else; no request can take the daemon or
its SMTP service down with it. Every action that changes something is
written to the audit log: who (the token's name, or the peer's uid), the
verb, its arguments and the result.
"""

import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import gevent.pool
from gevent.server import StreamServer

from empath.control import audit, protocol, sockfile, tokens
from empath.control.protocol import ProtocolError, Request, VerbError

log = logging.getLogger("empath.control")

MAX_CONNECTIONS = 16
TIMEOUT = 30.0  # seconds a client may take to send a request, or to read its reply


@dataclass(frozen=True)
class Caller:
    pid: int
    uid: int
    token: tokens.Token | None = None

    @property
    def who(self) -> str:
        return f"token:{self.token.name}" if self.token is not None else f"uid:{self.uid}"


Handler = Callable[[Request], Any]


class ControlServer:
    def __init__(
        self,
        path: Path,
        group: str | None,
        known_tokens: tuple[tokens.Token, ...] | None,
        handle: Handler,
    ):
        self.path = path
        self.group = group
        self.tokens = known_tokens  # None: no tokens file, the socket's permissions decide
        self.handle = handle
        self.connections = gevent.pool.Group()
        self._bound: sockfile.Bound | None = None
        self._stream: StreamServer | None = None

    def bind(self) -> None:
        """Make the socket (clients wait in its backlog until ``serve``); raises SocketFileError."""
        self._bound = sockfile.bind(self.path, self.group)

    def serve(self) -> None:
        assert self._bound is not None
        self._stream = StreamServer(self._bound.sock, self._serve, spawn=self.connections.spawn)
        self._stream.start()

    def stop(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self.connections.kill(block=True, timeout=2)
        if self._bound is not None:
            sockfile.unbind(self._bound)
            self._bound = None

    # -- one connection ---------------------------------------------------------------

    def _serve(self, sock: socket.socket, _address: Any) -> None:
        sock.settimeout(TIMEOUT)
        try:
            if len(self.connections) > MAX_CONNECTIONS:
                sock.sendall(protocol.error(f"too many control connections (at most {MAX_CONNECTIONS}); try again"))
                return
            pid, uid, _ = sockfile.peer(sock)
            reader = LineReader(sock)
            while True:
                # A deadline for the whole line, not each read: a client trickling
                # a byte at a time holds its slot no longer than one that sends nothing.
                with gevent.Timeout(TIMEOUT, TimeoutError):
                    line = reader.line()
                if line is None:
                    return
                if line.strip():
                    sock.sendall(self.answer(line, Caller(pid, uid)))
        except LineTooLong:
            _send_quietly(sock, protocol.error(f"request longer than {protocol.MAX_LINE} bytes; closing"))
        except TimeoutError:
            _send_quietly(sock, protocol.error(f"no complete request within {TIMEOUT:g}s; closing"))
        except OSError:
            pass  # the client went away
        finally:
            sock.close()

    def answer(self, line: bytes, caller: Caller) -> bytes:
        """The reply line to one request line."""
        try:
            request = protocol.parse(line)
        except ProtocolError as exc:
            return protocol.error(str(exc))
        verb = protocol.VERBS[request.verb]
        try:
            caller = self._authorize(request, caller)
        except VerbError as exc:
            audit.denied(caller.who, request.verb, str(exc))
            return protocol.error(str(exc))
        try:
            result = self.handle(request)
        except VerbError as exc:
            if verb.mutating:
                audit.action(caller.who, caller.uid, request.verb, request.args, f"refused: {exc}")
            return protocol.error(str(exc))
        except Exception as exc:  # a bug fails this request, never the daemon
            log.exception("control request %s failed", request.verb)
            if verb.mutating:
                audit.action(caller.who, caller.uid, request.verb, request.args, f"failed: {exc}")
            return protocol.error(f"{request.verb} failed: {exc}")
        if verb.mutating:
            audit.action(caller.who, caller.uid, request.verb, request.args, audit.summary(result))
        return protocol.ok(result)

    def _authorize(self, request: Request, caller: Caller) -> Caller:
        if self.tokens is None:
            return caller
        if request.token is None:
            raise VerbError("this daemon wants a token: empathctl --token-file FILE, or EMPATH_TOKEN")
        token = tokens.find(self.tokens, request.token)
        if token is None:
            raise VerbError("the token is not known to this daemon")
        caller = Caller(caller.pid, caller.uid, token)
        needed = protocol.scope_of(request)
        if not tokens.allows(token.scope, needed):
            raise VerbError(f"{request.verb} needs the {needed} scope; the token {token.name} has {token.scope}")
        return caller


class LineTooLong(Exception):
    pass


class LineReader:
    """Request lines from a socket, each at most protocol.MAX_LINE bytes."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = b""

    def line(self) -> bytes | None:
        """The next line without its newline; None once the client has closed its side
        (a last line without a newline counts). Raises LineTooLong past the cap."""
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line, self.buffer = self.buffer[:end], self.buffer[end + 1 :]
                return line
            if len(self.buffer) >= protocol.MAX_LINE:
                raise LineTooLong
            chunk = self.sock.recv(65536)
            if not chunk:
                line, self.buffer = self.buffer, b""
                return line or None
            self.buffer += chunk


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the client is gone or stuck: nothing more to tell it
        sock.sendall(data)
