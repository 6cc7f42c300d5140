"""An unsafe config validated silently (hostile-internet issue, point 5).

``trusted_networks = ["0.0.0.0/0"]`` (an open relay) and a metrics address
on 0.0.0.0 passed ``--check`` with "is valid", and the queue file and data
directory were created 0644/0755 when Empath was not run from the systemd
unit. Now an open relay is refused unless ``relay.allow_open_relay`` says it
is meant, a trusted network with public addresses in it and metrics off
loopback are warned of (exit 0, a ``warning:`` line with the key and line,
and a ``config_warning`` log line at start), and what Empath creates of its
data is its user's alone.
"""

import os
import stat
import subprocess
import sys

import pytest
from support import ROOT, free_port, wait_for

BASE = """\
[server]
hostname = "mx.test.example"
data_dir = "data"
{server}
[[listeners]]
address = "127.0.0.1:{port}"

[relay]
{relay}
"""


def check(tmp_path, relay: str = "", server: str = "") -> subprocess.CompletedProcess:
    config = tmp_path / "empath.toml"
    config.write_text(BASE.format(port=free_port(), relay=relay, server=server))
    return subprocess.run(
        [sys.executable, "-m", "empath.cmd.empath", "--config", str(config), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


@pytest.mark.parametrize("everyone", ["0.0.0.0/0", "::/0"])
def test_an_open_relay_is_refused_unless_it_is_meant(tmp_path, everyone):
    refused = check(tmp_path, relay=f'trusted_networks = ["{everyone}"]')
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith(f"empath: relay.trusted_networks (line 9): {everyone} lets every host")
    meant = check(tmp_path, relay=f'trusted_networks = ["{everyone}"]\nallow_open_relay = true')
    assert meant.returncode == 0 and meant.stdout.endswith("is valid\n")
    assert meant.stderr.startswith(f"empath: warning: relay.trusted_networks (line 9): {everyone} covers public")


def test_public_trusted_networks_and_metrics_off_loopback_are_warned_of(tmp_path):
    result = check(
        tmp_path,
        relay='trusted_networks = ["192.168.1.0/24", "198.51.100.0/24", "10.0.0.0/7"]',
        server='metrics_address = "0.0.0.0:9125"',
    )
    assert result.returncode == 0 and result.stdout.endswith("is valid\n")
    assert result.stderr.splitlines() == [
        "empath: warning: relay.trusted_networks (line 9): 198.51.100.0/24 covers public addresses: every host"
        " there may relay through Empath without logging in; keep trusted networks to the office's own private ranges",
        "empath: warning: relay.trusted_networks (line 9): 10.0.0.0/7 covers public addresses: every host"
        " there may relay through Empath without logging in; keep trusted networks to the office's own private ranges",
        "empath: warning: server.metrics_address (line 4): 0.0.0.0:9125 serves the metrics (queue sizes, clients"
        " refused) off loopback, without authentication: bind it to 127.0.0.1 or keep it behind a firewall",
    ]


def test_a_private_config_says_nothing_but_valid(tmp_path):
    result = check(tmp_path, relay='trusted_networks = ["10.1.0.0/16", "fd00::/8", "127.0.0.1/32"]')
    assert (result.returncode, result.stderr) == (0, "")


def test_what_empath_creates_of_its_data_is_its_users_alone(make_daemon):
    previous = os.umask(0o022)  # as an interactive shell leaves it
    try:
        daemon = make_daemon(relay={"trusted_networks": ["198.51.100.0/24"]})
        daemon.start()
    finally:
        os.umask(previous)
    data = daemon.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("queue.sqlite3", "queue.sqlite3-wal", "empath.lock"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    wait_for(lambda: " config_warning " in daemon.log(), what="the warning in the log")
    assert "relay.trusted_networks" in daemon.log() and "198.51.100.0/24 covers public addresses" in daemon.log()
