"""Deliver one job: the recipients of one message that share a route.

Find the next hop's addresses, try them in order until one takes the
transaction, and turn every reply into a per-recipient Result. The courier
decides nothing about time: the retry schedule and the expiry are applied
by the caller with the clock it is given.
"""

import dataclasses
import functools
import ipaddress
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from empath.addresses import EmailAddress
from empath.config import Config
from empath.config.model import NextHop
from empath.delivery import client
from empath.delivery.client import Connection, OutboundEnvelope, OutboundRecipient, SmtpError
from empath.delivery.connections import ConnectionPool
from empath.delivery.content import Content
from empath.delivery.dns import DnsError, Resolver
from empath.delivery.routing import Route
from empath.plugins import runner
from empath.plugins.api import Context
from empath.plugins.loader import Plugins
from empath.queue.claims import Claimed, Loaded
from empath.queue.states import State
from empath.smtp.replies import Reply

# The steps before a transaction: failing one says nothing about the message.
CONNECTION_STEPS = ("connect", "greeting", "EHLO", "HELO", "STARTTLS", "AUTH")
T = TypeVar("T")


@dataclass(frozen=True)
class Candidate:
    host: str  # the name, for logs, Remote-MTA and certificate checks
    address: str
    port: int

    def __str__(self) -> str:
        """As a connection to it is named: ``host[address]:port``."""
        return f"{self.host}[{self.address}]:{self.port}"


@dataclass(frozen=True)
class Verdict:
    """What happened to one recipient in one attempt."""

    address: EmailAddress
    kind: State  # delivered, deferred or bounced
    status: str
    reply: str
    remote: str | None = None
    relayed: bool = False


@dataclass(frozen=True)
class Outcome:
    verdicts: tuple[Verdict, ...]
    connected: bool | None  # did a host take a session? None: none was tried (for the circuit breaker)
    relay: str | None  # host[address]:port of the host that took the transaction
    tls: bool | None = None  # did the transaction run over TLS? None: no transaction


class Loop(Exception):
    pass


def source_problems(config: Config) -> list[tuple[str, str]]:
    """Each source_address the config names that is not an address of this host (and so
    cannot be bound): what --check and a reload say, by key."""
    named = [("delivery.source_address", config.delivery.defaults.source_address)]
    named += [(f"domains.{d}.source_address", p.source_address) for d, p in config.domains.items()]
    if config.smarthost is not None:
        named.append(("smarthost.source_address", config.smarthost.source_address))
    return [
        (key, f"{address} is not an address of this host: mail cannot be sent from it")
        for key, sources in named
        for address in sources
        if not _local_address(address)
    ]


def _local_address(address: str) -> bool:
    """Is ``address`` one of this host's? Only a local address can be bound."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
    except OSError:
        return False
    return True


def tls_contexts(ca_file: str | None) -> dict[str, ssl.SSLContext]:
    """Client contexts by policy. Opportunistic and required encrypt without
    checking the certificate (as Postfix's 'may' and 'encrypt'); verify checks
    the chain and the name."""
    unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE
    unverified.minimum_version = ssl.TLSVersion.TLSv1_2
    verified = ssl.create_default_context(cafile=ca_file)
    verified.minimum_version = ssl.TLSVersion.TLSv1_2
    return {"opportunistic": unverified, "required": unverified, "verify": verified}


class Courier:
    def __init__(
        self,
        config: Config,
        resolver: Resolver,
        pool: ConnectionPool,
        credentials: tuple[str, str] | None = None,
        plugins: Plugins | None = None,
        timeouts: client.ClientTimeouts | None = None,
    ):
        self.config = config
        self.resolver = resolver
        self.pool = pool
        self.credentials = credentials
        self.plugins = plugins or Plugins()
        d = config.delivery
        self.timeouts = timeouts or client.ClientTimeouts(d.connect_timeout, d.command_timeout, d.data_timeout)
        self.contexts = tls_contexts(str(d.tls_ca_file) if d.tls_ca_file else None)
        self.own = {(ln.host, ln.port) for ln in config.listeners}

    def deliver(self, route: Route, message: Loaded, body: Content, recipients: list[Claimed]) -> Outcome:
        """The before_delivery plug-ins first: they may bounce or defer recipients; the rest go."""
        held = self._plugin_verdicts(route, message, recipients)
        rest = [r for r in recipients if r.address not in held]
        if not held:
            return self._send(route, message, body, recipients)
        if not rest:
            return Outcome(tuple(held.values()), None, None)
        outcome = self._send(route, message, body, rest)
        return dataclasses.replace(outcome, verdicts=(*held.values(), *outcome.verdicts))

    def _plugin_verdicts(self, route: Route, message: Loaded, recipients: list[Claimed]) -> dict[EmailAddress, Verdict]:
        chain = self.plugins.before_delivery
        if not chain:
            return {}
        everyone = tuple(r.address for r in recipients)
        held = {}
        for r in recipients:
            context = Context(
                hook="before_delivery",
                trace_id=message.trace_id,
                sender=message.sender,
                recipient=r.address,
                recipients=everyone,
                queue_id=message.queue_id,
                next_hop=route.key,
                attempt=r.attempts + 1,
            )
            verdict = _plugin_verdict(r.address, self.plugins.runner.run(chain, context))
            if verdict is not None:
                held[r.address] = verdict
        return held

    def _send(self, route: Route, message: Loaded, body: Content, recipients: list[Claimed]) -> Outcome:
        try:
            candidates = self.candidates(route)
        except DnsError as exc:
            kind = State.BOUNCED if exc.permanent else State.DEFERRED
            return self._all(recipients, kind, exc.status, f"DNS: {exc.text}", connected=None)
        except Loop as exc:
            return self._all(recipients, State.BOUNCED, "5.4.6", str(exc), connected=None)
        envelope = OutboundEnvelope(
            sender=message.sender,
            recipients=tuple(OutboundRecipient(r.address, r.notify, r.orcpt) for r in recipients),
            size=message.size,
            smtputf8=message.smtputf8,
            body_type=message.body_type,
            ret=message.ret,
            envid=message.envid,
        )
        last: SmtpError | None = None
        connected = None
        for candidate in candidates:
            try:
                conn, replies = self._on_connection(route, candidate, lambda c: c.send(envelope, body))
            except SmtpError as exc:
                last = exc
                connected = exc.step not in CONNECTION_STEPS
                if not connected:
                    continue
                if exc.permanent:
                    return self._all(recipients, State.BOUNCED, exc.status, exc.diagnostic, True, str(candidate))
                if exc.elsewhere:
                    continue
                # Without a reply from the remote, say which step failed ("end of data: timeout ...").
                why = exc.diagnostic if exc.reply else f"{exc.step}: {exc.text}"
                return self._all(recipients, State.DEFERRED, exc.status, why, True, str(candidate))
            self.pool.give(self._key(route, candidate), conn)
            dsn = "DSN" in conn.extensions
            verdicts = tuple(self._verdict(r, replies[r.address], conn, dsn) for r in recipients)
            return Outcome(verdicts, True, str(conn), conn.tls)
        if last is None:
            family = f" of the family address_family = {route.family}" if route.family != "any" else ""
            return self._all(recipients, State.DEFERRED, "4.4.4", f"no address to deliver to{family}", connected=None)
        return self._all(
            recipients,
            State.DEFERRED,
            last.status if not last.permanent else "4.4.1",
            f"{last.step}: {candidate}: {last.diagnostic}",  # the last tried: which of several is down
            connected,
        )

    # -- where to -------------------------------------------------------------

    def candidates(self, route: Route) -> list[Candidate]:
        """Up to max_addresses addresses, in the order to try them."""
        limit = self.config.delivery.max_addresses
        out: list[Candidate] = []
        if route.uses_mx:
            mxs = self.resolver.mx(route.domain)
            mine = [mx.preference for mx in mxs if mx.name == self.config.hostname]
            if mine:
                # We are an MX for this domain: only better ones may take it, not
                # those of our own preference (RFC 5321 §5.1). Stopping at our name
                # in the list was not enough: equal preferences come shuffled.
                mxs = [mx for mx in mxs if mx.preference < mine[0]]
                if not mxs:
                    raise Loop(f"mail for {route.domain} loops back to myself (MX {self.config.hostname})")
            hops = [NextHop(mx.name, self.config.delivery.port) for mx in mxs]
        else:
            hops = list(route.hops)
        errors: list[DnsError] = []
        for hop in hops:
            try:
                addresses = self._addresses(hop.host)
            except DnsError as exc:
                errors.append(exc)
                continue
            for address in addresses:
                if not route.takes(address):
                    continue  # of a family this route does not use (address_family)
                if self._is_own(address, hop.port):
                    if not out:
                        raise Loop(f"mail for {route.domain} loops back to myself ({hop.host}[{address}]:{hop.port})")
                    return out
                out.append(Candidate(hop.host, address, hop.port))
                if len(out) >= limit:
                    return out
        if not out and errors:
            first = errors[0]
            raise DnsError(f"no address for any next hop: {first.text}", False, "4.4.3")
        return out

    def _is_own(self, address: str, port: int) -> bool:
        """Would ``address``:``port`` reach one of our own listeners?"""
        if (address, port) in self.own:
            return True
        # A wildcard listener is reached only through an address of this host
        # (a dual-stack "::" takes IPv4 too), not through every address at that port.
        wildcard = ("0.0.0.0", port) in self.own or ("::", port) in self.own
        return wildcard and _local_address(address)

    def _addresses(self, host: str) -> list[str]:
        literal = _address_literal(host)
        return [literal] if literal is not None else self.resolver.addresses(host)

    # -- how ------------------------------------------------------------------

    def _key(self, route: Route, c: Candidate) -> tuple[str, int, str, str, str]:
        user = self.credentials[0] if route.smarthost and self.credentials else ""
        return (c.address, c.port, route.tls, user, route.source_for(c.address) or "")

    def ask(self, route: Route, address: EmailAddress) -> tuple[Reply, str]:
        """A callout: does the route's next hop take mail for ``address``? Its reply to
        RCPT, and the host that gave it. SmtpError (DnsError, Loop) if none would say."""
        last = SmtpError("connect", "no address to ask")
        for candidate in self.candidates(route):
            try:
                conn, reply = self._on_connection(route, candidate, lambda c: c.probe(address))
            except SmtpError as exc:
                last = SmtpError(exc.step, f"{candidate}: {exc.diagnostic}", status=exc.status)
                continue
            self.pool.give(self._key(route, candidate), conn)
            return reply, str(conn)
        raise last

    def _on_connection(self, route: Route, c: Candidate, use: Callable[[Connection], T]) -> tuple[Connection, T]:
        """``use`` a connection to ``c``: an idle one from the pool, or a new one. One the remote
        closed while it was idle (client.Stale) is replaced; one ``use`` fails on is closed
        (QUIT if the session still works, a refusal) and the SmtpError raised."""
        conn = self._connection(route, c)
        while True:
            try:
                return conn, use(conn)
            except client.Stale:
                # Nothing of the transaction was taken on it: the next idle one, or a new one.
                self.pool.discard_stale(conn)
                conn = self._connection(route, c)
            except SmtpError:
                conn.quit()
                raise

    def _connection(self, route: Route, c: Candidate) -> Connection:
        conn = self.pool.take(self._key(route, c))
        if conn is not None:
            # Opened for a delivery or a callout, it goes on with this courier's patience: a callout
            # must not wait 5 minutes for a reply, nor a delivery give up on its final dot after 10 s.
            conn.timeouts = self.timeouts
            return conn
        return client.open_connection(
            c.host,
            c.address,
            c.port,
            self.config.hostname,
            self.timeouts,
            route.tls,
            self.contexts.get(route.tls),
            self.credentials if route.smarthost else None,
            route.source_for(c.address),
        )

    @staticmethod
    def _verdict(r: Claimed, reply: Reply, conn: Connection, dsn: bool) -> Verdict:
        kind = State.DELIVERED if reply.code < 400 else State.DEFERRED if reply.code < 500 else State.BOUNCED
        relayed = kind == State.DELIVERED and not dsn
        return Verdict(r.address, kind, reply.status, reply.summary, conn.host, relayed)

    @staticmethod
    def _all(
        recipients: list[Claimed],
        kind: State,
        status: str,
        reply: str,
        connected: bool | None,
        relay: str | None = None,
    ) -> Outcome:
        remote = relay.split("[")[0] if relay else None
        return Outcome(tuple(Verdict(r.address, kind, status, reply, remote) for r in recipients), connected, relay)


@functools.lru_cache(maxsize=1024)
def _address_literal(host: str) -> str | None:
    """``host`` as an IP address if it is one (a route's next hop often is); None for a name.
    Cached: parsing it anew at every delivery showed in the delivery profile (docs/capacity.md)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def _plugin_verdict(address: EmailAddress, verdict: runner.Verdict) -> Verdict | None:
    """A plug-in's rejection: 5xx bounces the recipient, 4xx (or a failed plug-in) defers it."""
    if verdict.failed:
        return Verdict(address, State.DEFERRED, "4.3.0", f"before_delivery plug-in {verdict.by} failed (see the log)")
    reject = verdict.reject
    if reject is None:
        return None
    kind = State.DEFERRED if reject.temporary else State.BOUNCED
    return Verdict(address, kind, reject.status, f"{reject.code} {reject.status} {reject.text}")
