"""Scenario 7: queue scale. Time to claim the next 100 due recipients
(empath.queue.claims.claim, in a transaction, as the scheduler does; its
commit, an fsync whatever the size, is reported apart) with 1k,
100k and 1M recipient rows queued in a generated database. Postfix has no
counterpart; the figure to watch is ratio = time at the largest size / time
at the smallest (the target: within 2x).

    .venv/bin/python scripts/bench/queue_scale.py [--runs 5] [--messages 1000000]

--messages is the largest size; the others are a thousandth and a tenth of it.
"""

import random
import time

import benchlib as b

from empath.queue import claims, database
from empath.queue.states import State

RECIPIENTS_PER_MESSAGE = 4
CLAIM = 100


def generate(path: b.Path, rows: int, due: int) -> None:
    """A queue of ``rows`` recipients: a tenth (at least ``due``) due now, the rest deferred to the coming days."""
    db = database.connect(path)
    database.ensure_schema(db)
    conn = db.connection()
    now = time.time()
    rng = random.Random(rows)
    due_share = max(0.1, min(1.0, due / rows))
    messages = (rows + RECIPIENTS_PER_MESSAGE - 1) // RECIPIENTS_PER_MESSAGE
    conn.execute("PRAGMA synchronous = OFF")  # generating, not measuring
    with db.atomic():
        conn.executemany(
            "INSERT INTO message (queue_id, sender, size, received_at, expires_at, client_address, client_helo,"
            " listener, trace_id, smtputf8, body_type, held, kind)"
            " VALUES (?, 'a@b.test', 1024, ?, ?, '127.0.0.1', 'bench', 'smtp', 't', 0, '7BIT', 0, 'mail')",
            ((f"{i:016d}", now - 3600, now + 86400) for i in range(messages)),
        )
        conn.executemany(
            "INSERT INTO recipient (queue_id, address, domain, state, attempts, next_attempt_at, relayed)"
            " VALUES (?, ?, ?, ?, ?, ?, 0)",
            (
                (f"{i // RECIPIENTS_PER_MESSAGE:016d}", f"r{i}@d{i % 500}.test", f"d{i % 500}.test")
                + (
                    (State.QUEUED, 0, now - rng.uniform(0, 3600))
                    if rng.random() < due_share
                    else (State.DEFERRED, 1, now + rng.uniform(60, 5 * 86400))
                )
                for i in range(rows)
            ),
        )
    db.close()


def time_claims(path: b.Path, runs: int) -> tuple[list[float], list[float]]:
    """Milliseconds of each claim's queries, and of its commit (the fsync, the same at any size)."""
    db = database.connect(path)
    database.ensure_schema(db)
    queries, commits = [], []
    for _ in range(runs):
        with db.atomic():
            started = time.perf_counter()
            claimed = claims.claim(db, time.time(), "bench", 1800.0, CLAIM)
            queries.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
        commits.append((time.perf_counter() - started) * 1000)
        assert len(claimed) == CLAIM, f"only {len(claimed)} were due"
    db.close()
    return queries, commits


def main() -> None:
    parser = b.arguments(__doc__.splitlines()[0], messages=1_000_000)
    args = parser.parse_args()
    # Every run claims 100 rows that were due: the smallest queue must hold enough of them.
    least = max(CLAIM * 10, CLAIM * (args.runs + 1) * 2)
    sizes = sorted({max(least, args.messages // 1000), max(least, args.messages // 10), max(least, args.messages)})
    figures: dict[str, float | int | str] = {}
    with b.workspace(args.keep) as directory:
        for rows in sizes:
            path = directory / f"queue-{rows}.sqlite3"
            started = time.monotonic()
            generate(path, rows, due=least)
            b.say(f"queue_scale: {rows} rows generated in {time.monotonic() - started:.1f}s")
            took, commits = time_claims(path, args.runs)
            b.say(f"queue_scale: {rows} rows: claims took {', '.join(f'{t:.2f}' for t in took)} ms")
            figures[f"claim_ms_{rows}"] = b.median(took)
            figures[f"commit_ms_{rows}"] = b.median(commits)
    figures["ratio"] = figures[f"claim_ms_{sizes[-1]}"] / figures[f"claim_ms_{sizes[0]}"]
    b.report("queue_scale", figures)


if __name__ == "__main__":
    main()
