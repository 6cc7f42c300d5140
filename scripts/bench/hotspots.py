"""The functions a py-spy profile spends its time in, from raw collapsed stacks
(scripts/bench/profile SCENARIO --profile-format raw), and how two profiles differ.

    .venv/bin/python scripts/bench/hotspots.py PROFILE.txt [--top 25] [--inclusive]
    .venv/bin/python scripts/bench/hotspots.py NEW.txt --baseline OLD.txt

Each line of a raw profile is "frame;frame;...;frame COUNT", outermost frame
first. Self time is where the sample's innermost frame was; inclusive time
counts a function once per sample wherever it is on the stack. Shares are
percentages of all samples, so profiles of runs of different lengths compare.
"""

import argparse
from collections import Counter
from pathlib import Path


def shares(path: Path, inclusive: bool) -> Counter[str]:
    counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack:
            continue
        samples = int(number)
        total += samples
        frames = [_short(f) for f in stack.split(";")]
        for frame in set(frames) if inclusive else frames[-1:]:
            counts[frame] += samples
    return Counter({frame: 100.0 * n / total for frame, n in counts.items()}) if total else counts


def _short(frame: str) -> str:
    """ "send (gevent/_socketcommon.py:699)" -> "send (gevent/_socketcommon.py)": lines vary, functions do not."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        where = where.split(marker)[-1]
    return f"{name} ({where})" if where else name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--baseline", type=Path, help="a profile to compare with")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--inclusive", action="store_true", help="time with callees, not self time")
    args = parser.parse_args()
    now = shares(args.profile, args.inclusive)
    if args.baseline is None:
        for frame, share in now.most_common(args.top):
            print(f"{share:6.1f}%  {frame}")
        return
    before = shares(args.baseline, args.inclusive)
    changes = sorted(set(now) | set(before), key=lambda f: -abs(now[f] - before[f]))
    print(f"{'before':>7} {'after':>7} {'change':>7}  function")
    for frame in changes[: args.top]:
        print(f"{before[frame]:6.1f}% {now[frame]:6.1f}% {now[frame] - before[frame]:+6.1f}%  {frame}")


if __name__ == "__main__":
    main()
