"""Delivery status notifications: the bounces, delay warnings and success
reports of RFC 3464, as multipart/report messages (RFC 6522).

Pure code: the caller passes in every fact, the time and the Message-ID
included, and gets back the whole message as bytes with CRLF line ends.

The original message is carried byte for byte, never re-encoded. So the DSN
has 8-bit bytes when the original has, and is a global DSN (RFC 6533, UTF-8
addresses and headers) when an address or the original's header section
needs UTF-8: the caller sends it with BODY=8BITMIME, and with SMTPUTF8 when
it is global, as it would the original.

Nothing a remote server said reaches our fields unchecked: control
characters become spaces, a multi-line reply becomes one line, and every
field is folded to lines of at most 998 octets.
"""

import contextlib
import email.errors
import email.header
import email.quoprimime
import email.utils
import hashlib
import re
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime

from empath.addresses import EmailAddress
from empath.message.stamp import header_section

ACTIONS = ("failed", "delayed", "delivered", "relayed")
MAX_LINE = 998  # RFC 5322 §2.1.1, octets before the CRLF
_FOLD_AT = 78  # where fields are folded when they can be
_TEXT_WIDTH = 72  # the explanation's lines
_CHUNK = 240  # characters of one unbroken word per line: 960 octets of UTF-8 at most

_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
_SMTP_REPLY = re.compile(r"[2-5]\d\d(?:[ -]|$)")
_LINE_BREAK = re.compile(r"\r\n|\r|\n|\x85|\u2028|\u2029")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_ADDRESS_TYPE = re.compile(r"[^A-Za-z0-9.\-]")
_UNITEXT_SPECIAL = re.compile(r"[\x00-\x20\x7f+=\\]")  # not QUNICHAR (RFC 6533 §3)

_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
}

# What each group of recipients is told, for a reader who is not a mail expert.
_INTRODUCTIONS = {
    "failed": "We could not deliver it to the following {recipients}, and have stopped trying:",
    "delayed": (
        "It has not reached the following {recipients} yet. We are still trying, so there is no need to send it again:"
    ),
    "delivered": "It was delivered to the following {recipients}:",
    "relayed": (
        "It was passed on to the mail system of the following {recipients}. That system does not confirm "
        "delivery, so this is the last report you will receive about it:"
    ),
}

# Enhanced status codes (RFC 3463) in plain words, by subject.detail, then by subject.
_REASONS = {
    "1.1": "The address does not exist. Please check it for typing mistakes.",
    "1.2": (
        "The part of the address after the @ does not exist or does not receive mail. "
        "Please check it for typing mistakes."
    ),
    "1.3": "The address is not written correctly.",
    "1.6": "The recipient no longer uses this address.",
    "1.10": "The part of the address after the @ does not receive any mail.",
    "2.1": "The recipient's mailbox is closed and does not accept messages.",
    "2.2": "The recipient's mailbox is full.",
    "2.3": "Your message is too large for the recipient's mailbox. Try smaller attachments, or share files by link.",
    "3.4": (
        "Your message is too large for the recipient's mail system. Try smaller attachments, or share files by link."
    ),
    "4.1": "The recipient's mail server did not answer.",
    "4.2": "The connection to the recipient's mail server broke off.",
    "4.3": "The recipient's mail server could not be looked up.",
    "4.4": "No mail server could be found for the part of the address after the @.",
    "4.6": "The message was going round in a loop between mail servers.",
    "4.7": "The message could not be delivered in the time allowed.",
    "7.1": (
        "The recipient's mail server refused the message. It may have taken it for spam, "
        "or the recipient may not accept mail from you."
    ),
    "7": "The recipient's mail server refused the message for security or policy reasons.",
}
_CLASS_REASONS = {
    "4": "There is a temporary problem on the way to the recipient.",
    "5": "The recipient's mail server did not accept the message.",
}

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


@dataclass(frozen=True)
class DsnRecipient:
    address: EmailAddress  # final recipient (rfc822 address, as queued)
    action: str  # "failed", "delayed", "delivered", "relayed"
    status: str  # enhanced status code, e.g. "5.1.1", "4.4.1", "2.0.0"
    diagnostic: str | None = None  # the remote's reply, e.g. "550 5.1.1 <x@y>: no such user"
    remote_mta: str | None = None  # host name of the remote MTA
    orcpt: str | None = None  # ORCPT as stored: "rfc822;addr" (type;address, already xtext-decoded)
    last_attempt: float | None = None
    will_retry_until: float | None = None  # for "delayed"


RETURN_LIMIT = 51200  # larger originals are returned as headers only (Postfix bounce_size_limit is 50000)


@dataclass(frozen=True)
class Report:
    reporting_mta: str  # our host name
    sender: EmailAddress  # envelope sender of the original message: the DSN goes To this address
    queue_id: str
    arrival: float  # when we received the original (UNIX time)
    # The original message, headers and body, CRLF line ends; one longer than
    # return_limit may be given only its start, return_limit + 1 bytes (all that is quoted of it).
    original: bytes
    recipients: tuple[DsnRecipient, ...]
    now: float
    message_id: str  # without angle brackets, made by the caller
    envid: str | None = None  # ENVID → Original-Envelope-Id
    ret: str | None = None  # "FULL", "HDRS" or None (full message, within return_limit)
    stranger: bool = False  # from a client neither trusted nor logged in: its headers only, whatever RET asks
    return_limit: int = RETURN_LIMIT


def subject(report: Report) -> str:
    """The Subject of the DSN: a failure outweighs a delay, a delay a success."""
    actions = {r.action for r in report.recipients}
    for action in ACTIONS:
        if action in actions:
            return _SUBJECTS[action]
    raise ValueError("a DSN needs at least one recipient")


def render(report: Report) -> bytes:
    """The complete DSN message, header section and body, CRLF line ends.

    Raises ValueError for a report that cannot be a DSN: no recipients, a
    null sender (RFC 3461 §6.2: never bounce a bounce), an unknown action or
    RET. A malformed status code is no reason to lose a bounce: it is
    reported as the action's generic code (5.0.0, 4.0.0 or 2.0.0).
    """
    _check(report)
    utf8 = _needs_utf8(report)
    returned_type, returned, why = _returned(report, utf8)
    parts = [
        _text_part(report, why),
        _status_part(report, utf8),
        (_part_headers(_description(report, why is None), returned_type, returned), returned),
    ]
    boundary = _boundary(report, [body for _, body in parts])
    eight_bit = not all(body.isascii() for _, body in parts)
    head = [
        "From: Mail Delivery System <MAILER-DAEMON@" + _clean(report.reporting_mta) + ">",
        "To: " + _address(report.sender),
        "Subject: " + subject(report),
        "Date: " + _date(report.now),
        "Message-ID: <" + _clean(report.message_id).replace(" ", "") + ">",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
    ]
    if eight_bit:
        head.append("Content-Transfer-Encoding: 8bit")
    out = [
        "\r\n".join(head).encode("utf-8"),
        b"\r\n\r\nThis is a MIME-encapsulated message: a delivery status notification.\r\n",
    ]
    delimiter = b"\r\n--" + boundary.encode("ascii")
    for headers, body in parts:
        out += [delimiter, b"\r\n", headers, b"\r\n", body]
    out += [delimiter, b"--\r\n"]
    return b"".join(out)


def _check(report: Report) -> None:
    if not report.recipients:
        raise ValueError("a DSN needs at least one recipient")
    if not report.sender:
        raise ValueError("no DSN is sent to the null sender")
    if report.ret not in (None, "FULL", "HDRS"):
        raise ValueError(f"RET must be FULL, HDRS or None, not {report.ret!r}")
    for r in report.recipients:
        if r.action not in ACTIONS:
            raise ValueError(f"unknown DSN action {r.action!r}")


def _status(r: DsnRecipient) -> str:
    if _STATUS.fullmatch(r.status):
        return r.status
    return {"failed": "5.0.0", "delayed": "4.0.0"}.get(r.action, "2.0.0")


def _needs_utf8(report: Report) -> bool:
    """True for a global DSN (RFC 6533): an address or the original's header section is not ASCII."""
    texts: list[str] = [report.sender]
    for r in report.recipients:
        texts += [r.address, r.orcpt or ""]
    return not all(text.isascii() for text in texts) or not header_section(report.original).isascii()


# --- Text: dates, cleaning and folding -----------------------------------------------------


def _date(when: float) -> str:
    """An RFC 5322 date in UTC."""
    return email.utils.format_datetime(datetime.fromtimestamp(when, UTC))


def _human_date(when: float) -> str:
    t = datetime.fromtimestamp(when, UTC)
    return f"{_WEEKDAYS[t.weekday()]} {t.day} {_MONTHS[t.month - 1]} {t.year} at {t:%H:%M} UTC"


def _clean(text: str, ascii_only: bool = False) -> str:
    """One line of text: control characters and line breaks become spaces, runs of space one."""
    text = _SURROGATE.sub("?", _CONTROL.sub(" ", _LINE_BREAK.sub(" ", text)))
    if ascii_only:
        text = "".join(ch if ch.isascii() else "?" for ch in text)
    return " ".join(text.split())


def _address(address: str) -> str:
    """An address as text: it cannot span lines or carry control characters."""
    return _SURROGATE.sub("?", _CONTROL.sub("?", _LINE_BREAK.sub("?", address)))


def _unitext(address: str) -> str:
    """An address as utf-8-addr-unitext (RFC 6533 §3): SP, "+", "=", "\\" and controls as ``\\x{HH}``."""
    return _UNITEXT_SPECIAL.sub(lambda m: f"\\x{{{ord(m.group()):X}}}", _SURROGATE.sub("?", address))


def _typed_address(kind: str, address: str) -> str:
    """``type; address`` for Final-Recipient and Original-Recipient."""
    kind = _ADDRESS_TYPE.sub("", kind).lower() or "rfc822"
    if kind == "rfc822" and not address.isascii():
        kind = "utf-8"
    return f"{kind}; {_unitext(address) if kind == 'utf-8' else _address(address)}"


def _field(name: str, value: str) -> str:
    """``Name: value``, folded before spaces at 78 characters where it can be.

    A word too long for one line is cut into pieces of at most 240
    characters, so no line exceeds 998 octets whatever it holds.
    """
    lines = [f"{name}:"]
    started = False
    for word in value.split():
        for piece in (word[i : i + _CHUNK] for i in range(0, len(word), _CHUNK)):
            if started and len(lines[-1]) + 1 + len(piece) > _FOLD_AT:
                lines.append(" " + piece)
            else:
                lines[-1] += " " + piece
            started = True
    return "\r\n".join(lines)


def _wrap(text: str, indent: str) -> list[str]:
    """A paragraph of the human-readable part, wrapped at 72; long words are cut only past 240."""
    pieces = " ".join(word[i : i + _CHUNK] for word in text.split() for i in range(0, len(word), _CHUNK))
    return textwrap.wrap(
        pieces,
        _TEXT_WIDTH,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


# --- Part 1: the explanation for people --------------------------------------------------


def _text_part(report: Report, why: str | None) -> tuple[bytes, bytes]:
    host = _clean(report.reporting_mta)
    lines = _wrap(f"This is an automatic message from the mail system at {host}. Please do not reply to it.", "")
    about = "It is about your message"
    title = _original_subject(report.original)
    if title:
        about += f' "{title}"'
    lines += [""] + _wrap(f"{about}, which we received on {_human_date(report.arrival)}.", "")
    for action in ACTIONS:
        group = [r for r in report.recipients if r.action == action]
        if not group:
            continue
        recipients = "recipient" if len(group) == 1 else "recipients"
        lines += [""] + _wrap(_INTRODUCTIONS[action].format(recipients=recipients), "")
        for r in group:
            lines += [""] + _recipient_lines(r)
    actions = {r.action for r in report.recipients}
    if "delayed" in actions:
        lines += [""] + _wrap(
            "If we still cannot deliver it by then, you will receive another message telling you so.", ""
        )
    lines += [""] + _wrap(_returned_note(actions, why), "")
    lines += [""] + _wrap(
        f"If you need help, contact your mail administrator and mention this reference: {report.queue_id} at {host}.",
        "",
    )
    text = "\r\n".join(lines) + "\r\n"
    if text.isascii():
        return _part_headers("Notification", "text/plain; charset=us-ascii", b""), text.encode("ascii")
    # Quoted-printable: a DSN about a 7-bit message stays 7-bit when only this text needs
    # UTF-8 (an address, or a subject decoded from encoded words).
    body = email.quoprimime.body_encode(text.encode("utf-8").decode("latin-1"), maxlinelen=76, eol="\r\n")
    if not body.endswith("\r\n"):
        body += "\r\n"
    return _part_headers("Notification", "text/plain; charset=utf-8", b"", "quoted-printable"), body.encode("ascii")


def _recipient_lines(r: DsnRecipient) -> list[str]:
    lines = _wrap(_address(r.address), "  ")
    if r.action in ("failed", "delayed"):
        reason = _reason(_status(r))
        if reason:
            lines += _wrap(reason, "    ")
    if r.diagnostic:
        said = [_clean(line) for line in _LINE_BREAK.split(r.diagnostic)]
        said = [line for line in said if line]
        if said:
            mta = f" ({_clean(r.remote_mta)})" if r.remote_mta else ""
            if _SMTP_REPLY.match(said[0]):
                lines += _wrap(f"The recipient's mail server{mta} replied:", "    ")
            else:
                lines += _wrap("What went wrong:", "    ")
            for line in said:
                lines += _wrap(line, "      ")
    elif r.remote_mta and r.action in ("delivered", "relayed"):
        lines += _wrap(f"Accepted by the mail server {_clean(r.remote_mta)}.", "    ")
    if r.action == "delayed" and r.will_retry_until is not None:
        lines += _wrap(f"We will keep trying until {_human_date(r.will_retry_until)}.", "    ")
    return lines


def _reason(status: str) -> str:
    klass, subj, detail = (int(n) for n in status.split("."))
    return _REASONS.get(f"{subj}.{detail}") or _REASONS.get(str(subj)) or _CLASS_REASONS.get(str(klass), "")


def _returned_note(actions: set[str], why: str | None) -> str:
    if why is None:
        if "failed" in actions:
            return "A copy of your message is attached, so that you can send it again once the problem is solved."
        return "A copy of your message is attached."
    headers = "The header lines of your message (sender, recipients, subject, date) are attached, but not its content"
    return (
        headers
        + {
            "HDRS": ", as your mail program asked.",
            "stranger": ", as for all mail from outside: its sender address may not be yours.",
            "large": ", because the message is too large to return.",
            "unfit": ", because it could not be returned unchanged.",
        }[why]
    )


def _original_subject(original: bytes) -> str:
    """The Subject of the original, decoded for people; empty when it has none."""
    value = None
    for field in _fields(header_section(original)):
        name, colon, rest = field.partition(b":")
        if colon and name.strip().lower() == b"subject":
            value = rest.decode("utf-8", "replace")
            break
    if value is None:
        return ""
    value = _clean(value)
    # Encoded words that cannot be decoded are shown as written.
    with contextlib.suppress(LookupError, UnicodeError, ValueError, email.errors.HeaderParseError):
        value = str(email.header.make_header(email.header.decode_header(value)))
    value = _clean(value)
    return value if len(value) <= 200 else value[:200] + "..."


# --- Part 2: the fields for programs -----------------------------------------------------


def _status_part(report: Report, utf8: bool) -> tuple[bytes, bytes]:
    fields = []
    if report.envid is not None:
        fields.append(_field("Original-Envelope-Id", _envid(report.envid)))
    fields.append(_field("Reporting-MTA", "dns; " + _clean(report.reporting_mta, not utf8)))
    fields.append(_field("Arrival-Date", _date(report.arrival)))
    for r in report.recipients:
        fields.append("")  # a blank line starts each recipient's block
        if r.orcpt:
            kind, semi, address = r.orcpt.partition(";")
            original = _typed_address(kind, address) if semi else _typed_address("rfc822", r.orcpt)
            fields.append(_field("Original-Recipient", original))
        fields.append(_field("Final-Recipient", _typed_address("rfc822", r.address)))
        fields.append(_field("Action", r.action))
        fields.append(_field("Status", _status(r)))
        if r.remote_mta:
            fields.append(_field("Remote-MTA", "dns; " + _clean(r.remote_mta, not utf8)))
        if r.diagnostic and _clean(r.diagnostic):
            # "smtp" says the text is an SMTP reply (RFC 3464 §2.3.6); our own findings are not.
            text = _clean(r.diagnostic, not utf8)
            fields.append(_field("Diagnostic-Code", ("smtp; " if _SMTP_REPLY.match(text) else "X-Empath; ") + text))
        if r.last_attempt is not None:
            fields.append(_field("Last-Attempt-Date", _date(r.last_attempt)))
        if r.action == "delayed" and r.will_retry_until is not None:
            fields.append(_field("Will-Retry-Until", _date(r.will_retry_until)))
    body = ("\r\n".join(fields) + "\r\n").encode("utf-8")
    content_type = "message/global-delivery-status" if utf8 else "message/delivery-status"
    return _part_headers("Delivery report", content_type, body), body


def _envid(envid: str) -> str:
    """ENVID as printable ASCII: anything else as ``+HH`` octets, the way it came in as xtext."""
    return "".join(
        ch if " " <= ch <= "~" else "".join(f"+{b:02X}" for b in ch.encode("utf-8", "replace")) for ch in envid
    )


# --- Part 3: the original -----------------------------------------------------------------


def _returned(report: Report, utf8: bool) -> tuple[str, bytes, str | None]:
    """(content type, content, why only the headers are returned or None)."""
    if report.ret == "HDRS":
        why = "HDRS"
    elif report.stranger:
        why = "stranger"
    elif len(report.original) > report.return_limit:
        why = "large"
    elif not _carriable(report.original):
        why = "unfit"
    else:
        return ("message/global" if utf8 else "message/rfc822"), report.original, None
    section = header_section(report.original)
    fields = _fields(section)
    if len(report.original) > report.return_limit and b"\r\n\r\n" not in report.original:
        # Only the start was given, and it ends in the header: the last field is
        # whole only if what follows it begins another field.
        after = section[section.rfind(b"\r\n") + 2 :]
        if after[:1] in (b"", b" ", b"\t"):
            fields = fields[:-1]
    kept = []
    size = 0
    for field in fields:
        if not _carriable(field):
            continue  # a line too long, or a bare CR or LF: it cannot go into a MIME part as it is
        if size + len(field) > report.return_limit:
            break
        kept.append(field)
        size += len(field)
    return ("message/global-headers" if utf8 else "text/rfc822-headers"), b"".join(kept), why


def _fields(section: bytes) -> list[bytes]:
    """The fields of a header section, each with its continuation lines and final CRLF
    (a last line without its CRLF is cut off, not a field)."""
    fields: list[bytes] = []
    for line in section.split(b"\r\n")[:-1]:
        if not line:
            continue
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += line + b"\r\n"
        else:
            fields.append(line + b"\r\n")
    return fields


def _carriable(data: bytes) -> bool:
    """Every line ends with CRLF (or is the last), none is over 998 octets, none has a bare CR or LF."""
    return all(len(line) <= MAX_LINE and b"\r" not in line and b"\n" not in line for line in data.split(b"\r\n"))


def _description(report: Report, full: bool) -> str:
    pending = any(r.action in ("failed", "delayed") for r in report.recipients)
    return ("Undelivered Message" if pending else "Delivered Message") + ("" if full else " Headers")


# --- Assembly ------------------------------------------------------------------------------


def _part_headers(description: str, content_type: str, body: bytes, encoding: str | None = None) -> bytes:
    headers = f"Content-Description: {description}\r\nContent-Type: {content_type}\r\n"
    if encoding is None and not body.isascii():
        encoding = "8bit"
    if encoding:
        headers += f"Content-Transfer-Encoding: {encoding}\r\n"
    return headers.encode("ascii")


def _boundary(report: Report, bodies: list[bytes]) -> str:
    """A boundary found in no part; the same report gives the same one."""
    seed = f"{report.queue_id}\0{report.message_id}\0{report.now!r}".encode("utf-8", "backslashreplace")
    digest = hashlib.sha256(seed).hexdigest()[:24]
    n = 0
    while True:
        # "=_" cannot occur in base64 or quoted-printable text.
        boundary = f"=_empath_{digest}_{n}"
        if not any(boundary.encode("ascii") in body for body in bodies):
            return boundary
        n += 1
