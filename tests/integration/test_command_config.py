"""Every command finds its config by one rule (--config, else $EMPATH_CONFIG, else
/etc/empath/empath.toml), and `empathctl user add` works without a terminal."""

import os
import subprocess
import sys

import pytest
from support import ROOT

COMMANDS = {
    "empath": ["--check"],
    "empathctl": ["user", "list"],
    "mailq": [],
    "sendmail": ["-bp"],
}


def run(module: str, *args: str, env: dict, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"empath.cmd.{module}", *args],
        input=stdin,
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_finds_the_config_in_empath_config(make_daemon, command):
    daemon = make_daemon()
    daemon.write_config()
    env = dict(os.environ, EMPATH_CONFIG=str(daemon.config_path))
    result = run(command, *COMMANDS[command], env=env)
    assert result.returncode == 0, result.stderr


def test_user_add_without_a_terminal_reads_the_password_from_stdin(make_daemon):
    daemon = make_daemon()
    daemon.write_config()
    env = dict(os.environ, EMPATH_CONFIG=str(daemon.config_path))
    added = run("empathctl", "user", "add", "carol", env=env, stdin=b"carols-password\n")  # stdin is a pipe
    assert added.returncode == 0, added.stderr
    assert run("empathctl", "user", "list", env=env).stdout.split() == [b"carol"]

    empty = run("empathctl", "user", "add", "dave", env=env, stdin=b"")
    assert empty.returncode == 1
    assert empty.stderr.decode().splitlines() == [
        "empathctl: no password on stdin (write it as the first line, or run in a terminal)"
    ]
