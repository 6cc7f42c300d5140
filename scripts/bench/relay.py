"""Scenario 3: end-to-end relay, 20,000 x 1 KB over 20 sessions into the MTA,
which relays every message to smtp-sink.

The time runs from smtp-source's first connection to the sink counting the
last message. Figures are messages per second (and seconds); ratio = Empath / Postfix.

    .venv/bin/python scripts/bench/relay.py [--runs 5] [--messages 20000] [--sessions 20]
"""

import benchlib as b


def main() -> None:
    parser = b.with_smtp_processes(b.arguments(__doc__.splitlines()[0], messages=20000))
    parser.add_argument("--sessions", type=int, default=20)
    args = parser.parse_args()
    timeout = max(60.0, args.messages / 20)
    with b.workspace(args.keep) as directory:
        sink = b.Sink().start()
        postfix = b.Postfix(directory / "postfix", sink_port=sink.port)

        def measure(mta: str, n: int) -> float:
            base = sink.count
            if mta == "postfix":
                started = b.time.monotonic()
                b.smtp_source(postfix.relay_port, args.messages, args.sessions, 1024)
                return sink.wait_count(base + args.messages, timeout) - started
            daemon = b.empath(directory / f"empath-{n}", route_to=sink.port, smtp_processes=args.smtp_processes)
            daemon.start()
            try:
                with b.profiled(daemon, args, f"relay-{n}"):
                    started = b.time.monotonic()
                    b.smtp_source(daemon.ports.smtp, args.messages, args.sessions, 1024)
                    return sink.wait_count(base + args.messages, timeout) - started
            finally:
                daemon.stop()

        e, p = b.compare(
            postfix, args.runs, measure, f"relay: {args.messages} x 1024 bytes over {args.sessions} sessions", sink
        )
    b.report_durations("relay", args.messages, e, p)


if __name__ == "__main__":
    main()
