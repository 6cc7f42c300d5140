"""One control connection, served over a scripted socket: lines, the cap, the deadline, the reply."""

import json
import struct
from pathlib import Path

import gevent

from empath.control import server as control_server
from empath.control.protocol import MAX_LINE
from empath.control.server import ControlServer, LineReader


class ScriptedSocket:
    """Hands out ``chunks`` one recv at a time; then b"" (closed), or with ``stall`` nothing ever."""

    def __init__(self, chunks: list[bytes], stall: bool = False):
        self.chunks = list(chunks)
        self.stall = stall
        self.sent = b""
        self.closed = False

    def recv(self, size: int) -> bytes:
        if self.chunks:
            return self.chunks.pop(0)
        if self.stall:
            gevent.sleep(3600)
        return b""

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def settimeout(self, seconds: float) -> None:
        pass

    def getsockopt(self, *args) -> bytes:
        return struct.pack("3i", 4242, 1000, 1000)

    def close(self) -> None:
        self.closed = True

    def replies(self) -> list[dict]:
        return [json.loads(line) for line in self.sent.splitlines()]


def test_lines_are_split_across_and_within_reads():
    reader = LineReader(ScriptedSocket([b'{"a"', b': 1}\n{"b": 2}\n{"c"', b": 3}"]))
    assert [reader.line(), reader.line(), reader.line(), reader.line()] == [
        b'{"a": 1}',
        b'{"b": 2}',
        b'{"c": 3}',  # the last line needs no newline
        None,
    ]


def serve(sock: ScriptedSocket) -> ScriptedSocket:
    srv = ControlServer(Path("/nonexistent"), None, None, lambda request: {"verb": request.verb})
    greenlet = srv.connections.spawn(srv._serve, sock, "")
    greenlet.join(timeout=10)
    assert greenlet.dead and sock.closed
    return sock


def test_every_request_line_gets_its_reply_in_order():
    sock = serve(ScriptedSocket([b'{"verb": "status"}\n\n{"verb": "stats"}\n{"verb": "nope"}\n']))
    assert [r.get("result") for r in sock.replies()] == [{"verb": "status"}, {"verb": "stats"}, None]
    assert "unknown verb 'nope'" in sock.replies()[2]["error"]


def test_a_line_past_the_cap_is_answered_and_the_connection_closed():
    sock = serve(ScriptedSocket([b"x" * 40000] * 3 + [b'{"verb": "status"}\n']))
    assert sock.replies() == [{"ok": False, "error": f"request longer than {MAX_LINE} bytes; closing"}]


def test_a_client_that_stalls_mid_line_is_cut_off_at_the_deadline(monkeypatch):
    monkeypatch.setattr(control_server, "TIMEOUT", 0.2)
    sock = serve(ScriptedSocket([b'{"verb": "status"}\n', b'{"verb": "sta'], stall=True))
    assert sock.replies()[0]["ok"] is True
    assert sock.replies()[1] == {"ok": False, "error": "no complete request within 0.2s; closing"}


def test_past_the_connection_cap_a_client_is_told_and_closed(monkeypatch):
    monkeypatch.setattr(control_server, "MAX_CONNECTIONS", 0)
    sock = serve(ScriptedSocket([b'{"verb": "status"}\n']))
    assert "too many control connections" in sock.replies()[0]["error"]
    assert len(sock.replies()) == 1
