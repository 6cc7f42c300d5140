"""The DATA reader: turns the lines after ``354`` into a message, or a verdict.

Pure code, fed one line at a time (each line ends at an LF, as read from the
socket), or a run of whole lines at once (``feed_lines``: the same verdicts,
with the common case checked on the run as a whole rather than line by line in
Python, which for a large message cost more than anything else the session
did: docs/capacity.md). Only
``<CRLF>.<CRLF>`` ends the message. A bare CR anywhere is refused and the
session is closed: another server could read such a byte as a line end and
see a second, smuggled message (CVE-2023-51764 class). So is a bare LF,
unless the reader is ``lenient`` (the office's own clients, whose old
devices end lines so, as Postfix 3.9 takes them): then a bare LF ends a line,
which is stored with CRLF, and a dot line next to a bare LF is the message's
own, never its end.
Other problems (size, a header section or a line too long, NUL, hop count)
are noted and the reader keeps going to the end, so the session stays in
step with the client. The message goes into a Spool (pure but for its file,
which the reader never sees); a refused one is let go of at once.
"""

from empath.config import Limits
from empath.queue.spool import Spool
from empath.smtp import replies
from empath.smtp.replies import Reply

CRLF = b"\r\n"


class DataReader:
    def __init__(self, spool: Spool, limits: Limits, lenient: bool = False):
        self.spool = spool
        self.lenient = lenient
        self._after_crlf = True  # the last line ended with a real CRLF (the DATA line did)
        self.max_size = limits.max_message_size
        self.max_line = limits.text_line_length
        self.max_received = limits.max_received_headers
        self.max_header = limits.max_header_size
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
        bare = self.lenient and line.endswith(b"\n") and not line.endswith(CRLF)
        after_crlf, self._after_crlf = self._after_crlf, not bare
        if bare:
            line = line[:-1] + CRLF
        head = line[:-2]
        if overflow and head.endswith(b"\r"):
            head = head[:-1]  # the cut fell between the CR and LF of the line's own CRLF
        if not line.endswith(CRLF) or b"\r" in head or b"\n" in line[:-1]:
            self.error, self.fatal, self.done = replies.BARE_NEWLINE, True, True
            return True
        if line == b".\r\n":
            if after_crlf and not bare:
                self.done = True
                return True
            line = b"..\r\n"  # only CRLF.CRLF ends the data: this dot is the message's own
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
        elif self._in_headers and self.size > self.max_header:
            # The header section is held in memory (queue/spool.py): this bounds it.
            self.error = replies.HEADER_TOO_BIG.with_text(
                f"Message header size exceeds limit of {self.max_header} bytes"
            )
        if self.error is not None:
            self.spool.discard()  # the message is refused; stop holding it
        else:
            self.spool.write(line)
        return False

    def feed_lines(self, block: bytes, overflow: bool = False) -> tuple[bool, bytes]:
        """Take a run of lines, each ending at an LF; True once the message has
        ended (or must end), with the bytes after its end, which are not the
        message's. ``overflow``: ``block`` is one line the connection cut (see ``feed``).
        """
        if overflow:
            return self.feed(block, True), b""
        start = 0
        while start < len(block):
            if self._in_headers or block.startswith(b".\r\n", start):
                stop = _line_end(block, start)  # hops are counted (or the end is met) line by line
            else:
                marker = block.find(b"\n.\r\n", start)
                stop = len(block) if marker == -1 else marker + 1
                if self._take_run(block[start:stop]):
                    start = stop
                    continue
            while start < stop:
                end = _line_end(block, start)
                if self.feed(block[start:end]):
                    return True, block[end:]
                start = end
        return False, b""

    def _take_run(self, run: bytes) -> bool:
        """Take body lines (none of them the end) at once if nothing in them needs a
        verdict; False leaves them to be fed one by one, to find and name what does."""
        if self.error is not None or not run.endswith(b"\r\n"):
            return False
        text = (run[1:] if run.startswith(b".") else run).replace(b"\r\n.", b"\r\n")  # undo dot-stuffing
        lines = text.split(b"\r\n")
        # A line may be max_line long with its CRLF, which split leaves out.
        if max(map(len, lines)) > self.max_line - 2 or self.size + len(text) > self.max_size:
            return False
        rest = b"".join(lines)
        if b"\r" in rest or b"\n" in rest or b"\0" in rest:
            return False  # a bare CR or LF, or a NUL
        self.size += len(text)
        self.spool.write(text)
        self._after_crlf = True
        return True

    def _count_hop(self, line: bytes) -> bool:
        if line == CRLF:
            self._in_headers = False
            return False
        if line[:9].lower() == b"received:":
            self._received += 1
        return self._received > self.max_received


def _line_end(block: bytes, start: int) -> int:
    """Where the line at ``start`` ends: after its LF, or at the end of a last fragment."""
    return block.find(b"\n", start) + 1 or len(block)
