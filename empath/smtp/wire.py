"""What both ends put on the wire: a body as it goes out (CRLF line ends only,
no line over 1000 octets, dot-stuffed, ended with ``.CRLF``), and bytes sent
on a socket in as few system calls as may be.

``encode`` is pure. Bodies received over SMTP are already clean; it also
protects the next hop from anything a local program handed us, so a bare CR
or LF never leaves Empath (SMTP smuggling works by exactly such bytes).
"""

import re
import socket

MAX_LINE = 998  # octets before CRLF (RFC 5321 §4.5.3.1.6)
# Up to this much goes out with plain sends; more with sendall (see send_all).
SMALL_SEND = 65536
_LINE_END = re.compile(rb"\r\n|\r|\n")


def lines(body: bytes) -> list[bytes]:
    """The body's lines without their ends; any of CRLF, CR or LF ends a line."""
    parts = _LINE_END.split(body)
    if parts and parts[-1] == b"":
        parts.pop()
    return parts


def encode(body: bytes) -> bytes:
    if _clean(body):
        # The common case, a body received over SMTP: only the dots to stuff,
        # done in C loops rather than line by line in Python (docs/capacity.md).
        return (b"." if body.startswith(b".") else b"") + body.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    return _by_lines(body)


def _by_lines(body: bytes) -> bytes:
    out = []
    for line in lines(body):
        # An over-long line is split, as Postfix does: the text survives, the limit holds.
        while True:
            # A stuffed dot counts towards the limit on the wire.
            room = MAX_LINE - 1 if line.startswith(b".") else MAX_LINE
            if len(line) <= room:
                break
            out.append(_stuff(line[:room]))
            line = line[room:]
        out.append(_stuff(line))
    out.append(b".")
    return b"\r\n".join(out) + b"\r\n"


def _clean(body: bytes) -> bool:
    """Does every line end with CRLF, and fit the limit even with a stuffed dot?"""
    if body and not body.endswith(b"\r\n"):
        return False
    lines = body.split(b"\r\n")  # one scan for the line ends and the lengths both
    ends = len(lines) - 1
    if body.count(b"\r") != ends or body.count(b"\n") != ends:
        return False  # a bare CR or LF
    return max(map(len, lines)) < MAX_LINE


def _stuff(line: bytes) -> bytes:
    return b"." + line if line.startswith(b".") else line


def send_all(sock: socket.socket, data: bytes) -> None:
    """``sock.sendall(data)`` for a reply or a command without the syscall that
    gevent's sendall adds to every call (a getsockopt, for its chunk size): one
    ``send`` that almost always takes it all. Big data still goes with sendall,
    whose timeout counts for the whole of it, and so does whatever is not a
    socket (sendmail -bs gives a pipe that has only recv and sendall)."""
    if len(data) > SMALL_SEND or not isinstance(sock, socket.socket):
        sock.sendall(data)
        return
    sent = sock.send(data)
    while sent < len(data):
        sent += sock.send(data[sent:])
