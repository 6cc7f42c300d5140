"""What a reload may change while the daemon runs, and what waits for a restart (pure).

A reload swaps the new config into the parts that read it (sessions started
after it, the scheduler, the courier, the log level, the tokens). The
settings below are bound into things made once at start (sockets, the
database connection, pools, the resolver); a reload keeps their running
values and says which ones wait for a restart.
"""

from dataclasses import replace
from typing import Any

from empath.config import Config

RESTART_ONLY = (
    ("listeners",),
    ("data_dir",),
    ("log_format",),
    ("log_file",),
    ("metrics_address",),
    ("smtp_processes",),
    ("control", "socket"),
    ("control", "group"),
    ("queue", "max_size"),
    ("delivery", "workers"),
    ("delivery", "nameservers"),
    ("delivery", "dns_timeout"),
    ("delivery", "idle_time"),
    ("delivery", "max_messages_per_connection"),
    ("delivery", "tls_ca_file"),
    ("plugins",),
)


class ReloadRefused(Exception):
    """The new config does not validate; the running one stays."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        obj = getattr(obj, name)
    return obj


def _with(obj: Any, path: tuple[str, ...], value: Any) -> Any:
    head, rest = path[0], path[1:]
    return replace(obj, **{head: _with(getattr(obj, head), rest, value) if rest else value})


def effective(running: Config, new: Config) -> tuple[Config, list[str]]:
    """The config to put in force, and the settings whose change waits for a restart.

    Those keep their running values in the config returned, so that what the
    daemon reports is what it does.
    """
    result, pending = new, []
    for path in RESTART_ONLY:
        if not hasattr(running, path[0]):
            continue
        value = _get(running, path)
        if _get(new, path) != value:
            pending.append(".".join(path))
            result = _with(result, path, value)
    return result, pending
