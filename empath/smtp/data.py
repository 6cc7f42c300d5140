"""The DATA reader: turns the lines after ``354`` into a message, or a verdict.

Pure code, fed one line at a time (each line ends at an LF, as read from the
socket). Only ``<CRLF>.<CRLF>`` ends the message. A bare CR or LF anywhere
is refused and the session is closed: another server could read such a byte
as a line end and see a second, smuggled message (CVE-2023-51764 class).
Other problems (size, long lines, NUL, hop count) are noted and the reader
keeps going to the end, so the session stays in step with the client.
"""

from empath.smtp import replies
from empath.smtp.replies import Reply

CRLF = b"\r\n"


class DataReader:
    def __init__(self, max_size: int, max_line: int, max_received: int):
        self.max_size = max_size
        self.max_line = max_line
        self.max_received = max_received
        self.body = bytearray()
        self.size = 0
        self.error: Reply | None = None
        self.fatal = False
        self.done = False
        self._in_headers = True
        self._received = 0

    def feed(self, line: bytes, overflow: bool = False) -> bool:
        """Take one line; True once the message has ended (or must end).

        ``overflow`` says the line was longer than the reader's buffer and only
        its start (and its real ending) is given.
        """
        head = line[:-2]
        if overflow and head.endswith(b"\r"):
            head = head[:-1]  # the cut fell between the CR and LF of the line's own CRLF
        if not line.endswith(CRLF) or b"\r" in head or b"\n" in line[:-1]:
            self.error, self.fatal, self.done = replies.BARE_NEWLINE, True, True
            return True
        if line == b".\r\n":
            self.done = True
            return True
        if line.startswith(b"."):
            line = line[1:]
        self.size += len(line)
        if self.error is not None:
            return False
        if overflow or len(line) > self.max_line:
            self.error = replies.DATA_LINE_TOO_LONG.format(limit=self.max_line)
        elif self.size > self.max_size:
            self.error = replies.MESSAGE_TOO_BIG.with_text(f"Message size exceeds fixed limit of {self.max_size} bytes")
        elif b"\0" in line:
            self.error = replies.NUL_IN_DATA
        elif self._in_headers and self._count_hop(line):
            self.error = replies.TOO_MANY_HOPS
        if self.error is not None:
            self.body = bytearray()  # the message is refused; stop holding it
        else:
            self.body += line
        return False

    def _count_hop(self, line: bytes) -> bool:
        if line == CRLF:
            self._in_headers = False
            return False
        if line[:9].lower() == b"received:":
            self._received += 1
        return self._received > self.max_received
