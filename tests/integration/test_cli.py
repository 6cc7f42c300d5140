"""The ``empath`` command: --check, and refusing to start with a clear message."""

import socket
import subprocess
import sys

from support import ROOT


def empath(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "empath.cmd.empath", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )


BAD_CONFIG = """\
[[listeners]]
address = "127.0.0.1:25"
mode = "smtp"

[[listeners]]
address = "localhost:587"
mode = "lmtp"

[server]
hostname = "mx.test.example"
data_dir = "data"
log_level = "loud"
colour = "blue"

[limits]
max_recipients = 5
max_message_size = "huge"

[timeouts]
command = "5 minutes"

[relay]
trusted_networks = ["10.0.0.0/8", "not-a-network"]
"""


def line_of(text: str, fragment: str, after: int = 0) -> int:
    """The 1-based number of the first line at or after ``after`` containing ``fragment``."""
    lines = text.splitlines()
    for number in range(after, len(lines)):
        if fragment in lines[number]:
            return number + 1
    raise AssertionError(f"{fragment!r} not in config")


def test_check_lists_every_problem_with_its_key_and_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD_CONFIG)
    result = empath("--config", str(path), "--check")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    problems = result.stderr.splitlines()
    second_listener = line_of(BAD_CONFIG, "[[listeners]]", after=3)
    expected = {
        f"listeners[1].address (line {second_listener + 1})": "must be an IP address",
        f"listeners[1].mode (line {second_listener + 2})": "must be one of smtp, submission, smtps",
        f"server.log_level (line {line_of(BAD_CONFIG, 'log_level')})": "must be one of debug",
        f"server.colour (line {line_of(BAD_CONFIG, 'colour')})": "unknown key",
        f"limits.max_recipients (line {line_of(BAD_CONFIG, 'max_recipients')})": "must be at least 100",
        f"limits.max_message_size (line {line_of(BAD_CONFIG, 'max_message_size')})": "must be a size",
        f"timeouts.command (line {line_of(BAD_CONFIG, 'command =')})": "must be a duration",
        f"relay.trusted_networks (line {line_of(BAD_CONFIG, 'trusted_networks')})": "'not-a-network'",
    }
    assert len(problems) == len(expected), result.stderr
    for where, message in expected.items():
        matching = [p for p in problems if p.startswith(f"empath: {where}: ")]
        assert len(matching) == 1, f"no single line for {where}:\n{result.stderr}"
        assert message in matching[0]


def test_check_reports_unparsable_toml_with_its_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('[server]\nhostname = "mx.test.example"\ndata_dir = \n')
    result = empath("--config", str(path), "--check")
    assert result.returncode == 1
    assert "not valid TOML" in result.stderr and "line 3" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_of_a_missing_file(tmp_path):
    result = empath("--config", str(tmp_path / "nope.toml"), "--check")
    assert result.returncode == 1
    assert "cannot read" in result.stderr and "nope.toml" in result.stderr


def test_check_accepts_a_good_config_and_starts_nothing(make_daemon):
    daemon = make_daemon()
    daemon.add_user("alice", "a-password")
    path = daemon.write_config()
    result = empath("--config", str(path), "--check")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"empath: {path} is valid"
    assert result.stderr == ""
    # --check binds no port and creates no queue.
    assert not (daemon.data_dir / "queue.sqlite3").exists()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", daemon.ports.smtp))


def test_check_reports_files_the_config_names(make_daemon, tmp_path):
    daemon = make_daemon()
    daemon.users_path.unlink()
    path = daemon.write_config()
    result = empath("--config", str(path), "--check")
    assert result.returncode == 1
    line = line_of(path.read_text(), "users_file")
    assert result.stderr.startswith(f"empath: auth.users_file (line {line}): {daemon.users_path} does not exist")


def test_listener_port_already_taken_exits_1_naming_the_address(make_daemon):
    daemon = make_daemon(tls=False)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen(1)
        daemon.ports.smtp = squatter.getsockname()[1]
        daemon.start(wait=False)
        out, err = daemon.proc.communicate(timeout=20)
    text = err.decode()
    assert daemon.proc.returncode == 1, text
    assert f"127.0.0.1:{daemon.ports.smtp}" in text
    assert "Traceback" not in text
    assert len(text.strip().splitlines()) == 1, text
    # It gave up cleanly: the data directory is unlocked, so a retry on a free port works.
    daemon.ports.smtp = daemon.ports.submission
    daemon.start()
    assert daemon.stop() == 0
