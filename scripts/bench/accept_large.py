"""Scenario 2: durable accept of 100 KB messages at 20 sessions (new connection per message and reused).

Same method as accept.py; figures are messages per second, ratio = Empath / Postfix.

    .venv/bin/python scripts/bench/accept_large.py [--runs 5] [--messages 1000]
"""

import benchlib as b
from accept import measure_accept


def main() -> None:
    parser = b.with_smtp_processes(b.arguments(__doc__.splitlines()[0], messages=1000))
    args = parser.parse_args()
    measure_accept(args, 100 * 1024, [20], "accept_large")


if __name__ == "__main__":
    main()
