"""The Makefile's developer commands: every target the README names exists,
calls scripts that exist, and the ones that need an argument say so."""

import re
import shlex
import subprocess

import pytest
from support import ROOT

TARGETS = [
    "test",
    "test-fast",
    "test-e2e",
    "test-smoke",
    "test-list",
    "test-match PATTERN=smuggling",
    "bench",
    "profile-cpu BENCH=accept",
    "changelog",
    "docs-serve",
]


def make(*args):
    return subprocess.run(["make", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("target", TARGETS)
def test_each_target_calls_scripts_that_exist(target):
    result = make("--dry-run", *target.split())
    assert result.returncode == 0, result.stderr
    scripts = {
        word
        for line in result.stdout.splitlines()
        for word in shlex.split(line, comments=True)
        if word.startswith(("scripts/", ".venv/"))
    }
    assert scripts, result.stdout
    for script in scripts:
        assert (ROOT / script).is_file(), f"{target}: {script} does not exist"


@pytest.mark.parametrize("target, variable", [("test-match", "PATTERN"), ("profile-cpu", "BENCH")])
def test_a_missing_argument_is_a_usage_line(target, variable):
    result = make("--no-print-directory", target)
    assert result.returncode == 2
    assert re.search(rf"usage: make {target} {variable}=", result.stderr)


def test_help_lists_every_target():
    listed = make("--no-print-directory", "help").stdout
    for target in TARGETS:
        assert f"make {target.split()[0]} " in listed


def test_test_list_collects_the_slow_and_fuzz_tests_too():
    result = make("--no-print-directory", "test-list")
    assert result.returncode == 0, result.stderr
    assert "tests/fuzz/test_fuzz_short.py::" in result.stdout
    assert (
        "tests/integration/test_dev_commands.py::test_test_list_collects_the_slow_and_fuzz_tests_too" in result.stdout
    )
