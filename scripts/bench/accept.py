"""Scenario 1: durable accept of 1 KB messages at 1, 20 and 100 sessions, a
new connection per message and reused connections (smtp-source -d).

Postfix takes the load on a listener that puts every message on hold, Empath
with delivery held back (benchlib.empath(hold=True)): both only accept.
Figures are messages per second; ratio = Empath / Postfix.

    .venv/bin/python scripts/bench/accept.py [--runs 5] [--messages 2000] [--sessions 1,20,100]
"""

import argparse

import benchlib as b


def measure_accept(args: argparse.Namespace, size: int, sessions: list[int], scenario: str) -> None:
    figures: dict[str, float | int | str] = {"size": size, "messages": args.messages}
    with b.workspace(args.keep) as directory:
        postfix = b.Postfix(directory / "postfix", sink_port=b.free_port())
        try:
            postfix.start()
            for count in sessions:
                for reuse in (False, True):
                    label = f"s{count}{'_reuse' if reuse else ''}"

                    def measure(mta: str, n: int, count: int = count, reuse: bool = reuse, label: str = label) -> float:
                        if mta == "postfix":
                            postfix.clear()
                            took = b.smtp_source(postfix.hold_port, args.messages, count, size, reuse)
                            held = b.wait_for(
                                lambda: postfix.queued("hold") >= args.messages, timeout=30, what="postfix hold queue"
                            )
                            assert held
                            return args.messages / took
                        daemon = b.empath(
                            directory / f"empath-{label}-{n}",
                            route_to=b.free_port(),
                            hold=True,
                            smtp_processes=args.smtp_processes,
                        )
                        daemon.start()
                        try:
                            with b.profiled(daemon, args, f"{scenario}-{label}-{n}"):
                                took = b.smtp_source(daemon.ports.smtp, args.messages, count, size, reuse)
                            if b.received(daemon) != args.messages:
                                raise SystemExit(f"bench: empath queued {b.received(daemon)} of {args.messages}")
                            return args.messages / took
                        finally:
                            daemon.stop()

                    b.say(f"{scenario} {label}: {args.messages} x {size} bytes")
                    b.paired_figures(figures, label, args.runs, measure)
        finally:
            postfix.stop()
    b.report(scenario, figures)


def main() -> None:
    parser = b.with_smtp_processes(b.arguments(__doc__.splitlines()[0]))
    parser.add_argument("--sessions", default="1,20,100", help="comma-separated session counts (1,20,100)")
    parser.add_argument("--size", type=int, default=1024, help="message size in bytes (1024)")
    args = parser.parse_args()
    measure_accept(args, args.size, [int(s) for s in args.sessions.split(",")], "accept")


if __name__ == "__main__":
    main()
