"""Scriptable SMTP peers on loopback: the next hops of Empath's delivery tests.

A ``Peer`` is a small, strict SMTP server running in plain threads of the
pytest process (which is not gevent-patched). The empath daemon under test is
a separate process that connects to it. Linux routes all of 127.0.0.0/8 to
``lo``, so each peer can have its own address; several peers can share one
port on different addresses, as the daemon uses one remote SMTP port for all
MX hosts::

    from peer import HANG, Peer, start_peers

    with Peer(host="127.0.0.11", certs=certs, users={"relay": "secret"}) as peer:
        peer.rcpt_replies["bob@remote.test"] = "550 5.1.1 no such user"
        peer.final_reply = "451 4.3.0 try later"
        ...  # let the daemon deliver to 127.0.0.11:peer.port
        [t] = peer.wait_for_transactions(1)
        assert t.sender == "alice@local.test" and t.tls
        assert t.rcpt_params("carol@remote.test")["NOTIFY"] == "SUCCESS,FAILURE"
        assert t.data == b"Subject: hi\\r\\n\\r\\n.dot\\r\\n" and t.data_raw.endswith(b"\\r\\n..dot\\r\\n.\\r\\n")
        assert not peer.violations

    primary, backup = start_peers("127.0.0.11", "127.0.0.12")  # same port, both started
    primary.once(greeting="421 4.3.2 busy")  # only its next connection is refused

Settings are plain attributes, read when they are needed, so a test may change
them while the peer runs; ``once(**settings)`` overrides them for the next
connection only (queue several calls for successive connections):

=================== ==========================================================
``hostname``        name in the greeting and the EHLO reply ("peer.test")
``greeting``        "220 {hostname} ESMTP peer" ({hostname} is filled in); a
                    "421 ..." greeting closes at once;
                    "554 ..." then answers 503 to all but QUIT; ``None`` or
                    ``HANG``: accept and never greet (for timeouts)
``extensions``      EHLO keywords offered (PIPELINING, SIZE 10485760,
                    8BITMIME, ENHANCEDSTATUSCODES, SMTPUTF8, DSN); STARTTLS is
                    added when ``starttls`` (default: certs given) and not yet
                    in TLS, AUTH PLAIN LOGIN when ``users`` are given and the
                    session is in TLS (or ``auth_requires_tls`` is false).
                    The SIZE value is enforced (552 5.3.4).
``ehlo_reply``      override of the EHLO reply, e.g. "500 5.5.1 unrecognized"
                    so the client must fall back to HELO; ``helo_reply`` too
``require_tls``     MAIL in clear gets "530 5.7.0 Must issue a STARTTLS first"
``require_auth``    MAIL without AUTH gets "530 5.7.0 Authentication required"
``mail_reply``      the reply to MAIL ("250 2.1.0 sender ok")
``rcpt_reply``      the reply to RCPT for addresses not in ``rcpt_replies``
``rcpt_replies``    dict address -> reply (exact, then lower-cased address)
``data_reply``      the reply to DATA ("354 ..."); anything else ends the
                    transaction there
``final_reply``     the reply after the final dot ("250 2.0.0 ok")
``rset_reply``      the reply to RSET ("250 2.0.0 reset"); the transaction is
                    reset whatever it says
``drop_after_dot``  close right after the final dot, without replying
``fail_at``         ``(command, n, reply)``: at the n-th ``command`` of a
                    connection ("MAIL", "RCPT", "DATA", "." for the final
                    dot, ...) send ``reply`` and close; ``reply=None`` closes
                    without a word; ``reply=HANG`` stops answering but keeps
                    the connection open (for timeouts); e.g.
                    ``("RCPT", 2, "421 4.3.2 bye")``
=================== ==========================================================

Nothing listening means connection refused: use an address with no peer, or
``stop()`` a peer (``start()`` again listens on the same address and port,
and the recording goes on; ``reset()`` forgets it). ``start_peers(*hosts)``
starts one peer per address, all on one free port. A reply may span lines:
"250 2.0.0 first\\nsecond".

Recording, all live: ``connections`` (``Connection``: client address, EHLO
name, TLS, AUTH user, every line the client sent outside DATA exactly as
bytes, the dialogue, RSET/NOOP counts, its transactions), ``transactions``
(``Transaction``: every transaction that reached the final dot, in order:
MAIL line, RCPT lines with parsed parameters and the replies given, the data
exactly as on the wire, still dot-stuffed, up to and including the final
``.\\r\\n`` and unstuffed, the final reply), ``all_transactions`` (every
accepted MAIL, finished or not), ``violations`` (protocol errors by the client,
which tests assert empty: a bare CR or LF anywhere, a line over 1000 octets, a
line starting with one dot in the data (not stuffed), MAIL before EHLO/HELO,
RCPT without MAIL, DATA without MAIL, pipelining when not offered or after a
command that must end a group, bytes sent in clear after STARTTLS, an extension
used but not offered (STARTTLS, AUTH, SIZE=, BODY=, SMTPUTF8, RET/ENVID/NOTIFY/
ORCPT), a non-ASCII address without SMTPUTF8, 8-bit data without BODY=8BITMIME
or SMTPUTF8, unknown commands) and ``errors`` (the peer's own failures, which
tests assert empty too). ``transcript()`` gives every dialogue as text for
assertion messages.

``SmtpSink`` runs Postfix's ``smtp-sink`` (``/usr/sbin/smtp-sink``) as a second,
independent witness: it dumps each finished transaction to a file;
``messages()`` parses them. Skip with ``SMTP_SINK is None`` when it is absent.
"""

import base64
import collections
import contextlib
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from support import free_port, wait_for


class _Hang:
    def __repr__(self) -> str:
        return "HANG"


HANG = _Hang()
"""As a greeting or a ``fail_at`` reply: stop answering, keep the connection open."""

MAX_LINE = 1000  # octets including CRLF (RFC 5321 4.5.3.1.6)
READ_LIMIT = 1 << 20  # a line longer than this without CRLF ends the session
DEFAULT_EXTENSIONS = ("PIPELINING", "SIZE 10485760", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN")
# Commands that must be the last of a pipelined group (RFC 2920 3.1, RFC 3207 4, RFC 4954 4).
_GROUP_ENDERS = {"EHLO", "HELO", "DATA", "VRFY", "EXPN", "NOOP", "QUIT", "STARTTLS", "AUTH"}
# Parameters and the extension that must have been offered for them.
_PARAM_EXTENSION = {
    "SIZE": "SIZE",
    "BODY": "8BITMIME",
    "SMTPUTF8": "SMTPUTF8",
    "RET": "DSN",
    "ENVID": "DSN",
    "NOTIFY": "DSN",
    "ORCPT": "DSN",
    "AUTH": "AUTH",
}
SETTINGS = (
    "hostname",
    "greeting",
    "extensions",
    "starttls",
    "auth_requires_tls",
    "ehlo_reply",
    "helo_reply",
    "require_tls",
    "require_auth",
    "mail_reply",
    "rcpt_reply",
    "rcpt_replies",
    "data_reply",
    "final_reply",
    "rset_reply",
    "drop_after_dot",
    "fail_at",
)


@dataclass
class Rcpt:
    line: bytes  # the RCPT command exactly as received, without CRLF
    address: str
    params: dict[str, str | None]
    reply: str

    @property
    def accepted(self) -> bool:
        return self.reply.startswith("2")


@dataclass
class Transaction:
    """One mail transaction, from an accepted MAIL on."""

    connection: int  # Connection.id
    mail_line: bytes  # exactly as received, without CRLF
    sender: str
    mail_params: dict[str, str | None]
    tls: bool
    auth_user: str | None
    helo_name: str | None
    rcpts: list[Rcpt] = field(default_factory=list)
    data_raw: bytes | None = None  # on the wire: dot-stuffed, through the final ".\r\n"
    data: bytes | None = None  # unstuffed, without the final dot line
    final_reply: str | None = None  # None: no reply (dropped after the dot, or hung)
    complete: bool = False  # the final dot was received

    @property
    def rcpt_lines(self) -> list[bytes]:
        return [r.line for r in self.rcpts]

    @property
    def recipients(self) -> list[str]:
        """The recipients the peer accepted, in order."""
        return [r.address for r in self.rcpts if r.accepted]

    @property
    def accepted(self) -> bool:
        """The peer took responsibility for the message (2xx after the dot)."""
        return bool(self.final_reply and self.final_reply.startswith("2"))

    def rcpt_params(self, address: str) -> dict[str, str | None]:
        """The parameters of the (last) RCPT for ``address``."""
        for r in reversed(self.rcpts):
            if r.address == address:
                return r.params
        raise KeyError(address)


@dataclass
class Connection:
    id: int
    client: tuple[str, int]
    greeting: str | None = None
    helo_verb: str | None = None  # "EHLO" or "HELO", the last accepted
    helo_name: str | None = None
    offered: list[str] = field(default_factory=list)  # EHLO keywords offered last
    tls: bool = False
    tls_version: str | None = None
    tls_error: str | None = None
    auth_user: str | None = None
    auth_attempts: list[tuple[str, str | None, bool]] = field(default_factory=list)  # (mechanism, user, ok)
    lines: list[bytes] = field(default_factory=list)  # every line outside DATA, without CRLF
    log: list[str] = field(default_factory=list)  # "C: ..." / "S: ..."
    transactions: list[Transaction] = field(default_factory=list)
    rset_count: int = 0
    rset_pipelined: int = 0  # RSETs that arrived with more commands behind them in the same read
    noop_count: int = 0
    quit: bool = False
    closed: bool = False
    violations: list[str] = field(default_factory=list)

    @property
    def commands(self) -> list[str]:
        """The command verbs received, upper-cased, in order ("EHLO", "MAIL", ...)."""
        return [line.split(b" ", 1)[0].decode("ascii", "replace").upper() for line in self.lines]


class _Closed(Exception):
    """End of the session."""


def render(reply: str) -> bytes:
    """A reply as sent: "250 text" or "250 first\\nsecond" for a multi-line reply."""
    first, *rest = reply.split("\n")
    code, _, text = first.partition(" ")
    if not re.fullmatch(r"[2-5][0-9][0-9]", code):
        raise ValueError(f"not an SMTP reply: {reply!r}")
    texts = [text, *rest]
    lines = [f"{code}-{t}" for t in texts[:-1]] + [f"{code} {texts[-1]}".rstrip()]
    return "".join(line + "\r\n" for line in lines).encode()


def _parse_path(arg: bytes, prefix: bytes) -> tuple[str, dict[str, str | None], str | None]:
    """(address, parameters, problem) of "FROM:<a> K=V ..." / "TO:<a> ..."."""
    if arg[: len(prefix)].upper() != prefix:
        return "", {}, f"expected {prefix.decode()}"
    rest = arg[len(prefix) :].lstrip(b" ")
    problem = None
    if rest.startswith(b"<") and b">" in rest:
        address, _, params = rest[1:].partition(b">")
    else:
        problem = "path without angle brackets"
        address, _, params = rest.partition(b" ")
    parsed: dict[str, str | None] = {}
    for token in params.split():
        key, eq, value = token.decode("utf-8", "replace").partition("=")
        parsed[key.upper()] = value if eq else None
    return address.decode("utf-8", "replace"), parsed, problem


class Peer:
    """One scriptable SMTP server on ``host``:``port`` (port None: pick a free one)."""

    def __init__(self, host: str = "127.0.0.11", port: int | None = None, certs=None, users: dict | None = None):
        self.host = host
        self.port = port or 0
        self.certs = certs
        self.users = dict(users or {})
        # Settings (see the module docstring).
        self.hostname = "peer.test"
        self.greeting: str | _Hang | None = "220 {hostname} ESMTP peer"
        self.extensions = list(DEFAULT_EXTENSIONS)
        self.starttls = certs is not None
        self.auth_requires_tls = True
        self.ehlo_reply: str | None = None
        self.helo_reply: str | None = None
        self.require_tls = False
        self.require_auth = False
        self.mail_reply = "250 2.1.0 sender ok"
        self.rcpt_reply = "250 2.1.5 recipient ok"
        self.rcpt_replies: dict[str, str] = {}
        self.data_reply = "354 end data with <CR><LF>.<CR><LF>"
        self.final_reply = "250 2.0.0 ok"
        self.rset_reply = "250 2.0.0 reset"
        self.drop_after_dot = False
        self.fail_at: tuple[str, int, str | _Hang | None] | None = None
        # State.
        self._lock = threading.Condition()
        self._once: collections.deque[dict] = collections.deque()
        self._connections: list[Connection] = []
        self._transactions: list[Transaction] = []
        self._all_transactions: list[Transaction] = []
        self.errors: list[str] = []
        self._sessions: dict[int, tuple[threading.Thread, socket.socket]] = {}
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._stopping = False
        self._tls_context: ssl.SSLContext | None = None
        if certs is not None:
            self._tls_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls_context.load_cert_chain(str(certs.cert), str(certs.key))

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "Peer":
        if self._listener is not None:
            raise RuntimeError("peer already started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._stopping = False
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"peer-{self.host}-accept", daemon=True)
        self._acceptor.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection; wait for all threads to end."""
        if self._listener is None:
            return
        self._stopping = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
        self._listener.close()
        self._acceptor.join(timeout)
        with self._lock:
            sessions = list(self._sessions.values())
        for _, control in sessions:
            with contextlib.suppress(OSError):
                control.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv(), TLS or not
        deadline = time.monotonic() + timeout
        for thread, _ in sessions:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._listener = None
        alive = [t.name for t, _ in sessions if t.is_alive()]
        if self._acceptor.is_alive():
            alive.append(self._acceptor.name)
        if alive:
            raise RuntimeError(f"peer threads still running after stop(): {alive}")

    def __enter__(self) -> "Peer":
        return self if self._listener is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def once(self, **settings) -> None:
        """Override settings for the next connection only; successive calls queue up."""
        unknown = set(settings) - set(SETTINGS)
        if unknown:
            raise TypeError(f"unknown peer settings: {sorted(unknown)}")
        with self._lock:
            self._once.append(settings)

    def reset(self) -> None:
        """Forget what was recorded so far (settings are kept)."""
        with self._lock:
            self._connections.clear()
            self._transactions.clear()
            self._all_transactions.clear()
            self.errors.clear()

    # -- what was recorded -------------------------------------------------

    @property
    def connections(self) -> list[Connection]:
        with self._lock:
            return list(self._connections)

    @property
    def transactions(self) -> list[Transaction]:
        """Transactions that reached the final dot, whatever the reply."""
        with self._lock:
            return list(self._transactions)

    @property
    def all_transactions(self) -> list[Transaction]:
        """Every transaction after an accepted MAIL, finished or not."""
        with self._lock:
            return list(self._all_transactions)

    @property
    def delivered(self) -> list[Transaction]:
        """Transactions the peer accepted (2xx after the dot)."""
        return [t for t in self.transactions if t.accepted]

    @property
    def violations(self) -> list[str]:
        return [f"#{c.id}: {v}" for c in self.connections for v in c.violations]

    @property
    def active(self) -> int:
        """Connections open right now."""
        return sum(not c.closed for c in self.connections)

    @property
    def rset_count(self) -> int:
        return sum(c.rset_count for c in self.connections)

    @property
    def noop_count(self) -> int:
        return sum(c.noop_count for c in self.connections)

    def transcript(self) -> str:
        parts = [f"peer {self.host}:{self.port}"]
        for c in self.connections:
            parts.append(f"-- connection #{c.id} from {c.client[0]}:{c.client[1]}")
            parts += c.log
        parts += [f"!! {v}" for v in self.violations] + [f"!! peer error: {e}" for e in self.errors]
        return "\n".join(parts)

    def _wait(self, predicate, timeout: float, what: str):
        try:
            return wait_for(predicate, timeout=timeout, what=what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.transcript()}") from None

    def wait_for_transactions(self, n: int = 1, timeout: float = 10.0) -> list[Transaction]:
        """All transactions that reached the final dot, once there are at least ``n``."""
        return self._wait(_at_least(lambda: self.transactions, n), timeout, f"{n} transaction(s) at {self.host}")

    def wait_for_connections(self, n: int = 1, timeout: float = 10.0) -> list[Connection]:
        return self._wait(_at_least(lambda: self.connections, n), timeout, f"{n} connection(s) at {self.host}")

    def wait_until_idle(self, timeout: float = 10.0) -> None:
        """Wait until every connection so far is closed."""
        self._wait(lambda: self.active == 0, timeout, f"connections at {self.host} to close")

    # -- internals ---------------------------------------------------------

    def _setting(self, overrides: dict, name: str):
        return overrides[name] if name in overrides else getattr(self, name)

    def _accept_loop(self) -> None:
        listener = self._listener
        while True:
            try:
                sock, client = listener.accept()
            except OSError:
                if not self._stopping:
                    self.errors.append(f"accept failed: {traceback.format_exc()}")
                return
            if self._stopping:
                sock.close()
                return
            with self._lock:
                overrides = self._once.popleft() if self._once else {}
                conn = Connection(id=len(self._connections) + 1, client=client[:2])
                self._connections.append(conn)
                session = _Session(self, sock, conn, overrides)
                thread = threading.Thread(target=session.run, name=f"peer-{self.host}-{conn.id}", daemon=True)
                self._sessions[id(session)] = (thread, session.control)
            thread.start()

    def _finished(self, session: "_Session") -> None:
        with self._lock:
            self._sessions.pop(id(session), None)
            self._lock.notify_all()


class _Session:
    """One connection's dialogue, in its own thread."""

    def __init__(self, peer: Peer, sock: socket.socket, conn: Connection, overrides: dict):
        self.peer = peer
        self.sock = sock
        self.control = sock.dup()  # shutdown() through it wakes the thread, even once TLS wraps sock
        self.conn = conn
        self.overrides = overrides
        self.buf = b""
        self.counts: collections.Counter[str] = collections.Counter()
        self.greeted = False
        self.transaction: Transaction | None = None

    def setting(self, name: str):
        return self.peer._setting(self.overrides, name)

    def run(self) -> None:
        try:
            self._dialogue()
        except _Closed:
            pass
        except OSError as e:  # the client went away (ssl.SSLError included), or stop()
            self.conn.log.append(f"-- {type(e).__name__}: {e}")
        except Exception:  # noqa: BLE001 - a bug in the peer must show in peer.errors, not vanish with the thread
            self.peer.errors.append(f"#{self.conn.id}: {traceback.format_exc()}")
        finally:
            self.conn.closed = True
            self.conn.log.append("-- closed")
            for s in (self.sock, self.control):
                with contextlib.suppress(OSError):
                    s.close()
            self.peer._finished(self)

    # -- I/O -----------------------------------------------------------------

    def violation(self, text: str) -> None:
        self.conn.violations.append(text)
        self.conn.log.append(f"!! {text}")

    def send(self, reply: str) -> None:
        self.conn.log.append(f"S: {reply!r}")
        self.sock.sendall(render(reply))

    def read_line(self) -> bytes:
        """One line without its CRLF; only CRLF ends a line."""
        while True:
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line, self.buf = self.buf[:end], self.buf[end + 2 :]
                return line
            if len(self.buf) > READ_LIMIT:
                self.violation(f"no CRLF in {len(self.buf)} octets")
                raise _Closed
            chunk = self.sock.recv(65536)
            if not chunk:
                if self.buf:
                    self.conn.log.append(f"-- client closed after a partial line {self.buf[:200]!r}")
                raise _Closed
            self.buf += chunk

    def check_line(self, line: bytes, where: str) -> None:
        if b"\r" in line or b"\n" in line:
            self.violation(f"bare CR or LF in {where}: {line[:200]!r}")
        if len(line) + 2 > MAX_LINE:
            self.violation(f"{where} line of {len(line) + 2} octets")

    def hang(self) -> None:
        """Answer nothing more; read (and record) until the client or stop() closes."""
        self.conn.log.append("-- hanging")
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise _Closed
            self.conn.log.append(f"C (unanswered): {chunk[:200]!r}")

    def fail(self, reply) -> None:
        if reply is HANG:
            self.hang()
        if reply is not None:
            self.send(reply)
        self.conn.log.append("-- closing (fail_at)")
        raise _Closed

    # -- the dialogue --------------------------------------------------------

    def _dialogue(self) -> None:
        greeting = self.setting("greeting")
        if greeting is None or greeting is HANG:
            self.hang()
        greeting = greeting.replace("{hostname}", self.setting("hostname"))
        self.conn.greeting = greeting
        self.send(greeting)
        if not greeting.startswith("2"):
            if not greeting.startswith("554"):
                raise _Closed
            while True:  # RFC 5321 3.1: wait for QUIT, refuse the rest
                line = self.read_line()
                self.record(line)
                if line.upper() == b"QUIT":
                    self.send("221 2.0.0 bye")
                    raise _Closed
                self.send("503 5.5.1 no service here")
        while True:
            line = self.read_line()
            self.record(line)
            verb, _, arg = line.partition(b" ")
            verb = verb.decode("ascii", "replace").upper()
            self.counts[verb] += 1
            if self.buf and (verb in _GROUP_ENDERS or "PIPELINING" not in self.offered()):
                self.violation(f"pipelined after {verb}: {self.buf[:200]!r}")
            self.check_fail(verb)
            handler = getattr(self, f"cmd_{verb.lower()}", None) if verb.isalpha() else None
            if handler is None:
                self.violation(f"unknown command {line[:100]!r}")
                self.send("500 5.5.2 command not recognized")
            else:
                handler(arg)

    def record(self, line: bytes) -> None:
        self.conn.lines.append(line)
        self.conn.log.append(f"C: {line!r}")
        self.check_line(line, "command")

    def check_fail(self, verb: str) -> None:
        fail_at = self.setting("fail_at")
        if fail_at and fail_at[0].upper() == verb and self.counts[verb] == fail_at[1]:
            self.fail(fail_at[2])

    def offered(self) -> list[str]:
        return [e.split()[0].upper() for e in self.conn.offered if e.split()]

    def size_limit(self) -> int | None:
        for e in self.conn.offered:
            words = e.split()
            if words and words[0].upper() == "SIZE" and len(words) > 1 and words[1].isdigit() and int(words[1]):
                return int(words[1])
        return None

    def reset_transaction(self) -> None:
        self.transaction = None

    def cmd_ehlo(self, arg: bytes) -> None:
        override = self.setting("ehlo_reply")
        if override:
            self.send(override)
            if not override.startswith("2"):
                return
            extensions = override.split("\n")[1:]
        else:
            extensions = list(self.setting("extensions"))
            if self.setting("starttls") and self.peer._tls_context and not self.conn.tls:
                extensions.append("STARTTLS")
            if self.peer.users and (self.conn.tls or not self.setting("auth_requires_tls")):
                extensions.append("AUTH PLAIN LOGIN")
            self.send("\n".join([f"250 {self.setting('hostname')}", *extensions]))
        self.reset_transaction()
        self.greeted = True
        self.conn.helo_verb, self.conn.helo_name = "EHLO", arg.decode("utf-8", "replace")
        self.conn.offered = extensions

    def cmd_helo(self, arg: bytes) -> None:
        override = self.setting("helo_reply")
        self.send(override or f"250 {self.setting('hostname')}")
        if override and not override.startswith("2"):
            return
        self.reset_transaction()
        self.greeted = True
        self.conn.helo_verb, self.conn.helo_name = "HELO", arg.decode("utf-8", "replace")
        self.conn.offered = []

    def cmd_starttls(self, arg: bytes) -> None:
        if "STARTTLS" not in self.offered():
            self.violation("STARTTLS not offered")
            self.send("503 5.5.1 STARTTLS not offered")
            return
        if arg:
            self.send("501 5.5.4 no parameters allowed")
            return
        self.send("220 2.0.0 ready to start TLS")
        if self.buf:
            self.violation(f"clear-text bytes after STARTTLS: {self.buf[:200]!r}")
            self.buf = b""
        tls = self.peer._tls_context.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
        self.sock = tls
        try:
            tls.do_handshake()
        except (OSError, ssl.SSLError) as e:
            self.conn.tls_error = str(e)
            self.conn.log.append(f"-- TLS handshake failed: {e}")
            raise _Closed from None
        self.conn.tls, self.conn.tls_version = True, tls.version()
        self.conn.log.append(f"-- TLS {tls.version()} {tls.cipher()[0]}")
        self.greeted = False
        self.conn.offered = []
        self.reset_transaction()

    def cmd_auth(self, arg: bytes) -> None:
        if "AUTH" not in self.offered():
            self.violation("AUTH not offered" + ("" if self.conn.tls else " (in clear)"))
            self.send("503 5.5.1 AUTH not available")
            return
        if self.conn.auth_user is not None or self.transaction is not None:
            self.violation("AUTH after AUTH or within a transaction")
            self.send("503 5.5.1 AUTH not allowed now")
            return
        mechanism, _, initial = arg.partition(b" ")
        mechanism = mechanism.decode("ascii", "replace").upper()

        def answer(challenge: str, given: bytes = b"") -> str | None:
            if given:
                response = given
            else:
                self.send(f"334 {challenge}".rstrip() if challenge else "334 ")
                response = self.read_line()
                self.record(response)
            if response == b"*":
                return None
            return base64.b64decode(response, validate=True).decode("utf-8")

        try:
            if mechanism == "PLAIN":
                decoded = answer("", initial if initial != b"=" else b"")
                if decoded is None:
                    self.send("501 5.0.0 AUTH cancelled")
                    return
                _, user, password = decoded.split("\0")
            elif mechanism == "LOGIN":
                user = answer("VXNlcm5hbWU6", initial)
                password = None if user is None else answer("UGFzc3dvcmQ6")
                if user is None or password is None:
                    self.send("501 5.0.0 AUTH cancelled")
                    return
            else:
                self.send("504 5.5.4 mechanism not supported")
                return
        except (ValueError, UnicodeDecodeError):
            self.conn.auth_attempts.append((mechanism, None, False))
            self.send("501 5.5.2 cannot decode the response")
            return
        ok = self.peer.users.get(user) == password
        self.conn.auth_attempts.append((mechanism, user, ok))
        if ok:
            self.conn.auth_user = user
            self.send("235 2.7.0 authentication successful")
        else:
            self.send("535 5.7.8 authentication credentials invalid")

    def check_params(self, params: dict, address: str, verb: str) -> None:
        offered = self.offered()
        for key in params:
            needs = _PARAM_EXTENSION.get(key)
            if needs is None or needs not in offered:
                self.violation(f"{verb} parameter {key} not offered")
        if not address.isascii() and "SMTPUTF8" not in self.mail_params():
            self.violation(f"non-ASCII address {address!r} without SMTPUTF8")

    def mail_params(self) -> dict:
        return self.transaction.mail_params if self.transaction else {}

    def cmd_mail(self, arg: bytes) -> None:
        if not self.greeted:
            self.violation("MAIL before EHLO/HELO")
            self.send("503 5.5.1 send EHLO first")
            return
        if self.transaction is not None:
            self.violation("nested MAIL")
            self.send("503 5.5.1 nested MAIL")
            return
        sender, params, problem = _parse_path(arg, b"FROM:")
        if problem:
            self.violation(f"MAIL: {problem}")
            if not sender:
                self.send("501 5.5.4 syntax: MAIL FROM:<address>")
                return
        if self.setting("require_tls") and not self.conn.tls:
            self.send("530 5.7.0 Must issue a STARTTLS command first")
            return
        if self.setting("require_auth") and self.conn.auth_user is None:
            self.send("530 5.7.0 Authentication required")
            return
        transaction = Transaction(
            connection=self.conn.id,
            mail_line=self.conn.lines[-1],
            sender=sender,
            mail_params=params,
            tls=self.conn.tls,
            auth_user=self.conn.auth_user,
            helo_name=self.conn.helo_name,
        )
        self.transaction = transaction
        self.check_params(params, sender, "MAIL")
        limit = self.size_limit()
        size = params.get("SIZE")
        if limit and size and size.isdigit() and int(size) > limit:
            self.transaction = None
            self.send("552 5.3.4 message size exceeds fixed limit")
            return
        reply = self.setting("mail_reply")
        self.send(reply)
        if not reply.startswith("2"):
            self.transaction = None
            return
        self.conn.transactions.append(transaction)
        with self.peer._lock:
            self.peer._all_transactions.append(transaction)

    def cmd_rcpt(self, arg: bytes) -> None:
        if self.transaction is None:
            self.violation("RCPT without MAIL")
            self.send("503 5.5.1 need MAIL first")
            return
        address, params, problem = _parse_path(arg, b"TO:")
        if problem:
            self.violation(f"RCPT: {problem}")
            if not address:
                self.send("501 5.5.4 syntax: RCPT TO:<address>")
                return
        self.check_params(params, address, "RCPT")
        replies = self.setting("rcpt_replies")
        reply = replies.get(address) or replies.get(address.lower()) or self.setting("rcpt_reply")
        self.transaction.rcpts.append(Rcpt(self.conn.lines[-1], address, params, reply))
        self.send(reply)

    def cmd_data(self, arg: bytes) -> None:
        transaction = self.transaction
        if transaction is None:
            self.violation("DATA without MAIL")
            self.send("503 5.5.1 need MAIL first")
            return
        if arg:
            self.send("501 5.5.4 no parameters allowed")
            return
        if not transaction.recipients:
            self.send("554 5.5.1 no valid recipients")  # legitimate after pipelined RCPTs
            return
        reply = self.setting("data_reply")
        self.send(reply)
        if not reply.startswith("3"):
            self.reset_transaction()
            return
        raw = bytearray()
        lines = []
        while True:
            line = self.read_line()
            raw += line + b"\r\n"
            if line == b".":
                break
            self.check_line(line, "data")
            if line.startswith(b".") and not line.startswith(b".."):
                self.violation(f"data line starting with a single dot (not stuffed): {line[:100]!r}")
            lines.append(line[1:] if line.startswith(b".") else line)
        transaction.data_raw = bytes(raw)
        transaction.data = b"".join(line + b"\r\n" for line in lines)
        transaction.complete = True
        self.conn.log.append(f"C: <{len(raw)} octets of data>")
        params = transaction.mail_params
        if (
            not transaction.data.isascii()
            and (params.get("BODY") or "").upper() != "8BITMIME"
            and "SMTPUTF8" not in params
        ):
            self.violation("8-bit data without BODY=8BITMIME or SMTPUTF8")
        self.reset_transaction()
        self.counts["."] += 1
        fail_at = self.setting("fail_at")
        if self.setting("drop_after_dot") or (fail_at and fail_at[0] == "." and fail_at[1] == self.counts["."]):
            self.publish(transaction)
            self.fail(None if self.setting("drop_after_dot") else fail_at[2])
        limit = self.size_limit()
        if limit and len(transaction.data) > limit:
            transaction.final_reply = "552 5.3.4 message size exceeds fixed limit"
        else:
            transaction.final_reply = self.setting("final_reply")
        self.publish(transaction)
        self.send(transaction.final_reply)

    def publish(self, transaction: Transaction) -> None:
        with self.peer._lock:
            self.peer._transactions.append(transaction)
            self.peer._lock.notify_all()

    def cmd_rset(self, arg: bytes) -> None:
        self.conn.rset_count += 1
        if self.buf:
            self.conn.rset_pipelined += 1
        self.reset_transaction()
        self.send(self.setting("rset_reply"))

    def cmd_noop(self, arg: bytes) -> None:
        self.conn.noop_count += 1
        self.send("250 2.0.0 ok")

    def cmd_quit(self, arg: bytes) -> None:
        self.conn.quit = True
        self.send("221 2.0.0 bye")
        raise _Closed

    def cmd_vrfy(self, arg: bytes) -> None:
        self.send("252 2.1.5 cannot verify, send some mail")


def _at_least(get, n: int):
    """A predicate for wait_for: the list ``get()`` once it has ``n`` items."""

    def predicate():
        items = get()
        return items if len(items) >= n else None

    return predicate


def start_peers(*hosts: str, attempts: int = 5, **kwargs) -> list[Peer]:
    """Started peers on ``hosts``, all on one free port (``kwargs`` go to each Peer)."""
    for _ in range(attempts):
        peers: list[Peer] = []
        try:
            for host in hosts:
                peers.append(Peer(host=host, port=peers[0].port if peers else None, **kwargs).start())
            return peers
        except OSError:  # the port of the first was taken on another address: pick again
            for p in peers:
                p.stop()
    raise RuntimeError(f"no port free on all of {hosts}")


# -- smtp-sink ---------------------------------------------------------------

SMTP_SINK = shutil.which("smtp-sink") or next(
    (p for p in ("/usr/sbin/smtp-sink", "/usr/bin/smtp-sink") if os.access(p, os.X_OK)), None
)


@dataclass
class SinkMessage:
    """One transaction as smtp-sink dumped it: lines end in LF, CRs and stuffing dots removed."""

    path: Path
    client_addr: str
    helo: str | None
    mail_args: str  # "<a@b> SIZE=12 ..." as sent after "MAIL FROM:"
    rcpt_args: list[str]  # "<c@d> NOTIFY=..." for each RCPT, in order
    content: bytes

    @property
    def sender(self) -> str:
        return self.mail_args.split(">", 1)[0].lstrip("<")

    @property
    def recipients(self) -> list[str]:
        return [a.split(">", 1)[0].lstrip("<") for a in self.rcpt_args]


class SmtpSink:
    """Postfix's smtp-sink on ``host``:``port``, dumping each message to a file in ``directory``.

    It accepts everything (no STARTTLS, no SIZE, no SMTPUTF8; AUTH, XCLIENT
    and XFORWARD are turned off by the default ``args``). Its dump keeps every
    RCPT's parameters but rewrites the content (LF line ends, every CR
    dropped), so compare it with ``Transaction.data.replace(b"\\r\\n", b"\\n")``.
    """

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int | None = None, args=("-a", "-C", "-F")):
        if SMTP_SINK is None:
            raise RuntimeError("smtp-sink is not installed (Debian package postfix)")
        self.directory = Path(directory)
        self.host = host
        self.port = port or free_port(host)
        self.args = list(args)
        self.dump_dir = self.directory / "dump"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> "SmtpSink":
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        command = [SMTP_SINK, *self.args]
        if os.geteuid() == 0:
            # Root must name a user to switch to; chroot into the dump directory so
            # that user needs no access to the (private) directories above it.
            user = "nobody"
            pw = pwd.getpwnam(user)
            os.chown(self.dump_dir, pw.pw_uid, pw.pw_gid)
            command += ["-u", user, "-R", str(self.dump_dir), "-d", "/msg."]
        else:
            command += ["-d", f"{self.dump_dir}/msg."]
        command += [f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}", "64"]
        self._stderr = (self.directory / "smtp-sink.stderr").open("wb")
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr)
        try:
            wait_for(self._ready, timeout=timeout, what=f"smtp-sink on {self.host}:{self.port}")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            err = (self.directory / "smtp-sink.stderr").read_text(errors="replace")
            raise AssertionError(f"smtp-sink exited with {self.proc.returncode}: {err}")
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as s:
                f = s.makefile("rb")
                if not f.readline().startswith(b"220"):
                    return False
                s.sendall(b"QUIT\r\n")
                f.readline()
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None:
            self._stderr.close()

    def __enter__(self) -> "SmtpSink":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _open_inodes(self) -> set[tuple[int, int]]:
        """Files smtp-sink holds open: transactions still in progress."""
        found = set()
        fd_dir = Path(f"/proc/{self.proc.pid}/fd")
        with contextlib.suppress(FileNotFoundError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    st = os.stat(fd)
                    found.add((st.st_dev, st.st_ino))
        return found

    def messages(self) -> list[SinkMessage]:
        """Finished transactions, oldest first (a file still open in smtp-sink is not finished)."""
        paths = sorted(self.dump_dir.glob("msg.*"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        open_now = self._open_inodes() if self.proc is not None and self.proc.poll() is None else set()
        result = []
        for path in paths:
            try:
                st = path.stat()
                if (st.st_dev, st.st_ino) in open_now:
                    continue
                result.append(_parse_sink_dump(path, path.read_bytes()))
            except FileNotFoundError:  # an aborted transaction, removed by smtp-sink
                continue
        return result

    def wait_for_messages(self, n: int = 1, timeout: float = 10.0) -> list[SinkMessage]:
        return wait_for(_at_least(self.messages, n), timeout, what=f"{n} message(s) in smtp-sink")


def _parse_sink_dump(path: Path, dump: bytes) -> SinkMessage:
    headers = {"X-Client-Addr": "", "X-Helo-Args": None, "X-Mail-Args": ""}
    rcpts = []
    rest = dump
    while rest:
        line, _, rest = rest.partition(b"\n")
        name, _, value = line.decode("utf-8", "replace").partition(": ")
        if name == "X-Rcpt-Args":
            rcpts.append(value)
        elif name == "Received":
            # Two continuation lines ("\tby ...", "\t<date>") end smtp-sink's own headers.
            for _ in range(2):
                _, _, rest = rest.partition(b"\n")
            break
        else:
            headers[name] = value
    # smtp-sink writes the LF of the final ".\r\n" as one more, empty, line.
    content = rest[:-1] if rest.endswith(b"\n") else rest
    return SinkMessage(path, headers["X-Client-Addr"], headers["X-Helo-Args"], headers["X-Mail-Args"], rcpts, content)
