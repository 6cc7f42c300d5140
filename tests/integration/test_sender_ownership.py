"""Sender ownership (issue 18): a user logged in sends only as the addresses they own.

swaks logs in as alice over STARTTLS; on the submission listener (on by
default) a sender she does not own is refused with 553 5.7.1 and logged,
one the senders table gives her is taken, and on port 25 (off by default)
the rule does not apply.
"""

import subprocess

from support import raw_reply

from empath.smtp import replies

PASSWORD = "correct horse battery staple"


def swaks(daemon, certs, port: int, sender: str) -> subprocess.CompletedProcess:
    command = ["swaks", "--server", f"127.0.0.1:{port}", "--helo", "laptop.test", "--from", sender]
    command += ["--to", "carol@remote.test", "--tls", "--tls-verify", "--tls-ca-path", str(certs.ca_pem)]
    command += ["-au", "alice", "-ap", PASSWORD, "--auth", "PLAIN", "--timeout", "10"]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


def test_alice_may_not_send_as_the_director_until_the_table_says_so(make_daemon, certs):
    daemon = make_daemon()
    daemon.add_user("alice", PASSWORD)
    table = daemon.directory / "senders"
    table.write_text("bob: bob@local.test\n")
    daemon.sections["auth"] = {"senders": str(table)}
    daemon.start()
    submission, smtp = daemon.ports.submission, daemon.ports.smtp

    done = swaks(daemon, certs, submission, "director@local.test")
    code, text = raw_reply(replies.SENDER_NOT_OWNED)
    assert done.returncode != 0 and f"<~* {code} {text}" in done.stdout, done.stdout
    assert daemon.messages() == []
    # Not in the table: her own address at a local domain is hers.
    assert swaks(daemon, certs, submission, "alice@local.test").returncode == 0
    table.write_text("bob: bob@local.test\nalice: alice@local.test, director@local.test\n")
    assert swaks(daemon, certs, submission, "director@local.test").returncode == 0
    # Port 25 leaves the envelope to the MX's other rules.
    assert swaks(daemon, certs, smtp, "anyone@far.test").returncode == 0
    assert len(daemon.messages()) == 3

    log = daemon.log_since_start()
    [line] = [line for line in log.splitlines() if " reject MAIL " in line]
    assert "553 5.7.1" in line and "from=<director@local.test>" in line and "user=alice" in line
