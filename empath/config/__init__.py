"""Configuration: the TOML file, validated into one immutable Config."""

import os

from empath.config.load import ConfigError, check_files, load
from empath.config.model import Config, Limits, Listener, QueueSettings, Timeouts

# Where the local commands (sendmail, mailq) look when not told: $EMPATH_CONFIG, then this.
DEFAULT_PATH = "/etc/empath/empath.toml"


def local_config_path(given: str | None) -> str:
    return given or os.environ.get("EMPATH_CONFIG") or DEFAULT_PATH


__all__ = [
    "DEFAULT_PATH",
    "local_config_path",
    "Config",
    "ConfigError",
    "check_files",
    "Limits",
    "Listener",
    "QueueSettings",
    "Timeouts",
    "load",
]
