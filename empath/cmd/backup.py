"""The ``empathctl backup`` and ``empathctl restore`` verbs (see empath/queue/backup.py)."""

import argparse
import sqlite3
import sys
from pathlib import Path

from empath.config import Config
from empath.queue import backup

VERBS = ("backup", "restore")


def add_verbs(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    make = verbs.add_parser(
        "backup", help="write a consistent backup archive of the queue, the config and the files it names"
    )
    make.add_argument(
        "--output",
        "-o",
        type=Path,
        help="a directory, or the archive's path (default: DATA_DIR/backups)",
    )
    put = verbs.add_parser("restore", help="verify a backup archive and put its queue in place")
    put.add_argument("archive", type=Path)
    put.add_argument("--stop-daemon", action="store_true", help="stop a running daemon (SIGTERM) instead of refusing")
    put.add_argument(
        "--stop-timeout", type=float, default=90.0, help="seconds to wait for the daemon to stop (default 90)"
    )


def command(args: argparse.Namespace, config: Config) -> int:
    """Run the verb; every failure is one line on stderr and exit code 1."""
    try:
        if args.verb == "backup":
            path = backup.backup(config, args.output)
            print(path)
            return 0
        restored = backup.restore(config, args.archive, force_stop=args.stop_daemon, stop_timeout=args.stop_timeout)
    except (backup.BackupError, OSError, sqlite3.Error) as exc:
        print(f"empathctl: {args.verb}: {exc}", file=sys.stderr)
        return 1
    manifest = restored.manifest
    print(
        f"empathctl: restored {restored.database} from {args.archive} "
        f"(made {manifest.created} on {manifest.hostname}: {manifest.messages} messages, "
        f"{manifest.recipients} recipients)"
    )
    for path in restored.replaced:
        print(f"empathctl: the replaced file is kept as {path}")
    for path in restored.installed:
        print(f"empathctl: {path} was missing: installed from the archive")
    for path in restored.extras:
        print(f"empathctl: the archived copy is in {path} (not installed: compare it with yours)")
    print("empathctl: start the daemon to deliver the restored queue")
    return 0
