"""Load profiles: the mail of a day at 1k, 10k and 100k messages a day, played
compressed in time, then doubled level by level until Empath cannot keep up.

Each level sends ``volume × compress / 86,400`` messages a second for
``--seconds`` (so, at the default 60×, each second of the run is a minute of
the day; ``--seconds 1440`` plays a whole day) into Empath, which relays them
to smtp-sink. Load comes from smtp-source, started every second for the
messages due by then, a new connection per message. Recorded per level, from
/proc of the daemon: CPU (user + system, % of one core), RSS (highest sampled), bytes
written to disk per message (``write_bytes`` of /proc/PID/io: what reached the
block layer, WAL and checkpoints), and queue age (the oldest message not yet
delivered, sampled four times a second: its maximum during the level).

A level breaks when a send fails, when the senders fall behind the offered
rate (more than ``--behind`` seconds of messages not yet accepted), or when
the queue does not empty within ``--drain`` seconds after the level: its age
would grow without bound at that rate. The run stops at the first broken level.

    .venv/bin/python scripts/bench/load_profile.py [--compress 60] [--seconds 60] [--size 10240]
"""

import argparse
import contextlib
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import benchlib as b

DAY = 86_400
NAMED_LEVELS = (1_000, 10_000, 100_000)


@dataclass
class Samples:
    """What a thread reads from /proc and the queue four times a second while a level runs."""

    rss_kib: list[int] = field(default_factory=list)
    queue_age: list[float] = field(default_factory=list)


@dataclass
class Level:
    per_day: int
    rate: float  # messages a second offered
    sent: int = 0
    errors: int = 0
    behind: float = 0.0  # most seconds of offered messages not yet accepted
    cpu: float = 0.0  # % of one core
    rss_mib: float = 0.0
    written_per_message: float = 0.0  # bytes
    queue_age_max: float = 0.0
    drain_seconds: float = 0.0
    broken: str = ""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def queue_age(daemon: b.Daemon) -> float:
    oldest = daemon.query("SELECT min(received_at) FROM message")[0][0]
    return time.time() - oldest if oldest is not None else 0.0


def sample(daemon: b.Daemon, into: Samples, stop: threading.Event) -> None:
    pid = daemon.proc.pid
    while not stop.wait(0.25):
        into.rss_kib.append(b.rss_kib(pid))
        with contextlib.suppress(b.sqlite3.OperationalError):
            into.queue_age.append(queue_age(daemon))


def send(port: int, count: int, size: int) -> subprocess.Popen:
    command = [b.tool("smtp-source"), "-s", str(min(count, 20)), "-m", str(count), "-l", str(size)]
    command += ["-f", b.SENDER, "-t", b.RECIPIENT, f"127.0.0.1:{port}"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def play(daemon: b.Daemon, sink: b.Sink, level: Level, args: argparse.Namespace) -> None:
    pid = daemon.proc.pid
    delivered_before = sink.count
    cpu_before, written_before = cpu_seconds(pid), write_bytes(pid)
    samples, stop = Samples(), threading.Event()
    sampler = threading.Thread(target=sample, args=(daemon, samples, stop), daemon=True)
    sampler.start()
    started = time.monotonic()
    running: list[tuple[subprocess.Popen, int]] = []
    accepted = 0
    while (elapsed := time.monotonic() - started) < args.seconds:
        due = int(level.rate * elapsed) - level.sent
        if due > 0:
            running.append((send(daemon.ports.smtp, due, args.size), due))
            level.sent += due
        for proc, count in [r for r in running if r[0].poll() is not None]:
            running.remove((proc, count))
            level.errors += proc.returncode != 0 or bool(proc.stderr.read().strip())
            accepted += count
        level.behind = max(level.behind, (level.sent - accepted) / level.rate)
        if level.errors or level.behind > args.behind:
            break
        time.sleep(max(0.0, min(1.0, started + elapsed + 1.0 - time.monotonic())))
    for proc, _ in running:
        proc.wait()
        level.errors += proc.returncode != 0 or bool(proc.stderr.read().strip())
    took = time.monotonic() - started
    drain_started = time.monotonic()
    with contextlib.suppress(AssertionError):  # wait_for's way of saying the time ran out
        b.wait_for(lambda: sink.count - delivered_before >= level.sent, timeout=args.drain, what="the queue to empty")
    level.drain_seconds = time.monotonic() - drain_started
    stop.set()
    sampler.join()
    level.cpu = 100 * (cpu_seconds(pid) - cpu_before) / (took + level.drain_seconds)
    level.rss_mib = max(samples.rss_kib, default=0) / 1024
    level.written_per_message = (write_bytes(pid) - written_before) / max(level.sent, 1)
    level.queue_age_max = max(samples.queue_age, default=0.0)
    if level.errors:
        level.broken = f"{level.errors} send(s) failed"
    elif level.behind > args.behind:
        level.broken = f"senders {level.behind:.0f} s behind the offered rate"
    elif sink.count - delivered_before < level.sent:
        level.broken = f"queue not empty {args.drain:g} s after the level"


def levels(compress: float, largest: int):
    for per_day in NAMED_LEVELS:
        yield per_day, per_day * compress / DAY
    per_day = NAMED_LEVELS[-1] * 2
    while per_day <= largest:
        yield per_day, per_day * compress / DAY
        per_day *= 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compress", type=float, default=60.0, help="seconds of the day played per second (60)")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds each level runs (60)")
    parser.add_argument("--size", type=int, default=10240, help="bytes per message (10240)")
    parser.add_argument("--largest", type=int, default=12_800_000, help="messages a day to stop at (12800000)")
    parser.add_argument("--behind", type=float, default=10.0, help="seconds senders may fall behind (10)")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds the queue has to empty after a level (30)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, queue)")
    args = parser.parse_args()
    results: list[Level] = []
    with b.workspace(args.keep) as directory:
        sink = b.Sink().start()
        daemon = b.empath(directory / "empath", route_to=sink.port)
        try:
            daemon.start()
            for per_day, rate in levels(args.compress, args.largest):
                level = Level(per_day, rate)
                b.say(f"level {per_day}/day: {rate:.2f} msg/s for {args.seconds:g} s")
                play(daemon, sink, level, args)
                results.append(level)
                b.say(
                    f"  sent {level.sent}, cpu {level.cpu:.1f} %, rss {level.rss_mib:.1f} MiB,"
                    f" written {level.written_per_message / 1024:.1f} KiB/msg, queue age max"
                    f" {level.queue_age_max:.2f} s, drained in {level.drain_seconds:.2f} s"
                    + (f"; BROKEN: {level.broken}" if level.broken else "")
                )
                if level.broken:
                    break
        finally:
            daemon.stop()
            sink.stop()
    figures: dict[str, float | int | str] = {"compress": args.compress, "seconds": args.seconds, "size": args.size}
    for level in results:
        key = f"d{level.per_day}"
        figures |= {
            f"{key}_rate": level.rate,
            f"{key}_cpu": level.cpu,
            f"{key}_rss_mib": level.rss_mib,
            f"{key}_kib_written_per_msg": level.written_per_message / 1024,
            f"{key}_queue_age_max": level.queue_age_max,
        }
    kept = [level for level in results if not level.broken]
    figures["sustained_per_day"] = kept[-1].per_day if kept else 0
    figures["broke_at_per_day"] = results[-1].per_day if results and results[-1].broken else 0
    b.report("load_profile", figures)


if __name__ == "__main__":
    main()
