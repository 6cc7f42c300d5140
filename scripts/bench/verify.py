"""Scenario: recipient verification by callout (issue 18), its cost at RCPT and
the accept rate with it on.

1. RCPT round trip, client side (the RCPT line sent to its reply read), over
   one session of transactions of at most 100 recipients, RSET between them,
   to an Empath whose local.test is verified by callout and whose route is
   smtp-sink on loopback (it says 250 to every RCPT): --recipients addresses
   of a local domain with no verification (plain), then as many fresh
   local.test addresses (miss: each needs a callout), then the same addresses
   again once their answers are in the queue database's ``verified`` table
   (hit). Milliseconds, the median and p95 of each run, medians over runs.
2. Durable accept of 1 KB messages (smtp-source, 20 sessions, a new connection
   per message) to x@local.test, Empath with delivery held against Postfix's
   listener that holds every message: plain, then with the recipient verified
   (Empath: verify = "callout" to the sink; Postfix: reject_unverified_recipient,
   its probes relayed to the same sink). Both caches are warmed first, so the
   figures are those of a cache hit. Messages per second; ratio = Empath / Postfix.

    .venv/bin/python scripts/bench/verify.py [--runs 3] [--messages 2000] [--recipients 500]
"""

import argparse
import contextlib
import socket
import time
from pathlib import Path

import benchlib as b

PLAIN_DOMAIN = "plain.test"  # a local domain with no verification: the baseline
MAX_RECIPIENTS = 100  # Empath's default limits.max_recipients
SESSIONS = 20
SIZE = 1024


# -- an SMTP client that times each command ----------------------------------------------


class Client:
    """One SMTP session over a plain socket; each command's reply and round trip."""

    def __init__(self, port: int, timeout: float = 30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.expect(220, self.reply()[1])
        self.command("EHLO bench.test", expect=250)

    def reply(self) -> tuple[int, bytes]:
        """One whole reply: its code and its last line."""
        while True:
            while b"\r\n" not in self.buffer:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise SystemExit(f"bench: the server closed the session (after {self.buffer!r})")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\r\n", 1)
            if line[3:4] != b"-":
                return int(line[:3]), line

    def timed(self, line: str) -> tuple[int, bytes, float]:
        """Send ``line``; its reply and the seconds from sending it to reading the reply."""
        started = time.perf_counter()
        self.sock.sendall(line.encode() + b"\r\n")
        code, text = self.reply()
        return code, text, time.perf_counter() - started

    def command(self, line: str, expect: int | None = None) -> tuple[int, bytes]:
        code, text, _ = self.timed(line)
        if expect is not None:
            self.expect(expect, text, line)
        return code, text

    @staticmethod
    def expect(code: int, text: bytes, line: str = "the greeting") -> None:
        if not text.startswith(str(code).encode()):
            raise SystemExit(f"bench: {line!r} got {text.decode(errors='replace')!r}, not {code}")

    def close(self) -> None:
        with contextlib.suppress(OSError, SystemExit):
            self.command("QUIT")
        self.sock.close()


def rcpt_times(client: Client, addresses: list[str]) -> list[float]:
    """Each RCPT's round trip in milliseconds, MAX_RECIPIENTS to a transaction, RSET after each."""
    found = []
    for start in range(0, len(addresses), MAX_RECIPIENTS):
        client.command(f"MAIL FROM:<{b.SENDER}>", expect=250)
        for address in addresses[start : start + MAX_RECIPIENTS]:
            code, text, seconds = client.timed(f"RCPT TO:<{address}>")
            client.expect(250, text, f"RCPT TO:<{address}>")
            found.append(seconds * 1000)
        client.command("RSET", expect=250)
    return found


# -- the two MTAs, verifying ----------------------------------------------------------------


def empath(directory: Path, sink: b.Sink, args: argparse.Namespace, verify: bool, hold: bool = False) -> b.Daemon:
    """Empath for local.test (verified by callout to the sink with ``verify``) and plain.test (never)."""
    domain = {"route": [f"127.0.0.1:{sink.port}"], "tls": "none"}
    return b.empath(
        directory,
        route_to=sink.port,
        hold=hold,
        smtp_processes=args.smtp_processes,
        # The clients here are strangers, as the internet's are at an MX: only their recipients
        # are verified (our own clients' never are), with no per-address connection rate limit.
        relay={"local_domains": [b.DOMAIN, PLAIN_DOMAIN], "trusted_networks": ["192.0.2.0/24"]},
        limits={"connection_rate_per_client": 0},
        verification={"timeout": "10s"},
        **{
            f'domains."{b.DOMAIN}"': {"verify": "callout"} if verify else {},
            f'domains."{PLAIN_DOMAIN}"': domain,
        },
    ).start()


def verified(daemon: b.Daemon) -> int:
    """Answers kept in the daemon's queue database."""
    return b.empath_count(daemon, "SELECT count(*) FROM verified")


def callouts(daemon: b.Daemon) -> int:
    """Callouts the daemon logged: one "callout" event each (text or JSON log), with the time it took."""
    lines = daemon.log_since_start().splitlines()
    return sum(1 for line in lines if (" callout " in line and " ms=" in line) or '"event": "callout"' in line)


def warm_empath(daemon: b.Daemon) -> None:
    """Verify the recipient smtp-source sends to, and wait for its answer to be kept."""
    client = Client(daemon.ports.smtp)
    try:
        rcpt_times(client, [b.RECIPIENT])
    finally:
        client.close()
    b.wait_for(lambda: verified(daemon) >= 1, timeout=30, what="empath to keep the warm-up answer")


class VerifyingPostfix(b.Postfix):
    """benchlib's private Postfix with a third listener: it holds every message, as
    hold_port does, and refuses any recipient its verify service has not found at the
    next hop (the sink, its relayhost) with reject_unverified_recipient."""

    def __init__(self, directory: Path, sink_port: int):
        super().__init__(directory, sink_port)
        self.verify_port = b.free_port()

    def configure(self) -> None:
        super().configure()
        restrictions = "check_client_access,static:HOLD,reject_unverified_recipient,permit_mynetworks,reject"
        service = f"{self.verify_port} inet n - n - {self.max_processes} smtpd"
        listener = f"{service} -o smtpd_recipient_restrictions={restrictions}\n"
        master = self.config_dir / "master.cf"
        master.write_text(listener + master.read_text())

    def start(self) -> "VerifyingPostfix":
        super().start()
        b.wait_for(lambda: b._accepts(self.verify_port), timeout=20, what="postfix to listen")
        return self

    def warm(self, timeout: float = 60) -> int:
        """Ask for the recipient until its verification is done (the first RCPTs may get 450
        "address verification in progress" while the probe goes to the sink); RCPTs asked."""
        deadline = time.monotonic() + timeout
        asked = 0
        client = Client(self.verify_port)
        try:
            while True:
                client.command(f"MAIL FROM:<{b.SENDER}>", expect=250)
                code, text = client.command(f"RCPT TO:<{b.RECIPIENT}>")
                client.command("RSET", expect=250)
                asked += 1
                if code == 250:
                    return asked
                if code != 450 or time.monotonic() > deadline:
                    raise SystemExit(f"bench: postfix's verification of {b.RECIPIENT} got {text.decode()!r}")
                time.sleep(0.2)
        finally:
            client.close()


# -- 1. the RCPT round trip -----------------------------------------------------------------------


def rcpt_run(args: argparse.Namespace, directory: Path, sink: b.Sink, n: int) -> dict[str, list[float]]:
    """One run: the RCPT round trips (ms) of plain.test addresses, of fresh local.test ones
    (each a callout), and of the same local.test ones again (each answered from the table)."""
    daemon = empath(directory / f"empath-rcpt-{n}", sink, args, verify=True)
    try:
        fresh = [f"r{n}-{i}@{b.DOMAIN}" for i in range(args.recipients)]
        plain = [f"r{n}-{i}@{PLAIN_DOMAIN}" for i in range(args.recipients)]
        client = Client(daemon.ports.smtp)
        try:
            with b.profiled(daemon, args, f"verify-rcpt-{n}"):
                found = {"plain": rcpt_times(client, plain), "miss": rcpt_times(client, fresh)}
                # The answers are written after the replies: the hits are timed once all are kept.
                b.wait_for(
                    lambda: verified(daemon) >= len(fresh),
                    timeout=60,
                    what=f"{len(fresh)} answers in empath's verified table",
                )
                asked = callouts(daemon)
                if asked != len(fresh):
                    raise SystemExit(f"bench: {asked} callouts for {len(fresh)} fresh addresses (and none plain)")
                found["hit"] = rcpt_times(client, fresh)
        finally:
            client.close()
        if callouts(daemon) != asked:
            raise SystemExit(f"bench: the second pass called out again ({callouts(daemon) - asked} callouts)")
        return found
    finally:
        daemon.stop()


def measure_rcpt(args: argparse.Namespace, directory: Path, sink: b.Sink) -> dict[str, float | int | str]:
    median: dict[str, list[float]] = {"plain": [], "miss": [], "hit": []}
    p95: dict[str, list[float]] = {"plain": [], "miss": [], "hit": []}
    for n in range(args.runs):
        for kind, times in rcpt_run(args, directory, sink, n).items():
            median[kind].append(b.percentile(times, 0.5))
            p95[kind].append(b.percentile(times, 0.95))
        b.say(
            f"rcpt run {n + 1}/{args.runs} (median/p95): "
            + " ".join(f"{kind} {median[kind][-1]:.3f}/{p95[kind][-1]:.3f} ms" for kind in median)
        )
    figures: dict[str, float | int | str] = {"recipients": args.recipients}
    figures |= {f"rcpt_ms_{kind}": b.median(values) for kind, values in median.items()}
    figures |= {f"rcpt_p95_ms_{kind}": b.median(values) for kind, values in p95.items()}
    return figures


# -- 2. the accept rate ------------------------------------------------------------------------------


def measure_accept(args: argparse.Namespace, directory: Path, sink: b.Sink) -> dict[str, float | int | str]:
    figures: dict[str, float | int | str] = {"messages": args.messages}
    postfix = VerifyingPostfix(directory / "postfix", sink_port=sink.port)
    try:
        postfix.start()
        b.say(f"postfix verified {b.RECIPIENT} after {postfix.warm()} RCPT(s)")
        for verify in (False, True):
            label = "verify" if verify else "plain"

            def measure(mta: str, n: int, verify: bool = verify, label: str = label) -> float:
                if mta == "postfix":
                    postfix.clear()
                    port = postfix.verify_port if verify else postfix.hold_port
                    took = b.smtp_source(port, args.messages, SESSIONS, SIZE)
                    b.wait_for(lambda: postfix.queued("hold") >= args.messages, timeout=30, what="postfix hold queue")
                    return args.messages / took
                daemon = empath(directory / f"empath-{label}-{n}", sink, args, verify=verify, hold=True)
                try:
                    if verify:
                        warm_empath(daemon)
                    asked = callouts(daemon)
                    with b.profiled(daemon, args, f"verify-accept-{label}-{n}"):
                        took = b.smtp_source(daemon.ports.smtp, args.messages, SESSIONS, SIZE)
                    if b.received(daemon) != args.messages:
                        raise SystemExit(f"bench: empath queued {b.received(daemon)} of {args.messages}")
                    if callouts(daemon) != asked:
                        raise SystemExit(f"bench: empath called out {callouts(daemon) - asked} times under load")
                    return args.messages / took
                finally:
                    daemon.stop()

            b.say(f"verify accept {label}: {args.messages} x {SIZE} bytes over {SESSIONS} sessions")
            b.paired_figures(figures, label, args.runs, measure)
    finally:
        postfix.stop()
    # What each keeps of its plain accept rate with verification on.
    for mta in ("empath", "postfix"):
        figures[f"{mta}_verify_kept"] = b.ratio(figures[f"{mta}_verify"], figures[f"{mta}_plain"])
    return figures


def main() -> None:
    parser = b.with_smtp_processes(b.arguments(__doc__.splitlines()[0], runs=3))
    parser.add_argument("--recipients", type=int, default=500, help="recipients timed at RCPT per kind (500)")
    args = parser.parse_args()
    with b.workspace(args.keep) as directory:
        sink = b.Sink().start()
        try:
            figures = measure_rcpt(args, directory, sink)
            figures |= measure_accept(args, directory, sink)
        finally:
            sink.stop()
    b.report("verify", figures)


if __name__ == "__main__":
    main()
