"""The session's connection buffers replies until its next read (a pipelined
group's replies go out together), but never piles them up without bound."""

from empath.smtp.connection import MAX_PENDING, Connection


class Recorder:
    """Stands in for the socket: what was sent, in the calls it came in."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))


def test_replies_are_held_until_a_flush_and_go_in_one_send():
    sock = Recorder()
    conn = Connection(sock, write_timeout=1.0)
    conn.send(b"250 sender ok\r\n")
    conn.send(b"250 recipient ok\r\n")
    assert sock.sent == []
    conn.flush()
    assert sock.sent == [b"250 sender ok\r\n250 recipient ok\r\n"]
    conn.flush()
    assert len(sock.sent) == 1  # nothing left to send


def test_a_client_that_pipelines_without_reading_cannot_pile_up_replies():
    # Thousands of pipelined HELPs: each reply is small, their sum would not be.
    sock = Recorder()
    conn = Connection(sock, write_timeout=1.0)
    reply = b"214 2.0.0 see RFC 5321\r\n"
    for _ in range(3 * MAX_PENDING // len(reply)):
        conn.send(reply)
    assert len(sock.sent) >= 2
    assert all(MAX_PENDING <= len(data) < MAX_PENDING + len(reply) for data in sock.sent)
    conn.flush()
    assert b"".join(sock.sent) == reply * (3 * MAX_PENDING // len(reply))
