"""One SMTP session: a straight loop of read a line, ask the machine, act.

Everything that decides lives in the Machine; this module only moves bytes,
runs the actions the machine asks for, and makes sure that whatever goes
wrong in one session is logged and ends that session alone.

A session is run by a ``Host``: the daemon's SMTP server (a network
connection), or ``sendmail -bs`` (stdin and stdout, smtp/stdio.py), which
runs this same loop through a subclass that changes where the message goes
and how the session ends, not how the dialogue goes.
"""

import contextlib
import dataclasses
import logging
import ssl
import time
import uuid
from contextlib import AbstractContextManager
from typing import Any, Protocol

import gevent

from empath import threads
from empath.addresses import EmailAddress, ReversePath
from empath.aliases import Aliases
from empath.config import Config, Listener
from empath.log import audit, event
from empath.message import dkim, stamp, submit
from empath.metrics import Metrics
from empath.plugins.api import Context, apply_headers, parse_headers
from empath.plugins.loader import Plugins
from empath.plugins.runner import PASS, Verdict
from empath.queue import ids
from empath.queue.database import QueueError, StorageFull, classify
from empath.queue.insert import NewMessage
from empath.queue.spool import Spool
from empath.recipients import Existence
from empath.rewrite import Rewriter
from empath.smtp import replies
from empath.smtp.commands import MailArgs
from empath.smtp.connection import Connection, ConnectionClosed
from empath.smtp.data import DataReader
from empath.smtp.machine import Action, Check, Machine, Policy, Step, Transaction
from empath.smtp.replies import Reply
from empath.users import Users, UsersFileError

log = logging.getLogger("empath.smtp")


class Host(Protocol):
    """What a session needs of whoever runs it."""

    config: Config
    metrics: Metrics
    plugins: Plugins
    users: Users | None
    # Held while a message is read whole out of its spool file (data plug-ins, DKIM):
    # it bounds how many such copies the process holds at once.
    whole_messages: AbstractContextManager[Any]

    def is_trusted(self, address: str) -> bool: ...

    aliases: Aliases  # where mail for an address goes, and SRS for what an alias forwards
    rewriter: Rewriter  # the office's sender rewriting (canonical table, masquerading)

    def enqueue(self, *messages: NewMessage) -> None:
        """Return once ``messages`` (one accepted message) are durably queued; raise QueueError if not."""

    def auth_blocked(self, address: str) -> bool:
        """Has the address got too many passwords wrong lately, across sessions?"""

    def auth_failed(self, address: str) -> None:
        """Count a wrong password against the address."""

    def verify_recipient(self, address: EmailAddress, trace_id: str) -> Existence:
        """Does ``address`` exist? Asks its domain's next hop, or remembers the answer."""


@dataclasses.dataclass
class Listening:
    """A listener and what every session on it shares; a reload replaces its policy."""

    host: Host
    listener: Listener
    policy: Policy
    tls_context: ssl.SSLContext | None = None  # the listener's: its oldest TLS and its ciphers


class Shutdown(Exception):
    """Raised into a session the server is stopping: at once when it waits for a command
    with no transaction open, else when its transaction ends or the grace period is over."""


class Session:
    linger = 1.0  # seconds to read what a client still sends after our last reply, before closing

    def __init__(self, listening: Listening, conn: Connection, client_address: str, stressed: bool = False):
        """``stressed``: the server was short of connections for strangers when this one came;
        an untrusted client then gets the stress timeouts and limits (docs/operations.md)."""
        self.listening = listening
        self.host = listening.host
        self.config = self.host.config
        trusted = self.host.is_trusted(client_address)
        self.timeouts = self.config.timeouts
        policy = listening.policy
        self.stressed = stressed and not trusted
        if self.stressed:
            stress = self.timeouts.stress
            self.timeouts = dataclasses.replace(self.timeouts, command=stress, data=stress)
            # As Postfix under stress: the first error, or the first command that moves no mail, ends it.
            policy = dataclasses.replace(
                policy, limits=dataclasses.replace(policy.limits, max_errors=1, junk_command_limit=1)
            )
        self.conn = conn
        self.client = client_address
        self.trace_id = uuid.uuid4().hex
        self.started = time.time()
        self._spool: Spool | None = None  # the message just read, between READ_DATA and ENQUEUE
        # What ended the session, when an error did; without its traceback, which
        # would hold this session's frames until the cycle collector came by.
        self.error: Exception | None = None
        # What is being answered, for a refusal's log line: a stage with no command
        # line (CONNECT, AUTH for a SASL response, END-OF-MESSAGE), or the line itself.
        self._stage: str | None = "CONNECT"
        self._line = b""
        self._data_sender: ReversePath | None = None  # the sender of the message being read
        # The server is stopping: end as soon as no transaction is open (see end_when_idle).
        self.ending = False
        self._idle = False  # waiting for a command with no transaction open
        self._greenlet: gevent.Greenlet | None = None
        self.plugins = self.host.plugins.for_listener(listening.listener.name)
        self.machine = Machine(
            policy,
            client_address,
            trusted=trusted,
            tls_active=False,
            checks=frozenset(self.plugins) & {"helo", "mail", "rcpt"},
        )

    def run(self) -> str:
        """Serve the session to its end; how it ended (for the logs and the metrics)."""
        event(log, "connect", client=self.client, listener=self.listening.listener.name, trace_id=self.trace_id)
        outcome = "closed"
        self._greenlet = gevent.getcurrent()
        try:
            self._serve()
        except ConnectionClosed:
            outcome = "client hung up"
        except gevent.Timeout:
            outcome = "timeout"
            self.conn.send(replies.TIMEOUT.render())  # the close below flushes it
        except Shutdown:
            outcome = "shutdown"
            self.conn.send(replies.SHUTTING_DOWN.render())
        except (OSError, ssl.SSLError) as exc:
            outcome = f"connection error: {exc}"
            self.error = exc.with_traceback(None)
        except Exception as exc:  # noqa: BLE001 - a bug ends this session only, with a reply, never a traceback
            log.exception("session failed unexpectedly (client %s, trace %s)", self.client, self.trace_id)
            outcome = "internal error"
            self.error = exc.with_traceback(None)
            self.conn.send(replies.INTERNAL_ERROR.render())
        finally:
            self._let_go()
            self.conn.close()
            event(log, "disconnect", client=self.client, outcome=outcome, trace_id=self.trace_id)
        return outcome

    def _lenient(self) -> bool:
        """May a bare LF end this client's lines? The office's own (trusted networks,
        authenticated users, local programs) unless the listener is strict."""
        return self.machine.ours and not self.listening.listener.strict_line_ends

    def end_when_idle(self) -> None:
        """The server is stopping: a session waiting for a command with no transaction
        open gets 421 now; one in a transaction, once its transaction is over."""
        self.ending = True
        if self._idle and self._greenlet is not None:
            self._greenlet.kill(Shutdown, block=False)

    def _serve(self) -> None:
        if not self._opening():
            return
        self.conn.send(self.machine.greeting().render(enhanced=False))
        limit = self.config.limits.line_length
        while True:
            self._idle = self.machine.transaction is None
            if self._idle and self.ending:
                raise Shutdown()
            line, overflow = self.conn.read_line(limit, self.timeouts.command)
            self._idle = False
            self._stage = "AUTH" if self.machine.in_auth_exchange else None
            self._line = line
            if line.endswith(b"\n") and not line.endswith(b"\r\n") and self._lenient():
                line = line[:-1] + b"\r\n"  # an office device's line end (smtp/data.py)
            if overflow:
                step = self.machine.line_too_long()
            elif not line.endswith(b"\r\n"):
                step = self.machine.bare_lf()
            else:
                self._trace(line)
                step = self.machine.handle(line[:-2])
            if not self._perform(step):
                return

    def _opening(self) -> bool:
        """What comes before the greeting: TLS on an smtps listener, the pregreet test,
        the connect plug-ins. False when the session ended there."""
        if self.listening.listener.mode == "smtps":
            self._start_tls()
        elif self.conn.has_input(self.timeouts.greet_pause):
            self._perform(Step((replies.PREGREET,), Action.CLOSE))
            return False
        refusal = _refusal(self._consult("connect"))
        if refusal is not None:
            self._perform(Step((replies.at_greeting(refusal),), Action.CLOSE))
            return False
        return True

    def _reject(self, reply: Reply) -> None:
        """One line per refusal, whatever refused: who, what and why (docs/logging.md, fail2ban)."""
        self.host.metrics.commands_rejected.labels(replies.name_of(reply)).inc()
        command, argument = _command(self._stage, self._line)
        transaction = self.machine.transaction
        if transaction is not None:
            sender: str | None = transaction.sender
        elif self._stage == "END-OF-MESSAGE":
            sender = self._data_sender
        else:
            sender = _address(argument, "FROM:")
        event(
            log,
            "reject",
            command=command,
            client=self.client,
            code=reply.code,
            dsn=reply.status or None,
            reply=reply.text.replace("\n", " "),
            helo=self.machine.helo,
            **_from(sender),
            to=_address(argument, "TO:"),
            user=self.machine.auth_user,
            listener=self.listening.listener.name,
            trace_id=self.trace_id,
        )

    def _trace(self, line: bytes) -> None:
        if not log.isEnabledFor(logging.DEBUG):
            return
        if self.machine.in_auth_exchange:
            # A SASL response: even its first characters are base64 of a password.
            shown = "<hidden>"
        elif line[:5].upper() == b"AUTH ":
            shown = "AUTH <hidden>"
        else:
            shown = line[:200].decode("utf-8", "replace").rstrip("\r\n")
        event(log, "command", level=logging.DEBUG, client=self.client, line=shown, trace_id=self.trace_id)

    def _perform(self, step: Step) -> bool:
        """Send the step's replies and run its action; False when the session is over."""
        if step.delay:
            self.conn.flush()
            gevent.sleep(step.delay)
        for reply in step.replies:
            self.conn.send(reply.render(enhanced=bool(reply.status)))
            if reply.code >= 400:
                self._reject(reply)
        action = step.action
        if action is Action.NONE:
            return True
        if action is Action.CLOSE:
            self.conn.close(linger=self.linger)
            return False
        if action is Action.STARTTLS:
            self._start_tls()
            return True
        if action is Action.CHECK_AUTH:
            assert step.credentials is not None
            return self._perform(self._check_auth(*step.credentials))
        if action is Action.READ_DATA:
            return self._perform(self._read_data())
        if action is Action.ENQUEUE:
            return self._perform(self._check_data() or self._enqueue())
        if action is Action.CHECK:
            assert step.check is not None
            return self._perform(self._check(step.check))
        raise AssertionError(f"unknown action {action}")

    # -- plug-ins (empath/plugins) ----------------------------------------------------

    def _consult(self, hook: str, **fields: Any) -> Verdict:
        """Run this listener's plug-ins of ``hook`` on what the session knows, and ``fields``."""
        chain = self.plugins.get(hook)
        if not chain:
            return PASS
        machine, transaction = self.machine, self.machine.transaction
        context = Context(
            hook=hook,
            trace_id=self.trace_id,
            listener=self.listening.listener.name,
            client_address=self.client,
            helo=machine.helo,
            tls=machine.tls_active,
            auth_user=machine.auth_user,
            sender=transaction.sender if transaction else None,
            recipients=tuple(r.address for r in transaction.recipients) if transaction else (),
        )
        return self.host.plugins.runner.run(chain, dataclasses.replace(context, **fields))

    def _check(self, check: Check) -> Step:
        """A HELO, MAIL or RCPT the machine holds until the plug-ins have had their say."""
        if check.verify:
            assert check.recipient is not None
            refusal = _unverified(self.host.verify_recipient(check.recipient, self.trace_id))
            if refusal is not None:
                return self.machine.checked(refusal)
        if check.hook == "helo":
            verdict = self._consult("helo", helo=check.helo)
        elif check.mail is not None:
            verdict = self._consult("mail", sender=check.mail.path.address, parameters=_parameters(check.mail))
        else:
            verdict = self._consult("rcpt", recipient=check.recipient)
        return self.machine.checked(_refusal(verdict))

    def _check_data(self) -> Step | None:
        """The data plug-ins: a refusal ends the transaction; header changes are made here."""
        if not self.plugins.get("data"):
            return None
        spool = self._spool
        assert spool is not None
        with self._whole(spool):
            message = spool.read()
            verdict = self._consult("data", headers=parse_headers(message), message=message)
        refusal = _refusal(verdict)
        if refusal is not None:
            self._let_go()
            return self.machine.queue_failed(refusal)
        # The header section alone is a message without a body: the edits apply to it as they would to the whole.
        spool.replace_header_section(apply_headers(spool.header_section(), verdict.headers))
        return None

    def _whole(self, spool: Spool) -> AbstractContextManager[Any]:
        """Held while ``spool`` is read whole: one message larger than its spool's
        memory at a time in this process (queue/spool.py, docs/capacity.md)."""
        return self.host.whole_messages if spool.spilled else contextlib.nullcontext()

    def _let_go(self) -> None:
        """Drop the message read, if one is held (its spool file with it)."""
        if self._spool is not None:
            self._spool.discard()
            self._spool = None

    def _start_tls(self) -> None:
        dropped = self.conn.discard_input()
        if dropped:
            # Commands pipelined after STARTTLS were sent in clear and may
            # have been injected by a man in the middle (CVE-2011-0411).
            event(
                log,
                "starttls_injection",
                level=logging.WARNING,
                client=self.client,
                dropped_bytes=dropped,
                trace_id=self.trace_id,
            )
        assert self.listening.tls_context is not None
        try:
            self.conn.start_tls(self.listening.tls_context, self.timeouts.tls_handshake)
        except (Exception, gevent.Timeout):
            self.host.metrics.tls_handshakes.labels("failure").inc()
            raise
        self.host.metrics.tls_handshakes.labels("success").inc()
        self.machine.tls_started()
        event(
            log,
            "tls",
            client=self.client,
            version=self.conn.tls_version,
            cipher=self.conn.tls_cipher,
            trace_id=self.trace_id,
        )

    def _check_auth(self, user: str, password: str) -> Step:
        users = self.host.users
        assert users is not None
        if self.host.auth_blocked(self.client):
            # Refused before the check, right or wrong: a guesser learns nothing more.
            return self.machine.auth_blocked()
        try:
            # scrypt takes tens of milliseconds of CPU: keep it off the hub.
            ok = threads.call(gevent.get_hub().threadpool, users.verify, user, password)
        except UsersFileError as exc:
            log.error("AUTH unavailable: %s", exc)
            return self.machine.auth_unavailable()
        audit(
            "auth",
            level=logging.INFO if ok else logging.WARNING,
            client=self.client,
            listener=self.listening.listener.name,
            user=user,
            mechanism=self.machine.auth_mechanism,
            result="success" if ok else "failure",
            trace_id=self.trace_id,
        )
        self.host.metrics.auth.labels("success" if ok else "failure").inc()
        if not ok:
            self.host.auth_failed(self.client)
        return self.machine.auth_result(ok)

    def _read_data(self) -> Step:
        self._stage = "END-OF-MESSAGE"  # what the message's refusals answer
        self._data_sender = self.machine.transaction.sender if self.machine.transaction is not None else None
        limits = self.config.limits
        spool = self._new_spool()
        reader = DataReader(spool, limits, lenient=self._lenient())
        # Read a little more than a legal line, so an over-long one is seen as such.
        buffer_limit = limits.text_line_length + 2
        # Each line within the data timeout, and the whole at data_min_rate on average:
        # the deadline starts a data timeout away and each byte received moves it on.
        per_byte = 1 / limits.data_min_rate if limits.data_min_rate else 0.0
        deadline = time.monotonic() + self.timeouts.data
        while True:
            left = deadline - time.monotonic() if per_byte else self.timeouts.data
            if left <= 0:
                raise gevent.Timeout()
            lines, overflow = self.conn.read_lines(buffer_limit, min(self.timeouts.data, left))
            deadline += len(lines) * per_byte
            ended, after = reader.feed_lines(lines, overflow)
            if ended:
                self.conn.unread(after)  # commands pipelined after the end
                break
        error = reader.error
        if error is None and spool.error is not None:
            full = isinstance(classify(spool.error), StorageFull)  # the queue's own rule: ENOSPC, EDQUOT
            error = self._storage_failure(full, f"spool file: {spool.error}")
        if error is None:
            self._spool = spool
        else:
            spool.discard()
        return self.machine.data_end(error, reader.fatal)

    def _new_spool(self) -> Spool:
        return Spool(self.config.data_dir)

    # -- the message --------------------------------------------------------------------

    def _enqueue(self) -> Step:
        transaction = self.machine.transaction
        assert transaction is not None
        now = time.time()
        queue_id = ids.new_id(now)
        spool = self._spool
        assert spool is not None
        origin = self._origin(transaction)
        rules = self.host.rewriter.rules() if self.host.rewriter.active else None
        args = (self.config, origin, self._envelope(transaction, spool), spool, queue_id, now, self.trace_id, rules)
        try:
            if submit.may_sign(self.config, origin):
                # DKIM hashes the whole message and an RSA signature takes milliseconds:
                # on a thread, so the other sessions go on meanwhile.
                with self._whole(spool):
                    message, signing = threads.call(gevent.get_hub().threadpool, submit.compose, *args)
            else:
                message, signing = submit.compose(*args)
            aliased = [(r.address, r.targets) for r in transaction.recipients]
            ours, srs = self.listening.policy.local_domains, self.host.aliases.srs
            failure = self._commit(submit.entries(message, aliased, ours, srs, now, ids.new_id(now)), signing)
        finally:
            self._let_go()
        return self.machine.queue_failed(failure) if failure is not None else self.machine.queued(queue_id)

    def _origin(self, transaction: Transaction) -> submit.Origin:
        machine = self.machine
        return submit.SmtpClient(
            address=self.client,
            helo=machine.helo,
            listener=self.listening.listener.name,
            protocol=stamp.protocol(
                machine.esmtp, machine.tls_active, machine.auth_user is not None, transaction.mail.smtputf8
            ),
            tls=f"using {self.conn.tls_version} with cipher {self.conn.tls_cipher}" if machine.tls_active else None,
            auth_user=machine.auth_user,
            trusted=machine.trusted,
        )

    def _envelope(self, transaction: Transaction, data: Spool) -> submit.Envelope:
        """The transaction's envelope, its data taken as the client declared it (BODY=)."""
        mail = transaction.mail
        return submit.Envelope(
            sender=transaction.sender,
            recipients=submit.expanded(
                [(r.address, r.domain, r.args.notify, r.args.orcpt, r.targets) for r in transaction.recipients]
            ),
            given=[r.address for r in transaction.recipients],
            # An alias to an internationalized address makes the message one (RFC 6531 §3.2).
            smtputf8=mail.smtputf8 or not all(t.isascii() for r in transaction.recipients for t in r.targets),
            body_type=mail.body,
            dsn_ret=mail.ret,
            dsn_envid=mail.envid,
        )

    def _commit(self, entries: tuple[NewMessage, ...], signing: dkim.Signing) -> Reply | None:
        """Queue the message (the entries it became); the reply that refuses it when the queue could not."""
        try:
            self.host.enqueue(*entries)
        except QueueError as exc:
            return self._storage_failure(isinstance(exc, StorageFull), str(exc))
        listener, metrics = self.listening.listener.name, self.host.metrics
        metrics.messages_received.labels(listener).inc()
        metrics.received_bytes.labels(listener).inc(entries[0].size)
        for entry in entries:
            self._queued(entry, signing)
        return None

    def _storage_failure(self, full: bool, error: str) -> Reply:
        """Log why a message could not be stored; the reply that says so."""
        kind = "queue_full" if full else "queue_error"
        event(log, kind, level=logging.ERROR, client=self.client, error=error, trace_id=self.trace_id)
        return replies.INSUFFICIENT_STORAGE if full else replies.QUEUE_FAILURE

    def _queued(self, message: NewMessage, signing: dkim.Signing) -> None:
        """Count and log a queue entry just committed, and the keys that did not sign it."""
        machine = self.machine
        self.host.metrics.queue_in.inc()
        trace_id = message.trace_id
        event(
            log,
            "queued",
            queue_id=message.queue_id,
            client=self.client,
            helo=machine.helo,
            **_from(message.sender),
            size=message.size,
            recipients=len(message.recipients),
            tls=self.conn.tls_version,
            user=machine.auth_user,
            trace_id=trace_id,
            session_trace_id=self.trace_id if trace_id != self.trace_id else None,
        )
        for key, why in signing.failed:
            event(
                log,
                "dkim_failed",
                level=logging.ERROR,
                queue_id=message.queue_id,
                domain=key.domain,
                selector=key.selector,
                error=why,
                trace_id=trace_id,
            )


def _unverified(existence: Existence) -> Reply | None:
    """The refusal of a recipient verification found unknown, or could not verify."""
    if existence is Existence.UNKNOWN:
        return replies.UNKNOWN_RECIPIENT
    if existence is Existence.UNVERIFIED:
        return replies.UNVERIFIED_RECIPIENT
    return None


def _refusal(verdict: Verdict) -> Reply | None:
    if verdict.failed:
        return replies.PLUGIN_FAILURE
    if verdict.reject is not None:
        r = verdict.reject
        return replies.plugin_rejection(r.code, r.status, r.text)
    return None


def _command(stage: str | None, line: bytes) -> tuple[str, str]:
    """The command a refusal answers, and its argument when it is MAIL or RCPT."""
    if stage is not None:
        return stage, ""
    verb, _, argument = line[:512].decode("utf-8", "replace").rstrip("\r\n").partition(" ")
    command = verb.upper() if verb.isascii() and verb.isalpha() and len(verb) <= 12 else "UNKNOWN"
    return command, argument if command in ("MAIL", "RCPT") else ""


def _address(argument: str, prefix: str) -> str | None:
    """The address a MAIL (``FROM:``) or RCPT (``TO:``) argument gives, as the client wrote
    it but for what could mislead a reader of the log line (control characters, ``<>``)."""
    if argument[: len(prefix)].upper() != prefix:
        return None
    text = argument[len(prefix) :].strip().split(" ", 1)[0].strip("<>")[:256]
    return "".join(ch if ch.isprintable() and ch not in "<>" else "?" for ch in text)


def _parameters(mail: MailArgs) -> dict[str, str]:
    """The MAIL parameters a plug-in sees, as the client would have written them."""
    given = {
        "SIZE": str(mail.size) if mail.size is not None else None,
        "BODY": mail.body if mail.body != "7BIT" else None,
        "SMTPUTF8": "" if mail.smtputf8 else None,
        "RET": mail.ret,
        "ENVID": mail.envid,
    }
    return {key: value for key, value in given.items() if value is not None}


def _from(sender: str | None) -> dict[str, Any]:
    """The envelope sender as a log field: ``from``, Postfix's name, in text and JSON alike
    (docs/logging.md); a Python keyword, so given as a mapping."""
    return {"from": sender}
