"""What a reload puts in force at once and what waits for a restart (pure), and the [control] section."""

from pathlib import Path

import pytest
import tomlkit

from empath.config import ConfigError
from empath.config.sections import validate
from empath.control.reload import effective

BASE = """\
[server]
hostname = "mx.example.test"
data_dir = "/var/lib/empath"
log_level = "info"

[[listeners]]
address = "127.0.0.1:2525"

[relay]
local_domains = ["example.test"]

[delivery]
workers = 20
retry_first = "5m"
"""


def config(text: str):
    return validate(tomlkit.parse(text).unwrap(), text, Path("/etc/empath/empath.toml"))


def test_live_settings_are_taken_and_nothing_waits():
    running = config(BASE)
    new = config(BASE.replace('["example.test"]', '["example.test", "new.test"]').replace('"info"', '"debug"'))
    result, pending = effective(running, new)
    assert pending == []
    assert result.local_domains == ("example.test", "new.test")
    assert result.log_level == "debug"


def test_settings_bound_at_start_keep_their_running_values_and_are_reported():
    running = config(BASE)
    changed = (
        BASE.replace("2525", "2526")
        .replace("workers = 20", "workers = 3")
        .replace('retry_first = "5m"', 'retry_first = "1m"')
        .replace("/var/lib/empath", "/srv/empath")
    )
    result, pending = effective(running, config(changed))
    assert pending == ["listeners", "data_dir", "delivery.workers"]
    assert result.listeners == running.listeners
    assert result.data_dir == running.data_dir
    assert result.delivery.workers == 20
    assert result.delivery.retry_first == 60.0  # live: taken


def test_control_section_defaults_and_values():
    plain = config(BASE)
    assert plain.control_socket == Path("/var/lib/empath/control.sock")
    assert plain.control.group is None and plain.control.tokens_file is None
    custom = config(BASE + '\n[control]\nsocket = "/run/empath/ctl.sock"\ngroup = "adm"\ntokens_file = "tokens"\n')
    assert custom.control_socket == Path("/run/empath/ctl.sock")
    assert custom.control.group == "adm"
    assert custom.control.tokens_file == Path("/etc/empath/tokens")


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ('socket = ""', "control.socket (line 17): must not be empty"),
        (f'socket = "/run/{"x" * 70}.sock"', "control.socket (line 17): the socket's file name must be at most 64 by"),
        ("group = 5", "control.group (line 17): must be a string"),
        ("owner = 1", "control.owner (line 17): unknown key"),
    ],
)
def test_control_section_problems_name_key_and_line(section, problem):
    with pytest.raises(ConfigError) as caught:
        config(BASE + f"\n[control]\n{section}\n")
    [only] = caught.value.problems
    assert only.startswith(problem)
