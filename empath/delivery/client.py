"""The SMTP client: one connection to a next hop, in plain blocking code on
gevent sockets.

Every failure is an SmtpError naming the step that failed (connect, greeting,
EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, end of data) and carrying the
remote's reply when there was one, so a deferral or a bounce can say exactly
what happened.
"""

import base64
import socket
import ssl
from dataclasses import dataclass

from empath.addresses import EmailAddress, ReversePath
from empath.delivery.content import Content, Unreadable
from empath.smtp import wire
from empath.smtp.commands import xtext_encode
from empath.smtp.replies import Reply
from empath.smtp.wire import send_all


class SmtpError(Exception):
    """A step of the dialogue failed.

    ``elsewhere`` says the message may be tried at the next address: true for
    anything before the final dot, false after it, when the remote may
    already have the message (trying again later may deliver twice, never zero
    times).
    """

    def __init__(self, step: str, text: str, reply: Reply | None = None, status: str = "4.4.2", elsewhere: bool = True):
        super().__init__(f"{step}: {text}")
        self.step = step
        self.text = text
        self.reply = reply
        self.status = reply.status if reply else status
        self.elsewhere = elsewhere

    @property
    def permanent(self) -> bool:
        return self.status.startswith("5")

    @property
    def diagnostic(self) -> str:
        return self.reply.summary if self.reply else self.text


class Stale(SmtpError):
    """An idle connection taken back from the pool did not answer RSET: the
    remote closed it meanwhile. Nothing of the transaction was accepted on
    it, so the message goes on a fresh connection, not into a deferral."""


@dataclass(frozen=True)
class ClientTimeouts:
    connect: float = 30.0
    command: float = 300.0
    data: float = 600.0


@dataclass(frozen=True)
class OutboundRecipient:
    address: EmailAddress
    notify: str | None = None  # as stored: comma-separated
    orcpt: str | None = None  # as stored: "type;address"


@dataclass(frozen=True)
class OutboundEnvelope:
    """The envelope of one transaction with a next hop."""

    sender: ReversePath
    recipients: tuple[OutboundRecipient, ...]
    size: int
    smtputf8: bool = False
    body_type: str = "7BIT"
    ret: str | None = None
    envid: str | None = None


MAX_REPLY_LINES = 100
# A callout's answer for an internationalized address when the next hop has no SMTPUTF8.
UNASKABLE = Reply(553, "5.6.7", "the next hop does not take internationalized addresses (no SMTPUTF8)")


class Connection:
    """An open, greeted, EHLO'd (and maybe TLS and AUTH'd) connection."""

    def __init__(self, sock: socket.socket, host: str, address: str, port: int, timeouts: ClientTimeouts):
        self.sock = sock
        self.host = host  # the name we looked up (for logs, Remote-MTA, certificate checks)
        self.address = address
        self.port = port
        self.timeouts = timeouts
        self.extensions: dict[str, str] = {}
        self.tls = False
        self.messages = 0
        self.broken = False  # lost, timed out, closing (421) or out of step: no QUIT possible
        # Taken back from the pool: the next transaction starts with RSET, both
        # to start clean and to find out whether the remote is still there.
        self.idle = False
        self._file = sock.makefile("rb")

    def __str__(self) -> str:
        return f"{self.host}[{self.address}]:{self.port}"

    # -- the dialogue --------------------------------------------------------

    def read_reply(self, step: str, timeout: float, elsewhere: bool = True) -> Reply:
        self.sock.settimeout(timeout)
        lines = []
        code = 0
        self.broken = True  # until a whole reply is read
        try:
            while True:
                raw = self._file.readline(1024)
                if not raw:
                    raise SmtpError(step, "connection closed by the remote", elsewhere=elsewhere)
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
                    raise SmtpError(step, f"malformed reply {line[:80]!r}", elsewhere=elsewhere)
                code = int(line[:3])
                lines.append(line[4:])
                if line[3:4] != "-" or len(lines) >= MAX_REPLY_LINES:
                    break
        except TimeoutError:
            raise SmtpError(step, f"timeout after {timeout:g}s waiting for the reply", elsewhere=elsewhere) from None
        except (OSError, ssl.SSLError) as exc:
            raise SmtpError(step, f"connection lost: {exc}", elsewhere=elsewhere) from None
        reply = Reply.heard(code, lines)
        self.broken = code == 421
        if code == 421:
            # The remote is closing: nothing more will work on this connection.
            raise SmtpError(step, "the remote is closing the connection", reply, elsewhere=elsewhere)
        return reply

    def write(self, step: str, data: bytes, timeout: float, elsewhere: bool = True) -> None:
        self.sock.settimeout(timeout)
        try:
            send_all(self.sock, data)
        except TimeoutError:
            self.broken = True
            raise SmtpError(step, f"timeout after {timeout:g}s sending", elsewhere=elsewhere) from None
        except (OSError, ssl.SSLError) as exc:
            self.broken = True
            raise SmtpError(step, f"connection lost: {exc}", elsewhere=elsewhere) from None

    def command(self, step: str, line: str) -> Reply:
        self.write(step, line.encode("utf-8") + b"\r\n", self.timeouts.command)
        return self.read_reply(step, self.timeouts.command)

    def hello(self, name: str) -> None:
        reply = self.command("EHLO", f"EHLO {name}")
        if reply.ok:
            self.extensions = {}
            for line in reply.text.split("\n")[1:]:
                keyword, _, params = line.partition(" ")
                self.extensions[keyword.upper()] = params.strip()
            return
        reply = self.command("HELO", f"HELO {name}")
        if not reply.ok:
            raise SmtpError("HELO", "the remote refused our HELO", reply)
        self.extensions = {}

    def starttls(self, context: ssl.SSLContext, name: str, helo: str) -> None:
        reply = self.command("STARTTLS", "STARTTLS")
        if not reply.ok:
            # A TLS failure like a failed handshake, so opportunistic TLS goes on
            # in clear (RFC 3207 §4) rather than never delivering to a server
            # whose TLS is broken; required and verify still give up.
            raise TlsFailed("STARTTLS", "the remote refused STARTTLS", reply)
        # Anything the remote sent after its 220 was sent in clear: drop it
        # with the old reader (CVE-2011-0411, from the client side).
        self._file.close()
        self.sock.settimeout(self.timeouts.command)
        try:
            self.sock = context.wrap_socket(self.sock, server_hostname=name)
        except (OSError, ssl.SSLError) as exc:
            self.broken = True
            # X.7.5: cryptographic failure (RFC 3463), e.g. a certificate we do not trust.
            raise TlsFailed("STARTTLS", f"TLS handshake failed: {exc}", status="4.7.5") from None
        self._file = self.sock.makefile("rb")
        self.tls = True
        self.hello(helo)

    def auth(self, username: str, password: str) -> None:
        mechanisms = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in mechanisms:
            blob = base64.b64encode(f"\0{username}\0{password}".encode()).decode()
            reply = self.command("AUTH", f"AUTH PLAIN {blob}")
        elif "LOGIN" in mechanisms:
            reply = self.command("AUTH", "AUTH LOGIN")
            for answer in (username, password):
                if reply.code != 334:
                    break
                reply = self.command("AUTH", base64.b64encode(answer.encode()).decode())
        else:
            raise SmtpError("AUTH", "the remote offers neither AUTH PLAIN nor LOGIN", status="4.7.0")
        if reply.code != 235:
            raise SmtpError("AUTH", "the remote refused our credentials", reply)

    def send(self, envelope: OutboundEnvelope, body: Content) -> dict[str, Reply]:
        """One transaction; the remote's verdict for each recipient.

        Raises SmtpError when the transaction as a whole failed: refused
        sender, a lost connection or a 421. A refusal of DATA is the verdict
        of every recipient accepted at RCPT, as the reply after the dot is.
        """
        dsn = "DSN" in self.extensions
        try:
            # Both may read a large message from the queue (is it ASCII?), before anything is sent.
            self._check_fits(envelope, body)
            mail = f"MAIL FROM:<{envelope.sender}>{self._mail_params(envelope, dsn, body)}"
        except Unreadable as exc:
            raise SmtpError("MAIL", str(exc), status="4.3.0", elsewhere=False) from None
        rcpts = [f"RCPT TO:<{r.address}>{self._rcpt_params(r, dsn)}" for r in envelope.recipients]
        idle, self.idle = self.idle, False
        if "PIPELINING" in self.extensions:
            self._pipeline(idle, [mail, *rcpts, "DATA"])
            mail_reply = self.read_reply("MAIL", self.timeouts.command)
            rcpt_replies = [self.read_reply("RCPT", self.timeouts.command) for _ in rcpts]
            data_reply = self.read_reply("DATA", self.timeouts.command)
        else:
            if idle:
                self._check_alive(b"RSET\r\n")
            mail_reply = self.command("MAIL", mail)
            if not mail_reply.ok:
                raise SmtpError("MAIL", "the remote refused the sender", mail_reply)
            rcpt_replies = [self.command("RCPT", line) for line in rcpts]
            if not any(r.ok for r in rcpt_replies):
                return self._refused_all(envelope, rcpt_replies)
            data_reply = self.command("DATA", "DATA")
        if not mail_reply.ok:
            self._reset_after_refusal(data_reply)
            raise SmtpError("MAIL", "the remote refused the sender", mail_reply)
        if not any(r.ok for r in rcpt_replies):
            self._reset_after_refusal(data_reply)
            return self._refused_all(envelope, rcpt_replies)
        if data_reply.code != 354:
            self._reset_after_refusal(data_reply)
            if data_reply.code < 400:
                # Not 354 and not a refusal: out of step, so try again (4.5.0), never deliver.
                raise SmtpError("DATA", f"unexpected reply to DATA: {data_reply.summary}", status="4.5.0")
            # A refusal of DATA concerns the recipients the message would have
            # gone to; one refused at RCPT keeps its own verdict (a 450 there
            # must stay deferred when DATA gets a 554).
            return {
                r.address: (data_reply if reply.ok else reply)
                for r, reply in zip(envelope.recipients, rcpt_replies, strict=True)
            }
        self._write_body(body)
        final = self.read_reply("end of data", self.timeouts.data, elsewhere=False)
        self.messages += 1
        return {
            r.address: (final if reply.ok else reply)
            for r, reply in zip(envelope.recipients, rcpt_replies, strict=True)
        }

    def probe(self, address: EmailAddress) -> Reply:
        """A callout: MAIL FROM:<>, RCPT TO:<address>, RSET. The remote's reply to RCPT
        says whether it takes mail for ``address``; nothing is sent. SmtpError if the
        null sender is refused or the session fails; Stale as for send()."""
        utf8 = " SMTPUTF8" if not address.isascii() else ""
        if utf8 and "SMTPUTF8" not in self.extensions:
            # Nothing to ask: it takes no mail for this address from us (RFC 6531 §3.2), and
            # the connection, untouched, is as good as it was.
            return UNASKABLE
        idle, self.idle = self.idle, False
        self.messages += 1  # a transaction begun: counted against max_messages_per_connection
        mail, rcpt = f"MAIL FROM:<>{utf8}", f"RCPT TO:<{address}>"
        if "PIPELINING" in self.extensions:
            self._pipeline(idle, [mail, rcpt, "RSET"])  # the RSET that ends it too: one round trip
            mail_reply = self.read_reply("MAIL", self.timeouts.command)
            rcpt_reply = self.read_reply("RCPT", self.timeouts.command)
            reset = self.reset(read_only=True)
        else:
            if idle:
                self._check_alive(b"RSET\r\n")
            mail_reply = self.command("MAIL", mail)
            rcpt_reply = self.command("RCPT", rcpt) if mail_reply.ok else mail_reply
            reset = self.reset()
        if not reset:
            self.broken = True  # not to be pooled: the next transaction would find it in a mess
        if not mail_reply.ok:
            raise SmtpError("MAIL", "the remote refused the null sender", mail_reply)
        return rcpt_reply

    def _write_body(self, body: Content) -> None:
        """The message, a piece at a time as it is read, each within the command timeout."""
        encoder = wire.Encoder()
        ready = b""  # sent with the next piece, or with the end: a small message goes in one write
        try:
            for piece in body.pieces():
                if ready:
                    self.write("end of data", ready, self.timeouts.command)
                ready = encoder.piece(piece)
        except Unreadable as exc:
            # Cut off in mid-message: the remote must never take what was sent for all of it.
            self.broken = True
            raise SmtpError("end of data", str(exc), status="4.3.0", elsewhere=False) from None
        self.write("end of data", ready + encoder.end(), self.timeouts.command)

    def reset(self, read_only: bool = False) -> bool:
        """RSET (or, ``read_only``, the reply to one already sent): is this connection still
        good for another transaction? Its failure (a 421, a timeout) is not an error of what
        came before: the answers read stand."""
        try:
            if read_only:
                return self.read_reply("RSET", self.timeouts.command).ok
            return self.command("RSET", "RSET").ok
        except SmtpError:
            return False

    def _pipeline(self, idle: bool, lines: list[str]) -> None:
        """Send ``lines`` as one pipelined group, led by RSET on an idle connection (RFC 2920
        §3.1 lets it lead): checking the connection costs no round trip of its own."""
        group = "".join(line + "\r\n" for line in ["RSET"] * idle + lines).encode("utf-8")
        if idle:
            self._check_alive(group)
        else:
            self.write("MAIL", group, self.timeouts.command)

    def _check_alive(self, data: bytes) -> None:
        """Send ``data`` (RSET alone, or RSET leading a pipelined group), then
        read RSET's reply; Stale if the remote is gone or refuses it."""
        try:
            self.write("RSET", data, self.timeouts.command)
            reply = self.read_reply("RSET", self.timeouts.command)
        except SmtpError as exc:
            self.broken = True
            raise Stale("RSET", f"the idle connection was lost ({exc.text})") from None
        if not reply.ok:
            self.broken = True
            # Not the message's fault: a temporary status whatever the reply's class.
            raise Stale("RSET", f"the idle connection refused RSET: {reply.summary}")

    def quit(self) -> None:
        """End the session politely, or just close it when it is broken."""
        if self.broken:
            self.close()
            return
        try:
            self.write("QUIT", b"QUIT\r\n", 5.0)
            self.read_reply("QUIT", 5.0)
        except SmtpError:
            pass
        self.close()

    def close(self) -> None:
        try:
            self._file.close()
            self.sock.close()
        except OSError:
            pass

    # -- helpers -------------------------------------------------------------

    def _check_fits(self, envelope: OutboundEnvelope, body: Content) -> None:
        limit = self.extensions.get("SIZE", "")
        if limit.isdigit() and int(limit) and envelope.size > int(limit):
            raise SmtpError(
                "MAIL",
                f"the message ({envelope.size} bytes) is larger than the remote accepts ({limit})",
                status="5.3.4",
            )
        if envelope.smtputf8 and "SMTPUTF8" not in self.extensions and _needs_smtputf8(envelope, body):
            # RFC 6531 §3.2: an internationalized message must not be sent to a server without SMTPUTF8.
            # One that only asked for it (ASCII addresses and header) goes as plain mail, as Postfix does.
            raise SmtpError("MAIL", "the message needs SMTPUTF8, which the remote does not offer", status="5.6.7")
        if "8BITMIME" not in self.extensions and "SMTPUTF8" not in self.extensions and not body.isascii():
            # RFC 6152 §3: 8-bit content must not go to a server that does not take it;
            # we do not rewrite messages into 7-bit encodings, so it is returned.
            raise SmtpError("MAIL", "the message has 8-bit content, which the remote does not accept", status="5.6.3")

    def _mail_params(self, envelope: OutboundEnvelope, dsn: bool, body: Content) -> str:
        params = []
        utf8 = envelope.smtputf8 and "SMTPUTF8" in self.extensions
        # SMTPUTF8 implies 8-bit content; sent without it, 8-bit content needs BODY=8BITMIME.
        eight_bit = envelope.body_type == "8BITMIME" or (envelope.smtputf8 and not utf8 and not body.isascii())
        if "SIZE" in self.extensions:
            params.append(f"SIZE={envelope.size}")
        if eight_bit and "8BITMIME" in self.extensions:
            params.append("BODY=8BITMIME")
        if utf8:
            params.append("SMTPUTF8")
        if dsn and envelope.ret:
            params.append(f"RET={envelope.ret}")
        if dsn and envelope.envid:
            params.append(f"ENVID={xtext_encode(envelope.envid)}")
        return "".join(" " + p for p in params)

    @staticmethod
    def _rcpt_params(recipient: OutboundRecipient, dsn: bool) -> str:
        if not dsn:
            return ""
        params = []
        if recipient.notify:
            params.append(f"NOTIFY={recipient.notify}")
        if recipient.orcpt:
            kind, _, address = recipient.orcpt.partition(";")
            params.append(f"ORCPT={kind};{xtext_encode(address)}")
        return "".join(" " + p for p in params)

    def _reset_after_refusal(self, data_reply: Reply) -> None:
        # A pipelined DATA may have been accepted even though nothing else was:
        # end it with a lone dot so the remote discards it, then start afresh.
        if data_reply.code == 354:
            self.write("DATA", b".\r\n", self.timeouts.command)
            self.read_reply("DATA", self.timeouts.data)
        self.reset()

    @staticmethod
    def _refused_all(envelope: OutboundEnvelope, replies: list[Reply]) -> dict[str, Reply]:
        return {r.address: reply for r, reply in zip(envelope.recipients, replies, strict=True)}


def _needs_smtputf8(envelope: OutboundEnvelope, body: Content) -> bool:
    """Does the message use what SMTPUTF8 allows: a non-ASCII address, or header field?"""
    addresses = [envelope.sender, *(r.address for r in envelope.recipients)]
    return not (all(a.isascii() for a in addresses) and body.header_isascii())


class TlsFailed(SmtpError):
    """The TLS handshake failed: with opportunistic TLS, try again in clear."""


def open_connection(
    host: str,
    address: str,
    port: int,
    helo: str,
    timeouts: ClientTimeouts,
    tls: str,
    tls_context: ssl.SSLContext | None,
    credentials: tuple[str, str] | None = None,
    source: str | None = None,
) -> Connection:
    """Connect (from the local address ``source``, if given), read the greeting, EHLO, and
    do STARTTLS and AUTH as the policy asks.

    ``tls`` is none, opportunistic, required or verify; with ``verify`` the
    context must check the chain and the name ``host``. With opportunistic
    TLS a failed handshake is followed by a new connection in clear.
    """
    try:
        return _open(host, address, port, helo, timeouts, tls, tls_context, credentials, source)
    except TlsFailed:
        if tls != "opportunistic" or credentials is not None:
            raise
        return _open(host, address, port, helo, timeouts, "none", None, None, source)


def _open(
    host: str,
    address: str,
    port: int,
    helo: str,
    timeouts: ClientTimeouts,
    tls: str,
    tls_context: ssl.SSLContext | None,
    credentials: tuple[str, str] | None,
    source: str | None,
) -> Connection:
    try:
        bind = (source, 0) if source is not None else None
        sock = socket.create_connection((address, port), timeout=timeouts.connect, source_address=bind)
    except TimeoutError:
        raise SmtpError("connect", f"timeout after {timeouts.connect:g}s connecting") from None
    except OSError as exc:
        origin = f" from {source}" if source is not None else ""
        raise SmtpError("connect", f"cannot connect{origin}: {exc.strerror or exc}") from None
    conn = Connection(sock, host, address, port, timeouts)
    try:
        greeting = conn.read_reply("greeting", timeouts.command)
        if greeting.code != 220:
            raise SmtpError("greeting", "the remote does not accept mail now", greeting)
        conn.hello(helo)
        if tls != "none":
            if "STARTTLS" in conn.extensions and tls_context is not None:
                conn.starttls(tls_context, host, helo)
            elif tls != "opportunistic":
                raise SmtpError("STARTTLS", "TLS is required but the remote does not offer STARTTLS", status="4.7.5")
        if credentials is not None:
            if not conn.tls:
                raise SmtpError("AUTH", "refusing to send credentials without TLS", status="4.7.5")
            conn.auth(*credentials)
    except SmtpError:
        # RFC 5321 §4.1.1.10: never just drop a session that still works (a
        # refusal, or our TLS policy saying no): QUIT first.
        conn.quit()
        raise
    except BaseException:
        conn.close()
        raise
    return conn
