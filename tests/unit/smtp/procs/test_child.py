"""An SMTP helper process answers for every session the daemon hands it, even one it cannot serve.

The daemon counts a handed-over session against the connection limits until
the helper says it ended; a session the helper drops without saying so
would hold its place for ever.
"""

import socket

import gevent.event

from empath.smtp.procs.child import HelperProcess


class FakeChannel:
    def __init__(self, incoming: list[tuple[tuple, int | None]]):
        self.incoming = list(incoming)
        self.sent: list[tuple] = []

    def receive(self):
        if not self.incoming:
            raise EOFError
        return self.incoming.pop(0)

    def send(self, *message, fd=None):
        self.sent.append(message)


def bare_helper(channel: FakeChannel) -> HelperProcess:
    """A HelperProcess with only what reading its channel needs: no config, queue or server."""
    helper = HelperProcess.__new__(HelperProcess)
    helper.channel = channel
    helper.number = 1
    helper.listening = {}
    helper._stop = gevent.event.Event()
    return helper


def test_a_session_whose_socket_did_not_come_is_reported_ended():
    channel = FakeChannel([(("session", 7, "smtp@127.0.0.1:25", "192.0.2.1"), None)])
    helper = bare_helper(channel)
    helper._read()
    assert channel.sent == [("ended", 7, "error")]
    assert helper._stop.is_set()  # the channel closed after it: the helper stops


def test_a_message_it_cannot_handle_closes_the_socket_and_ends_the_session():
    ours, theirs = socket.socketpair()
    channel = FakeChannel([(("session", 8, "no-such-listener", "192.0.2.1"), theirs.detach())])
    helper = bare_helper(channel)
    helper._read()
    assert channel.sent == [("ended", 8, "error")]
    ours.settimeout(5)
    assert ours.recv(1) == b""  # the helper's copy is closed: the client sees the end
    ours.close()
