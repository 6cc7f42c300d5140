"""A small authoritative DNS server for tests, on loopback, built with dnspython.

It answers over UDP and TCP on one port, from a dict of records that tests may
change while it runs, in background threads (the test process is not
gevent-patched), so both in-process resolvers and a separate daemon can use it:

    records = {
        "example.test": {"MX": [(10, "mx1.example.test"), (20, "mx2.example.test")]},
        "mx1.example.test": {"A": ["127.0.0.10"], "AAAA": ["::1"]},
        "nomail.test": {"MX": [(0, ".")], "A": ["127.0.0.9"]},  # null MX
        "www.example.test": {"CNAME": ["mx1.example.test"]},
        "short.test": {"A": ["127.0.0.11"], "TTL": 5},  # this name's own TTL
    }
    with DnsServer(records, ttl=300, servfail={"broken.test"}, drop={"slow.test"}) as server:
        resolver = Resolver(nameservers=[server.address])

Names are lower case without the trailing dot, as keys and in the behaviour
sets. Values are lists of rdata in zone-file text ("10 mx.example.test"),
MX also as (preference, exchange) pairs; names in them are absolute.

What it answers, for a question (name, type):
- ``drop``: nothing at all, so the client times out;
- ``servfail``: SERVFAIL; ``refused``: REFUSED;
- ``truncate``: over UDP an empty answer with TC set, so the client retries
  over TCP (which answers normally); UDP answers bigger than the client's
  buffer (512 octets, or its EDNS size) are truncated the same way;
- a name with records of the type: the records, authoritative;
- a name with a CNAME (and the type is not CNAME): the CNAME, then the
  target's answer when the target is in ``records``;
- a name with records, but not of the type, or a name with no records but
  names below it: NOERROR with no answer ("no data");
- any other name: NXDOMAIN.
Records of one type come in a random order each time, as dnspython (and many
real servers) send them, so tests must not depend on the order on the wire.
Negative answers carry an SOA (TTL ``ttl``, MINIMUM ``soa_minimum``) so that
resolvers can cache them (RFC 2308).

``queries`` lists every question received, as (name, type) pairs, UDP and TCP
alike; ``tcp_queries`` only those over TCP; ``errors`` any exception raised
while answering (the server answers SERVFAIL then, and keeps serving).
"""

import contextlib
import selectors
import socket
import struct
import threading
from collections.abc import Iterable
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

Records = dict[str, dict[str, Any]]

MAX_CHAIN = 8  # CNAMEs followed in one answer
TCP_IDLE = 10.0  # seconds a TCP client may sit silent before we close


def _key(name: str | dns.name.Name) -> str:
    text = name.to_text() if isinstance(name, dns.name.Name) else name
    text = text.lower()
    return text[:-1] if text.endswith(".") and text != "." else text


def _rdata(rtype: str, value) -> dns.rdata.Rdata:
    if isinstance(value, tuple):
        value = " ".join(str(part) for part in value)
    return dns.rdata.from_text(dns.rdataclass.IN, rtype, str(value), origin=dns.name.root, relativize=False)


def _check(entry: dict[str, Any]) -> dict[str, Any]:
    """Parse every value now, so that a typo fails the test that wrote it, not a query later."""
    for rtype, values in entry.items():
        if rtype == "TTL":
            int(values)
            continue
        for value in values:
            _rdata(rtype, value)
    return dict(entry)


class DnsServer:
    def __init__(
        self,
        records: Records | None = None,
        ttl: int = 300,
        servfail: Iterable[str] = (),
        drop: Iterable[str] = (),
        refused: Iterable[str] = (),
        truncate: Iterable[str] = (),
        soa_minimum: int = 60,
        host: str = "127.0.0.1",
    ):
        self.records: Records = {_key(name): _check(entry) for name, entry in (records or {}).items()}
        self.ttl = ttl
        self.soa_minimum = soa_minimum
        self.servfail = {_key(name) for name in servfail}
        self.drop = {_key(name) for name in drop}
        self.refused = {_key(name) for name in refused}
        self.truncate = {_key(name) for name in truncate}
        self.host = host
        self.port = 0
        self.queries: list[tuple[str, str]] = []
        self.tcp_queries: list[tuple[str, str]] = []
        self.errors: list[BaseException] = []
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._threads: list[threading.Thread] = []
        self._connections: set[socket.socket] = set()

    @property
    def address(self) -> tuple[str, int]:
        """(host, port), as Resolver(nameservers=[...]) takes it."""
        return (self.host, self.port)

    # -- records, changed while running ---------------------------------

    def set(self, name: str, **types: Any) -> None:
        """Replace every record of ``name``: ``server.set("a.test", A=["127.0.0.5"], TTL=5)``."""
        entry = _check(types)
        with self._lock:
            self.records[_key(name)] = entry

    def remove(self, name: str) -> None:
        """Forget ``name``: it answers NXDOMAIN from now on."""
        with self._lock:
            self.records.pop(_key(name), None)

    def count(self, name: str, rtype: str | None = None) -> int:
        """How many questions about ``name`` (of ``rtype``, if given) arrived."""
        name = _key(name)
        with self._lock:
            return sum(1 for qname, qtype in self.queries if qname == name and rtype in (None, qtype))

    # -- lifecycle -------------------------------------------------------

    def start(self) -> "DnsServer":
        self._bind()
        self._wake = socket.socketpair()
        serve = threading.Thread(target=self._serve, name=f"dns-server-{self.port}", daemon=True)
        self._threads.append(serve)
        serve.start()
        return self

    def stop(self) -> None:
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._wake is not None:
            self._wake[1].send(b"x")
        # The accepting thread first, so that no new connection comes after the shutdowns.
        if self._threads:
            self._threads[0].join(timeout=5)
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            # shutdown wakes a handler blocked in recv; close alone may not.
            with contextlib.suppress(OSError):  # the client may have gone already
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads[1:]:
            thread.join(timeout=5)
        for sock in [self._udp, self._tcp, *(self._wake or ())]:
            if sock is not None:
                sock.close()

    def __enter__(self) -> "DnsServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _bind(self) -> None:
        # UDP and TCP must share one port: take a free UDP port, then hope TCP
        # is free there too, and try again with another port if it is not.
        for _ in range(50):
            udp = socket.socket(self._family, socket.SOCK_DGRAM)
            udp.bind((self.host, 0))
            port = udp.getsockname()[1]
            tcp = socket.socket(self._family, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.host, port))
            except OSError:
                udp.close()
                tcp.close()
                continue
            tcp.listen(64)
            self._udp, self._tcp, self.port = udp, tcp, port
            return
        raise OSError(f"no port on {self.host} free for both UDP and TCP")

    # -- serving ---------------------------------------------------------

    def _serve(self) -> None:
        assert self._udp and self._tcp and self._wake
        with selectors.DefaultSelector() as selector:
            selector.register(self._udp, selectors.EVENT_READ)
            selector.register(self._tcp, selectors.EVENT_READ)
            selector.register(self._wake[0], selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._udp:
                        self._serve_udp()
                    elif key.fileobj is self._tcp:
                        self._accept()

    def _serve_udp(self) -> None:
        assert self._udp
        try:
            wire, peer = self._udp.recvfrom(65535)
        except OSError:
            return  # e.g. an ICMP error from an earlier reply; nothing to answer
        reply = self._reply(wire, tcp=False)
        if reply is not None:
            with contextlib.suppress(OSError):  # the client is gone; UDP promises nothing anyway
                self._udp.sendto(reply, peer)

    def _accept(self) -> None:
        assert self._tcp
        try:
            conn, _ = self._tcp.accept()
        except OSError:
            return
        conn.settimeout(TCP_IDLE)
        with self._lock:
            self._connections.add(conn)
        handler = threading.Thread(target=self._serve_tcp, args=(conn,), daemon=True)
        self._threads.append(handler)
        handler.start()

    def _serve_tcp(self, conn: socket.socket) -> None:
        try:
            while not self._stopping.is_set():
                header = _read_exactly(conn, 2)
                if header is None:
                    return
                wire = _read_exactly(conn, struct.unpack("!H", header)[0])
                if wire is None:
                    return
                reply = self._reply(wire, tcp=True)
                if reply is not None:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass  # timeout, reset, or our own shutdown: the connection is over
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    def _reply(self, wire: bytes, tcp: bool) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return _formerr(wire)
        try:
            response = self._answer(query, tcp)
            if response is None:
                return None
            if tcp:
                return response.to_wire(max_size=65535)
            limit = max(512, query.payload) if query.edns >= 0 else 512
            try:
                return response.to_wire(max_size=limit)
            except dns.exception.TooBig:
                return _truncated(query).to_wire()
        except Exception as exc:  # noqa: BLE001 - kept in .errors for the test to see; the server keeps serving
            self.errors.append(exc)
            response = dns.message.make_response(query)
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()

    def _answer(self, query: dns.message.Message, tcp: bool) -> dns.message.Message | None:
        response = dns.message.make_response(query)
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response
        question = query.question[0]
        name, rtype = _key(question.name), dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self.queries.append((name, rtype))
            if tcp:
                self.tcp_queries.append((name, rtype))
        if name in self.drop:
            return None
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
            return response
        if name in self.refused or question.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return response
        if name in self.truncate and not tcp:
            return _truncated(query)
        response.flags |= dns.flags.AA
        owner, current = question.name, name
        for _ in range(MAX_CHAIN):
            entry = self.records.get(current)
            if entry is None:
                if not self._has_children(current):
                    response.set_rcode(dns.rcode.NXDOMAIN)
                    response.authority.append(self._soa(current))
                # A chain leaving our data ends here; the client follows it.
                return response
            ttl = int(entry.get("TTL", self.ttl))
            cname = entry.get("CNAME")
            if cname and rtype != "CNAME":
                target = _rdata("CNAME", cname[0])
                response.answer.append(dns.rrset.from_rdata(owner, ttl, target))
                owner, current = target.target, _key(target.target)
                continue
            values = list(entry.get(rtype) or ())
            if values:
                rrset = dns.rrset.from_rdata_list(owner, ttl, [_rdata(rtype, value) for value in values])
                response.answer.append(rrset)
            else:
                response.authority.append(self._soa(current))
            return response
        return response

    def _has_children(self, name: str) -> bool:
        # An empty non-terminal exists: it answers no data, not NXDOMAIN.
        suffix = "." + name
        return any(key.endswith(suffix) for key in list(self.records))

    def _soa(self, name: str) -> dns.rrset.RRset:
        # The apex of the made-up zone: the last label, so it is above every name asked.
        apex = dns.name.from_text(name.rsplit(".", 1)[-1]) if name != "." else dns.name.root
        soa = _rdata("SOA", f"ns.{apex} hostmaster.{apex} 1 3600 600 86400 {self.soa_minimum}")
        return dns.rrset.from_rdata(apex, self.ttl, soa)


def _read_exactly(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _truncated(query: dns.message.Message) -> dns.message.Message:
    response = dns.message.make_response(query)
    response.flags |= dns.flags.TC
    return response


def _formerr(wire: bytes) -> bytes | None:
    if len(wire) < 12:
        return None
    # Same ID, QR set, opcode kept, rcode FORMERR, no sections.
    query_id, flags = struct.unpack("!HH", wire[:4])
    flags = (flags & 0x7800) | 0x8000 | dns.rcode.FORMERR
    return struct.pack("!HHHHHH", query_id, flags, 0, 0, 0, 0)
