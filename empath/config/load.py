"""Read a config file and validate it into a Config."""

import socket
from pathlib import Path

import tomlkit
import tomlkit.exceptions

from empath.config.model import Config
from empath.config.reader import ConfigError
from empath.config.sections import validate


def load(path: str | Path) -> Config:
    """Read, parse and validate a config file; raise ConfigError on any problem.

    The files it names are not opened here: see check_files.
    """
    config_path = Path(path).resolve()
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read {config_path}: {exc}"]) from None
    try:
        doc = tomlkit.parse(text).unwrap()
    except tomlkit.exceptions.TOMLKitError as exc:  # ParseError, and KeyAlreadyPresent for a repeated key
        raise ConfigError([f"{config_path}: not valid TOML: {exc}"]) from None
    return validate(doc, text, config_path, default_hostname=socket.getfqdn())
