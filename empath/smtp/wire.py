"""What both ends put on the wire: a body as it goes out (CRLF line ends only,
no line over 1000 octets, dot-stuffed, ended with ``.CRLF``), and bytes sent
on a socket in as few system calls as may be.

``encode`` and ``Encoder`` are pure. Bodies received over SMTP are already clean; it also
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
    return _lines_of(body) + b".\r\n"


class Encoder:
    """``encode`` for a body given in pieces, so that a large one is never whole in
    memory: what ``piece`` returns for each, then ``end``, joined, is ``encode`` of
    the pieces joined. A piece is encoded up to its last line end; the rest of the
    line waits for the next piece, and a line that is already too long is split
    as it grows."""

    def __init__(self) -> None:
        self._rest = b""  # a line not yet ended

    def piece(self, piece: bytes | bytearray) -> bytes:
        data = self._rest + piece
        # A final CR is not yet a line end: the next piece may begin with its LF.
        cut = max(data.rfind(b"\n"), data.rfind(b"\r", 0, len(data) - 1)) + 1
        self._rest = data[cut:]
        return _lines_of(data[:cut]) + self._split_rest()

    def end(self) -> bytes:
        return _lines_of(self._rest) + b".\r\n"

    def _split_rest(self) -> bytes:
        """Cut off the start of the waiting line while it is longer than any line may
        be, as ``_by_lines`` cuts it; a final CR is not the line's, so not counted."""
        out = []
        rest = self._rest
        while len(rest) - rest.endswith(b"\r") > (room := _room(rest)):
            out.append(_stuff(rest[:room]) + b"\r\n")
            rest = rest[room:]
        self._rest = rest
        return b"".join(out)


def _lines_of(body: bytes) -> bytes:
    """Every line of ``body`` ended with CRLF, dot-stuffed and cut to the limit."""
    if _clean(body):
        # The common case, a body received over SMTP: only the dots to stuff,
        # done in C loops rather than line by line in Python (docs/capacity.md).
        return (b"." if body.startswith(b".") else b"") + body.replace(b"\r\n.", b"\r\n..")
    return _by_lines(body)


def _by_lines(body: bytes) -> bytes:
    out = []
    for line in lines(body):
        # An over-long line is split, as Postfix does: the text survives, the limit holds.
        while len(line) > (room := _room(line)):
            out.append(_stuff(line[:room]))
            line = line[room:]
        out.append(_stuff(line))
    return b"".join(line + b"\r\n" for line in out)


def _room(line: bytes) -> int:
    """How long the line may be: a stuffed dot counts towards the limit on the wire."""
    return MAX_LINE - 1 if line.startswith(b".") else MAX_LINE


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
