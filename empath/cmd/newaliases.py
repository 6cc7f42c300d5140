"""``newaliases``: for the scripts and packages that run it after editing /etc/aliases.

Empath reads the aliases files as they are, and again whenever they change:
there is no database to build. This checks them instead, as ``empath
--check`` does, and says what is wrong with its file and line; exit 0 when
nothing is, 78 (EX_CONFIG) otherwise.
"""

import argparse
import sys

from empath.cmd.config import loaded, local_path
from empath.config import reader
from empath.config.files import alias_problems

EX_CONFIG = 78


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="newaliases", description=__doc__.splitlines()[0])
    parser.add_argument("-C", "--config", help="the config file (default: $EMPATH_CONFIG or /etc/empath/empath.toml)")
    # What other MTAs' newaliases take (-oA/path, -v), taken and ignored: the config names the files.
    parser.add_argument("-o", dest="ignored", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("-v", dest="ignored", action="append_const", const="-v", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = loaded("newaliases", local_path(args.config), lambda c: reader.located(c.path, alias_problems(c)))
    if config is None:
        return EX_CONFIG
    if config.aliases.file is None and config.aliases.virtual is None:
        print(f"newaliases: {config.path} names no aliases file ([aliases] file); nothing to check", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
