"""Every input the fuzzers crashed on, replayed through its harness.

scripts/fuzz saves a crashing input in tests/fuzz/crashes/TARGET/; once the
bug is fixed the file is kept, and this test feeds it to the same function
atheris called (fuzz_TARGET.test_one_input). atheris is not needed here.
"""

import contextlib
import importlib
import shutil
from pathlib import Path

import pytest

from empath.config import ConfigError, load

CRASHES = Path(__file__).resolve().parents[1] / "fuzz" / "crashes"
INPUTS = sorted(p for p in CRASHES.glob("*/*") if p.is_file() and not p.name.startswith("."))


def test_every_crash_dir_names_a_harness():
    for directory in CRASHES.iterdir():
        if directory.is_dir():
            assert (CRASHES.parent / f"fuzz_{directory.name}.py").is_file(), directory


@pytest.mark.parametrize("path", INPUTS, ids=[f"{p.parent.name}/{p.name}" for p in INPUTS])
def test_crash_input_replays_cleanly(path):
    harness = importlib.import_module(f"fuzz.fuzz_{path.parent.name}")
    harness.test_one_input(path.read_bytes())


CONFIG_INPUTS = [p for p in INPUTS if p.parent.name == "config"]


@pytest.mark.parametrize("path", CONFIG_INPUTS, ids=[p.name for p in CONFIG_INPUTS])
def test_config_crash_input_through_load(path, tmp_path):
    # The harness parses as load does; this proves load itself refuses the
    # file cleanly (e.g. a repeated key made tomlkit raise KeyAlreadyPresent,
    # which escaped load as a traceback).
    config = tmp_path / "empath.toml"
    shutil.copyfile(path, config)
    with contextlib.suppress(ConfigError):
        load(config)


@pytest.mark.parametrize("target", ["commands", "addresses", "data", "config", "control"])
def test_seed_corpus_replays_cleanly(target):
    # The seeds too: a harness that fails on its own seeds would find nothing.
    harness = importlib.import_module(f"fuzz.fuzz_{target}")
    seeds = sorted((CRASHES.parent / "corpus" / target).iterdir())
    assert seeds
    for seed in seeds:
        harness.test_one_input(seed.read_bytes())
