"""Helpers for tests that run a real Empath daemon on loopback.

Everything here talks to loopback only, on ports picked free at run time,
and waits by polling with a deadline, never by sleeping a fixed time.
"""

import json
import os
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent


_HANDED_OUT: set[tuple[str, int]] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now that this process has not handed out before: the kernel may
    give the same free port twice in a row, and a daemon's "nothing listens here"
    port once came out equal to its own SMTP port (its mail then looped to itself)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if (host, port) not in _HANDED_OUT:
            _HANDED_OUT.add((host, port))
            return port


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns a true value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Ports:
    smtp: int
    submission: int
    smtps: int


@dataclass
class Daemon:
    """One empath process with its own data directory and ports."""

    directory: Path
    certs: "Certs | None" = None
    sections: dict = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    extra: str = ""  # TOML appended as it is: arrays of tables such as [[plugins]]

    def __post_init__(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ports = Ports(free_port(), free_port(), free_port())
        self.dead_port = free_port()  # nothing listens here, TCP or UDP
        self.data_dir = self.directory / "data"
        self.config_path = self.directory / "empath.toml"
        self.log_path = self.directory / "empath.log"
        self.users_path = self.directory / "users"
        if not self.users_path.exists():
            self.users_path.write_text("")

    def config_text(self) -> str:
        sections = {
            "server": {
                "hostname": "mx.test.example",
                "data_dir": str(self.data_dir),
                "log_level": "debug",
                "log_file": str(self.log_path),
            },
            "relay": {"local_domains": ["local.test", "example.test"], "trusted_networks": ["127.0.0.2/32"]},
            "auth": {"users_file": str(self.users_path)},
            # Tests open many sessions from 127.0.0.1 in quick succession: no connection
            # rate limit, but where a test sets one (tests/regress/test_slot_exhaustion.py).
            "limits": {"auth_failure_delay": "10ms", "connection_rate_per_client": 0},
            "timeouts": {"shutdown_grace": "5s"},
            "queue": {"min_free_space": 0},
            # Nothing here reaches the internet: DNS goes to a loopback port where
            # no server answers, and the local domains to a port where no SMTP
            # server listens, so mail stays queued (deferred) unless a test
            # points delivery at its own DNS server and peers.
            "delivery": {"nameservers": [f"127.0.0.1:{self.dead_port}"], "dns_timeout": "500ms"},
            'domains."local.test"': {"route": [f"127.0.0.1:{self.dead_port}"]},
            'domains."example.test"': {"route": [f"127.0.0.1:{self.dead_port}"]},
        }
        if self.certs:
            sections["tls"] = {"certificate": str(self.certs.cert), "key": str(self.certs.key)}
        for name, values in self.sections.items():
            if values is None:
                sections.pop(name, None)
            else:
                sections.setdefault(name, {}).update(values)
        lines = []
        listeners = [("smtp", self.ports.smtp)]
        if self.certs:
            listeners += [("submission", self.ports.submission), ("smtps", self.ports.smtps)]
        for mode, port in listeners:
            lines += ["[[listeners]]", f'address = "127.0.0.1:{port}"', f'mode = "{mode}"', ""]
        for name, values in sections.items():
            lines.append(f"[{name}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
            lines.append("")
        return "\n".join(lines) + self.extra

    def write_config(self) -> Path:
        self.config_path.write_text(self.config_text())
        return self.config_path

    def start(self, wait: bool = True) -> "Daemon":
        self.write_config()
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "empath.cmd.empath", "--config", str(self.config_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        if wait:
            wait_for(self._started, timeout=20, what="empath to start")
        return self

    def _started(self) -> bool:
        if self.proc.poll() is not None:
            out, err = self.proc.communicate()
            raise AssertionError(f"empath exited with {self.proc.returncode}: {err.decode()}{out.decode()}")
        text = self.log_since_start()
        helpers = (self.sections.get("server") or {}).get("smtp_processes", 1)
        if helpers > 1 and text.count("smtp_helper_ready") < helpers:
            return False  # the daemon serves sessions itself meanwhile, but the test means its helpers
        return " started " in text or '"event": "started"' in text  # text or JSON log

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_since_start(self) -> str:
        """The log written by the current process only (after the last start())."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.proc.stdout.close()
            self.proc.stderr.close()

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a power cut of the process."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            self.proc.stdout.close()
            self.proc.stderr.close()

    def add_user(self, name: str, password: str) -> None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "empath.cmd.empathctl",
                "--config",
                str(self.write_config()),
                "user",
                "add",
                name,
                "--password-stdin",
            ],
            input=password + "\n",
            text=True,
            check=True,
            capture_output=True,
            cwd=ROOT,
        )

    # -- the queue, read straight from the database ------------------------

    def query(self, sql: str, *args) -> list[tuple]:
        db = sqlite3.connect(f"file:{self.data_dir / 'queue.sqlite3'}?mode=ro", uri=True, timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def messages(self) -> list[tuple]:
        return self.query("SELECT queue_id, sender FROM message ORDER BY received_at")

    def recipients(self, queue_id: str) -> list[str]:
        return [r[0] for r in self.query("SELECT address FROM recipient WHERE queue_id = ? ORDER BY id", queue_id)]

    def body(self, queue_id: str) -> bytes:
        return self.query("SELECT data FROM body WHERE queue_id = ?", queue_id)[0][0]

    # -- the control socket ---------------------------------------------------

    @property
    def control_socket(self) -> Path:
        return Path(self.sections.get("control", {}).get("socket") or self.data_dir / "control.sock")

    def control(self, verb: str, args: dict | None = None, token: str | None = None, raw: bytes | None = None) -> dict:
        """One request on the control socket (``raw``: these bytes as they are); the reply object."""
        from empath.control import protocol, sockfile

        with sockfile.connect(self.control_socket, timeout=10) as sock:
            sock.sendall(raw if raw is not None else protocol.encode_request(verb, args or {}, token))
            reply = b""
            while not reply.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        return json.loads(reply)


EMPATHCTL = ROOT / ".venv" / "bin" / "empathctl"


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample of a daemon's /metrics (server.metrics_address on ``port``) by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def empathctl(daemon: Daemon, *args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run ``empathctl --config DAEMON'S-CONFIG ARGS…``; its output as text."""
    return subprocess.run(
        [str(EMPATHCTL), "--config", str(daemon.config_path), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def send_message(daemon: Daemon, rcpts: list[str], tag: str = "hello") -> str:
    """Send one message from alice@sender.test over the smtp listener; its queue id."""
    import smtplib

    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=30) as client:
        client.ehlo("client.test")
        assert client.mail("alice@sender.test")[0] == 250
        for rcpt in rcpts:
            assert client.rcpt(rcpt)[0] == 250
        code, text = client.data(f"Subject: {tag}\r\n\r\nbody of {tag}\r\n".encode())
        assert code == 250, text
        return text.decode().rsplit(" ", 1)[1]


@dataclass
class Certs:
    ca_pem: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_pem))
        return ctx


def make_certs(directory: Path) -> Certs:
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("mx.test.example", "localhost", "127.0.0.1")
    directory.mkdir(parents=True, exist_ok=True)
    ca_pem = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    cert = directory / "cert.pem"
    key = directory / "key.pem"
    server.cert_chain_pems[0].write_to_path(str(cert))
    for extra in server.cert_chain_pems[1:]:
        extra.write_to_path(str(cert), append=True)
    server.private_key_pem.write_to_path(str(key))
    return Certs(ca_pem, cert, key)


class RawClient:
    """A byte-exact SMTP client over a plain socket, for what smtplib will not send."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0, source: str | None = None):
        self.sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None
        )
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; unread: {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def reply(self) -> tuple[int, str]:
        """One (possibly multi-line) reply as (code, text with lines joined by newlines)."""
        lines = []
        while True:
            line = self.read_line().decode("utf-8", "replace")
            lines.append(line[4:])
            if line[3:4] != "-":
                return int(line[:3]), "\n".join(lines)

    def cmd(self, line: str | bytes) -> tuple[int, str]:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply()

    def closed(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the connection (all that it sent is read first)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def starttls(self, context: ssl.SSLContext, server_hostname: str = "mx.test.example") -> None:
        """Do the TLS handshake after the server's 220 to STARTTLS.

        Fails if the server sent anything in clear after that 220: such bytes
        would be answers to commands injected before the handshake.
        """
        if self.buf:
            raise AssertionError(f"clear-text bytes after the STARTTLS reply: {self.buf!r}")
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def raw_reply(reply) -> tuple[int, str]:
    """A named reply (empath.smtp.replies) as RawClient.reply() returns it."""
    return reply.code, f"{reply.status} {reply.text}" if reply.status else reply.text


def lib_reply(reply) -> tuple[int, bytes]:
    """A named reply as smtplib returns it (and puts in SMTPResponseException)."""
    return reply.code, raw_reply(reply)[1].encode()


def code_status(got: tuple[int, str]) -> tuple[int, str]:
    """(code, enhanced status) of a RawClient reply, to compare with a named reply whose text varies."""
    return got[0], got[1].split(" ", 1)[0]
