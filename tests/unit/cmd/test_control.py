"""empathctl's control verbs: the requests the command line makes (cmd/control.py)."""

import argparse

import pytest

from empath.cmd import control
from empath.control.client import ControlError

QID = "01KAW3V8Y4C0F7QZ"


def parse(*words: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    control.add_verbs(parser.add_subparsers(dest="verb", required=True))
    return parser.parse_args(list(words))


@pytest.mark.parametrize(
    ("words", "wire"),
    [
        (["status"], ("status", {})),
        (["log-level", "debug"], ("log-level", {"level": "debug"})),
        (
            ["domain", "set", "x.test", "rate=60/m", "concurrency=2"],
            ("domain-set", {"destination": "x.test", "rate": "60/m", "concurrency": 2}),
        ),
        (["breaker", "list"], ("breaker-list", {})),
        (["breaker", "reset", "x.test"], ("breaker-reset", {"destination": "x.test"})),
        (["pause"], ("pause", {})),
        (["resume", "x.test"], ("resume", {"domain": "x.test"})),
        (
            ["queue", "list", "--state", "held", "--older-than", "2h"],
            ("queue-list", {"state": "held", "older_than": "2h"}),
        ),
        (["queue", "show", QID, "--body"], ("queue-show", {"id": QID, "body": True})),
        (["queue", "hold", QID], ("queue-hold", {"ids": [QID]})),
        (["queue", "delete", "--all", "--yes"], ("queue-delete", {"all": True, "confirm": True})),
        (["queue", "retry", "--domain", "x.test"], ("queue-retry", {"domain": "x.test"})),
    ],
)
def test_command_lines_become_requests(words, wire):
    assert control._wire(parse(*words)) == wire


@pytest.mark.parametrize(
    ("words", "error"),
    [
        (["queue", "delete", "--all"], "queue delete --all acts on every message: add --yes to confirm"),
        (["queue", "hold"], "queue hold: give queue ids or --all --yes"),
        (["queue", "retry", QID, "--domain", "x.test"], "queue retry: give queue ids, --domain D or --all --yes"),
        (["domain", "set", "x.test", "burst=3"], "'burst=3': give rate=VALUE or concurrency=N"),
        (["domain", "set", "x.test", "concurrency=many"], "concurrency=many: must be a whole number"),
    ],
)
def test_command_lines_that_cannot_be_requests(words, error):
    with pytest.raises(ControlError, match=error):
        control._wire(parse(*words))


def test_the_token_comes_from_the_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EMPATH_TOKEN", "from-env")
    assert control._token(parse("status")) == "from-env"
    path = tmp_path / "token"
    path.write_text("from-file\nignored\n")
    assert control._token(parse("status", "--token-file", str(path))) == "from-file"
    path.write_text("\n")
    with pytest.raises(ControlError, match="is empty"):
        control._token(parse("status", "--token-file", str(path)))
