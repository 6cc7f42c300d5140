"""The daemon's private line to one SMTP helper process (smtp/procs/pool.py).

A socket pair of type SOCK_SEQPACKET: each send is one message, read whole,
so no framing is needed. A message is a pickled tuple whose first item names
it; an accepted connection's socket can ride along (SCM_RIGHTS). Pickle is
safe here because nothing but the daemon and the helper it started hold
either end.
"""

import pickle
import socket
from typing import Any

# The kernel caps one message at the socket's send buffer (about 200 KiB by
# default); what is sent here stays far below it (see SESSION_ROWS_PER_MESSAGE).
MAX_MESSAGE = 1 << 18
# `empathctl connections` rows per message: a row is well under 300 bytes pickled.
SESSION_ROWS_PER_MESSAGE = 200


class Channel:
    def __init__(self, sock: socket.socket):
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple["Channel", socket.socket]:
        """The daemon's end, and the socket the helper inherits."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        return cls(ours), theirs

    def send(self, *message: Any, fd: int | None = None) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        if fd is None:
            self.sock.send(data)
        else:
            socket.send_fds(self.sock, [data], [fd])

    def receive(self) -> tuple[tuple, int | None]:
        """The next message and the file descriptor that came with it; EOFError once the other end closed."""
        data, fds, _flags, _address = socket.recv_fds(self.sock, MAX_MESSAGE, 1)
        if not data:
            for fd in fds:
                socket.close(fd)
            raise EOFError
        return pickle.loads(data), (fds[0] if fds else None)

    def close(self) -> None:
        self.sock.close()
