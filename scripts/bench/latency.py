"""Scenario 5: idle latency. One message at a time into an idle queue, the
next only once the sink has the last; accept-to-delivered (the 250 to DATA
to the sink counting the message) in milliseconds, p50 and p99 of each run,
medians over runs. ratio = Postfix / Empath (> 1: Empath is faster).

    .venv/bin/python scripts/bench/latency.py [--runs 5] [--messages 200]
"""

import benchlib as b


def main() -> None:
    parser = b.with_smtp_processes(b.arguments(__doc__.splitlines()[0], messages=200))
    args = parser.parse_args()
    body = b.message_body(1024)
    p50: dict[str, list[float]] = {"empath": [], "postfix": []}
    p99: dict[str, list[float]] = {"empath": [], "postfix": []}
    with b.workspace(args.keep) as directory:
        sink = b.Sink().start()
        postfix = b.Postfix(directory / "postfix", sink_port=sink.port)

        def latencies(port: int) -> list[float]:
            found = []
            for _ in range(args.messages):
                expected = sink.count + 1
                accepted = b.send_one(port, body)
                found.append(max(0.0, sink.wait_count(expected, 30) - accepted) * 1000)
            return found

        def measure(mta: str, n: int) -> float:
            if mta == "postfix":
                found = latencies(postfix.relay_port)
            else:
                daemon = b.empath(directory / f"empath-{n}", route_to=sink.port, smtp_processes=args.smtp_processes)
                daemon.start()
                try:
                    with b.profiled(daemon, args, f"latency-{n}"):
                        found = latencies(daemon.ports.smtp)
                finally:
                    daemon.stop()
            p50[mta].append(b.percentile(found, 0.5))
            p99[mta].append(b.percentile(found, 0.99))
            return p50[mta][-1]

        b.compare(postfix, args.runs, measure, f"latency: {args.messages} messages one at a time", sink)
    e50, e99, f50, f99 = (b.median(v) for v in (p50["empath"], p99["empath"], p50["postfix"], p99["postfix"]))
    b.report(
        "latency",
        {
            "messages": args.messages,
            "empath_p50_ms": e50,
            "empath_p99_ms": e99,
            "postfix_p50_ms": f50,
            "postfix_p99_ms": f99,
            "ratio_p50": b.ratio(e50, f50, higher_is_better=False),
            "ratio_p99": b.ratio(e99, f99, higher_is_better=False),
        },
    )


if __name__ == "__main__":
    main()
