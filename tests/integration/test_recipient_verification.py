"""Recipient verification by callout, end to end (issue 18).

The local domain's route is a real next hop on loopback: our scriptable
Peer (which refuses some recipients and records every line it is sent) or
Postfix's smtp-sink (which refuses every RCPT with ``-f RCPT``). The daemon
asks it ``MAIL FROM:<>`` / ``RCPT TO`` / ``RSET`` before answering a RCPT,
and keeps the answer in the queue database.
"""

import time

import pytest
from peer import HANG, SMTP_SINK, Peer, SmtpSink
from support import RawClient, empathctl, free_port, raw_reply, scrape, value, wait_for

from empath.smtp import replies

STRANGER_SENDER = "victim@far.test"


def callout_daemon(make_daemon, port: int, host: str = "127.0.0.11", **sections):
    """A daemon whose local.test is verified by asking ``host``:``port``, its route."""
    domain = {"route": [f"{host}:{port}"], "verify": "callout"}
    return make_daemon(
        delivery={"connect_timeout": "2s", "command_timeout": "5s", "retry_first": "1s", "idle_time": "5s"},
        verification={"timeout": "2s"},
        **{'domains."local.test"': domain},
        **sections,
    )


def rcpt(daemon, *addresses: str) -> list[tuple[int, str]]:
    """A stranger's transaction: the reply to each RCPT (then RSET)."""
    with RawClient(daemon.ports.smtp) as client:
        client.reply()
        assert client.cmd("EHLO stranger.test")[0] == 250
        assert client.cmd(f"MAIL FROM:<{STRANGER_SENDER}>")[0] == 250
        got = [client.cmd(f"RCPT TO:<{a}>") for a in addresses]
        client.cmd("RSET")
        return got


def probes(peer: Peer) -> list[str]:
    """The RCPT lines of transactions that never reached DATA: the callouts."""
    out = []
    for conn in peer.connections:
        for line in conn.lines:
            if line.upper().startswith(b"RCPT TO:"):
                out.append(line.decode())
    return out


def test_unknown_is_550_at_rcpt_known_is_taken_and_delivered_and_answers_are_kept(make_daemon):
    with Peer("127.0.0.11") as peer:
        peer.rcpt_replies["nobody@local.test"] = "550 5.1.1 <nobody@local.test>: no such mailbox"
        daemon = callout_daemon(make_daemon, peer.port).start()

        assert rcpt(daemon, "nobody@local.test") == [raw_reply(replies.UNKNOWN_RECIPIENT)]
        assert daemon.messages() == []
        # The callout: the null sender, the recipient, and RSET; nothing more.
        [probe] = peer.connections
        assert probe.commands[1:] == ["MAIL", "RCPT", "RSET"]
        assert probe.lines[1] == b"MAIL FROM:<>" and probe.lines[2] == b"RCPT TO:<nobody@local.test>"
        assert peer.transactions == []

        # Known: taken, and delivered to the same next hop.
        with RawClient(daemon.ports.smtp) as client:
            client.reply()
            client.cmd("EHLO stranger.test")
            assert client.cmd("MAIL FROM:<friend@far.test>")[0] == 250
            assert client.cmd("RCPT TO:<Bob@local.test>")[0] == 250
            assert client.cmd("DATA")[0] == 354
            assert client.cmd(b"Subject: hi\r\n\r\nhello\r\n.")[0] == 250
        [t] = peer.wait_for_transactions(1)
        assert t.recipients == ["Bob@local.test"]

        asked = len(probes(peer))
        # Asked again: both answers come from the cache, without a connection to the next hop.
        assert rcpt(daemon, "nobody@local.test", "Bob@local.test") == [
            raw_reply(replies.UNKNOWN_RECIPIENT),
            raw_reply(replies.RECIPIENT_OK),
        ]
        assert len(probes(peer)) == asked
        rows = daemon.query("SELECT address, found, reply FROM verified ORDER BY address")
        assert [(a, f) for a, f, _ in rows] == [("Bob@local.test", 1), ("nobody@local.test", 0)]
        assert "no such mailbox" in rows[1][2] and "127.0.0.11" in rows[1][2]
        # The server decides whether case matters: another spelling is asked about, and kept apart.
        assert rcpt(daemon, "NOBODY@local.test") == [raw_reply(replies.UNKNOWN_RECIPIENT)]  # this one says so
        assert probes(peer)[-1] == "RCPT TO:<NOBODY@local.test>"
        assert not peer.violations and not peer.errors

    log = daemon.log_since_start()
    assert log.count("reject RCPT from unknown[127.0.0.1]: 550 5.1.1") == 3
    assert "callout to=nobody@local.test result=unknown" in log


def test_the_answers_outlive_a_restart(make_daemon):
    with Peer("127.0.0.11") as peer:
        peer.rcpt_replies["nobody@local.test"] = "550 5.1.1 no such mailbox"
        daemon = callout_daemon(make_daemon, peer.port).start()
        assert [r[0] for r in rcpt(daemon, "nobody@local.test", "bob@local.test")] == [550, 250]
        wait_for(lambda: len(daemon.query("SELECT 1 FROM verified")) == 2, what="both answers kept")
        asked = len(probes(peer))
        daemon.stop()
        daemon.start()
        assert [r[0] for r in rcpt(daemon, "nobody@local.test", "bob@local.test")] == [550, 250]
        assert len(probes(peer)) == asked


def test_a_next_hop_that_is_down_or_slow_gets_450_never_250(make_daemon):
    with Peer("127.0.0.11") as peer:
        daemon = callout_daemon(make_daemon, peer.port)
        daemon.sections["delivery"]["idle_time"] = "0s"  # a connection per callout, for peer.once
        daemon.start()
        peer.stop()  # connection refused
        assert rcpt(daemon, "bob@local.test") == [raw_reply(replies.UNVERIFIED_RECIPIENT)]
        peer.start()
        peer.rcpt_replies["carol@local.test"] = "451 4.7.1 greylisted, try later"
        assert rcpt(daemon, "carol@local.test") == [raw_reply(replies.UNVERIFIED_RECIPIENT)]
        peer.once(fail_at=("RCPT", 1, HANG))
        started = time.monotonic()
        assert rcpt(daemon, "dave@local.test") == [raw_reply(replies.UNVERIFIED_RECIPIENT)]
        assert time.monotonic() - started < 4  # verification.timeout is 2s
        assert daemon.messages() == []
        # No answer is kept for any of them: the next RCPT asks again.
        assert daemon.query("SELECT address FROM verified") == []
    log = daemon.log_since_start()
    assert log.count("reject RCPT from unknown[127.0.0.1]: 450 4.1.1") == 3
    assert "callout to=bob@local.test result=unverified" in log


def test_postmaster_and_our_own_clients_recipients_are_never_asked_about(make_daemon):
    with Peer("127.0.0.11") as peer:
        peer.rcpt_reply = "550 5.1.1 no such mailbox"
        daemon = callout_daemon(make_daemon, peer.port).start()
        assert [r[0] for r in rcpt(daemon, "postmaster@local.test", "Postmaster")] == [250, 250]
        assert probes(peer) == []
        # A trusted client's is taken as given (a typo bounces to the office's own sender).
        with RawClient(daemon.ports.smtp, source="127.0.0.2") as client:
            client.reply()
            client.cmd("EHLO office.test")
            client.cmd("MAIL FROM:<printer@local.test>")
            assert client.cmd("RCPT TO:<typo@local.test>") == raw_reply(replies.RECIPIENT_OK)
        assert probes(peer) == []


def test_helper_processes_verify_and_share_the_answers(make_daemon):
    with Peer("127.0.0.11") as peer:
        peer.rcpt_replies["nobody@local.test"] = "550 5.1.1 no such mailbox"
        daemon = callout_daemon(make_daemon, peer.port, server={"smtp_processes": 2}).start()
        assert [r[0] for r in rcpt(daemon, "nobody@local.test", "bob@local.test")] == [550, 250]
        wait_for(lambda: len(daemon.query("SELECT 1 FROM verified")) == 2, what="both answers kept")
        asked = len(probes(peer))
        for _ in range(4):  # sessions land on either helper; all find the answers kept
            assert [r[0] for r in rcpt(daemon, "nobody@local.test", "bob@local.test")] == [550, 250]
        assert len(probes(peer)) == asked


@pytest.mark.skipif(SMTP_SINK is None, reason="smtp-sink (Debian package postfix) is not installed")
def test_postfix_smtp_sink_as_the_next_hop(make_daemon, tmp_path):
    """Postfix's smtp-sink, refusing every RCPT with 550 (-f RCPT), then taking them all."""
    refusing = SmtpSink(tmp_path / "refusing", host="127.0.0.14", args=("-a", "-C", "-F", "-f", "RCPT"))
    with refusing:
        daemon = callout_daemon(make_daemon, refusing.port, host="127.0.0.14").start()
        assert rcpt(daemon, "nobody@local.test") == [raw_reply(replies.UNKNOWN_RECIPIENT)]
        daemon.stop()
    with SmtpSink(tmp_path / "taking", host="127.0.0.15") as taking:
        daemon.sections['domains."local.test"']["route"] = [f"127.0.0.15:{taking.port}"]
        daemon.start()
        assert [r[0] for r in rcpt(daemon, "alice@local.test")] == [250]
        assert refusing.messages() == [] and taking.messages() == []  # asked, nothing sent


def test_a_next_hop_without_pipelining_and_the_metrics(make_daemon):
    port = free_port()
    with Peer("127.0.0.11") as peer:
        peer.extensions = [e for e in peer.extensions if e != "PIPELINING"]
        peer.rcpt_replies["nobody@local.test"] = "550 5.1.1 no such mailbox"
        daemon = callout_daemon(make_daemon, peer.port, server={"metrics_address": f"127.0.0.1:{port}"}).start()
        assert [r[0] for r in rcpt(daemon, "nobody@local.test", "bob@local.test")] == [550, 250]
        wait_for(lambda: len(daemon.query("SELECT 1 FROM verified")) == 2, what="both answers kept")
        assert [r[0] for r in rcpt(daemon, "nobody@local.test")] == [550]
        assert not peer.violations and not peer.errors  # nothing pipelined to it
    samples = scrape(port)
    name = "empath_smtp_recipient_verifications_total"
    assert value(samples, name, source="callout", result="unknown") == 1
    assert value(samples, name, source="callout", result="exists") == 1
    assert value(samples, name, source="cache", result="unknown") == 1
    assert value(samples, "empath_smtp_commands_rejected_total", reason="unknown_recipient") == 2


def test_empathctl_verify_says_on_whose_word_an_address_is_taken(make_daemon):
    with Peer("127.0.0.11") as peer:
        peer.rcpt_replies["nobody@local.test"] = "550 5.1.1 no such mailbox"
        daemon = callout_daemon(make_daemon, peer.port)
        table = daemon.directory / "example.test.recipients"
        table.write_text("alice@example.test\n")
        daemon.sections['domains."example.test"'] = {"recipients": str(table)}
        daemon.start()

        def verify(*args: str) -> str:
            done = empathctl(daemon, "verify", *args)
            assert done.returncode == 0, done.stderr
            return done.stdout

        assert (
            verify("nobody@local.test")
            == "nobody@local.test: not known yet (nothing kept: the next RCPT asks the next hop)\n"
        )
        assert probes(peer) == []  # looking asks nobody
        assert verify("nobody@local.test", "--ask").startswith("nobody@local.test: unknown (asked now: 127.0.0.11[")
        wait_for(lambda: "unknown (callout answer kept" in verify("nobody@local.test"), what="the answer kept")
        assert "said: 550 5.1.1 no such mailbox" in verify("nobody@local.test")
        assert verify("nobody@local.test", "--forget").startswith(
            "nobody@local.test: not known yet (answer kept forgotten;"
        )
        assert verify("alice@example.test") == f"alice@example.test: exists (recipients table {table})\n"
        assert verify("bob@example.test") == f"bob@example.test: unknown (recipients table {table})\n"
        assert verify("postmaster@local.test").startswith("postmaster@local.test: exists (postmaster is always taken")
        assert verify("x@far.test").startswith("x@far.test: far.test is not a local domain")
        done = empathctl(daemon, "verify", "not an address")
        assert done.returncode == 1 and "argument 'address'" in done.stderr
