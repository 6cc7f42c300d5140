"""The SMTP protocol state machine: decides every reply, does no I/O.

The session feeds it lines and the outcome of the work it asked for (a TLS
handshake, a password check, the message data, the queue commit) and gets
back Steps: replies to send and at most one action to perform. Everything
that depends on the session's history lives here, so it is tested without a
socket.
"""

import base64
import binascii
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from empath import addresses
from empath.addresses import Domain, EmailAddress, ReversePath
from empath.aliases import Expansion
from empath.config.model import Limits
from empath.smtp import replies
from empath.smtp.commands import (
    NOT_SMTP_VERBS,
    Command,
    CommandError,
    MailArgs,
    RcptArgs,
    parse_command,
    parse_mail,
    parse_rcpt,
)
from empath.smtp.relay import Client, may_relay
from empath.smtp.replies import Reply

# Commands that move no mail: a client that sends more than junk_command_limit of
# them (a repeated EHLO too) without queueing a message is holding a slot, not mailing.
JUNK_VERBS = frozenset({"NOOP", "RSET", "VRFY", "HELP"})


# An alias that cannot be expanded: a local name with no alias is unknown, like any other.
_ALIAS_REFUSALS = {
    "unknown": replies.UNKNOWN_RECIPIENT,
    "loop": replies.ALIAS_LOOP,
    "too_many": replies.ALIAS_TOO_MANY,
    "srs": replies.UNKNOWN_RECIPIENT,  # a forged or expired SRS address: nobody of ours
}


class Action(enum.Enum):
    NONE = "none"
    CLOSE = "close"  # send the replies, then hang up
    STARTTLS = "starttls"  # send the replies, then do the TLS handshake
    CHECK_AUTH = "check_auth"  # check Step.credentials, then call auth_result()
    READ_DATA = "read_data"  # send the replies, then read the message and call data_end()
    ENQUEUE = "enqueue"  # commit the transaction and the data, then call queued() or queue_failed()
    CHECK = "check"  # verify the recipient of Step.check if asked, run its plug-ins, then call checked()


@dataclass(frozen=True)
class Check:
    """A command the machine accepts, held until the plug-ins of its hook have had their say
    (and, for a recipient of a domain verified by callout, its next hop)."""

    hook: str  # helo, mail or rcpt
    helo: str = ""  # helo: the name given
    mail: MailArgs | None = None  # mail: the sender and parameters
    recipient: EmailAddress | None = None  # rcpt: the address
    verify: bool = False  # rcpt: ask the domain's next hop whether the address exists


@dataclass(frozen=True)
class Step:
    replies: tuple[Reply, ...] = ()
    action: Action = Action.NONE
    delay: float = 0.0  # seconds to wait before sending the replies
    credentials: tuple[str, str] | None = None  # (user, password) for CHECK_AUTH
    check: Check | None = None  # for CHECK


@dataclass(frozen=True)
class Policy:
    """What the listener and config say; the same for every session on a listener."""

    hostname: Domain
    mode: str  # smtp, submission or smtps
    limits: Limits
    local_domains: tuple[Domain, ...] = ()
    tls_available: bool = False
    auth_available: bool = False
    require_auth: bool = False  # AUTH before MAIL on this listener (submission always requires it)
    storage_available: Callable[[int], bool] = lambda size: True
    # Is the address in its local domain's recipients table? None: the domain has none (all exist).
    recipient_exists: Callable[[str, str], bool | None] = lambda address, domain: None
    callout_domains: frozenset[Domain] = frozenset()  # local domains whose next hop says who exists
    # Where mail for an address really goes (empath/aliases.py); not aliased: the address itself.
    expand: Callable[[EmailAddress], Expansion] = lambda address: Expansion((address,))
    # May the user logged in send as this address? Asked on listeners with sender_ownership.
    sender_ownership: bool = False
    may_send_as: Callable[[str, str], bool] = lambda user, sender: True

    @property
    def postmaster_domain(self) -> Domain:
        return self.local_domains[0] if self.local_domains else self.hostname


@dataclass(frozen=True)
class AcceptedRcpt:
    """A recipient the transaction took: the address (<Postmaster> made whole), its domain, its parameters."""

    address: EmailAddress
    domain: Domain
    args: RcptArgs
    targets: tuple[EmailAddress, ...] = ()  # what its aliases expand to; (): it is not aliased


@dataclass
class Transaction:
    """The mail transaction under way: from MAIL to the end of DATA, or RSET."""

    mail: MailArgs
    recipients: list[AcceptedRcpt] = field(default_factory=list)
    rcpt_tried: bool = False

    @property
    def sender(self) -> ReversePath:
        return self.mail.path.address


class State(enum.Enum):
    FRESH = "fresh"  # greeted, waiting for HELO/EHLO
    READY = "ready"  # no transaction
    MAIL = "mail"  # sender given
    DATA = "data"  # reading the message
    QUEUEING = "queueing"  # waiting for the queue commit


def _b64decode(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise CommandError(replies.AUTH_BAD_RESPONSE) from None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class Machine:
    def __init__(
        self,
        policy: Policy,
        client_address: str,
        trusted: bool,
        tls_active: bool = False,
        checks: frozenset[str] = frozenset(),
    ):
        self.policy = policy
        self.checks = checks  # the hooks (helo, mail, rcpt) that have plug-ins to consult
        self.client_address = client_address
        self.trusted = trusted
        self.tls_active = tls_active
        self.state = State.FRESH
        self.helo: str | None = None
        self.esmtp = False
        self.auth_user: str | None = None
        self.transaction: Transaction | None = None
        self.errors = 0
        self.junk = 0  # commands that move no mail, since the last message queued
        self.auth_failures = 0
        self._local_domains = frozenset(policy.local_domains)
        # An AUTH exchange in progress: (mechanism, username so far).
        self._auth: tuple[str, str | None] | None = None
        self._pending_user: str | None = None
        self.auth_mechanism = ""  # of the last AUTH command
        # A command held for the plug-ins: its reply and what accepting it changes.
        self._held: tuple[Reply, Callable[[], None]] | None = None

    # -- what the session asks -------------------------------------------------

    @property
    def in_auth_exchange(self) -> bool:
        """True while the next line is a SASL response, which must never be logged."""
        return self._auth is not None

    @property
    def auth_offered(self) -> bool:
        return self.policy.auth_available and self.tls_active

    def greeting(self) -> Reply:
        return replies.GREETING.format(hostname=self.policy.hostname)

    # -- input -----------------------------------------------------------------

    def handle(self, line: bytes) -> Step:
        """One complete line from the client, CRLF removed."""
        try:
            if self._auth is not None:
                return self._auth_response(line)
            command = parse_command(line)
            return self._dispatch(command)
        except CommandError as exc:
            return self._fail(exc.reply)

    def line_too_long(self) -> Step:
        self._auth = None  # a refused line ends an AUTH exchange, or the next command would be read as a response
        return self._fail(replies.LINE_TOO_LONG)

    @property
    def ours(self) -> bool:
        """The office's own client: a trusted network or an authenticated user."""
        return self.trusted or self.auth_user is not None

    def bare_lf(self) -> Step:
        self._auth = None
        return self._fail(replies.BARE_LF_IN_COMMAND)

    def tls_started(self) -> None:
        """RFC 3207 §4.2: after the handshake, forget everything learned before it."""
        self.tls_active = True
        self.state = State.FRESH
        self.helo = None
        self.esmtp = False
        self.transaction = None
        self.auth_user = None

    def auth_result(self, ok: bool) -> Step:
        user = self._pending_user
        self._pending_user = None
        if ok:
            self.auth_user = user
            return Step((replies.AUTH_OK,))
        self.auth_failures += 1
        delay = self.policy.limits.auth_failure_delay * self.auth_failures
        if self.auth_failures >= self.policy.limits.auth_max_failures:
            return Step((replies.AUTH_FAILED, replies.AUTH_TOO_MANY_FAILURES), Action.CLOSE, delay=delay)
        step = self._fail(replies.AUTH_FAILED)
        return Step(step.replies, step.action, delay=delay)

    def auth_blocked(self) -> Step:
        """The client's address got too many passwords wrong lately (across sessions): no check, a 421."""
        self._pending_user = None
        return Step((replies.AUTH_BLOCKED,), Action.CLOSE)

    def auth_unavailable(self) -> Step:
        """The users file could not be read: a temporary failure, not the client's fault."""
        self._pending_user = None
        return Step((replies.AUTH_TEMPORARY,))

    def data_end(self, error: Reply | None, fatal: bool = False) -> Step:
        """The message has been read; ``error`` is the DataReader's verdict."""
        if error is not None:
            self._reset()
            step = self._fail(error)
            return Step(step.replies, Action.CLOSE) if fatal else step
        self.state = State.QUEUEING
        return Step(action=Action.ENQUEUE)

    def queued(self, queue_id: str) -> Step:
        self._reset()
        self.junk = 0  # a session that moves mail is no idler: its RSETs between messages are not junk
        return Step((replies.QUEUED.format(queue_id=queue_id),))

    def queue_failed(self, reply: Reply) -> Step:
        self._reset()
        return Step((reply,))

    def checked(self, refusal: Reply | None) -> Step:
        """The plug-ins' verdict on the held command: None accepts it, a reply refuses it."""
        assert self._held is not None
        reply, accept = self._held
        self._held = None
        if refusal is None:
            accept()
            return Step((reply,))
        if refusal.code == 421:  # RFC 5321 §3.8: the server closes after a 421
            return Step((refusal,), Action.CLOSE)
        return self._fail(refusal)

    # -- commands --------------------------------------------------------------

    def _dispatch(self, cmd: Command) -> Step:
        if cmd.verb in NOT_SMTP_VERBS:
            return Step((replies.NOT_SMTP,), Action.CLOSE)
        if cmd.verb in JUNK_VERBS or (cmd.verb in ("EHLO", "HELO") and self.helo is not None):
            self.junk += 1
            if self.junk > self.policy.limits.junk_command_limit:
                return Step((replies.TOO_MANY_JUNK,), Action.CLOSE)
        handler = getattr(self, f"_cmd_{cmd.verb.lower()}", None)
        if handler is None:
            if cmd.verb in ("EXPN", "TURN", "ETRN", "BDAT"):
                return self._fail(replies.NOT_IMPLEMENTED)
            return self._fail(replies.UNKNOWN_COMMAND)
        return handler(cmd.arg)

    def _cmd_ehlo(self, arg: str) -> Step:
        return self._hello(arg, esmtp=True)

    def _cmd_helo(self, arg: str) -> Step:
        return self._hello(arg, esmtp=False)

    def _hello(self, arg: str, esmtp: bool) -> Step:
        try:
            helo = addresses.parse_helo(arg)
        except addresses.AddressError:
            return self._fail(replies.BAD_HELO)

        def accept() -> None:
            self._reset()
            self.helo = helo
            self.esmtp = esmtp
            self.state = State.READY

        hello = replies.HELLO.format(hostname=self.policy.hostname, helo=helo)
        if esmtp:
            hello = hello.with_text("\n".join([hello.text, *self.extensions()]))
        return self._accept(Check("helo", helo=helo), hello, accept)

    def extensions(self) -> list[str]:
        ext = [
            "PIPELINING",
            f"SIZE {self.policy.limits.max_message_size}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "SMTPUTF8",
            "DSN",
        ]
        if self.policy.tls_available and not self.tls_active:
            ext.append("STARTTLS")
        if self.auth_offered:
            ext.append("AUTH PLAIN LOGIN")
        ext.append("HELP")
        return ext

    def _cmd_noop(self, arg: str) -> Step:
        return Step((replies.NOOP,))

    def _cmd_rset(self, arg: str) -> Step:
        if arg:
            return self._fail(replies.SYNTAX_ERROR)
        self._reset()
        return Step((replies.RESET,))

    def _cmd_quit(self, arg: str) -> Step:
        if arg:
            return self._fail(replies.SYNTAX_ERROR.with_text("Syntax: QUIT"))  # RFC 5321 §4.1.1.10
        return Step((replies.CLOSING,), Action.CLOSE)

    def _cmd_vrfy(self, arg: str) -> Step:
        if not arg:
            return self._fail(replies.SYNTAX_ERROR)
        return Step((replies.VRFY,))

    def _cmd_help(self, arg: str) -> Step:
        return Step((replies.HELP,))

    def _cmd_starttls(self, arg: str) -> Step:
        if arg:
            return self._fail(replies.SYNTAX_ERROR)
        if self.tls_active:
            return self._fail(replies.ALREADY_TLS)
        if not self.policy.tls_available:
            return self._fail(replies.TLS_NOT_AVAILABLE)
        if self.state is State.FRESH or not self.esmtp:
            return self._fail(replies.NEED_HELO.with_text("Say EHLO first"))
        if self.transaction is not None:
            return self._fail(replies.BAD_SEQUENCE.with_text("Mail transaction in progress"))
        return Step((replies.READY_TLS,), Action.STARTTLS)

    def _cmd_auth(self, arg: str) -> Step:
        if not self.policy.auth_available:
            return self._fail(replies.AUTH_NOT_AVAILABLE)
        if not self.tls_active:
            return self._fail(replies.AUTH_ENCRYPTION_REQUIRED)
        if self.state is State.FRESH or not self.esmtp:
            return self._fail(replies.NEED_HELO.with_text("Say EHLO first"))
        if self.auth_user is not None:
            return self._fail(replies.AUTH_ALREADY)
        if self.transaction is not None:
            return self._fail(replies.BAD_SEQUENCE.with_text("Mail transaction in progress"))
        mechanism, _, initial = arg.partition(" ")
        if not mechanism:
            return self._fail(replies.SYNTAX_ERROR.with_text("Syntax: AUTH mechanism [initial-response]"))
        mechanism = mechanism.upper()
        self.auth_mechanism = mechanism  # for the audit log
        initial = initial.strip()
        if mechanism == "PLAIN":
            if initial:
                return self._check_plain(initial)
            self._auth = ("PLAIN", None)
            return Step((replies.AUTH_CHALLENGE.format(challenge=""),))
        if mechanism == "LOGIN":
            if initial:
                self._auth = ("LOGIN", self._decode_or_cancel(initial))
                return Step((replies.AUTH_CHALLENGE.format(challenge=_b64("Password:")),))
            self._auth = ("LOGIN", None)
            return Step((replies.AUTH_CHALLENGE.format(challenge=_b64("Username:")),))
        return self._fail(replies.AUTH_MECHANISM_UNKNOWN)

    def _decode_or_cancel(self, text: str) -> str:
        if text == "=":  # RFC 4954: an empty initial response
            return ""
        try:
            return _b64decode(text)
        except CommandError:
            self._auth = None
            raise

    def _auth_response(self, line: bytes) -> Step:
        text = line.decode("ascii", "replace").strip()
        mechanism, user = self._auth or ("", None)
        if text == "*":
            self._auth = None
            return self._fail(replies.AUTH_CANCELLED)
        if mechanism == "PLAIN":
            self._auth = None
            return self._check_plain(text)
        if user is None:
            self._auth = ("LOGIN", self._decode_or_cancel(text))
            return Step((replies.AUTH_CHALLENGE.format(challenge=_b64("Password:")),))
        self._auth = None
        return self._check(user, _b64decode(text))

    def _check_plain(self, blob: str) -> Step:
        parts = _b64decode(blob).split("\0")
        if len(parts) != 3:
            return self._fail(replies.AUTH_BAD_RESPONSE)
        authzid, user, password = parts
        if authzid and authzid != user:  # no acting on behalf of another user
            return self.auth_result(False)
        return self._check(user, password)

    def _check(self, user: str, password: str) -> Step:
        self._pending_user = user
        return Step(action=Action.CHECK_AUTH, credentials=(user, password))

    def _cmd_mail(self, arg: str) -> Step:
        if self.state is State.FRESH:
            return self._fail(replies.NEED_HELO)
        if self.transaction is not None:
            return self._fail(replies.NESTED_MAIL)
        if (self.policy.mode == "submission" or self.policy.require_auth) and self.auth_user is None:
            return self._fail(replies.AUTH_REQUIRED if self.tls_active else replies.TLS_REQUIRED)
        mail = parse_mail(arg)
        if not self.esmtp and mail.has_params:
            return self._fail(replies.BAD_PARAMETER.with_text("Parameters need EHLO"))
        if not self._owns(mail.path.mailbox):
            return self._fail(replies.SENDER_NOT_OWNED)
        limit = self.policy.limits.max_message_size
        if mail.size is not None and mail.size > limit:
            return self._fail(replies.MESSAGE_TOO_BIG.with_text(f"Message size exceeds fixed limit of {limit} bytes"))
        if not self.policy.storage_available(mail.size or 0):
            return Step((replies.INSUFFICIENT_STORAGE,))

        def accept() -> None:
            self.transaction = Transaction(mail)
            self.state = State.MAIL

        return self._accept(Check("mail", mail=mail), replies.SENDER_OK, accept)

    def _owns(self, sender: addresses.Mailbox | None) -> bool:
        """May the user logged in (if any) send as ``sender``? The null sender is nobody's."""
        if sender is None or self.auth_user is None or not self.policy.sender_ownership:
            return True
        return self.policy.may_send_as(self.auth_user, sender.address)

    def _cmd_rcpt(self, arg: str) -> Step:
        if self.transaction is None:
            return self._fail(replies.NEED_MAIL)
        self.transaction.rcpt_tried = True
        rcpt = parse_rcpt(arg, utf8=self.transaction.mail.smtputf8)
        if not self.esmtp and rcpt.has_params:
            return self._fail(replies.BAD_PARAMETER.with_text("Parameters need EHLO"))
        client = Client(self.client_address, self.trusted, self.auth_user is not None)
        if not may_relay(rcpt.path, client, self._local_domains):
            return self._fail(replies.RELAY_DENIED)
        if rcpt.path.postmaster:
            domain = self.policy.postmaster_domain
            address = addresses.Mailbox("postmaster", domain).address
        else:
            assert rcpt.path.mailbox is not None
            address, domain = rcpt.path.mailbox.address, rcpt.path.mailbox.domain
        expansion = self.policy.expand(address)
        if expansion.problem is not None:
            return self._fail(_ALIAS_REFUSALS[expansion.problem])
        if expansion.bounces_only and not self.transaction.sender.is_null:
            return self._fail(replies.SRS_BOUNCES_ONLY)
        targets = expansion.targets if expansion.aliased else ()
        # Postmaster at a local domain is always taken (RFC 5321 §4.5.1), and so is an
        # address with an alias; any other unknown recipient is refused now, not taken
        # and bounced later: no backscatter.
        known = expansion.aliased or address.local.lower() == "postmaster"
        if not known and self.policy.recipient_exists(address, domain) is False:
            return self._fail(replies.UNKNOWN_RECIPIENT)
        # Our own clients are not asked about (Postfix's permit_mynetworks, permit_sasl_authenticated
        # before reject_unverified_recipient): the internal server down must not stop the office
        # writing to itself, and what they misspell bounces to them.
        verify = not known and not self.ours and domain in self.policy.callout_domains
        recipients = self.transaction.recipients
        if any(r.address == address for r in recipients):
            return Step((replies.RECIPIENT_OK,))
        if len(recipients) >= self.policy.limits.max_recipients:
            return self._fail(replies.TOO_MANY_RECIPIENTS)
        return self._accept(
            Check("rcpt", recipient=address, verify=verify),
            replies.RECIPIENT_OK,
            lambda: recipients.append(AcceptedRcpt(address, domain, rcpt, targets)),
        )

    def _cmd_data(self, arg: str) -> Step:
        if arg:
            return self._fail(replies.SYNTAX_ERROR)
        if self.transaction is None:
            return self._fail(replies.NEED_MAIL)
        if not self.transaction.recipients:
            # RFC 2920 §3.1: 554 once RCPTs were refused, 503 when none was tried.
            return self._fail(replies.NO_VALID_RECIPIENTS if self.transaction.rcpt_tried else replies.NEED_RCPT)
        self.state = State.DATA
        return Step((replies.START_DATA,), Action.READ_DATA)

    # -- helpers ---------------------------------------------------------------

    def _reset(self) -> None:
        self.transaction = None
        if self.state is not State.FRESH:
            self.state = State.READY

    def _accept(self, check: Check, reply: Reply, accept: Callable[[], None]) -> Step:
        """Accept a command now, or hold it for the plug-ins when its hook has some, or to verify it."""
        if check.hook not in self.checks and not check.verify:
            accept()
            return Step((reply,))
        self._held = (reply, accept)
        return Step(action=Action.CHECK, check=check)

    def _fail(self, reply: Reply) -> Step:
        """Send an error reply; hang up once the client has made too many."""
        self.errors += 1
        if self.errors >= self.policy.limits.max_errors:
            return Step((reply, replies.TOO_MANY_ERRORS), Action.CLOSE)
        return Step((reply,))
