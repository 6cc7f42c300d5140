"""``empathctl``: the operator's tool. Each group of verbs is its own module
(users, backup, dkim, control, lookup, top) that adds its parsers and runs them."""

import argparse
import sys

from empath.cmd import backup, control, dkim, lookup, top, users
from empath.cmd.config import DEFAULT_PATH, loaded, local_path

VERB_MODULES = (users, backup, dkim, control, lookup, top)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="empathctl", description="Operate an Empath mail server")
    parser.add_argument("--config", "-c", help=f"the config file (default: $EMPATH_CONFIG or {DEFAULT_PATH})")
    verbs = parser.add_subparsers(dest="verb", required=True)
    for module in VERB_MODULES:
        module.add_verbs(verbs)
    args = parser.parse_args(argv)
    config = loaded("empathctl", local_path(args.config))
    if config is None:
        return 1
    [module] = [m for m in VERB_MODULES if args.verb in m.VERBS]
    return module.command(args, config)


if __name__ == "__main__":
    sys.exit(main())
