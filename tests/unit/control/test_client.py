"""empathctl's end of the control socket (control/client.py): replies, a busy daemon."""

import pytest

from empath.control import client
from empath.control.client import ControlError, result


def test_reply_lines_become_results_or_errors():
    assert result(b'{"ok": true, "result": [1]}') == [1]
    with pytest.raises(ControlError, match="^nope$"):
        result(b'{"ok": false, "error": "nope"}')
    for bad in (b"not json", b"[]", b'{"result": 1}'):
        with pytest.raises(ControlError, match="reply is not"):
            result(bad)


def test_a_full_accept_backlog_is_waited_out_then_reported(monkeypatch):
    # A Unix socket whose backlog is full refuses with EAGAIN at once; the
    # client tries again until CONNECT_TIMEOUT instead of failing on the spot.
    tries = []

    def busy_then_free(path, timeout):
        tries.append(path)
        if len(tries) < 3:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return "socket"

    monkeypatch.setattr(client.sockfile, "connect", busy_then_free)
    monkeypatch.setattr(client, "BUSY_RETRY", 0)
    assert client._connect("ctl.sock") == "socket"
    assert len(tries) == 3

    def always_busy(path, timeout):
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(client.sockfile, "connect", always_busy)
    monkeypatch.setattr(client, "CONNECT_TIMEOUT", 0)
    with pytest.raises(ControlError, match="did not accept the connection"):
        client.call("ctl.sock", b"{}\n", 1.0)
