"""Every command's first step: its config loaded, or each problem said on a line
of its own (``PROG: problem``) for the command to end with its exit code."""

import os
import sys
from collections.abc import Callable

from empath.config import Config, ConfigError, load

# Where every command looks when not told: $EMPATH_CONFIG, then this.
DEFAULT_PATH = "/etc/empath/empath.toml"


def local_path(given: str | None) -> str:
    return given or os.environ.get("EMPATH_CONFIG") or DEFAULT_PATH


def loaded(prog: str, path: str, check: Callable[[Config], list[str]] | None = None) -> Config | None:
    """The config at ``path``, and with ``check`` what it finds on this system; None
    once every problem is said on stderr."""
    try:
        config = load(path)
        problems = check(config) if check is not None else []
    except ConfigError as exc:
        problems = exc.problems
    if not problems:
        return config
    for problem in problems:
        print(f"{prog}: {problem}", file=sys.stderr)
    return None
