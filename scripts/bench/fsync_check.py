"""The durability check: every "250 ... queued as" follows an fsync of the queue.

Runs Empath under strace (-f: every thread; -y: file names of descriptors),
sends messages with smtp-source, and reads the trace: before each 250 that
says "queued as", the first write to the WAL that holds that message (its
queue id is in the page) must be followed by a completed fsync/fdatasync of
the WAL. With group commit one fsync covers several replies. Prints the replies, fsyncs and
violations found; exits 1 on a violation.

    .venv/bin/python scripts/bench/fsync_check.py [--messages 50] [--sessions 1]
"""

import os
import re
import signal
import subprocess
import sys

import benchlib as b

SYSCALLS = "fsync,fdatasync,write,pwrite64,sendto"
REPLY = re.compile(r'sendto\(\d+<[^>]*>, "250 2\.0\.0 OK queued as (?P<id>[0-9A-Z]{16})')
SYNC = re.compile(r"^(?P<pid>\d+)\s+f(data)?sync\(\d+<[^>]*queue\.sqlite3-wal>")
RESUMED_SYNC = re.compile(r"^(?P<pid>\d+)\s+<\.\.\. f(data)?sync resumed>.*= 0")
WAL_WRITE = re.compile(r"p?write(64)?\(\d+<[^>]*queue\.sqlite3-wal>")
QUEUE_ID = re.compile(r"[0-9A-Z]{16}")


def check(lines: list[str]) -> tuple[int, int, list[str]]:
    """Replies, WAL syncs, and the replies whose message was not synced before them.

    A message's queue id is in the WAL pages that hold it. The first WAL write
    holding it is its own transaction's (later batches may log the same page
    again); a completed sync of the WAL must come after it and before the 250.
    A call strace shows as "<unfinished ...>" counts from its start (a write,
    a reply) or from its "<... resumed>" end (a sync).
    """
    replies = syncs = 0
    written: dict[str, int] = {}  # queue id -> line of the first WAL write that held it
    synced = -1  # line of the last completed WAL sync
    in_flight: set[str] = set()  # threads with a WAL sync under way
    violations = []
    for n, line in enumerate(lines):
        if WAL_WRITE.search(line):
            for queue_id in QUEUE_ID.findall(line):
                written.setdefault(queue_id, n)
        elif m := SYNC.search(line):
            if "<unfinished" in line:
                in_flight.add(m.group("pid"))
            elif line.rstrip().endswith("= 0"):
                synced, syncs = n, syncs + 1
        elif (m := RESUMED_SYNC.search(line)) and m.group("pid") in in_flight:
            in_flight.discard(m.group("pid"))
            synced, syncs = n, syncs + 1
        elif m := REPLY.search(line):
            replies += 1
            if written.get(m.group("id"), n) > synced:
                violations.append(line)
    return replies, syncs, violations


def main() -> None:
    parser = b.with_smtp_processes(b.arguments(__doc__.splitlines()[0], runs=1, messages=50))
    parser.add_argument("--sessions", type=int, default=1)
    args = parser.parse_args()
    with b.workspace(args.keep) as directory:
        daemon = b.empath(directory / "empath", route_to=b.free_port(), hold=True, smtp_processes=args.smtp_processes)
        daemon.write_config()
        trace = directory / "strace.txt"
        strace = ["strace", "-f", "-y", "-s", "8192", "-e", f"trace={SYSCALLS}", "-o", str(trace)]
        traced = subprocess.Popen(
            [*strace, sys.executable, "-m", "empath.cmd.empath", "--config", str(daemon.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=b.ROOT,
        )
        try:
            b.wait_for(lambda: " started " in daemon.log(), timeout=60, what="empath to start under strace")
            if not daemon.control("pause").get("ok"):  # accept only, as b.HeldDaemon does
                raise SystemExit("bench: pausing delivery failed")
            b.smtp_source(daemon.ports.smtp, args.messages, args.sessions, 1024)
        finally:
            # SIGTERM to strace would only detach it: stop Empath, and strace ends with it.
            children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(traced.pid)], capture_output=True, text=True)
            for pid in children.stdout.split():
                os.kill(int(pid), signal.SIGTERM)
            traced.wait(60)
        replies, syncs, violations = check(trace.read_text().splitlines())
        for line in violations[:5]:
            b.say(f"250 without a preceding fsync: {line}")
    figures = {"messages": args.messages, "sessions": args.sessions, "replies": replies, "fsyncs": syncs}
    b.report("fsync_check", {**figures, "violations": len(violations)})
    sys.exit(1 if violations or replies != args.messages else 0)


if __name__ == "__main__":
    main()
