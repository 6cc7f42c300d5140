"""The listeners: accept connections, enforce connection limits, run sessions
here or hand them to an SMTP helper process."""

import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import gevent
import gevent.lock
import gevent.pool
from gevent.server import StreamServer

from empath import recipients, senders
from empath.addresses import EmailAddress
from empath.config import Config, Listener
from empath.config.files import alias_tables, rewriter_of
from empath.log import event
from empath.metrics import Metrics
from empath.plugins.loader import Plugins
from empath.queue.database import free_space
from empath.queue.insert import NewMessage
from empath.queue.store import Queue
from empath.smtp import admission, replies
from empath.smtp.anvil import Anvil
from empath.smtp.connection import Connection
from empath.smtp.machine import Policy
from empath.smtp.relay import is_trusted
from empath.smtp.session import Listening, Session, Shutdown
from empath.users import Users

log = logging.getLogger("empath.smtp")


def tls_context(config: Config, listener: Listener) -> ssl.SSLContext | None:
    """The listener's server context: TLS 1.2 and up, unless it is a listener for old devices."""
    if config.tls_certificate is None or config.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = TLS_MINIMUM[listener.tls_min_version]
    if listener.tls_ciphers is not None:
        ctx.set_ciphers(listener.tls_ciphers)
    elif listener.tls_min_version in ("1.0", "1.1"):
        # OpenSSL 3 offers no cipher to TLS 1.0 and 1.1 above security level 0.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(str(config.tls_certificate), str(config.tls_key))
    return ctx


TLS_MINIMUM = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


class RecipientVerifier(Protocol):
    """Who asks a local domain's next hop whether a recipient exists (delivery/verify.py)."""

    def verify(self, address: EmailAddress, trace_id: str) -> recipients.Existence:
        """The answer, from the cache or the next hop, within the configured timeout."""

    def reconfigure(self, config: Config) -> None:
        """Put a reloaded config in force."""


class Handover(Protocol):
    """Somewhere else to serve a session: the SMTP helper processes (smtp/procs/pool.py)."""

    def serve(self, listener: str, sock: socket.socket, client: str, stressed: bool) -> str | None:
        """Serve the connection to its end and say how it ended; None if it could not be
        handed over (no helper ready): then this process serves it."""

    def sessions(self) -> list[dict[str, Any]]:
        """What `empathctl connections` shows of the sessions served there."""


@dataclass
class SmtpServer:
    config: Config
    queue: Queue
    tls_contexts: dict[str, ssl.SSLContext | None] = field(default_factory=dict)  # by listener name
    users: Users | None = None
    sessions: gevent.pool.Group = field(default_factory=gevent.pool.Group)
    active: set[Session] = field(default_factory=set)  # what `empathctl connections` lists
    listening: list[Listening] = field(default_factory=list)
    streams: list[StreamServer] = field(default_factory=list)
    per_client: Counter = field(default_factory=Counter)  # sessions open by client address
    strangers: Counter = field(default_factory=Counter)  # untrusted sessions open by pool (admission.py)
    under_stress: bool = False
    anvil: Anvil = field(default_factory=Anvil)
    whole_messages: gevent.lock.BoundedSemaphore = field(default_factory=lambda: gevent.lock.BoundedSemaphore(1))
    # Told of each wrong password, with its address and time: the daemon tells its
    # helpers, a helper its daemon, so that every process counts every failure.
    on_auth_failed: Callable[[str, float], None] = lambda address, when: None
    accepting: bool = True
    metrics: Metrics = field(default_factory=Metrics)
    plugins: Plugins = field(default_factory=Plugins)
    helpers: Handover | None = None  # the SMTP helper processes sessions are handed to, if any
    verifier: RecipientVerifier | None = None  # asks the next hop of the domains verified by callout

    def __post_init__(self) -> None:
        self.tls_contexts = _tls_contexts(self.config)
        if self.config.users_file is not None:
            self.users = Users(self.config.users_file)
        self.recipients = _recipient_tables(self.config, {})
        self.senders = _senders(self.config, None)
        self.aliases = alias_tables(self.config)
        self.rewriter = rewriter_of(self.config)

    def recipient_exists(self, address: str, domain: str) -> bool | None:
        """Is ``address`` in its domain's recipients table? None: the domain has none."""
        table = self.recipients.get(domain)
        return None if table is None else table.has(address)

    def may_send_as(self, user: str, sender: str) -> bool:
        table = self.senders.current() if self.senders is not None else {}
        return senders.may_send_as(user, sender, table, self.config.local_domains)

    def verify_recipient(self, address: EmailAddress, trace_id: str) -> recipients.Existence:
        assert self.verifier is not None  # the machine asks only for callout_domains, which need it
        return self.verifier.verify(address, trace_id)

    def is_trusted(self, address: str) -> bool:
        return is_trusted(address, self.config.trusted_networks)

    def enqueue(self, *messages: NewMessage) -> None:
        self.queue.enqueue(*messages)

    def auth_blocked(self, address: str) -> bool:
        limits = self.config.limits
        until = self.anvil.auth_blocked_until(
            address, time.time(), limits.auth_failures_per_client, limits.auth_failure_window
        )
        return until is not None

    def auth_failed(self, address: str) -> None:
        now = time.time()
        self.note_auth_failure(address, now)
        self.on_auth_failed(address, now)

    def note_auth_failure(self, address: str, when: float) -> None:
        """A wrong password from ``address``, in this process or another."""
        self.anvil.auth_failed(address, when, self.config.limits.auth_failure_window)

    def storage_available(self, size: int) -> bool:
        """Postfix's rule: keep room for the message and half again, and the configured floor."""
        need = max(self.config.queue.min_free_space, size + size // 2)
        try:
            return free_space(self.config.data_dir) >= need
        except OSError:
            return False

    def policy(self, listener: Listener) -> Policy:
        c = self.config
        return Policy(
            hostname=c.hostname,
            mode=listener.mode,
            limits=c.limits,
            local_domains=self.aliases.ours,
            tls_available=self.tls_contexts.get(listener.name) is not None,
            require_auth=listener.require_auth,
            auth_available=self.users is not None,
            storage_available=self.storage_available,
            recipient_exists=self.recipient_exists,
            callout_domains=frozenset(d for d, p in c.domains.items() if p.callout and self.verifier is not None),
            sender_ownership=listener.sender_ownership,
            may_send_as=self.may_send_as,
            expand=self.aliases.expand,
        )

    def _listening(self, listener: Listener) -> Listening:
        return Listening(self, listener, self.policy(listener), self.tls_contexts.get(listener.name))

    def adopt_listeners(self) -> None:
        """The listeners' settings without their sockets: a helper process serves sessions the daemon accepted."""
        self.listening = [self._listening(listener) for listener in self.config.listeners]

    def start(self) -> None:
        """Bind every listener; raise OSError naming the address if one cannot be bound."""
        for listener in self.config.listeners:
            listening = self._listening(listener)
            family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((listener.host, listener.port))
            except OSError as exc:
                sock.close()
                self.stop_listening()
                raise OSError(exc.errno, f"cannot listen on {listener.name}: {exc.strerror}") from None
            sock.listen(1024)
            stream = StreamServer(sock, lambda s, a, ln=listening: self._accept(ln, s, a))
            stream.start()
            self.streams.append(stream)
            self.listening.append(listening)
            self.metrics.listener(listener.name)
            event(log, "listening", listener=listener.name)

    def _accept(self, listening: Listening, sock: socket.socket, address: tuple) -> None:
        """Runs in the connection's own greenlet (StreamServer spawns it)."""
        client = address[0]
        name = listening.listener.name
        limits = self.config.limits
        trusted = self.is_trusted(client)
        pool = admission.pool_of(listening.listener.mode)
        networks = listening.listener.networks
        if not self.accepting:
            refusal: replies.Reply | None = replies.SHUTTING_DOWN
        elif networks and not is_trusted(client, networks):
            refusal = replies.NOT_FROM_HERE  # a listener for the LAN's old devices, say
        else:
            too_fast = not trusted and not self.anvil.connect(client, time.time(), limits.connection_rate_per_client)
            refusal = admission.refusal(limits, trusted, pool, self.strangers, self.per_client[client], too_fast)
        if refusal is not None:
            event(
                log,
                "reject",
                command="CONNECT",
                client=client,
                code=refusal.code,
                dsn=refusal.status,
                reply=refusal.text,
                listener=name,
            )
            conn = Connection(sock, self.config.timeouts.command)
            conn.send(refusal.render())
            conn.close(linger=0.5)
            self.metrics.connections.labels(name, "refused").inc()
            return
        self.per_client[client] += 1
        if not trusted:
            self.strangers[pool] += 1
        stressed = self._stress_check()
        self.sessions.add(gevent.getcurrent())
        self.metrics.connections_open.labels(name).inc()
        outcome = "error"
        try:
            handed = self.helpers.serve(name, sock, client, stressed) if self.helpers is not None else None
            outcome = handed if handed is not None else self.run_session(listening, sock, client, stressed)
        finally:
            self.metrics.connections_open.labels(name).dec()
            self.metrics.connections.labels(name, outcome_label(outcome)).inc()
            self.sessions.discard(gevent.getcurrent())
            _count_down(self.per_client, client)
            if not trusted:
                _count_down(self.strangers, pool)
            self._stress_check()

    def _stress_check(self) -> bool:
        """Are the strangers' slots short? Says so in the log and the metrics when that changes."""
        stressed = admission.stressed(self.config.limits, self.strangers)
        if stressed != self.under_stress:
            self.under_stress = stressed
            self.metrics.stress.set(int(stressed))
            # How full each strangers' pool is: "95/100".
            pools = {
                pool: f"{self.strangers.get(pool, 0)}/{cap}" for pool, cap in admission.caps(self.config.limits).items()
            }
            event(
                log,
                "stress",
                level=logging.WARNING if stressed else logging.INFO,
                state="start" if stressed else "end",
                **pools,
            )
        return stressed

    def run_session(self, listening: Listening, sock: socket.socket, client: str, stressed: bool = False) -> str:
        """Serve one accepted connection in this process; how it ended."""
        session = Session(listening, Connection(sock, self.config.timeouts.command), client, stressed)
        self.active.add(session)
        try:
            return session.run()
        finally:
            self.active.discard(session)

    def reconfigure(self, config: Config) -> None:
        """Put a reloaded config in force for the sessions that start from now on."""
        # First what may fail (a table read anew), so that a failure changes nothing.
        tables = _recipient_tables(config, self.recipients)
        owners = _senders(config, self.senders)
        aliases = alias_tables(config)
        rewriter = rewriter_of(config)
        self.config = config
        self.tls_contexts = _tls_contexts(config)
        if config.users_file != (self.users.path if self.users is not None else None):
            self.users = Users(config.users_file) if config.users_file is not None else None
        self.recipients = tables
        self.senders = owners
        self.aliases = aliases
        self.rewriter = rewriter
        if self.verifier is not None:
            self.verifier.reconfigure(config)
        for listening in self.listening:
            listening.policy = self.policy(listening.listener)
            listening.tls_context = self.tls_contexts.get(listening.listener.name)

    def describe_sessions(self) -> list[dict[str, Any]]:
        """What `empathctl connections` shows of each session, oldest first, helpers' included."""
        now = time.time()
        rows = [self.describe(session, now) for session in self.active]
        if self.helpers is not None:
            rows += self.helpers.sessions()
        return sorted(rows, key=lambda row: -row["age"])

    def stop_listening(self) -> None:
        self.accepting = False
        for stream in self.streams:
            stream.close()

    def drain(self, grace: float) -> None:
        """End idle sessions with 421 now; let those in a transaction finish it for
        ``grace`` seconds, then end the rest with 421."""
        for session in list(self.active):
            session.end_when_idle()
        self.sessions.join(timeout=grace)
        if len(self.sessions):
            log.warning("ending %d session(s) still open after %gs", len(self.sessions), grace)
            self.sessions.kill(exception=Shutdown, block=True, timeout=10)

    def describe(self, session: Session, now: float) -> dict[str, Any]:
        """What `empathctl connections` shows of one session."""
        window = self.config.limits.auth_failure_window
        return {
            "client": session.client,
            "listener": session.listening.listener.name,
            "state": session.machine.state.value,
            "tls": session.conn.tls_version,
            "helo": session.machine.helo,
            "user": session.machine.auth_user,
            "age": round(now - session.started, 1),
            "trace_id": session.trace_id,
            "stressed": session.stressed,
            "auth_failures": self.anvil.auth_failures(session.client, now, window),  # the address's, lately
        }


def _recipient_tables(config: Config, current: dict[str, recipients.Table]) -> dict[str, recipients.Table]:
    """The recipients table of each local domain that has one: those of ``current`` whose
    file is the same (each re-reads itself when it changes, keeping its last good table),
    the others read now (--check read them first; watched.FileError if one went bad)."""
    known = {table.path: table for table in current.values()}
    return {
        domain: known.get(policy.recipients) or recipients.Table(policy.recipients)
        for domain, policy in config.domains.items()
        if policy.recipients is not None
    }


def _tls_contexts(config: Config) -> dict[str, ssl.SSLContext | None]:
    return {listener.name: tls_context(config, listener) for listener in config.listeners}


def _senders(config: Config, current: senders.Senders | None) -> senders.Senders | None:
    """The senders table, kept if its file is the same (it re-reads itself), else read now."""
    path = config.senders_file
    if path is None:
        return None
    return current if current is not None and current.path == path else senders.Senders(path)


def _count_down(counter: Counter, key: str) -> None:
    counter[key] -= 1
    if not counter[key]:
        del counter[key]


def outcome_label(outcome: str) -> str:
    """A session's outcome as a bounded label value (metrics.OUTCOMES)."""
    label = outcome.replace(" ", "_")
    return label if label in ("closed", "client_hung_up", "timeout", "shutdown") else "error"
