"""sendmail and mailq as local programs use them: cron's `sendmail -t -i`
with the daemon stopped, then started; mailq with and without the daemon;
`sendmail -q` to retry now."""

import os
import subprocess
import sys

import pytest
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


@pytest.mark.smoke
def test_cron_mail_with_the_daemon_stopped_is_queued_then_delivered(make_daemon):
    with Peer("127.0.0.11") as peer:
        daemon = routed_to(make_daemon, peer)
        daemon.write_config()
        result = run("empath.cmd.sendmail", daemon, "-t", "-i", "-F", "Cron Daemon", stdin=CRON_MAIL)
        assert result.returncode == 0, result.stderr
        [(queue_id, sender)] = daemon.messages()
        assert sorted(daemon.recipients(queue_id)) == ["boss@remote.test", "ops@remote.test"]

        listing = run("empath.cmd.mailq", daemon)
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
        assert run("empath.cmd.mailq", daemon).stdout == b"Mail queue is empty\n"


def test_text_piped_to_sendmail_without_a_header_is_the_body(make_daemon):
    # `df -h | sendmail root` from cron: no header at all, and no blank line.
    daemon = make_daemon()
    daemon.write_config()
    result = run("empath.cmd.sendmail", daemon, "root", stdin=b"disk /var is 91% full\nplease look\n")
    assert result.returncode == 0, result.stderr
    [(stored,)] = daemon.query("SELECT data FROM body")
    header, _, body = bytes(stored).partition(b"\r\n\r\n")
    assert body == b"disk /var is 91% full\r\nplease look\r\n"
    assert b"\r\nFrom: " in header and b"\r\nMessage-ID: " in header


def test_sendmail_nudges_a_running_daemon_and_q_retries_now(make_daemon):
    with Peer("127.0.0.11") as peer:
        daemon = routed_to(make_daemon, peer).start()
        result = run("empath.cmd.sendmail", daemon, "ops@remote.test", stdin=b"Subject: one\n\nhello\n")
        assert result.returncode == 0, result.stderr
        peer.wait_for_transactions(1, timeout=10)  # the nudge, not the once-a-minute look

        peer.final_reply = "451 4.3.0 try later"
        assert run("empath.cmd.sendmail", daemon, "ops@remote.test", stdin=b"Subject: two\n\nhello\n").returncode == 0
        wait_for(lambda: daemon.query("SELECT state FROM recipient") == [("deferred",)], what="the deferral")
        listing = run("empath.cmd.mailq", daemon).stdout.decode()
        assert "(451 4.3.0 try later)" in listing

        peer.final_reply = "250 2.0.0 ok"
        assert run("empath.cmd.sendmail", daemon, "-q").returncode == 0
        wait_for(lambda: daemon.messages() == [], what="the retry to deliver")
        assert len(peer.delivered) == 2


def test_sendmail_errors_are_one_line_with_sysexits_codes(make_daemon, tmp_path):
    daemon = make_daemon()
    daemon.write_config()
    no_rcpt = run("empath.cmd.sendmail", daemon, stdin=b"Subject: x\n\n")
    assert no_rcpt.returncode == 64 and no_rcpt.stderr.count(b"\n") == 1 and b"no recipients" in no_rcpt.stderr
    bad = run("empath.cmd.sendmail", daemon, "bad@@x", stdin=b"Subject: x\n\n")
    assert bad.returncode == 67 and b"Traceback" not in bad.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "empath.cmd.sendmail", "-C", str(tmp_path / "none.toml"), "a@b.test"],
        input=b"x\n",
        capture_output=True,
        cwd=ROOT,
        timeout=30,
    )
    assert missing.returncode == 78 and b"cannot read" in missing.stderr
    assert not (daemon.data_dir / "queue.sqlite3").exists()  # nothing was queued, not even a database


# -- sendmail -bs: the SMTP machine on stdin and stdout ----------------------------------

BS_MESSAGE = b"From: app@local.test\r\nSubject: %s\r\n\r\nhello\r\n..dot\r\n.\r\n"


def bs_replies(stdout: bytes) -> list[str]:
    """The code (and enhanced status) of every reply, multi-line replies once."""
    return [line[:9].decode() for line in stdout.split(b"\r\n") if line[3:4] == b" "]


def test_bs_pipelined_dialogue_queues_each_message_before_its_250(make_daemon):
    daemon = make_daemon()
    daemon.write_config()
    script = (
        b"EHLO app.local\r\n"
        b"MAIL FROM:<app@local.test>\r\nRCPT TO:<ops@remote.test>\r\nRCPT TO:<dev@remote.test>\r\nDATA\r\n"
        + BS_MESSAGE % b"one"
        + b"BOGUS\r\n"
        + b"MAIL FROM:<>\r\nRCPT TO:<ops@remote.test>\r\nDATA\r\n"
        + b"Subject: two\r\n\r\nbody\r\n.\r\n"
        + b"QUIT\r\n"
    )
    result = run("empath.cmd.sendmail", daemon, "-bs", stdin=script)
    assert result.returncode == 0, result.stderr
    assert bs_replies(result.stdout) == [
        "220 mx.te",
        "250 HELP",
        "250 2.1.0",
        "250 2.1.5",
        "250 2.1.5",
        "354 End d",
        "250 2.0.0",
        "500 5.5.1",
        "250 2.1.0",
        "250 2.1.5",
        "354 End d",
        "250 2.0.0",
        "221 2.0.0",
    ]
    queued = [line.rsplit(b" ", 1)[1].decode() for line in result.stdout.split(b"\r\n") if b"queued as" in line]
    assert [queue_id for queue_id, _ in daemon.messages()] == queued
    first, second = queued
    assert sorted(daemon.recipients(first)) == ["dev@remote.test", "ops@remote.test"]
    body = daemon.body(first)
    assert body.startswith(b"Received: by mx.test.example (Empath, from user ")
    assert body.endswith(b"Subject: one\r\n\r\nhello\r\n.dot\r\n")  # the dot unstuffed, as over SMTP
    assert b"Message-ID: <" in body and b"\r\nDate: " in body
    assert daemon.query("SELECT sender, listener FROM message WHERE queue_id = ?", second) == [("", "sendmail")]
    # A null sender has no address for the From header a local submission gets: the user's own is used.
    assert b"\r\nFrom: " in daemon.body(second)
    assert daemon.query("SELECT detail FROM event WHERE queue_id = ?", first)[0][0].endswith("via sendmail -bs")


def test_bs_input_ending_inside_data_loses_nothing_that_got_250(make_daemon):
    daemon = make_daemon()
    daemon.write_config()
    script = (
        b"HELO app.local\r\nMAIL FROM:<app@local.test>\r\nRCPT TO:<ops@remote.test>\r\nDATA\r\n"
        + BS_MESSAGE % b"whole"
        + b"MAIL FROM:<app@local.test>\r\nRCPT TO:<ops@remote.test>\r\nDATA\r\n"
        + b"Subject: cut\r\n\r\nthe first half"
    )
    result = run("empath.cmd.sendmail", daemon, "-bs", stdin=script)
    assert result.returncode == 76 and b"not queued" in result.stderr and b"Traceback" not in result.stderr
    assert bs_replies(result.stdout)[-2:] == ["250 2.1.5", "354 End d"]
    [(queue_id, _)] = daemon.messages()
    assert b"Subject: whole" in daemon.body(queue_id)
    assert daemon.query("SELECT count(*) FROM body WHERE data LIKE '%first half%'") == [(0,)]


def test_bs_takes_a_bare_lf_as_a_line_end_but_never_as_the_end_of_data(make_daemon):
    # A local program is the office's own: its bare LFs end lines (as Postfix 3.9 takes
    # them); a dot next to one is content, so nothing can be smuggled after it.
    daemon = make_daemon()
    daemon.write_config()
    script = (
        b"EHLO app.local\n"
        + b"NOOP %s\r\n" % (b"x" * 600)
        + b"MAIL FROM:<app@local.test>\nRCPT TO:<ops@remote.test>\r\nDATA\r\n"
        + b"Subject: lf\n\nbody\n.\r\nMAIL FROM:<evil@x.test>\r\n.\nend\r\n.\r\nQUIT\r\n"
    )
    result = run("empath.cmd.sendmail", daemon, "-bs", stdin=script)
    codes = bs_replies(result.stdout)
    assert [c[:3] for c in codes] == ["220", "250", "500", "250", "250", "354", "250", "221"]  # 500: line too long
    [(queue_id, _)] = daemon.messages()
    stored = b"Subject: lf\r\n\r\nbody\r\n.\r\nMAIL FROM:<evil@x.test>\r\n.\r\nend\r\n"
    assert daemon.body(queue_id).endswith(stored)
    assert result.returncode == 0


def test_bs_quit_with_a_transaction_open_queues_nothing_and_exits_0(make_daemon):
    """QUIT ends the dialogue as the client asked: a transaction it began and left
    is dropped, as it is over a socket, and that is no error of the input."""
    daemon = make_daemon()
    daemon.write_config()
    script = b"HELO app.local\r\nMAIL FROM:<app@local.test>\r\nRCPT TO:<ops@remote.test>\r\nQUIT\r\n"
    result = run("empath.cmd.sendmail", daemon, "-bs", stdin=script)
    assert result.returncode == 0 and result.stderr == b""
    assert bs_replies(result.stdout)[-1] == "221 2.0.0"
    assert not (daemon.data_dir / "queue.sqlite3").exists()  # nothing queued


def test_bs_with_an_output_it_cannot_write_says_so_and_exits_70(make_daemon, tmp_path):
    """stdout that fails otherwise than by closing (here: opened for reading only) is
    no hang-up of the client: one line on stderr and EX_SOFTWARE, never a traceback."""
    daemon = make_daemon()
    daemon.write_config()
    unwritable = tmp_path / "out"
    unwritable.write_bytes(b"")
    env = dict(os.environ, EMPATH_CONFIG=str(daemon.config_path))
    with unwritable.open("rb") as stdout:
        result = subprocess.run(
            [sys.executable, "-m", "empath.cmd.sendmail", "-bs"],
            input=b"QUIT\r\n",
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            timeout=30,
        )
    assert result.returncode == 70
    assert result.stderr.startswith(b"sendmail: internal error: OSError: ") and b"Traceback" not in result.stderr


def test_swaks_through_a_pipe_with_the_daemon_running(make_daemon):
    with Peer("127.0.0.11") as peer:
        daemon = routed_to(make_daemon, peer).start()
        command = f"{sys.executable} -m empath.cmd.sendmail -C {daemon.config_path} -bs"
        swaks = subprocess.run(
            ["swaks", "--pipe", command, "--pipeline", "--from", "app@local.test", "--to", "ops@remote.test"],
            capture_output=True,
            cwd=ROOT,
            timeout=60,
        )
        assert swaks.returncode == 0, swaks.stdout.decode() + swaks.stderr.decode()
        assert b"queued as" in swaks.stdout
        [transaction] = peer.wait_for_transactions(1, timeout=10)  # nudged: delivered at once
        assert transaction.sender == "app@local.test" and transaction.recipients == ["ops@remote.test"]
        assert b"Received: by mx.test.example (Empath, from user " in transaction.data
        assert not peer.violations


def test_bs_times_out_a_silent_client_and_answers_451_when_the_queue_cannot_take_mail(make_daemon, tmp_path):
    daemon = make_daemon(timeouts={"command": "1s"})
    daemon.write_config()
    env = dict(os.environ, EMPATH_CONFIG=str(daemon.config_path))
    silent = subprocess.Popen(
        [sys.executable, "-m", "empath.cmd.sendmail", "-bs"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    silent.stdin.write(b"EHLO app.local\r\n")
    silent.stdin.flush()  # and then nothing more, with stdin left open
    silent.wait(timeout=20)  # not communicate(): that would close stdin, an end of input rather than silence
    out, err = silent.stdout.read(), silent.stderr.read()
    for stream in (silent.stdin, silent.stdout, silent.stderr):
        stream.close()
    assert silent.returncode == 75 and bs_replies(out)[-1] == "421 4.4.2" and b"timed out" in err

    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    broken = make_daemon(server={"data_dir": str(blocked)})
    broken.write_config()
    script = b"HELO app.local\r\nMAIL FROM:<app@local.test>\r\nRCPT TO:<ops@remote.test>\r\nDATA\r\n"
    result = run("empath.cmd.sendmail", broken, "-bs", stdin=script + BS_MESSAGE % b"x" + b"QUIT\r\n")
    assert bs_replies(result.stdout)[-2:] == ["451 4.3.0", "221 2.0.0"] and result.returncode == 0
    assert b"sendmail: cannot queue the message in " in result.stderr and b"Traceback" not in result.stderr
