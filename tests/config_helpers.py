"""Configs for the tests: a minimal good one, sections to add, and checking text as
if it were read from a file (tests/unit/config/, and the tests of the parts a config sets)."""

from pathlib import Path

import pytest
import tomlkit

from empath.config import ConfigError
from empath.config.sections import validate

GOOD = """\
[server]
hostname = "mx.example.test"
data_dir = "data"

[[listeners]]
address = "127.0.0.1:2525"
"""

TLS = """
[tls]
certificate = "cert.pem"
key = "key.pem"
"""

AUTH = """
[auth]
users_file = "users"
"""


def check(text: str, config_path: Path = Path("/etc/empath/empath.toml")):
    """Validate TOML text as if read from ``config_path``."""
    return validate(tomlkit.parse(text).unwrap(), text, config_path, default_hostname="default.example")


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        check(text)
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


def line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the config")


def said(problems: list[tuple[str, str]]) -> list[str]:
    """Problems found after loading (key, what), as --check says them without their lines."""
    return [f"{key}: {message}" for key, message in problems]
