"""The SMTP command parser: one line of bytes in, a typed command out.

Pure code, no I/O. Errors are raised as CommandError carrying the reply the
server should send, so the state machine never has to guess.
"""

import re
from dataclasses import dataclass, field

from empath import addresses
from empath.smtp import replies
from empath.smtp.replies import Reply

# Verbs that only an HTTP client or proxy would send: the peer is not
# speaking SMTP (cross-protocol attacks), so we hang up.
NOT_SMTP_VERBS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "CONNECT", "OPTIONS", "PATCH", "USER"})

_PARAM = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*)(?:=([^= \x00-\x1f\x7f]+))?$")
_XCHAR = re.compile(r"^(?:[!-*,-<>-~]|\+[0-9A-F]{2})*$")


class CommandError(Exception):
    def __init__(self, reply: Reply):
        super().__init__(reply.text)
        self.reply = reply


@dataclass(frozen=True)
class Command:
    verb: str  # upper case
    arg: str  # the rest of the line, leading spaces removed


@dataclass(frozen=True)
class MailArgs:
    path: addresses.Path
    size: int | None = None
    body: str = "7BIT"
    smtputf8: bool = False
    ret: str | None = None  # DSN RET: FULL or HDRS
    envid: str | None = None  # DSN ENVID, xtext-decoded
    has_params: bool = False  # any ESMTP parameter given (they need EHLO)


@dataclass(frozen=True)
class RcptArgs:
    path: addresses.Path
    notify: tuple[str, ...] = field(default_factory=tuple)  # DSN NOTIFY values
    orcpt: str | None = None  # DSN ORCPT as "type;address", xtext-decoded
    has_params: bool = False


def parse_command(line: bytes) -> Command:
    """Parse one command line (without its CRLF)."""
    if not line.partition(b" ")[0].isascii():
        raise CommandError(replies.UNKNOWN_COMMAND)  # no command word has 8-bit bytes in it
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(replies.SYNTAX_ERROR.with_text("Command is not valid UTF-8")) from None
    if any(ch < " " and ch != "\t" for ch in text) or "\x7f" in text:
        raise CommandError(replies.SYNTAX_ERROR.with_text("Control characters in command"))
    verb, _, arg = text.partition(" ")
    verb = verb.upper()
    if not verb or not verb.isascii() or not verb.isalpha():
        raise CommandError(replies.UNKNOWN_COMMAND)
    return Command(verb, arg.strip(" "))


def _split_prefix(arg: str, prefix: str) -> str:
    if arg[: len(prefix)].upper() != prefix:
        raise CommandError(replies.SYNTAX_ERROR.with_text(f"Syntax: {prefix}<address>"))
    return arg[len(prefix) :]


def parse_params(text: str) -> dict[str, str | None]:
    """ESMTP parameters ``KEY[=VALUE] ...``; keys upper-cased, repeats refused."""
    params: dict[str, str | None] = {}
    for word in text.split():
        m = _PARAM.fullmatch(word)
        if not m:
            raise CommandError(replies.BAD_PARAMETER.with_text(f"Malformed parameter {word[:40]!r}"))
        key = m.group(1).upper()
        if key in params:
            raise CommandError(replies.BAD_PARAMETER.with_text(f"Parameter {key} given twice"))
        params[key] = m.group(2)
    return params


def xtext_decode(value: str) -> str:
    """RFC 3461 §4: xtext, where ``+HH`` stands for one octet."""
    if not _XCHAR.fullmatch(value):
        raise CommandError(replies.BAD_PARAMETER.with_text("Malformed xtext value"))
    return re.sub(r"\+([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), value)


def xtext_encode(value: str) -> str:
    """The inverse of xtext_decode, for passing DSN parameters on."""
    return "".join(ch if "!" <= ch <= "~" and ch not in "+=" else f"+{ord(ch):02X}" for ch in value)


def _path(text: str, utf8: bool, allow_null: bool, bad: Reply) -> addresses.Path:
    try:
        return addresses.parse_path(text, utf8=utf8, allow_null=allow_null)
    except addresses.NeedsSMTPUTF8:
        raise CommandError(replies.NEED_SMTPUTF8) from None
    except addresses.AddressError as exc:
        raise CommandError(bad.with_text(f"Bad address syntax: {exc}")) from None


def parse_mail(arg: str) -> MailArgs:
    """The argument of MAIL: ``FROM:<path> [params]``."""
    rest = _split_prefix(arg, "FROM:")
    try:
        path_text, param_text = addresses.split_path(rest)
    except addresses.AddressError as exc:
        raise CommandError(replies.BAD_SENDER.with_text(f"Bad sender address syntax: {exc}")) from None
    params = parse_params(param_text)
    smtputf8 = "SMTPUTF8" in params
    if smtputf8 and params["SMTPUTF8"] is not None:
        raise CommandError(replies.BAD_PARAMETER.with_text("SMTPUTF8 takes no value"))
    path = _path(path_text, smtputf8, True, replies.BAD_SENDER)
    if path.postmaster:
        raise CommandError(replies.BAD_SENDER.with_text("Bad sender address syntax: no domain"))
    size = None
    if "SIZE" in params:
        value = params["SIZE"] or ""
        if not value.isdigit() or len(value) > 20:
            raise CommandError(replies.BAD_PARAMETER.with_text("SIZE needs a number"))
        size = int(value)
    body = (params["BODY"] or "").upper() if "BODY" in params else "7BIT"
    if body not in ("7BIT", "8BITMIME"):
        raise CommandError(replies.BAD_PARAMETER.with_text("BODY must be 7BIT or 8BITMIME"))
    ret = params.get("RET")
    if "RET" in params:
        ret = (ret or "").upper()
        if ret not in ("FULL", "HDRS"):
            raise CommandError(replies.BAD_PARAMETER.with_text("RET must be FULL or HDRS"))
    envid = params.get("ENVID")
    if "ENVID" in params:
        envid = xtext_decode(envid or "")
        if not envid or len(envid) > 100:
            raise CommandError(replies.BAD_PARAMETER.with_text("ENVID must be 1 to 100 characters"))
    unknown = set(params) - {"SIZE", "BODY", "SMTPUTF8", "RET", "ENVID"}
    if unknown:
        raise CommandError(replies.BAD_PARAMETER.with_text(f"Unsupported parameter {sorted(unknown)[0]}"))
    return MailArgs(path, size, body, smtputf8, ret, envid, bool(params))


def parse_rcpt(arg: str, utf8: bool) -> RcptArgs:
    """The argument of RCPT: ``TO:<path> [params]``."""
    rest = _split_prefix(arg, "TO:")
    try:
        path_text, param_text = addresses.split_path(rest)
    except addresses.AddressError as exc:
        raise CommandError(replies.BAD_ADDRESS.with_text(f"Bad address syntax: {exc}")) from None
    params = parse_params(param_text)
    path = _path(path_text, utf8, False, replies.BAD_ADDRESS)
    notify: tuple[str, ...] = ()
    if "NOTIFY" in params:
        values = tuple((params["NOTIFY"] or "").upper().split(","))
        unknown_values = set(values) - {"NEVER", "SUCCESS", "FAILURE", "DELAY"}
        never_mixed = "NEVER" in values and len(values) > 1
        if unknown_values or never_mixed or len(set(values)) != len(values):
            raise CommandError(replies.BAD_PARAMETER.with_text("NOTIFY must be NEVER, or SUCCESS, FAILURE, DELAY"))
        notify = values
    orcpt = None
    if "ORCPT" in params:
        kind, semi, value = (params["ORCPT"] or "").partition(";")
        if not semi or not kind or not value:
            raise CommandError(replies.BAD_PARAMETER.with_text("ORCPT must be addr-type;address"))
        decoded = value if kind.upper() == "UTF-8" else xtext_decode(value)
        orcpt = f"{kind.lower()};{decoded}"
    unknown = set(params) - {"NOTIFY", "ORCPT"}
    if unknown:
        raise CommandError(replies.BAD_PARAMETER.with_text(f"Unsupported parameter {sorted(unknown)[0]}"))
    return RcptArgs(path, notify, orcpt, bool(params))
