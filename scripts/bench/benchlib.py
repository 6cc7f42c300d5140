"""What every benchmark script shares: Empath and a private Postfix side by
side on loopback, Postfix's smtp-source as the load and smtp-sink as the next
hop, medians of several runs, and the one-line result.

Nothing here touches the system's own Postfix: the instance lives in a
temporary directory (its own config_directory, queue_directory and
data_directory), listens on free loopback ports only, relays to the sink by
IP address (no DNS), and is always stopped on the way out. Starting it needs
root, as Postfix's master does.
"""

import argparse
import contextlib
import os
import re
import resource
import shutil
import signal
import smtplib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from support import Daemon, free_port, wait_for  # noqa: E402 - tests/ is put on the path just above

TOOL_DIRS = ("/usr/sbin", "/usr/lib/postfix/sbin", "/usr/bin")
DOMAIN = "local.test"
SENDER = "a@b.test"
RECIPIENT = f"x@{DOMAIN}"
PY_SPY = ROOT / ".venv" / "bin" / "py-spy"


def tool(name: str) -> str:
    """Where a Postfix tool lives (Debian puts smtp-source in /usr/sbin, some in /usr/lib/postfix)."""
    for directory in TOOL_DIRS:
        path = Path(directory) / name
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"bench: {name} not found; run scripts/bootstrap --test (it installs postfix)")
    return found


def arguments(description: str, runs: int = 5, messages: int = 2000) -> argparse.ArgumentParser:
    # SIGTERM unwinds like Ctrl-C, so the private Postfix and the daemons are stopped on the way out.
    signal.signal(signal.SIGTERM, _terminated)
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=runs, help=f"runs per measurement; the median is reported ({runs})")
    parser.add_argument("--messages", type=int, default=messages, help=f"messages per run ({messages})")
    parser.add_argument("--profile", type=Path, help="write a py-spy profile of each Empath run into this folder")
    parser.add_argument(
        "--profile-format",
        choices=("flamegraph", "speedscope", "raw"),
        default="flamegraph",
        help="py-spy's output: an SVG flame graph, speedscope JSON, or raw collapsed stacks (flamegraph)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, queues)")
    return parser


def with_smtp_processes(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """For the scenarios whose figures hold for any number of processes (not CPU or RSS of one pid)."""
    parser.add_argument(
        "--smtp-processes",
        type=int,
        default=1,
        help="Empath's [server] smtp_processes: helper processes serving SMTP sessions (1: the daemon alone)",
    )
    return parser


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def ratio(empath: float, postfix: float, higher_is_better: bool = True) -> float:
    """Empath against Postfix, > 1 when Empath does better."""
    if not empath or not postfix:
        return float("nan")
    return empath / postfix if higher_is_better else postfix / empath


def result_line(scenario: str, figures: dict[str, float | int | str]) -> str:
    """The last line every script prints: ``RESULT scenario key=value ...``."""
    parts = []
    for key, value in figures.items():
        parts.append(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}")
    return f"RESULT {scenario} " + " ".join(parts)


def paired_figures(
    figures: dict[str, float | int | str], label: str, runs: int, measure: Callable[[str, int], float]
) -> None:
    """Run ``measure`` for both MTAs, alternately (``pairs``), and put the medians and
    their ratio into ``figures`` as empath_LABEL, postfix_LABEL and ratio_LABEL."""
    e, p = pairs(runs, measure)
    figures[f"empath_{label}"] = median(e)
    figures[f"postfix_{label}"] = median(p)
    figures[f"ratio_{label}"] = ratio(median(e), median(p))


def report(scenario: str, figures: dict[str, float | int | str]) -> None:
    print(result_line(scenario, figures), flush=True)


def report_durations(scenario: str, messages: int, empath: list[float], postfix: list[float]) -> None:
    """The result of a scenario timed in seconds for ``messages``: medians, rates and their ratio."""
    es, ps = median(empath), median(postfix)
    figures = {"messages": messages, "empath_seconds": es, "postfix_seconds": ps}
    report(scenario, {**figures, "empath_rate": messages / es, "postfix_rate": messages / ps, "ratio": ratio(ps, es)})


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="empath-bench-"))
    # Postfix's unprivileged processes must reach their queue under here.
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        if keep:
            say(f"kept {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)


def raise_fd_limit() -> None:
    """1,000 idle connections need more descriptors than the usual 1,024 (children inherit this)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- load -----------------------------------------------------------------------


def smtp_source(port: int, messages: int, sessions: int, size: int, reuse: bool = False) -> float:
    """Send ``messages`` of ``size`` bytes over ``sessions`` parallel sessions; seconds taken.

    Without ``reuse`` each message has a connection of its own (smtp-source's
    default); with it, each session sends message after message (``-d``).
    """
    command = [tool("smtp-source"), "-s", str(sessions), "-m", str(messages), "-l", str(size)]
    command += ["-f", SENDER, "-t", RECIPIENT]
    if reuse:
        command.append("-d")
    command.append(f"127.0.0.1:{port}")
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    took = time.monotonic() - started
    if done.returncode != 0 or done.stderr.strip():
        raise SystemExit(f"bench: {' '.join(command)} failed: {done.stderr.strip()}")
    return took


def send_one(port: int, body: bytes) -> float:
    """One message over smtplib; the monotonic time its 250 arrived."""
    with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
        client.sendmail(SENDER, [RECIPIENT], body)
        return time.monotonic()


def message_body(size: int) -> bytes:
    line = b"x" * 76 + b"\r\n"
    head = b"Subject: bench\r\n\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


# -- the next hop -----------------------------------------------------------------


class Sink:
    """smtp-sink on a loopback port, counting messages as they arrive.

    ``-c`` prints running counters ("sess=N quit=N mesg=N") each time "." is
    received; a thread reads them and notes the time of each new message.
    """

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.arrivals: list[float] = []
        self._lock = threading.Lock()

    def start(self) -> "Sink":
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.proc = subprocess.Popen(
            [tool("smtp-sink"), *user, "-c", f"127.0.0.1:{self.port}", "1000"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        wait_for(self._listening, timeout=10, what="smtp-sink to listen")
        return self

    def _listening(self) -> bool:
        with contextlib.suppress(OSError), smtplib.SMTP("127.0.0.1", self.port, timeout=2):
            return True
        return False

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        seen = 0
        buffer = b""
        while chunk := proc.stdout.read1(4096):
            buffer += chunk
            *records, buffer = re.split(rb"[\r\n]", buffer)
            for record in records:
                m = re.search(rb"mesg=(\d+)", record)
                if m and int(m.group(1)) > seen:
                    now = time.monotonic()
                    with self._lock:
                        self.arrivals += [now] * (int(m.group(1)) - seen)
                    seen = int(m.group(1))

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.arrivals)

    def wait_count(self, count: int, timeout: float) -> float:
        """Wait until ``count`` messages have arrived in all; the time the last one did."""
        wait_for(lambda: self.count >= count, timeout=timeout, interval=0.005, what=f"{count} messages at the sink")
        with self._lock:
            return self.arrivals[count - 1]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


# -- Postfix ----------------------------------------------------------------------

POSTFIX_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """A private Postfix instance: two smtpd listeners on free loopback ports.

    ``relay_port`` relays everything to the sink; ``hold_port`` puts every
    message on hold after it is safely queued (fsynced by cleanup), so that
    nothing is delivered: pure durable accept.
    """

    def __init__(self, directory: Path, sink_port: int, max_processes: int = 200):
        self.directory = directory
        self.config_dir = directory / "etc"
        self.queue_dir = directory / "queue"
        self.relay_port = free_port()
        self.hold_port = free_port()
        self.sink_port = sink_port
        self.max_processes = max_processes
        self.running = False

    def configure(self) -> None:
        data_dir = self.directory / "data"
        for path in (self.config_dir, self.queue_dir, data_dir):
            path.mkdir(parents=True, exist_ok=True)
        shutil.chown(data_dir, "postfix")
        main = {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": data_dir,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": "postfix.bench.test",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "relayhost": f"[127.0.0.1]:{self.sink_port}",
            "smtp_dns_support_level": "disabled",
            "smtp_host_lookup": "native",
            "maillog_file": self.directory / "maillog",
            "maillog_file_prefixes": self.directory,
            "smtpd_recipient_restrictions": "permit_mynetworks, reject",
            "default_process_limit": self.max_processes,
            "message_size_limit": 60000000,  # Empath's default is 50 MB; the memory scenario sends 25 MB
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
        }
        (self.config_dir / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in main.items()))
        hold = "-o smtpd_recipient_restrictions=check_client_access,static:HOLD,permit_mynetworks,reject"
        listeners = (
            f"{self.relay_port} inet n - n - {self.max_processes} smtpd\n"
            f"{self.hold_port} inet n - n - {self.max_processes} smtpd {hold}\n"
        )
        (self.config_dir / "master.cf").write_text(listeners + POSTFIX_SERVICES)

    def command(self, *args: str) -> str:
        done = subprocess.run([tool("postfix"), "-c", str(self.config_dir), *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"bench: postfix {' '.join(args)} failed ({done.returncode}); see {self.maillog()}")
        return done.stdout

    def maillog(self) -> Path:
        return self.directory / "maillog"

    def start(self) -> "Postfix":
        if os.geteuid() != 0:
            raise SystemExit("bench: starting a private Postfix needs root")
        self.configure()
        self.command("start")
        self.running = True
        for port in (self.relay_port, self.hold_port):
            wait_for(lambda p=port: _accepts(p), timeout=20, what="postfix to listen")
        return self

    def stop(self) -> None:
        if self.running:
            self.running = False
            subprocess.run([tool("postfix"), "-c", str(self.config_dir), "stop"], capture_output=True)

    def queued(self, queue: str) -> int:
        """How many messages sit in one of Postfix's queues (hold, deferred, active, incoming)."""
        return sum(len(files) for _, _, files in os.walk(self.queue_dir / queue))

    def clear(self) -> None:
        subprocess.run([tool("postsuper"), "-c", str(self.config_dir), "-d", "ALL"], capture_output=True, check=True)

    def flush(self) -> None:
        subprocess.run([tool("postqueue"), "-c", str(self.config_dir), "-f"], capture_output=True, check=True)

    def pids(self) -> list[int]:
        """The master and every process it runs."""
        pid_file = self.queue_dir / "pid" / "master.pid"
        master = int(pid_file.read_text().split()[0])
        children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True)
        return [master, *(int(p) for p in children.stdout.split())]


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
        client.noop()
        return True
    return False


# -- Empath ---------------------------------------------------------------------


class HeldDaemon(Daemon):
    """An Empath daemon whose delivery is paused from the start (the control
    socket's pause verb): it accepts and queues, and the scheduler claims
    nothing, as Postfix's hold queue keeps mail away from its queue manager."""

    def start(self, wait: bool = True) -> "HeldDaemon":
        super().start(wait)
        reply = self.control("pause")
        if not reply.get("ok"):
            raise SystemExit(f"bench: pausing delivery failed: {reply}")
        return self


def empath(directory: Path, route_to: int, hold: bool = False, smtp_processes: int = 1, **sections: dict) -> Daemon:
    """An Empath daemon (tests/support.py's Daemon) for ``local.test``, delivering to ``route_to``.

    With ``hold``, nothing is delivered: delivery is paused before the load
    starts (HeldDaemon), so the figures are those of durable accept alone.
    """
    domain: dict = {"route": [f"127.0.0.1:{route_to}"], "tls": "none"}
    config = {
        "server": {"log_level": "info", "smtp_processes": smtp_processes},
        "relay": {"local_domains": [DOMAIN], "trusted_networks": ["127.0.0.0/8"]},
        "limits": {"max_connections": 2000, "max_connections_per_client": 2000},
        'domains."example.test"': None,
        f'domains."{DOMAIN}"': domain,
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    return (HeldDaemon if hold else Daemon)(directory, sections=config)


def empath_count(daemon: Daemon, sql: str) -> int:
    with contextlib.suppress(sqlite3.OperationalError):
        return daemon.query(sql)[0][0]
    return -1


def received(daemon: Daemon) -> int:
    return empath_count(daemon, "SELECT count(*) FROM event WHERE kind = 'received'")


@contextlib.contextmanager
def profiled(daemon: Daemon, args: argparse.Namespace, name: str) -> Iterator[None]:
    """Record a py-spy profile of the daemon while the block runs (with --profile)."""
    folder: Path | None = args.profile
    if folder is None or daemon.proc is None:
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fmt = args.profile_format
    out = folder / f"{name}.{ {'flamegraph': 'svg', 'speedscope': 'json', 'raw': 'txt'}[fmt] }"
    spy = subprocess.Popen(
        [str(PY_SPY), "record", "--pid", str(daemon.proc.pid), "--rate", "250", "--format", fmt, "--output", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1)  # py-spy attaches before the load starts
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
        say(f"profile: {out}")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def with_children(pid: int) -> list[int]:
    """``pid`` and its child processes (an Empath daemon and its SMTP helpers)."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        return [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    return [pid]


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages split between the processes that share them."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def reset_peak(pid: int) -> None:
    """Start VmHWM (peak RSS) afresh from the current RSS."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def compare(
    postfix: Postfix, runs: int, measure: Callable[[str, int], float], what: str, *others: Sink
) -> tuple[list[float], list[float]]:
    """Start Postfix, run the pairs, and stop Postfix and the ``others`` (a sink) whatever happens."""
    try:
        postfix.start()
        say(what)
        return pairs(runs, measure)
    finally:
        postfix.stop()
        for other in others:
            other.stop()


def pairs(runs: int, measure: Callable[[str, int], float]) -> tuple[list[float], list[float]]:
    """Run ``measure("empath", n)`` and ``measure("postfix", n)`` alternately, ``runs`` times each,
    so that a burst of noise on the machine falls on both."""
    e: list[float] = []
    p: list[float] = []
    for n in range(runs):
        e.append(measure("empath", n))
        p.append(measure("postfix", n))
        say(f"run {n + 1}/{runs}: empath {e[-1]:.3f} postfix {p[-1]:.3f}")
    return e, p
