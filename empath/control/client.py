"""empathctl's end of the control socket: one request, one reply, with timeouts.

Nothing here waits without a limit: connecting takes at most
``CONNECT_TIMEOUT``, the reply at most the timeout given. Every failure is a
ControlError with one line for the operator; DaemonDown when no daemon
listens at all (which lets read-only verbs go to the database instead).
"""

import json
import time
from pathlib import Path
from typing import Any

from empath.control import sockfile

CONNECT_TIMEOUT = 5.0
BUSY_RETRY = 0.05  # seconds between tries while the daemon's accept backlog is full
MAX_REPLY = 1 << 30  # a listing of many messages, a message's body: large, never endless


class ControlError(Exception):
    """The daemon's error reply, or why it could not be asked; the message is for the operator."""


class DaemonDown(ControlError):
    pass


def _connect(path: Path) -> Any:
    """Connect, trying again while the daemon's backlog is full: a Unix socket
    answers that with EAGAIN at once instead of waiting like TCP does."""
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        try:
            return sockfile.connect(path, CONNECT_TIMEOUT)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise TimeoutError from None
            time.sleep(BUSY_RETRY)


def call(path: Path, request: bytes, timeout: float) -> Any:
    """Send one request line to the daemon at ``path``; its result, or ControlError."""
    try:
        sock = _connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        raise DaemonDown(f"the daemon is not running (nothing listens on {path})") from None
    except PermissionError:
        raise ControlError(
            f"no permission to use {path}: run as the daemon's user or a member of its [control] group"
        ) from None
    except TimeoutError:
        raise ControlError(f"the daemon did not accept the connection on {path} within {CONNECT_TIMEOUT:g}s") from None
    except OSError as exc:
        raise ControlError(f"cannot connect to {path}: {exc.strerror or exc}") from None
    with sock:
        sock.settimeout(timeout)
        try:
            sock.sendall(request)
            line = _read_line(sock)
        except TimeoutError:
            raise ControlError(f"no reply from the daemon within {timeout:g}s (--timeout to wait longer)") from None
        except OSError as exc:
            raise ControlError(f"the control connection failed: {exc.strerror or exc}") from None
    return result(line)


def _read_line(sock: Any) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ControlError("the daemon closed the connection without a reply")
        end = chunk.find(b"\n")
        if end >= 0:
            chunks.append(chunk[:end])
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_REPLY:
            raise ControlError(f"the reply is longer than {MAX_REPLY} bytes")


def result(line: bytes) -> Any:
    """The result of a reply line; ControlError with the daemon's text if it is an error."""
    try:
        reply = json.loads(line)
    except ValueError:
        raise ControlError("the daemon's reply is not JSON") from None
    if not isinstance(reply, dict) or "ok" not in reply:
        raise ControlError("the daemon's reply is not a control reply")
    if not reply["ok"]:
        raise ControlError(str(reply.get("error", "the daemon refused without saying why")))
    return reply.get("result")
