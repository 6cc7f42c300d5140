"""empathctl's control verbs: the requests the command line makes and the text it prints (pure)."""

import argparse

import pytest

from empath.control import cli
from empath.control.client import ControlError, result

QID = "01KAW3V8Y4C0F7QZ"


def parse(*words: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_verbs(parser.add_subparsers(dest="verb", required=True))
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
    assert cli._wire(parse(*words)) == wire


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
        cli._wire(parse(*words))


def test_the_token_comes_from_the_file_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EMPATH_TOKEN", "from-env")
    assert cli._token(parse("status")) == "from-env"
    path = tmp_path / "token"
    path.write_text("from-file\nignored\n")
    assert cli._token(parse("status", "--token-file", str(path))) == "from-file"
    path.write_text("\n")
    with pytest.raises(ControlError, match="is empty"):
        cli._token(parse("status", "--token-file", str(path)))


STATUS = {
    "version": "0.1.0",
    "pid": 7,
    "hostname": "mx.test",
    "config": "/etc/empath/empath.toml",
    "started_at": 0.0,
    "uptime": 7260.0,
    "listeners": ["smtp@0.0.0.0:25"],
    "accepting": True,
    "sessions": 2,
    "queue": {"queued": 1, "deferred": 4, "held": 0},
    "oldest_age": 600.0,
    "delivery": {
        "paused": False,
        "paused_domains": ["slow.test"],
        "in_flight": 3,
        "overrides": {"slow.test": {"rate": 0.5, "concurrency": 2}},
    },
    "restart_needed": ["listeners"],
}


def test_status_text():
    text = cli.render("status", STATUS, {})
    assert "empath 0.1.0, pid 7, up 2h 1m" in text
    assert "queue:      queued 1, deferred 4, held 0 (oldest 10m 0s)" in text
    assert "delivery:   paused for slow.test, 3 in flight" in text
    assert "override:   slow.test: rate 30/m, concurrency 2" in text
    assert text.endswith("restart needed for: listeners\n")


def test_tables_and_short_results():
    rows = [{"client": "192.0.2.1", "listener": "smtp@0.0.0.0:25", "state": "mail", "tls": None, "age": 5.0}]
    rows[0] |= {"helo": "h.test", "user": None}
    table = cli.render("connections", rows, {}).splitlines()
    assert table[0].split() == ["CLIENT", "LISTENER", "STATE", "TLS", "AGE", "HELO", "USER"]
    assert table[1].split() == ["192.0.2.1", "smtp@0.0.0.0:25", "mail", "-", "5s", "h.test", "-"]
    assert cli.render("breaker-list", [], {}) == "no circuit breakers yet (none until a delivery is tried)\n"
    assert cli.render("queue-hold", {"messages": 1}, {}) == "1 message held\n"
    assert cli.render("queue-retry", {"messages": 3}, {}) == "3 messages due now\n"
    assert cli.render("pause", {"paused": True, "paused_domains": []}, {}) == "delivery: PAUSED (all)\n"
    listing = cli.render("queue-list", [], {"limit": 0})
    assert listing.startswith("Mail queue is empty\n") and "--limit for more" in listing


def test_reply_lines_become_results_or_errors():
    assert result(b'{"ok": true, "result": [1]}') == [1]
    with pytest.raises(ControlError, match="^nope$"):
        result(b'{"ok": false, "error": "nope"}')
    for bad in (b"not json", b"[]", b'{"result": 1}'):
        with pytest.raises(ControlError, match="reply is not"):
            result(bad)


def test_a_full_accept_backlog_is_waited_out_then_reported(monkeypatch):
    # A Unix socket whose backlog is full refuses with EAGAIN at once; the
    # client tries again until CONNECT_TIMEOUT instead of failing on the spot.
    from empath.control import client

    tries = []

    def busy_then_free(path, timeout):
        tries.append(path)
        if len(tries) < 3:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        return "socket"

    monkeypatch.setattr(client.sockfile, "connect", busy_then_free)
    monkeypatch.setattr(client, "BUSY_RETRY", 0)
    assert client._connect("ctl.sock") == "socket"
    assert len(tries) == 3

    def always_busy(path, timeout):
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(client.sockfile, "connect", always_busy)
    monkeypatch.setattr(client, "CONNECT_TIMEOUT", 0)
    with pytest.raises(ControlError, match="did not accept the connection"):
        client.call("ctl.sock", b"{}\n", 1.0)
