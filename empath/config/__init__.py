"""Configuration: the TOML file, validated into one immutable Config.

load.py reads the file; sections.py checks it table by table (with reader.py
collecting each problem and its line, values.py converting each value) into
the values of model.py; files.py checks the files it names.
"""

from empath.config.files import check_files
from empath.config.load import load
from empath.config.model import Config, Limits, Listener, QueueSettings, Timeouts
from empath.config.reader import ConfigError

__all__ = ["Config", "ConfigError", "check_files", "Limits", "Listener", "QueueSettings", "Timeouts", "load"]
