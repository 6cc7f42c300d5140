"""Scenario 4: backlog drain. Messages are queued while the sink is down (every
attempt fails and is deferred), then the sink starts and delivery is kicked
(Empath: SIGUSR1; Postfix: postqueue -f); the time runs from the kick to the
sink counting the last message. Figures are seconds and messages per second;
ratio = Empath / Postfix rate.

    .venv/bin/python scripts/bench/drain.py [--runs 5] [--messages 20000]
"""

import signal

import benchlib as b


def main() -> None:
    parser = b.with_smtp_processes(b.arguments(__doc__.splitlines()[0], messages=20000))
    args = parser.parse_args()
    timeout = max(60.0, args.messages / 20)
    with b.workspace(args.keep) as directory:
        sink = b.Sink()
        postfix = b.Postfix(directory / "postfix", sink_port=sink.port)

        def measure(mta: str, n: int) -> float:
            if mta == "postfix":
                b.smtp_source(postfix.relay_port, args.messages, 20, 1024, reuse=True)
                b.wait_for(
                    lambda: (
                        postfix.queued("deferred") >= args.messages
                        and postfix.queued("active") + postfix.queued("incoming") == 0
                    ),
                    timeout=timeout,
                    what="every message deferred by postfix",
                )
                return drain(sink, args.messages, timeout, postfix.flush)
            # No breaker: every message is tried once against the closed port,
            # as Postfix tries (then suspends) its destination.
            daemon = b.empath(
                directory / f"empath-{n}",
                route_to=sink.port,
                smtp_processes=args.smtp_processes,
                delivery={"retry_first": "1h", "retry_max": "4h", "breaker_failures": 10**9},
            )
            daemon.start()
            try:
                b.smtp_source(daemon.ports.smtp, args.messages, 20, 1024, reuse=True)
                b.wait_for(
                    lambda: (
                        b.empath_count(
                            daemon,
                            "SELECT count(*) FROM recipient WHERE state = 'deferred' AND lease_owner IS NULL",
                        )
                        >= args.messages
                    ),
                    timeout=timeout,
                    what="every message deferred by empath",
                )
                with b.profiled(daemon, args, f"drain-{n}"):
                    return drain(sink, args.messages, timeout, lambda: daemon.proc.send_signal(signal.SIGUSR1))
            finally:
                daemon.stop()

        e, p = b.compare(postfix, args.runs, measure, f"drain: {args.messages} x 1024 bytes", sink)
    b.report_durations("drain", args.messages, e, p)


def drain(sink: b.Sink, messages: int, timeout: float, kick) -> float:
    """Start the sink, kick delivery, and time until every message has arrived."""
    sink.start()
    try:
        base = sink.count
        started = b.time.monotonic()
        kick()
        return sink.wait_count(base + messages, timeout) - started
    finally:
        sink.stop()


if __name__ == "__main__":
    main()
