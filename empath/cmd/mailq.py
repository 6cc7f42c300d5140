"""``mailq``: the queue in Postfix's format, read straight from the database.

Works whether the daemon runs or not (the database is opened read-only).
The query and the layout are the queue's own (empath/queue/admin.py), the
same that ``empathctl queue list`` prints.
"""

import argparse
import sqlite3
import sys
import time

import peewee

from empath.config import DEFAULT_PATH, Config, ConfigError, load, local_config_path
from empath.queue import admin

EX_OK = 0
EX_TEMPFAIL = 75
EX_CONFIG = 78


def show(config: Config) -> int:
    if not config.database_path.exists():
        sys.stdout.write(admin.format_list([]))
        return EX_OK
    try:
        with admin.open_readonly(config.database_path):
            rows = admin.list_messages(admin.QueueFilter(), time.time())
    except (sqlite3.Error, peewee.PeeweeException) as exc:
        print(f"mailq: cannot read {config.database_path}: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    sys.stdout.write(admin.format_list(rows))
    return EX_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailq", description="List the Empath mail queue")
    parser.add_argument("-C", "--config", help=f"the config file (default: $EMPATH_CONFIG or {DEFAULT_PATH})")
    args = parser.parse_args(argv)
    try:
        config = load(local_config_path(args.config))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"mailq: {problem}", file=sys.stderr)
        return EX_CONFIG
    return show(config)


if __name__ == "__main__":
    sys.exit(main())
