"""The ``empathctl user add|remove|list`` verbs: the AUTH users file."""

import argparse
import getpass
import sys
from pathlib import Path

from empath import users
from empath.config import Config

VERBS = ("user",)


def add_verbs(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    user = verbs.add_parser("user", help="manage the AUTH users file")
    user_verbs = user.add_subparsers(dest="user_verb", required=True)
    add = user_verbs.add_parser("add", help="add a user or change a password")
    add.add_argument("name")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin (the default when stdin is not a terminal)",
    )
    remove = user_verbs.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    user_verbs.add_parser("list", help="list user names")


def _users_path(config: Config) -> Path:
    if config.users_file is None:
        raise SystemExit("empathctl: the config sets no auth.users_file")
    return config.users_file


def _read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():  # a script or a pipe: its first line
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise SystemExit("empathctl: no password on stdin (write it as the first line, or run in a terminal)")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise SystemExit("empathctl: the passwords differ")
    if not password:
        raise SystemExit("empathctl: empty password refused")
    return password


def command(args: argparse.Namespace, config: Config) -> int:
    """Run the verb; a file that cannot be read or written is one line and exit code 1."""
    try:
        return _command(args, config)
    except (users.UsersFileError, OSError) as exc:
        print(f"empathctl: {exc}", file=sys.stderr)
        return 1


def _command(args: argparse.Namespace, config: Config) -> int:
    path = _users_path(config)
    existing = users.read(path) if path.exists() else {}
    if args.user_verb == "list":
        for name in sorted(existing):
            print(name)
        return 0
    if args.user_verb == "add":
        if not users.valid_name(args.name):
            raise SystemExit(f"empathctl: {args.name!r} is not a valid user name (printable, no ':')")
        existing[args.name] = users.hash_password(_read_password(args.password_stdin))
        users.write(path, existing)
        print(f"empathctl: user {args.name} saved in {path}")
        return 0
    if args.name not in existing:
        raise SystemExit(f"empathctl: no user {args.name!r} in {path}")
    del existing[args.name]
    users.write(path, existing)
    print(f"empathctl: user {args.name} removed from {path}")
    return 0
