"""sendmail and mailq as local programs use them: cron's `sendmail -t -i`
with the daemon stopped, then started; mailq with and without the daemon;
`sendmail -q` to retry now."""

import os
import subprocess
import sys

from peer import Peer
from support import ROOT, wait_for


def run(module: str, daemon, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    env = dict(os.environ, EMPATH_CONFIG=str(daemon.config_path))
    return subprocess.run(
        [sys.executable, "-m", module, *args], input=stdin, capture_output=True, env=env, cwd=ROOT, timeout=30
    )


def routed_to(make_daemon, peer: Peer):
    return make_daemon(
        delivery={"retry_first": "1h"},
        **{'domains."remote.test"': {"route": [f"{peer.host}:{peer.port}"]}},
    )


CRON_MAIL = b"To: ops@remote.test\nBcc: boss@remote.test\nSubject: nightly backup\n\nbackup finished\n.\n"


def test_cron_mail_with_the_daemon_stopped_is_queued_then_delivered(make_daemon):
    with Peer("127.0.0.11") as peer:
        daemon = routed_to(make_daemon, peer)
        daemon.write_config()
        result = run("empath.sendmail", daemon, "-t", "-i", "-F", "Cron Daemon", stdin=CRON_MAIL)
        assert result.returncode == 0, result.stderr
        [(queue_id, sender)] = daemon.messages()
        assert sorted(daemon.recipients(queue_id)) == ["boss@remote.test", "ops@remote.test"]

        listing = run("empath.mailq", daemon)
        assert listing.returncode == 0 and queue_id in listing.stdout.decode()
        assert "ops@remote.test" in listing.stdout.decode()

        daemon.start()
        [transaction] = peer.wait_for_transactions(1, timeout=15)
        assert sorted(transaction.recipients) == ["boss@remote.test", "ops@remote.test"]
        assert transaction.sender == sender
        # -i: the lone dot is content; Bcc is gone; headers were added; CRLF on the wire.
        assert b"\r\nbackup finished\r\n.\r\n" in transaction.data
        assert b"Bcc" not in transaction.data and b"boss" not in transaction.data
        assert b"From: Cron Daemon <" in transaction.data and b"Message-ID: <" in transaction.data
        assert not peer.violations
        wait_for(lambda: daemon.messages() == [], what="the queue to empty")
        assert run("empath.mailq", daemon).stdout == b"Mail queue is empty\n"


def test_sendmail_nudges_a_running_daemon_and_q_retries_now(make_daemon):
    with Peer("127.0.0.11") as peer:
        daemon = routed_to(make_daemon, peer).start()
        result = run("empath.sendmail", daemon, "ops@remote.test", stdin=b"Subject: one\n\nhello\n")
        assert result.returncode == 0, result.stderr
        peer.wait_for_transactions(1, timeout=10)  # the nudge, not the once-a-minute look

        peer.final_reply = "451 4.3.0 try later"
        assert run("empath.sendmail", daemon, "ops@remote.test", stdin=b"Subject: two\n\nhello\n").returncode == 0
        wait_for(lambda: daemon.query("SELECT state FROM recipient") == [("deferred",)], what="the deferral")
        listing = run("empath.mailq", daemon).stdout.decode()
        assert "(451 4.3.0 try later)" in listing

        peer.final_reply = "250 2.0.0 ok"
        assert run("empath.sendmail", daemon, "-q").returncode == 0
        wait_for(lambda: daemon.messages() == [], what="the retry to deliver")
        assert len(peer.delivered) == 2


def test_sendmail_errors_are_one_line_with_sysexits_codes(make_daemon, tmp_path):
    daemon = make_daemon()
    daemon.write_config()
    no_rcpt = run("empath.sendmail", daemon, stdin=b"Subject: x\n\n")
    assert no_rcpt.returncode == 64 and no_rcpt.stderr.count(b"\n") == 1 and b"no recipients" in no_rcpt.stderr
    bad = run("empath.sendmail", daemon, "bad@@x", stdin=b"Subject: x\n\n")
    assert bad.returncode == 67 and b"Traceback" not in bad.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "empath.sendmail", "-C", str(tmp_path / "none.toml"), "a@b.test"],
        input=b"x\n",
        capture_output=True,
        cwd=ROOT,
        timeout=30,
    )
    assert missing.returncode == 78 and b"cannot read" in missing.stderr
    assert not (daemon.data_dir / "queue.sqlite3").exists()  # nothing was queued, not even a database
