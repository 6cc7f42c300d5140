"""Under attack: who is locked out, how long a slow client may stay, what large mail costs.

One Empath daemon with the default limits, the office's trusted network
127.0.0.1/32, and strangers on 127.0.0.2 and up (loopback addresses are all
this machine's own). Each scenario prints a RESULT line:

- slots: 10 strangers (127.0.0.2-.11) each keep as many connections open as
  the server lets them, dripping a byte every 2 s, for --seconds; meanwhile
  the office connects again and again and sends a message each time. The
  office's worst time to its greeting, and what the strangers got.
- drip: a stranger trickles a command a byte every 2 s, and another its
  message; when each is cut off, against the command and data timeouts
  (set to --drip-timeout for the run, so it ends in seconds, not minutes).
- memory: --parallel messages of --size-mb MB at once from one stranger,
  then --crowd (100) from two (the default cap is 50 an address), each
  delivered as it is queued to a sink on loopback that checks every byte.
  The peak RSS of the daemon and its SMTP helpers, sampled throughout.

    .venv/bin/python scripts/bench/attack.py [--only slots,drip,memory] [--seconds 60]
        [--drip-timeout 30] [--parallel 48] [--crowd 100] [--size-mb 30] [--smtp-processes N]
"""

import argparse
import contextlib
import hashlib
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import benchlib as b

OFFICE = "127.0.0.1"
STRANGERS = [f"127.0.0.{n}" for n in range(2, 12)]
DRIP = b"EHLO a-very-slow-stranger.example\r\n"
DRIP_EVERY = 2.0  # seconds between the bytes of a dripping client
PER_CLIENT = 50  # the default max_connections_per_client
CHUNK = 1 << 20
# Up to the 354: what each client says before its message.
ENVELOPE = (b"EHLO client.example", b"MAIL FROM:<someone@far.example>", f"RCPT TO:<{b.RECIPIENT}>".encode(), b"DATA")


def daemon(directory: Path, sink_port: int, args: argparse.Namespace, **timeouts: str) -> b.Daemon:
    """Empath as shipped but for the network it trusts and the timeouts a scenario shortens."""
    limits = {"max_connections": 100, "max_connections_per_client": PER_CLIENT, "connection_rate_per_client": "60/m"}
    return b.empath(
        directory,
        route_to=sink_port,
        smtp_processes=args.smtp_processes,
        relay={"trusted_networks": [f"{OFFICE}/32"]},
        limits=limits,
        timeouts=timeouts,
    ).start()


def connect(port: int, source: str, timeout: float = 10) -> socket.socket:
    sock = socket.socket()
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    return sock


def reply(sock: socket.socket) -> bytes:
    """One whole reply (its last line has a space after the code); b"" if the server closed."""
    data = b""
    while not data.endswith(b"\r\n") or data.split(b"\r\n")[-2][3:4] != b" ":
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    return data


def command(sock: socket.socket, line: bytes) -> bytes:
    sock.sendall(line + b"\r\n")
    return reply(sock)


# -- slots ------------------------------------------------------------------------------


class Strangers:
    """The attackers: every address keeps PER_CLIENT connections open, opening again
    (at most once a second an address) what the server closed or refused, and drips
    a byte every DRIP_EVERY seconds on each."""

    def __init__(self, port: int):
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.open: dict[str, int] = dict.fromkeys(STRANGERS, 0)
        self.greeted = 0  # connections that got a 220
        self.refused = 0  # connections that got a 421 instead
        self.cut = 0  # greeted ones the server closed later
        self.held = 0  # greeted and still open
        self.most_held = 0
        self._stop = threading.Event()

    def run(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        next_drip = next_open = 0.0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_open:
                self._fill()
                next_open = now + 1.0
            if now >= next_drip:
                self._drip()
                next_drip = now + DRIP_EVERY
            for key, _ in self.selector.select(timeout=0.1):
                self._read(key)
            self.most_held = max(self.most_held, self.held)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()

    def _fill(self) -> None:
        for source in STRANGERS:
            for _ in range(PER_CLIENT - self.open[source]):
                sock = socket.socket()
                sock.bind((source, 0))
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect(("127.0.0.1", self.port))
                self.selector.register(sock, selectors.EVENT_READ, {"source": source, "greeted": False, "sent": 0})
                self.open[source] += 1

    def _drip(self) -> None:
        for key in list(self.selector.get_map().values()):
            state = key.data
            if state["greeted"]:
                with contextlib.suppress(OSError):
                    key.fileobj.send(DRIP[state["sent"] % len(DRIP) : state["sent"] % len(DRIP) + 1])
                    state["sent"] += 1

    def _read(self, key: selectors.SelectorKey) -> None:
        state = key.data
        try:
            data = key.fileobj.recv(4096)
        except OSError:
            data = b""
        if data.startswith(b"220"):
            state["greeted"] = True
            self.greeted += 1
            self.held += 1
            return
        if data and not data.startswith(b"421"):
            return  # an answer to a dripped line: it holds on
        if state["greeted"]:
            self.cut += 1  # timed out, or too many junk commands
            self.held -= 1
        elif data:
            self.refused += 1  # a 421 in place of the greeting
        self.selector.unregister(key.fileobj)
        key.fileobj.close()
        self.open[state["source"]] -= 1


def office_probes(port: int, seconds: float) -> tuple[list[float], int]:
    """The office's client, connecting and sending a message again and again: its greeting
    times in seconds, and how many of its messages were refused or failed."""
    greetings: list[float] = []
    failed = 0
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        started = time.monotonic()
        try:
            with connect(port, OFFICE) as sock:
                greeted = reply(sock)
                greetings.append(time.monotonic() - started)
                answers = [command(sock, line) for line in ENVELOPE]
                answers.append(command(sock, b"Subject: scan %d\r\n\r\npage 1\r\n." % n))
                ok = greeted.startswith(b"220") and [a[:1] for a in answers] == [b"2", b"2", b"2", b"3", b"2"]
                failed += not ok
                command(sock, b"QUIT")
        except OSError:
            greetings.append(time.monotonic() - started)
            failed += 1
        n += 1
        time.sleep(0.25)  # the office's own pace: a scan every quarter second
    return greetings, failed


def slots(directory: Path, args: argparse.Namespace) -> None:
    with running(daemon(directory / "slots", b.free_port(), args)) as d:
        attack = Strangers(d.ports.smtp)
        attacker = threading.Thread(target=attack.run, args=(args.seconds,))
        attacker.start()
        time.sleep(2)  # the attack under way before the office's first probe
        greetings, failed = office_probes(d.ports.smtp, args.seconds - 3)
        attacker.join()
        log = d.log_since_start()
    b.say(f"slots: office greeted {len(greetings)} times, worst {max(greetings) * 1000:.0f} ms, {failed} failed")
    b.report(
        "attack_slots",
        {
            "seconds": args.seconds,
            "office_probes": len(greetings),
            "office_failed": failed,
            "office_greeting_worst_ms": max(greetings) * 1000,
            "office_greeting_median_ms": b.median(greetings) * 1000,
            "strangers_most_held": attack.most_held,
            "strangers_greeted": attack.greeted,
            "strangers_refused": attack.refused,
            "strangers_cut": attack.cut,
            "stress_started": log.count("stress state=start"),
        },
    )


# -- drip -------------------------------------------------------------------------------


def dripped_until_cut(sock: socket.socket, data: bytes) -> float:
    """Send ``data`` a byte every DRIP_EVERY seconds until the server hangs up; seconds it took."""
    started = time.monotonic()
    sock.settimeout(DRIP_EVERY)
    sent = 0
    while True:
        try:
            sock.send(data[sent % len(data) : sent % len(data) + 1])
            sent += 1
            if sock.recv(4096) == b"":
                break
        except TimeoutError:
            continue  # nothing from the server: drip on
        except OSError:
            break
        else:
            # Its 421 came: the close follows it at once.
            with contextlib.suppress(OSError):
                while sock.recv(4096):
                    pass
            break
    return time.monotonic() - started


def drip(directory: Path, args: argparse.Namespace) -> None:
    timeout = f"{args.drip_timeout:g}s"
    with running(daemon(directory / "drip", b.free_port(), args, command=timeout, data=timeout)) as d:
        with connect(d.ports.smtp, STRANGERS[0]) as sock:
            reply(sock)
            command_cut = dripped_until_cut(sock, DRIP)
        with connect(d.ports.smtp, STRANGERS[0]) as sock:
            reply(sock)
            for line in ENVELOPE:
                command(sock, line)
            data_cut = dripped_until_cut(sock, b"Subject: slow\r\n\r\n" + b"z" * 70 + b"\r\n")
    b.say(f"drip: command cut after {command_cut:.1f} s, message after {data_cut:.1f} s (timeouts {timeout})")
    b.report(
        "attack_drip",
        {"timeout": args.drip_timeout, "command_cut_seconds": command_cut, "data_cut_seconds": data_cut},
    )


# -- memory -----------------------------------------------------------------------------


class CheckingSink(threading.Thread):
    """A next hop that keeps no message: it hashes each one from its Subject line on
    (what the client sent; Empath's Received field comes before it)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.digests: dict[bytes, str] = {}  # Subject value → sha256
        self.lock = threading.Lock()

    def run(self) -> None:
        while True:
            try:
                sock, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with sock, sock.makefile("rb") as lines:
            sock.sendall(b"220 sink\r\n")
            while line := lines.readline():
                verb = line[:4].upper()
                if verb == b"DATA":
                    sock.sendall(b"354 go on\r\n")
                    self._message(lines)
                    sock.sendall(b"250 kept\r\n")
                elif verb == b"QUIT":
                    sock.sendall(b"221 bye\r\n")
                    return
                else:
                    sock.sendall(b"250 ok\r\n")

    def _message(self, stream) -> None:
        """Read the data to its final dot a block of whole lines at a time (line by line,
        Python would be the bottleneck of the run), unstuff it, hash it from the Subject on."""
        digest, subject = hashlib.sha256(), None
        data = b"\r\n"  # what is not hashed yet, always from a line end on
        while block := stream.read1(CHUNK):
            data += block
            end = data.find(b"\r\n.\r\n")
            last = end if end >= 0 else data.rfind(b"\r\n")
            text, data = data[: last + 2].replace(b"\r\n..", b"\r\n."), data[last:]
            if subject is None and (start := text.find(b"\r\nSubject: ")) >= 0:
                subject = text[start + 11 : text.index(b"\r\n", start + 2)]
                text = text[start:]
            if subject is not None:
                digest.update(text[2:])  # from the line end the last block's text ended with
            if end >= 0:
                break
        with self.lock:
            self.digests[subject or b""] = digest.hexdigest()

    def stop(self) -> None:
        self.server.close()


def body_chunks(n: int, size: int) -> Iterator[bytes]:
    """Message ``n``, ``size`` bytes, in pieces of about CHUNK: each message its own lines."""
    yield b"Subject: attack %d\r\n\r\n" % n
    line = b"message %06d " % n + b"z" * 63 + b"\r\n"
    block = line * (CHUNK // len(line))
    whole, rest = divmod(size, len(block))
    yield from [block] * whole
    yield line * (rest // len(line))


def send_large(port: int, source: str, n: int, size: int, sent: dict, refusals: list) -> None:
    """Send message ``n``; note its digest, and whether it was accepted, in ``sent``; why not, in ``refusals``."""
    digest = hashlib.sha256()
    try:
        with connect(port, source, timeout=300) as sock:
            answers = [reply(sock), *(command(sock, line) for line in ENVELOPE)]
            for chunk in body_chunks(n, size):
                digest.update(chunk)
                sock.sendall(chunk)
            answers.append(command(sock, b"."))
            command(sock, b"QUIT")
        wrong = [a for a, first in zip(answers, b"222232", strict=True) if a[:1] != bytes([first])]
    except OSError as e:
        wrong = [str(e).encode()]
    if wrong:
        refusals.append(wrong[0].decode(errors="replace").strip())
    sent[b"attack %d" % n] = (digest.hexdigest(), not wrong)


class Sampler(threading.Thread):
    """The summed RSS of the daemon and its helpers, every tenth of a second; the highest seen."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.done = threading.Event()

    def run(self) -> None:
        while True:
            self.peak_kib = max(self.peak_kib, sum(b.rss_kib(p) for p in b.with_children(self.pid)))
            if self.done.wait(0.1):
                return


def memory_run(directory: Path, args: argparse.Namespace, sources: list[str], count: int, label: str) -> None:
    sink = CheckingSink()
    sink.start()
    try:
        with running(daemon(directory / label, sink.port, args)) as d:
            pids = b.with_children(d.proc.pid)
            idle = sum(b.rss_kib(p) for p in pids)
            sampler = Sampler(d.proc.pid)
            sampler.start()
            sent: dict[bytes, tuple[str, bool]] = {}
            refusals: list[str] = []
            size = args.size_mb * 1000 * 1000
            senders = [
                threading.Thread(
                    target=send_large, args=(d.ports.smtp, sources[n % len(sources)], n, size, sent, refusals)
                )
                for n in range(count)
            ]
            started = time.monotonic()
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join()
            received = time.monotonic() - started
            accepted = [subject for subject, (_, ok) in sent.items() if ok]
            b.wait_for(lambda: all(s in sink.digests for s in accepted), timeout=600, what="the accepted at the sink")
            delivered = time.monotonic() - started
            sampler.done.set()
            sampler.join()
            peaks = sum(b.rss_kib(p, "VmHWM") for p in b.with_children(d.proc.pid))
    finally:
        sink.stop()
    exact = sum(1 for subject in accepted if sink.digests.get(subject) == sent[subject][0])
    # A message its client was told was not taken (451) must not arrive: its retry would be a second copy.
    refused_arrived = sum(1 for subject, (_, ok) in sent.items() if not ok and subject in sink.digests)
    b.say(
        f"memory {label}: {count} × {args.size_mb} MB from {len(sources)} stranger(s): "
        f"RSS {idle / 1024:.0f} MiB idle, {sampler.peak_kib / 1024:.0f} MiB at most; {exact}/{count} byte-exact"
    )
    for why in sorted(set(refusals)):
        b.say(f"  not accepted ×{refusals.count(why)}: {why}")
    b.report(
        f"attack_memory_{label}",
        {
            "messages": count,
            "size_mb": args.size_mb,
            "accepted": len(accepted),
            "refused_but_delivered": refused_arrived,
            "byte_exact": exact,
            "rss_idle_mib": idle / 1024,
            "rss_peak_mib": sampler.peak_kib / 1024,
            "rss_hwm_sum_mib": peaks / 1024,
            "received_seconds": received,
            "delivered_seconds": delivered,
        },
    )


def memory(directory: Path, args: argparse.Namespace) -> None:
    memory_run(directory, args, STRANGERS[:1], args.parallel, "one_address")
    addresses = -(-args.crowd // PER_CLIENT)
    memory_run(directory, args, STRANGERS[:addresses], args.crowd, "default_limits")


@contextlib.contextmanager
def running(d: b.Daemon) -> Iterator[b.Daemon]:
    try:
        yield d
    finally:
        d.stop()


SCENARIOS = {"slots": slots, "drip": drip, "memory": memory}


def main() -> None:
    parser = b.with_smtp_processes(b.arguments(__doc__.splitlines()[0], runs=1, messages=0))
    parser.add_argument("--only", default="slots,drip,memory", help="scenarios to run (slots,drip,memory)")
    parser.add_argument("--seconds", type=float, default=60, help="how long the slot attack lasts (60)")
    parser.add_argument("--drip-timeout", type=float, default=30, help="command and data timeouts for drip (30)")
    parser.add_argument("--parallel", type=int, default=48, help="large messages from one stranger at once (48)")
    parser.add_argument("--crowd", type=int, default=100, help="large messages at once, then, from 50 an address (100)")
    parser.add_argument("--size-mb", type=int, default=30, help="size of each large message in MB (30)")
    args = parser.parse_args()
    b.raise_fd_limit()
    with b.workspace(args.keep) as directory:
        for name in args.only.split(","):
            SCENARIOS[name](directory, args)


if __name__ == "__main__":
    main()
