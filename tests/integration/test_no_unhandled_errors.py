"""No exception escapes to a client or kills a greenlet silently.

Hypothesis drives one daemon (TLS, all three listeners) over raw sockets with
random sessions: every verb the server knows, unknown words and HTTP verbs,
each with random arguments (NUL, CR, LF, non-UTF-8, over-long lines, ESMTP
parameters with random values), AUTH exchanges with random responses,
pipelined bursts, DATA bodies of random bytes, STARTTLS, and hang-ups in the
middle of a command or of a message. Every example uses a fresh connection.

It checks that every byte the server sends is a well-formed reply line (three
digits, then a space or a dash, no control characters) or a clean close, that
the server still serves afterwards, and that neither the daemon's log nor its
stderr shows an unhandled error (a traceback, "failed unexpectedly", or
gevent's "failed with" line for a greenlet that died).
"""

import base64
import re
import signal
import socket
import ssl

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import Daemon, RawClient

USER, PASSWORD = "fuzz-user", "fuzz-password-1"
TIMEOUT = 2.0  # the client's socket timeout; the server's are as short (config below)
# How long to wait for a reply that may never come (a line without its LF, a
# line inside DATA). A reply that comes later is read and checked later.
PATIENCE = 0.25
REPLY_LINE = re.compile(rb"[2-5][0-9][0-9]([ -][^\x00-\x1f\x7f]*)?")
# A logged exception, gevent's report of a greenlet that died, Python's unraisable hook.
UNHANDLED = re.compile(r"Traceback|failed unexpectedly|\bfailed with\b|Exception ignored")

VERBS = [
    b"EHLO",
    b"HELO",
    b"MAIL",
    b"RCPT",
    b"DATA",
    b"RSET",
    b"NOOP",
    b"QUIT",
    b"VRFY",
    b"HELP",
    b"STARTTLS",
    b"AUTH",
    b"EXPN",
    b"BDAT",
    b"ehlo",
    b"Mail",
    b"GET",
    b"POST",
    b"HEAD",
    b"OPTIONS",
    b"CONNECT",
    b"USER",
    b"TURN",
    b"XCLIENT",
]
PARAMS = [b"SIZE", b"BODY", b"SMTPUTF8", b"NOTIFY", b"ORCPT", b"RET", b"ENVID", b"AUTH", b"REQUIRETLS", b"X"]
PARAM_VALUES = [b"", b"8BITMIME", b"7BIT", b"BINARYMIME", b"SUCCESS,FAILURE", b"NEVER", b"rfc822;a@b", b"FULL", b"HDRS"]
MECHANISMS = [b"PLAIN", b"LOGIN", b"CRAM-MD5", b"XOAUTH2", b"plain", b"", b"=", b"PLAIN PLAIN"]

junk = st.binary(max_size=40)
text = st.text(max_size=30).map(lambda s: s.encode("utf-8", "surrogatepass"))
number = st.one_of(st.integers(-5, 10**30).map(lambda n: str(n).encode()), st.just(b"1e9"), st.just(b"0x10"))
address = st.one_of(
    st.sampled_from([b"<a@local.test>", b"<>", b"<postmaster>", b"<carol@remote.test>", b"<@x,@y:a@b>"]),
    st.builds(lambda a, b: b"<" + a + b"@" + b + b">", junk, junk),
    st.builds(lambda a: b"<" + a + b"@xn--bcher-kva.example>", text),
    junk,
)
param = st.builds(
    lambda name, sep, value: name + sep + value,
    st.sampled_from(PARAMS),
    st.sampled_from([b"=", b"", b"==", b" = "]),
    st.one_of(st.sampled_from(PARAM_VALUES), number, junk, text),
)
argument = st.one_of(
    junk,
    text,
    number,
    address,
    st.builds(lambda a: b"FROM:" + a, address),
    st.builds(lambda a: b"TO:" + a, address),
    st.builds(lambda a, ps: b"FROM:" + a + b"".join(b" " + p for p in ps), address, st.lists(param, max_size=4)),
    st.builds(lambda a, ps: b"TO:" + a + b"".join(b" " + p for p in ps), address, st.lists(param, max_size=4)),
    st.builds(lambda m, rest: m + b" " + rest, st.sampled_from(MECHANISMS), junk),
    st.builds(lambda n, b: n + b" " + b, number, st.sampled_from([b"LAST", b"last", b"", b"LAST LAST"])),
    st.integers(400, 3000).map(lambda n: b"x" * n),  # over the line limit
)
command = st.builds(
    lambda verb, sep, arg: verb + sep + arg,
    st.one_of(st.sampled_from(VERBS), junk),
    st.sampled_from([b" ", b"", b"  ", b"\t", b":"]),
    argument,
)
ending = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n", b"\x00\r\n"])
line = st.builds(lambda c, e: c + e, command, ending)
sasl = st.one_of(
    st.sampled_from([b"*", b"", b"=", b"====", b"AAAA"]),
    junk.map(base64.b64encode),
    st.builds(lambda u, p: base64.b64encode(b"\0" + u + b"\0" + p), junk, junk),
    junk,
)
# Lines without CR or LF, joined by CRLF: bodies the server should accept.
clean_line = st.one_of(
    st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b".", b"..", b"Subject: x", b"Received: from x", b"", b" "]),
    st.integers(900, 1200).map(lambda n: b"y" * n),  # around the text line limit
)
body = st.one_of(
    st.lists(clean_line, max_size=12).map(lambda lines: b"".join(line + b"\r\n" for line in lines)),
    st.lists(clean_line, max_size=12).map(lambda lines: b"".join(line + b"\r\n" for line in lines)),
    junk,
    st.binary(max_size=3000),
    st.lists(
        st.sampled_from([b".", b"\r\n", b"\n", b"\r", b"..", b"x", b"\r\n.\n", b"\n.\r\n", b"\0"]), max_size=30
    ).map(b"".join),
)

step = st.one_of(
    st.tuples(st.just("line"), line),
    st.tuples(st.just("burst"), st.lists(line, min_size=2, max_size=8).map(b"".join)),
    st.tuples(
        st.just("auth"), st.sampled_from(MECHANISMS), st.lists(st.builds(lambda s: s + b"\r\n", sasl), max_size=3)
    ),
    st.tuples(st.just("data"), body, st.sampled_from([b"\r\n.\r\n", b"\r\n.\r\n", b"\n.\n", b"", b".\r\n"])),
    st.tuples(st.just("starttls"), st.sampled_from([b"", b" x", b" \r\nNOOP"])),
    st.tuples(st.just("hangup"), junk),
)
opening = st.sampled_from(["none", "ehlo", "envelope", "tls", "tls-auth"])
session = st.tuples(
    st.sampled_from(["smtp", "smtp", "smtp", "submission", "smtps"]), opening, st.lists(step, max_size=8)
)


@pytest.fixture(scope="module")
def mx(tmp_path_factory, certs):
    daemon = Daemon(
        tmp_path_factory.mktemp("fuzz"),
        certs,
        {
            # High limits, short timeouts: no limit ends a session early by design
            # and a session stuck waiting for bytes ends quickly.
            "limits": {
                "max_errors": 100000,
                "auth_max_failures": 100000,
                "auth_failure_delay": "0ms",
                "max_connections_per_client": 100,
                "max_message_size": "1M",
            },
            "timeouts": {"command": "2s", "data": "2s", "tls_handshake": "2s"},
        },
    )
    daemon.add_user(USER, PASSWORD)
    daemon.start()
    yield daemon
    daemon.stop()


class Checked:
    """A raw client that checks every line the server sends is a reply line."""

    def __init__(self, daemon: Daemon, listener: str, certs):
        self.certs = certs
        self.client = RawClient(getattr(daemon.ports, listener), timeout=TIMEOUT)
        self.tls = False
        self.in_data = False
        self.greeted = False
        self.lines: list[bytes] = []
        self.closed = False
        if listener == "smtps":
            self._handshake()
            assert self.tls, "the TLS handshake on the smtps listener failed"
        greeting = self.reply()
        assert greeting is not None and greeting.startswith(b"220 "), f"no greeting on {listener}: {greeting!r}"
        self.greeted = True

    def _handshake(self) -> None:
        try:
            self.client.starttls(self.certs.client_context())
        except (ssl.SSLError, OSError):
            # The server gave up on the handshake (say, clear text we sent
            # before we read its 220): the session is over, cleanly.
            self.closed = True
            return
        self.client.sock.settimeout(TIMEOUT)
        self.tls = True

    def drain(self) -> None:
        """Read the replies still to come for earlier commands."""
        while not self.closed and self.reply(wait=0.05) is not None:
            pass

    def _take_lines(self) -> bytes | None:
        """Check and keep the buffered lines up to the end of one reply; its final line, if complete."""
        while b"\r\n" in self.client.buf:
            got, _, self.client.buf = self.client.buf.partition(b"\r\n")
            assert REPLY_LINE.fullmatch(got), f"not a reply line: {got!r}"
            self.lines.append(got)
            if got[3:4] != b"-":
                self.in_data = got.startswith(b"354")
                return got  # one reply at a time: a 220 to STARTTLS must be seen before what follows
        return None

    def reply(self, wait: float = TIMEOUT) -> bytes | None:
        """Read until a final reply line arrives (None on close or after ``wait`` of silence)."""
        self.client.sock.settimeout(wait)
        try:
            while True:
                final = self._take_lines()
                if final is not None:
                    if final.startswith(b"220 ") and self.greeted and not self.tls:
                        self._handshake()  # the reply to a STARTTLS, maybe one sent in a burst
                    return None if self.closed else final
                chunk = self.client.sock.recv(65536)
                if not chunk:
                    self.closed = True
                    assert not self.client.buf, f"partial reply line at close: {self.client.buf!r}"
                    return None
                self.client.buf += chunk
        except (TimeoutError, ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return None
        finally:
            if not self.closed:
                self.client.sock.settimeout(TIMEOUT)

    def send(self, data: bytes) -> bool:
        if self.closed:
            return False
        try:
            self.client.send(data)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError, TimeoutError):
            self.closed = True
            return False
        return True

    def cmd(self, data: bytes) -> bytes | None:
        expect = not self.in_data
        if not self.send(data):
            return None
        return self.reply(wait=PATIENCE) if expect else self.reply(wait=0.05)

    def close(self) -> None:
        if not self.closed and self.send(b"QUIT\r\n"):
            while not self.closed and self.reply(wait=PATIENCE) is not None:
                pass
        self.client.close()


def plain(user: str, password: str) -> bytes:
    return base64.b64encode(f"\0{user}\0{password}".encode())


def run_session(daemon: Daemon, certs, listener: str, opening: str, steps: list) -> None:
    try:
        c = Checked(daemon, listener, certs)
    except (ConnectionResetError, ssl.SSLError, TimeoutError) as exc:  # refused at connect
        raise AssertionError(f"no greeting on {listener}: {exc!r}") from exc
    try:
        if opening != "none":
            c.cmd(b"EHLO client.test\r\n")
        if opening in ("tls", "tls-auth") and not c.tls:
            c.drain()
            c.cmd(b"STARTTLS\r\n")
            c.cmd(b"EHLO client.test\r\n")
        if opening == "tls-auth":
            c.cmd(b"AUTH PLAIN " + plain(USER, PASSWORD) + b"\r\n")
        if opening in ("envelope", "tls-auth"):
            c.cmd(b"MAIL FROM:<a@local.test>\r\n")
            c.cmd(b"RCPT TO:<b@local.test>\r\n")
        for kind, *args in steps:
            if c.closed:
                break
            if kind in ("line", "burst"):
                c.cmd(args[0])
            elif kind == "auth":
                mechanism, responses = args
                c.cmd(b"AUTH " + mechanism + b"\r\n")
                for response in responses:
                    c.cmd(response)
            elif kind == "data":
                content, end = args
                if c.cmd(b"DATA\r\n") is not None and c.in_data:
                    c.send(content)
                    if end:
                        c.cmd(end)
            elif kind == "starttls":
                c.drain()
                c.cmd(b"STARTTLS" + args[0] + b"\r\n")
            elif kind == "hangup":
                c.send(args[0])
                c.client.close()
                c.closed = True
    except (ssl.SSLError, OSError):
        # A TLS handshake the server gave up on, or a connection it closed
        # while we wrote: a clean end of the session, not an error.
        pass
    finally:
        c.close()


def assert_serving(daemon: Daemon) -> None:
    with RawClient(daemon.ports.smtp, timeout=5) as client:
        assert client.reply()[0] == 220
        assert client.cmd("NOOP")[0] == 250


def unhandled(text: str) -> list[str]:
    # The debug "command" lines echo what the client sent, and so may hold anything.
    return [line for line in text.splitlines() if UNHANDLED.search(line) and " empath.smtp command " not in line]


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
@given(session)
def test_random_sessions_get_only_replies(mx, certs, sess):
    listener, opening, steps = sess
    run_session(mx, certs, listener, opening, steps)


def test_hangups_mid_command_and_mid_data(mx):
    """Deterministic hang-ups, so they are covered whatever hypothesis draws."""
    for partial in (b"MAIL FROM:<a@local", b"EHLO", b"\r", b"AUTH PLAIN\r\n", b"DATA\r\n"):
        client = RawClient(mx.ports.smtp, timeout=TIMEOUT)
        assert client.reply()[0] == 220
        client.cmd("EHLO client.test")
        client.cmd("MAIL FROM:<a@local.test>")
        client.cmd("RCPT TO:<b@local.test>")
        client.send(partial)
        client.sock.shutdown(socket.SHUT_RDWR)
        client.close()
    assert_serving(mx)


def test_still_serving_and_no_unhandled_error_logged(mx):
    assert_serving(mx)
    assert unhandled(mx.log()) == []
    # Stop by hand to read stderr before Daemon.stop() closes it.
    mx.proc.send_signal(signal.SIGTERM)
    _, stderr = mx.proc.communicate(timeout=20)
    assert mx.proc.returncode == 0
    assert unhandled(stderr.decode(errors="replace")) == []
    assert unhandled(mx.log()) == []
