"""SMTP replies: the one Reply type of both ends, and every reply the server
sends, by name, with its enhanced status code.

The server and the tests both use these names, so a test asserts against
``replies.RELAY_DENIED`` rather than a number copied by hand. The client
reads a next hop's answer into the same type (``Reply.heard``).
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

# An enhanced status code at the start of a reply's first line (RFC 3463).
_HEARD_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?: |$)")


@dataclass(frozen=True)
class Reply:
    code: int
    status: str  # enhanced status code (RFC 3463), "" where none applies
    # The lines of text after the code, joined by newlines. Ours leave the
    # status out (render puts it in front of each line); a heard one keeps
    # its lines as the remote sent them.
    text: str
    # The catalogue name in lower case (relay_denied), kept by with_text and
    # format; for metrics and logs. Not part of a reply's identity.
    name: str = field(default="", compare=False, repr=False)

    @classmethod
    def heard(cls, code: int, lines: Sequence[str]) -> "Reply":
        """A reply read from a remote server. Its status is the enhanced code its first
        line starts with, when that agrees with the reply code; else one derived from the code."""
        m = _HEARD_STATUS.match(lines[0]) if lines else None
        agrees = m is not None and m.group(1) == str(code)[0]
        status = ".".join(m.groups()) if m is not None and agrees else f"{code // 100}.0.0"
        return cls(code, status, "\n".join(lines))

    @property
    def ok(self) -> bool:
        """A positive reply: 2xx, or 3xx (go on)."""
        return 200 <= self.code < 400

    @property
    def summary(self) -> str:
        """The reply on one line, code first, as logs, deferrals and bounces quote it."""
        return f"{self.code} " + " ".join(line.strip() for line in self.text.split("\n"))

    def with_text(self, text: str) -> "Reply":
        return replace(self, text=text)

    def format(self, **fields: object) -> "Reply":
        """Fill the ``{placeholders}`` of a catalogue entry."""
        return replace(self, text=self.text.format(**fields))

    def lines(self, enhanced: bool = True) -> list[str]:
        """The reply as SMTP lines without CRLF, multi-line when text has newlines."""
        prefix = f"{self.status} " if enhanced and self.status else ""
        parts = self.text.split("\n")
        out = []
        for i, part in enumerate(parts):
            sep = "-" if i < len(parts) - 1 else " "
            out.append(f"{self.code}{sep}{prefix}{part}")
        return out

    def render(self, enhanced: bool = True) -> bytes:
        return "".join(line + "\r\n" for line in self.lines(enhanced)).encode("utf-8")


# Connection
GREETING = Reply(220, "", "{hostname} ESMTP Empath")
CLOSING = Reply(221, "2.0.0", "Bye")
SHUTTING_DOWN = Reply(421, "4.3.2", "Service shutting down, try again later")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")
TOO_MANY_FROM_CLIENT = Reply(421, "4.7.0", "Too many connections from your address, try again later")
TOO_FAST_FROM_CLIENT = Reply(421, "4.7.0", "Your address connects too often, try again later")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
TOO_MANY_JUNK = Reply(421, "4.7.0", "Too many commands without mail, closing connection")
INTERNAL_ERROR = Reply(421, "4.3.0", "Internal error, closing connection; try again later")
TIMEOUT = Reply(421, "4.4.2", "Timeout waiting for input, closing connection")
PREGREET = Reply(554, "5.5.1", "Talking before the greeting is not allowed")
NOT_SMTP = Reply(521, "5.5.1", "This is an SMTP server, not an HTTP proxy or web server")

# Generic command replies
RESET = Reply(250, "2.0.0", "Reset OK")
NOOP = Reply(250, "2.0.0", "OK")
HELLO = Reply(250, "", "{hostname} Hello {helo}")
VRFY = Reply(252, "2.5.0", "Cannot verify the user, but will accept the message and attempt delivery")
HELP = Reply(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
START_DATA = Reply(354, "", "End data with <CR><LF>.<CR><LF>")
QUEUED = Reply(250, "2.0.0", "OK queued as {queue_id}")

# Syntax and sequence
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
BARE_LF_IN_COMMAND = Reply(500, "5.5.2", "Command lines must end with <CR><LF>")
UNKNOWN_COMMAND = Reply(500, "5.5.1", "Command unrecognized")
SYNTAX_ERROR = Reply(501, "5.5.4", "Syntax error in parameters or arguments")
BAD_HELO = Reply(501, "5.5.4", "HELO and EHLO need a domain or address literal")
BAD_ADDRESS = Reply(501, "5.1.3", "Bad address syntax")
BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE = Reply(503, "5.5.1", "Bad sequence of commands")
NEED_HELO = Reply(503, "5.5.1", "Say EHLO or HELO first")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL before RCPT")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT before DATA")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already given")
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")
BAD_PARAMETER = Reply(555, "5.5.4", "Unsupported or malformed parameter")
NEED_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address needs SMTPUTF8")

# Policy
RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")
NOT_FROM_HERE = Reply(554, "5.7.1", "Connections from your address are not taken on this port")
SENDER_NOT_OWNED = Reply(553, "5.7.1", "Sender address rejected: not owned by the user logged in")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
TLS_REQUIRED = Reply(530, "5.7.0", "Must issue a STARTTLS command first")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit")
HEADER_TOO_BIG = Reply(552, "5.3.4", "Message header size exceeds limit")
TOO_MANY_HOPS = Reply(554, "5.4.6", "Too many hops (Received headers), mail loop?")
DATA_LINE_TOO_LONG = Reply(550, "5.6.0", "Message has a line longer than {limit} octets")
BARE_NEWLINE = Reply(521, "5.5.2", "Bare <CR> or <LF> in message data, closing connection")
NUL_IN_DATA = Reply(554, "5.6.0", "NUL byte in message data")
INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage, try again later")
QUEUE_FAILURE = Reply(451, "4.3.0", "Temporary failure queueing the message, try again later")

# Plug-ins (empath/plugins): a rejection keeps the plug-in's code, status and text.
PLUGIN_REJECTION = Reply(550, "5.7.1", "Rejected by local policy")
UNKNOWN_RECIPIENT = Reply(550, "5.1.1", "Recipient address rejected: user unknown here")
# An alias misconfigured: the operator's to fix; the reply says so without naming the addresses.
ALIAS_LOOP = Reply(554, "5.4.6", "Recipient address rejected: its aliases loop, tell the postmaster")
# An SRS address of ours takes bounces, not mail: it must not relay a stranger's message to its sender.
SRS_BOUNCES_ONLY = Reply(550, "5.7.1", "Recipient address rejected: this address takes bounces only")
ALIAS_TOO_MANY = Reply(550, "5.5.3", "Recipient address rejected: its aliases expand to too many addresses")
# Verification by callout had no answer (the next hop down or slow): never 250 and a bounce later.
UNVERIFIED_RECIPIENT = Reply(450, "4.1.1", "Recipient address rejected: unverified address, try again later")
PLUGIN_FAILURE = Reply(451, "4.3.0", "Temporary local problem checking this, try again later")

# STARTTLS
READY_TLS = Reply(220, "2.0.0", "Ready to start TLS")
TLS_NOT_AVAILABLE = Reply(454, "4.7.0", "TLS not available")
ALREADY_TLS = Reply(503, "5.5.1", "TLS already active")

# AUTH
AUTH_OK = Reply(235, "2.7.0", "Authentication successful")
AUTH_CHALLENGE = Reply(334, "", "{challenge}")
AUTH_FAILED = Reply(535, "5.7.8", "Authentication credentials invalid")
AUTH_ENCRYPTION_REQUIRED = Reply(538, "5.7.11", "Encryption required for requested authentication mechanism")
AUTH_MECHANISM_UNKNOWN = Reply(504, "5.5.4", "Unrecognized authentication mechanism")
AUTH_CANCELLED = Reply(501, "5.0.0", "Authentication cancelled")
AUTH_BAD_RESPONSE = Reply(501, "5.5.2", "Cannot decode the authentication response")
AUTH_ALREADY = Reply(503, "5.5.1", "Already authenticated")
AUTH_NOT_AVAILABLE = Reply(502, "5.5.1", "Authentication not available on this listener")
AUTH_TOO_MANY_FAILURES = Reply(421, "4.7.0", "Too many authentication failures, closing connection")
AUTH_BLOCKED = Reply(421, "4.7.0", "Too many authentication failures from your address, try again later")
AUTH_TEMPORARY = Reply(454, "4.7.0", "Temporary authentication failure")


def _name_the_catalogue() -> dict[tuple[int, str], str]:
    """Give every catalogue entry its name; return the first name per (code, status)."""
    first: dict[tuple[int, str], str] = {}
    for key, value in list(globals().items()):
        if isinstance(value, Reply) and key.isupper():
            globals()[key] = replace(value, name=key.lower())
            first.setdefault((value.code, value.status), key.lower())
    return first


_FIRST_NAME = _name_the_catalogue()


def plugin_rejection(code: int, status: str, text: str) -> Reply:
    """A plug-in's Reject as a reply; its shape was checked when it was made (empath.plugins.api)."""
    return replace(PLUGIN_REJECTION, code=code, status=status, text=text)


def at_greeting(reply: Reply) -> Reply:
    """A refusal sent in place of the greeting: RFC 5321 §3.1 and §4.3.2 allow
    only 554 there, or 421 (closing) for a temporary one."""
    return replace(reply, code=554 if reply.code >= 500 else 421)


def name_of(reply: Reply) -> str:
    """The catalogue name of a reply (or of the first entry with its code and status; else "other")."""
    return reply.name or _FIRST_NAME.get((reply.code, reply.status), "other")
