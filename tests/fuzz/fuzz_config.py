"""Fuzz target: the config validator (empath.config.load.validate).

The input is parsed as TOML the way ``load`` does; a document that is not
TOML is refused with a tomlkit error (ParseError, or KeyAlreadyPresent for a
repeated key: ``load`` turns either into a ConfigError). ``validate`` may only raise ConfigError; anything else is a
crash. ``test_one_input`` is importable without atheris; fuzz with
``scripts/fuzz config 60``.
"""

import contextlib
import sys
from pathlib import Path

import tomlkit
import tomlkit.exceptions

from empath.config import ConfigError
from empath.config.sections import validate

CONFIG_PATH = Path("/nonexistent/empath-fuzz/empath.toml")


def test_one_input(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # load refuses it before parsing
    try:
        doc = tomlkit.parse(text).unwrap()
    except tomlkit.exceptions.TOMLKitError:
        return
    with contextlib.suppress(ConfigError):
        validate(doc, text, CONFIG_PATH, default_hostname="fuzz.example")


if __name__ == "__main__":
    import atheris

    atheris.Setup(sys.argv, atheris.instrument_func(test_one_input), enable_python_coverage=True)
    atheris.instrument_all()
    atheris.Fuzz()
