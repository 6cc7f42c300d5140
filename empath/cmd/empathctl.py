"""``empathctl``: the operator's tool. The AUTH users file here; the other verbs are
registered from their own modules (control/cli.py, backup_cli.py, dkim_cli.py, top.py)."""

import argparse
import getpass
import sys

from empath import config as config_module
from empath import users
from empath.cmd import backup as backup_cli
from empath.cmd import dkim as dkim_cli
from empath.cmd import top
from empath.control import cli as control_cli


def _users_path(config: config_module.Config):
    if config.users_file is None:
        raise SystemExit("empathctl: the config sets no auth.users_file")
    return config.users_file


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise SystemExit("empathctl: the passwords differ")
    if not password:
        raise SystemExit("empathctl: empty password refused")
    return password


def user_command(args: argparse.Namespace, config: config_module.Config) -> int:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="empathctl", description="Operate an Empath mail server")
    parser.add_argument("--config", "-c", required=True, help="path to the TOML config file")
    verbs = parser.add_subparsers(dest="verb", required=True)
    user = verbs.add_parser("user", help="manage the AUTH users file")
    user_verbs = user.add_subparsers(dest="user_verb", required=True)
    add = user_verbs.add_parser("add", help="add a user or change a password")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    remove = user_verbs.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    user_verbs.add_parser("list", help="list user names")
    backup_cli.add_verbs(verbs)
    dkim_cli.add_verbs(verbs)
    control_cli.add_verbs(verbs)
    top.add_verbs(verbs)
    args = parser.parse_args(argv)

    try:
        config = config_module.load(args.config)
    except config_module.ConfigError as exc:
        for problem in exc.problems:
            print(f"empathctl: {problem}", file=sys.stderr)
        return 1
    if args.verb in backup_cli.VERBS:
        return backup_cli.command(args, config)
    if args.verb in dkim_cli.VERBS:
        return dkim_cli.command(args, config)
    if args.verb in control_cli.VERBS:
        return control_cli.command(args, config)
    if args.verb in top.VERBS:
        return top.command(args, config)
    try:
        return user_command(args, config)
    except (users.UsersFileError, OSError) as exc:
        print(f"empathctl: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
