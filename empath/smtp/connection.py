"""A client connection: buffered line reads with a hard length limit, buffered
replies flushed before every blocking read (so pipelined commands get their
replies in one packet), and the switch to TLS.
"""

import itertools
import socket
import ssl

import gevent
from gevent import select

from empath.smtp.wire import SMALL_SEND, send_all

RECV_SIZE = 65536

# Replies are held until the next blocking read (one packet for a pipelined
# group), but never more than this: a client that pipelines thousands of
# commands without reading the replies would otherwise make the session
# buffer megabytes of them before its first send could block and time out.
MAX_PENDING = SMALL_SEND


class ConnectionClosed(Exception):
    pass


class Connection:
    def __init__(self, sock: socket.socket, write_timeout: float):
        self.sock = sock
        # A client that stops reading our replies must not hold its session open for ever.
        self.write_timeout = write_timeout
        self._in = bytearray()
        self._out: list[bytes] = []
        self._pending = 0  # bytes in _out
        self.tls_version: str | None = None
        self.tls_cipher: str | None = None

    def send(self, data: bytes) -> None:
        self._out.append(data)
        self._pending += len(data)
        if self._pending >= MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self._pending = 0
            with gevent.Timeout(self.write_timeout):
                send_all(self.sock, data)

    def _fill(self) -> None:
        """Wait for more input, under the deadline of the caller's gevent.Timeout."""
        self.flush()
        chunk = self.sock.recv(RECV_SIZE)
        if not chunk:
            raise ConnectionClosed()
        self._in += chunk

    def read_line(self, limit: int, timeout: float) -> tuple[bytes, bool]:
        """One line up to and including its LF, and whether it overflowed ``limit``.

        ``timeout`` is a deadline for the whole line, however it trickles in: a
        client that sends a byte every few minutes does not hold its slot for
        ever. An overflowing line is returned as its first ``limit`` bytes plus
        its own ending (CRLF or LF); the rest is read and dropped, so the
        session stays in step. Raises gevent.Timeout or ConnectionClosed.
        """
        end = self._in.find(b"\n")
        if end != -1 and end < limit:  # buffered whole (pipelining): no timer to set
            return self._take(end), False
        with gevent.Timeout(timeout):
            start = 0
            while True:
                end = self._in.find(b"\n", start)
                if end != -1 and end < limit:
                    return self._take(end), False
                if end != -1 or len(self._in) >= limit:
                    return self._drop_long_line(limit), True
                start = len(self._in)
                self._fill()

    def _take(self, end: int) -> bytes:
        line = bytes(self._in[: end + 1])
        del self._in[: end + 1]
        return line

    def read_lines(self, limit: int, timeout: float) -> tuple[bytes, bool]:
        """Every whole line buffered (at least one), each at most ``limit`` bytes,
        and False; or, when the next line is longer, that line as ``read_line``
        cuts it, and True. For DATA, where taking a run of lines at once spares
        a call per line; ``unread`` gives back what the reader did not take.
        """
        first = self._in.find(b"\n")
        if first == -1 or first >= limit:
            return self.read_line(limit, timeout)
        block = bytes(self._in[: self._in.rfind(b"\n") + 1])
        if len(block) > limit:
            lines = block.split(b"\n")
            if max(map(len, lines)) >= limit:
                # Stop before the first long line: the next call cuts it.
                block = block[: sum(len(line) + 1 for line in itertools.takewhile(lambda x: len(x) < limit, lines))]
        del self._in[: len(block)]
        return block, False

    def unread(self, data: bytes) -> None:
        """Put ``data`` back in front of what is buffered, to be read next."""
        self._in[:0] = data

    def _drop_long_line(self, limit: int) -> bytes:
        head = bytes(self._in[:limit])
        del self._in[:limit]
        last: bytes | bytearray = head[-1:]
        while True:
            end = self._in.find(b"\n")
            if end != -1:
                last = self._in[end - 1 : end] if end > 0 else last
                del self._in[: end + 1]
                return head + (b"\r\n" if last == b"\r" else b"\n")
            if self._in:
                last = self._in[-1:]
                self._in.clear()
            self._fill()

    def has_input(self, timeout: float = 0.0) -> bool:
        """True if the client has sent anything we have not read yet."""
        if self._in:
            return True
        readable, _, _ = select.select([self.sock], [], [], timeout)
        return bool(readable)

    def discard_input(self) -> int:
        """Drop everything buffered; returns how many bytes were dropped."""
        count = len(self._in)
        self._in.clear()
        return count

    def start_tls(self, context: ssl.SSLContext, timeout: float) -> None:
        self.flush()
        with gevent.Timeout(timeout):
            # The TLS socket takes the descriptor over at once: held here, a handshake
            # that fails is closed with the connection, not whenever it is collected.
            tls = self.sock = context.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
            tls.do_handshake()
        self.tls_version = tls.version()
        cipher = tls.cipher()
        self.tls_cipher = cipher[0] if cipher else None

    def close(self, linger: float = 0.0) -> None:
        """Flush and close. With ``linger``, read and drop what the client still
        sends for a moment first, so our last reply is not lost to a reset."""
        # Saying goodbye to a client that does not read must not take long.
        self.write_timeout = min(self.write_timeout, 5.0)
        try:
            self.flush()
            if linger:
                self.sock.shutdown(socket.SHUT_WR)
                with gevent.Timeout(linger, False):
                    while self.sock.recv(RECV_SIZE):
                        pass
        except (OSError, ssl.SSLError, gevent.Timeout):
            pass
        finally:
            self.sock.close()
