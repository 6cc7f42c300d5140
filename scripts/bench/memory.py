"""Scenario 6: memory. RSS with 1,000 concurrent idle SMTP connections (each
greeted and past EHLO), and the growth of peak RSS while one 25 MB message is
received. Empath is one process (its RSS); Postfix is many, so its figure is
the sum of their proportional set sizes (PSS: shared pages counted once),
which is what they cost together, and so is Empath's with SMTP helper
processes (--smtp-processes). Figures in MiB; ratio = Postfix / Empath
(> 1: Empath uses less).

    .venv/bin/python scripts/bench/memory.py [--runs 5] [--messages 1000] [--size-mb 25]
"""

import contextlib
import socket

import benchlib as b


def idle_connections(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that have been greeted and said EHLO, then wait."""
    opened = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        opened.append(s)
    for s in opened:
        read_reply(s)
        s.sendall(b"EHLO bench.test\r\n")
    for s in opened:
        read_reply(s)
    return opened


def read_reply(s: socket.socket) -> None:
    data = b""
    while not any(line[3:4] == b" " for line in data.split(b"\r\n")):
        chunk = s.recv(4096)
        if not chunk:
            raise SystemExit("bench: connection closed while idle connections were being opened")
        data += chunk


def main() -> None:
    parser = b.with_smtp_processes(b.arguments(__doc__.splitlines()[0], messages=1000))
    parser.add_argument("--size-mb", type=int, default=25, help="size of the large message in MB (25)")
    args = parser.parse_args()
    b.raise_fd_limit()
    big = b.message_body(args.size_mb * 1000 * 1000)
    idle: dict[str, list[float]] = {"empath": [], "postfix": []}
    growth: dict[str, list[float]] = {"empath": [], "postfix": []}
    with b.workspace(args.keep) as directory:
        postfix = b.Postfix(directory / "postfix", sink_port=b.free_port(), max_processes=args.messages + 50)

        def measure(mta: str, n: int) -> float:
            if mta == "postfix":
                # A fresh instance each run: smtpd processes of the last run would still be waiting for clients.
                postfix.stop()
                postfix.start()
                port, pids = postfix.hold_port, postfix.pids
                size = lambda: sum(b.pss_kib(p) for p in pids())  # noqa: E731
            else:
                daemon = b.empath(
                    directory / f"empath-{n}", route_to=b.free_port(), hold=True, smtp_processes=args.smtp_processes
                )
                daemon.start()
                port, pids = daemon.ports.smtp, lambda: b.with_children(daemon.proc.pid)
                if args.smtp_processes > 1:  # several processes: counted as Postfix's are
                    size = lambda: sum(b.pss_kib(p) for p in pids())  # noqa: E731
                else:
                    size = lambda: b.rss_kib(daemon.proc.pid)  # noqa: E731
            try:
                before = size()
                opened = idle_connections(port, args.messages)
                b.wait_for(lambda: size() > before, timeout=30, what="the connections to cost memory")
                idle[mta].append(size() / 1024)
                for s in opened:
                    with contextlib.suppress(OSError):
                        s.close()
                growth[mta].append(large_message_growth(port, pids, big) / 1024)
                return idle[mta][-1]
            finally:
                if mta == "postfix":
                    postfix.clear()
                else:
                    daemon.stop()

        b.compare(
            postfix, args.runs, measure, f"memory: {args.messages} idle connections, one {args.size_mb} MB message"
        )
    ei, pi, eg, pg = (b.median(v) for v in (idle["empath"], idle["postfix"], growth["empath"], growth["postfix"]))
    b.report(
        "memory",
        {
            "connections": args.messages,
            "empath_idle_mib": ei,
            "postfix_idle_mib": pi,
            "ratio_idle": b.ratio(ei, pi, higher_is_better=False),
            "size_mb": args.size_mb,
            "empath_growth_mib": eg,
            "postfix_growth_mib": pg,
            "ratio_growth": b.ratio(eg, pg, higher_is_better=False),
            "empath_growth_per_size": eg / (args.size_mb * 1000 * 1000 / 2**20),
        },
    )


def large_message_growth(port: int, pids, body: bytes) -> int:
    """KiB by which the peak RSS of the processes (summed) rises while ``body`` is received."""
    with b.smtplib.SMTP("127.0.0.1", port, timeout=300) as client:
        client.ehlo("bench.test")
        # The smtpd serving this connection now exists; take every process's
        # RSS and restart its peak from there.
        start = {}
        for pid in pids():
            b.reset_peak(pid)
            start[pid] = b.rss_kib(pid)
        client.sendmail(b.SENDER, [b.RECIPIENT], body)
        # A process that appeared during the transfer (Postfix's cleanup) grew from nothing.
        return sum(max(0, b.rss_kib(pid, "VmHWM") - start.get(pid, 0)) for pid in pids())


if __name__ == "__main__":
    main()
