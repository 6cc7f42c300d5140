"""Refusals invisible in the log (hostile-internet issue, point 4).

"Relay access denied", failed passwords and the rest appeared nowhere in
the log, even at debug level, only in a counter: an operator could not
answer "why can't the scanner send?" and fail2ban had nothing to read. Now
every refusal is one ``reject`` line at the default level, in a shape that
conf/fail2ban/filter.d/empath.conf reads (checked here with Debian's
fail2ban-regex over the daemon's real log, text and JSON).
"""

import json
import smtplib
import ssl
import subprocess

import pytest
from support import ROOT, RawClient, raw_reply, wait_for

from empath.smtp import replies

FILTER = ROOT / "conf" / "fail2ban" / "filter.d" / "empath.conf"
PASSWORD = "the right one"


def matched_hosts(log_path) -> list[str]:
    """The addresses fail2ban-regex finds in the log with Empath's filter, one per match."""
    result = subprocess.run(
        ["fail2ban-regex", "-o", "ip", str(log_path), str(FILTER)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def refuse_a_stranger(daemon, certs) -> None:
    """From 127.0.0.1 (not trusted): a relay attempt, a command that is no command, a wrong password."""
    with RawClient(daemon.ports.smtp) as client:
        assert client.reply()[0] == 220
        assert client.cmd("EHLO stranger.test")[0] == 250
        assert client.cmd("MAIL FROM:<someone@far.test>")[0] == 250
        assert client.cmd("RCPT TO:<victim@elsewhere.test>") == raw_reply(replies.RELAY_DENIED)
        assert client.cmd("FROB now") == raw_reply(replies.UNKNOWN_COMMAND)
        assert client.cmd("QUIT")[0] == 221
    context = ssl.create_default_context(cafile=str(certs.ca_pem))
    with smtplib.SMTP("127.0.0.1", daemon.ports.submission, timeout=10) as smtp:
        smtp.starttls(context=context)
        smtp.ehlo("stranger.test")
        smtp.user, smtp.password = "alice", "a wrong guess"
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.auth("PLAIN", smtp.auth_plain)  # one mechanism: login() would go on to try LOGIN too


def test_every_refusal_is_one_reject_line_that_fail2ban_reads(make_daemon, certs):
    daemon = make_daemon()
    daemon.add_user("alice", PASSWORD)
    daemon.start()
    refuse_a_stranger(daemon, certs)
    lines = wait_for(
        lambda: (
            (found := [line for line in daemon.log().splitlines() if " reject " in line]) and len(found) >= 3 and found
        ),
        what="three reject lines",
    )
    relay, unknown, auth = lines
    assert " info empath.smtp reject RCPT from unknown[127.0.0.1]: 554 5.7.1 Relay access denied;" in relay
    assert " from=<someone@far.test> to=<victim@elsewhere.test> helo=<stranger.test> " in relay
    assert f" listener=smtp@127.0.0.1:{daemon.ports.smtp} " in relay and " trace_id=" in relay
    assert " reject FROB from unknown[127.0.0.1]: 500 5.5.1 Command unrecognized;" in unknown
    assert " reject AUTH from unknown[127.0.0.1]: 535 5.7.8 Authentication credentials invalid;" in auth
    assert "wrong guess" not in daemon.log()
    # Each refusal once: fail2ban counts every one of them against the stranger.
    assert matched_hosts(daemon.log_path) == ["127.0.0.1"] * 3


def test_the_json_reject_line_carries_the_same_fields(make_daemon, certs):
    daemon = make_daemon(server={"log_format": "json"})
    daemon.add_user("alice", PASSWORD)
    daemon.start()
    refuse_a_stranger(daemon, certs)
    records = wait_for(
        lambda: (
            (found := [r for r in map(json.loads, daemon.log().splitlines()) if r["event"] == "reject"])
            and len(found) >= 3
            and found
        ),
        what="three reject records",
    )
    relay = records[0]
    assert {k: relay[k] for k in ("logger", "level", "command", "client", "code", "dsn", "reply")} == {
        "logger": "empath.smtp",
        "level": "info",
        "command": "RCPT",
        "client": "127.0.0.1",
        "code": 554,
        "dsn": "5.7.1",
        "reply": "Relay access denied",
    }
    assert (relay["from"], relay["to"], relay["helo"]) == (
        "someone@far.test",
        "victim@elsewhere.test",
        "stranger.test",
    )
    assert matched_hosts(daemon.log_path) == ["127.0.0.1"] * 3


def test_a_temporary_refusal_is_logged_but_never_counted_by_fail2ban(make_daemon):
    daemon = make_daemon(limits={"max_connections_per_client": 1})
    daemon.start()
    with RawClient(daemon.ports.smtp) as first:
        assert first.reply()[0] == 220
        with RawClient(daemon.ports.smtp) as second:
            assert second.reply() == raw_reply(replies.TOO_MANY_FROM_CLIENT)
    line = wait_for(
        lambda: [line for line in daemon.log().splitlines() if " reject CONNECT " in line], what="the reject line"
    )[0]
    assert "from unknown[127.0.0.1]: 421 4.7.0 Too many connections from your address" in line
    assert matched_hosts(daemon.log_path) == []
