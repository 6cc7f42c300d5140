"""`empathctl top` against a real queue: one frame (--once) with the daemon
running and stopped, the live screen on a terminal quitting on Ctrl-C, and a
missing database."""

import fcntl
import hashlib
import os
import select
import signal
import smtplib
import struct
import subprocess
import termios
import time

import pytest
from peer import Peer
from support import ROOT, wait_for

EMPATHCTL = ROOT / ".venv" / "bin" / "empathctl"


def top(daemon, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EMPATH_TOKEN"} | {"COLUMNS": "200"}
    if token is not None:
        env["EMPATH_TOKEN"] = token
    return subprocess.run(
        [str(EMPATHCTL), "--config", str(daemon.config_path), "top", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
    )


def relay(daemon, rcpt: str) -> None:
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=30, source_address=("127.0.0.2", 0)) as client:
        client.sendmail("alice@sender.test", [rcpt], b"Subject: top\r\n\r\nhello\r\n")


def line_with(text: str, fragment: str) -> str:
    return next(line for line in text.splitlines() if fragment in line)


def test_once_with_the_daemon_running_then_stopped(make_daemon):
    with Peer("127.0.0.11") as peer:
        daemon = make_daemon(**{'domains."remote.test"': {"route": [f"{peer.host}:{peer.port}"]}}).start()
        relay(daemon, "ok@remote.test")
        peer.wait_for_transactions(1)
        relay(daemon, "stuck@local.test")  # routed to a port where nothing listens: deferred
        deferred = "SELECT last_reply FROM recipient WHERE state = 'deferred'"
        wait_for(lambda: daemon.query(deferred), timeout=15, what="the deferral")
        [(reply,)] = daemon.query(deferred)

        running = top(daemon, "--once")
        assert running.returncode == 0, running.stderr
        assert running.stderr == ""
        assert f"daemon running (pid {daemon.proc.pid})" in running.stdout
        backlog = line_with(running.stdout, "local.test")
        assert backlog.split()[:2] == ["local.test", "1"] and reply[:40] in backlog
        assert backlog.split()[3] == "closed"  # asked of the daemon: one failure does not open the breaker
        recent = line_with(running.stdout, "ok@remote.test")
        assert "delivered" in recent and "250 2.0.0 ok" in recent

        daemon.stop()
        stopped = top(daemon, "--once")
        assert stopped.returncode == 0, stopped.stderr
        assert "daemon not running" in stopped.stdout
        assert line_with(stopped.stdout, "local.test").split()[3] == "—"  # no daemon to ask


def test_breakers_need_the_token_the_daemon_asks_for(make_daemon, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"viewer:read:{hashlib.sha256(b'secret-token').hexdigest()}\n")
    tokens.chmod(0o600)
    daemon = make_daemon(control={"tokens_file": str(tokens)}).start()
    relay(daemon, "stuck@local.test")
    wait_for(lambda: daemon.query("SELECT 1 FROM recipient WHERE state = 'deferred'"), timeout=15, what="a deferral")
    refused = top(daemon, "--once")
    assert refused.returncode == 0 and refused.stderr == ""
    assert line_with(refused.stdout, "local.test").split()[3] == "—"  # refused: not known, and no error
    allowed = top(daemon, "--once", token="secret-token")
    assert line_with(allowed.stdout, "local.test").split()[3] == "closed"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_live_screen_quits_cleanly_on_ctrl_c_or_sigterm(make_daemon, sig):
    daemon = make_daemon()
    daemon.start()
    daemon.stop()  # a queue database, no daemon
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 150, 0, 0))
    proc = subprocess.Popen(
        [str(EMPATHCTL), "--config", str(daemon.config_path), "top", "--interval", "0.2"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | {"TERM": "xterm"},
    )
    os.close(slave)
    screen = b""
    try:
        deadline = time.monotonic() + 30
        while b"Recent deliveries" not in screen:
            assert time.monotonic() < deadline, screen
            if select.select([master], [], [], 0.5)[0]:
                screen += os.read(master, 65536)
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        while select.select([master], [], [], 10)[0]:  # what it wrote before exiting, up to EIO
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: all read, and the terminal's other end is closed
                break
            if not chunk:
                break
            screen += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert b"Traceback" not in screen and b"KeyboardInterrupt" not in screen
    # The screen it took is given back, the cursor shown again.
    assert b"\x1b[?1049h" in screen and screen.endswith(b"\x1b[?25h\x1b[?1049l")


def test_missing_database_is_one_line(make_daemon):
    daemon = make_daemon()
    daemon.write_config()
    result = top(daemon, "--once")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"empathctl: top: there is no queue database at {daemon.data_dir / 'queue.sqlite3'}\n"
