"""``mailq``: the queue in Postfix's format, read straight from the database.

Works whether the daemon runs or not (the database is opened read-only).
The query (queue/admin.py) and the layout (control/render.py) are the ones
``empathctl queue list`` uses.
"""

import argparse
import sqlite3
import sys
import time

import peewee

from empath.cmd.config import DEFAULT_PATH, loaded, local_path
from empath.config import Config
from empath.control.render import format_list
from empath.queue import admin, database

EX_OK = 0
EX_TEMPFAIL = 75
EX_CONFIG = 78


def show(config: Config) -> int:
    if not config.database_path.exists():
        sys.stdout.write(format_list([]))
        return EX_OK
    try:
        with database.open_readonly(config.database_path) as db:
            rows = admin.list_messages(db, admin.QueueFilter(), time.time())
    except (sqlite3.Error, peewee.PeeweeException) as exc:
        print(f"mailq: cannot read {config.database_path}: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    sys.stdout.write(format_list(rows))
    return EX_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mailq", description="List the Empath mail queue")
    parser.add_argument("-C", "--config", help=f"the config file (default: $EMPATH_CONFIG or {DEFAULT_PATH})")
    args = parser.parse_args(argv)
    config = loaded("mailq", local_path(args.config))
    if config is None:
        return EX_CONFIG
    return show(config)


if __name__ == "__main__":
    sys.exit(main())
