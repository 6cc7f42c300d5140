"""Headers Empath adds to an accepted message: Received, and on submission
listeners the Date and Message-ID a client left out.

Pure code: the session passes in every fact, including the time.
"""

import datetime
import email.utils
import re

from empath.addresses import EmailAddress

# What may appear of the client's HELO in our Received header; anything else
# (parentheses, semicolons, non-ASCII) could forge comments or clauses.
_UNSAFE_HELO = re.compile(r"[^A-Za-z0-9.\-_:\[\]]")

_TRACE = re.compile(rb"\(Empath trace ([0-9a-f]{32}) on ([^)\s]+)\)")

_WITH = {
    (False, False, False): "SMTP",
    (True, False, False): "ESMTP",
    (True, True, False): "ESMTPS",
    (True, False, True): "ESMTPA",
    (True, True, True): "ESMTPSA",
}


def protocol(esmtp: bool, tls: bool, authenticated: bool, smtputf8: bool) -> str:
    """The ``with`` keyword of RFC 3848 / RFC 6531 for the Received header."""
    if smtputf8:
        return "UTF8SMTP" + ("S" if tls else "") + ("A" if authenticated else "")
    if not esmtp:
        return "SMTP"
    return _WITH[(True, tls, authenticated)]


def date_time(now: float) -> str:
    """RFC 5322 §3.3 date-time in UTC with a numeric zone, ``+0000``: not the obsolete
    ``GMT``, nor ``-0000``, which says the zone is unknown."""
    return email.utils.format_datetime(datetime.datetime.fromtimestamp(now, datetime.UTC))


def received(
    *,
    helo: str,
    client_address: str,
    hostname: str,
    with_: str,
    queue_id: str,
    trace_id: str,
    tls: str | None,
    recipient: EmailAddress | None,
    now: float,
) -> bytes:
    """The Received header, folded, ending with CRLF.

    ``recipient`` is given only for single-recipient messages: naming one of
    several would tell each recipient who else was on the envelope (Bcc).
    """
    literal = f"IPv6:{client_address}" if ":" in client_address else client_address
    lines = [
        f"Received: from {_UNSAFE_HELO.sub('?', helo)} ([{literal}])",
        f"\tby {hostname} (Empath) with {with_} id {queue_id}",
        f"\t{_trace_comment(trace_id, hostname)}",
    ]
    if tls:
        lines.append(f"\t({tls})")
    date = date_time(now)
    lines.append(f"\tfor <{recipient}>; {date}" if recipient else f"\t; {date}")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def received_local(*, user: str, hostname: str, queue_id: str, trace_id: str, now: float) -> bytes:
    """The Received header for mail handed over by a local program (sendmail)."""
    safe_user = _UNSAFE_HELO.sub("?", user)
    date = date_time(now)
    return (
        f"Received: by {hostname} (Empath, from user {safe_user})\r\n"
        f"\t{_trace_comment(trace_id, hostname)}\r\n\tid {queue_id}; {date}\r\n"
    ).encode()


def _trace_comment(trace_id: str, hostname: str) -> str:
    return f"(Empath trace {trace_id} on {hostname})"


def trace_from(body: bytes, hostname: str) -> str | None:
    """The trace id of an earlier pass through this host, from our own Received
    header, so a message that comes back (from the office server, a forward)
    keeps one trace in the logs."""
    header = body.split(b"\r\n\r\n", 1)[0]
    m = _TRACE.search(header)
    while m is not None:
        if m.group(2).decode("ascii", "replace") == hostname:
            return m.group(1).decode()
        m = _TRACE.search(header, m.end())
    return None


def header_section(message: bytes | bytearray) -> bytes:
    """The header section: every field, each with its CRLF, without the blank
    line; found without splitting (and so copying) a large body."""
    if message.startswith(b"\r\n"):
        return b""
    end = message.find(b"\r\n\r\n")
    return bytes(message if end < 0 else message[: end + 2])


def header_names(body: bytes) -> set[str]:
    """Lower-case names of the fields in the message's header section."""
    names = set()
    for line in body.split(b"\r\n"):
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            continue
        name, colon, _ = line.partition(b":")
        if colon:
            names.add(name.strip().decode("ascii", "replace").lower())
    return names


def missing_headers(body: bytes, author: str | None, queue_id: str, hostname: str, now: float) -> bytes:
    """From (when there is an ``author`` to name), Date and Message-ID, for whichever
    the message lacks: RFC 5322 §3.6 requires From and Date, some providers refuse
    mail without a Message-ID, and RFC 6409 §8 lets the first server add them."""
    present = header_names(body)
    added = b""
    if author is not None and "from" not in present:
        added += f"From: {author}\r\n".encode()
    if "date" not in present:
        added += f"Date: {date_time(now)}\r\n".encode()
    if "message-id" not in present:
        added += f"Message-ID: <{queue_id}.{int(now)}@{hostname}>\r\n".encode()
    return added
