"""Configuration: the TOML file, validated into one immutable Config."""

from empath.config.load import ConfigError, check_files, load
from empath.config.model import Config, Limits, Listener, QueueSettings, Timeouts

__all__ = ["Config", "ConfigError", "check_files", "Limits", "Listener", "QueueSettings", "Timeouts", "load"]
