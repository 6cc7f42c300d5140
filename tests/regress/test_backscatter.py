"""Backscatter through unknown local recipients (issue 18's attack).

A stranger forges ``MAIL FROM:<victim@far.test>`` and sends to a local
address that does not exist. Accepting it and bouncing later mails the
whole message to the forged victim: backscatter, which gets an office's
address block-listed. With a recipients table for the domain, the unknown
recipient gets 550 5.1.1 at RCPT, nothing is queued, nobody is mailed, and
the refusal is one reject line; a known recipient is accepted, and an edit
of the table takes effect at the next RCPT, without a reload. The same
holds with verification by callout, where the internal server's own 550
(asked before the RCPT is answered) is what refuses it.
"""

import os

from peer import Peer
from support import RawClient, raw_reply, wait_for

from empath.smtp import replies


def test_an_unknown_local_recipient_is_refused_at_rcpt_not_bounced_to_a_forged_sender(make_daemon):
    daemon = make_daemon()
    table = daemon.directory / "local.test.recipients"
    table.write_text("known@local.test\n")
    daemon.sections['domains."local.test"'] = {"recipients": str(table)}
    daemon.start()
    client = RawClient(daemon.ports.smtp)  # 127.0.0.1: a stranger
    try:
        client.reply()
        assert client.cmd("EHLO stranger.test")[0] == 250
        assert client.cmd("MAIL FROM:<victim@far.test>")[0] == 250
        assert client.cmd("RCPT TO:<nosuchuser@local.test>") == raw_reply(replies.UNKNOWN_RECIPIENT)
        assert client.cmd("RCPT TO:<NoSuchUser@LOCAL.test>") == raw_reply(replies.UNKNOWN_RECIPIENT)
        assert client.cmd("DATA")[0] == 554  # no valid recipient: no message, so no bounce
        assert client.cmd("RSET")[0] == 250
        assert daemon.messages() == []

        assert client.cmd("MAIL FROM:<friend@far.test>")[0] == 250
        assert client.cmd("RCPT TO:<Known@local.test>")[0] == 250
        table.write_text("known@local.test\nnosuchuser@local.test\n")  # hired today
        os.utime(table, ns=(0, table.stat().st_mtime_ns + 10**9))
        assert client.cmd("RCPT TO:<nosuchuser@local.test>")[0] == 250
    finally:
        client.close()
    log = daemon.log_since_start()
    assert log.count("reject RCPT from unknown[127.0.0.1]: 550 5.1.1") == 2
    assert "to=<nosuchuser@local.test>" in log


def test_with_a_callout_the_internal_server_s_refusal_is_the_stranger_s_550(make_daemon):
    with Peer("127.0.0.11") as internal:
        internal.rcpt_reply = "550 5.1.1 User unknown"
        internal.rcpt_replies["known@local.test"] = "250 2.1.5 Ok"
        daemon = make_daemon()
        daemon.sections['domains."local.test"'] = {"route": [f"127.0.0.11:{internal.port}"], "verify": "callout"}
        daemon.start()
        with RawClient(daemon.ports.smtp) as client:
            client.reply()
            assert client.cmd("EHLO stranger.test")[0] == 250
            assert client.cmd("MAIL FROM:<victim@far.test>")[0] == 250
            assert client.cmd("RCPT TO:<nosuchuser@local.test>") == raw_reply(replies.UNKNOWN_RECIPIENT)
            assert client.cmd("DATA")[0] == 554
        assert daemon.messages() == []
        assert internal.transactions == []  # asked, never sent anything: no bounce can follow
        senders = [line for conn in internal.connections for line in conn.lines if line.startswith(b"MAIL")]
        assert senders == [b"MAIL FROM:<>"]


def test_a_stranger_s_message_refused_later_is_bounced_with_its_headers_only(make_daemon):
    """Taken, then refused by the internal server: the bounce goes to a sender who may be
    forged, so it carries the header lines, never the body (no amplification)."""
    with Peer("127.0.0.11") as internal:
        internal.rcpt_reply = "550 5.2.1 mailbox disabled"
        daemon = make_daemon(delivery={"connect_timeout": "2s", "command_timeout": "5s"})
        daemon.sections['domains."local.test"'] = {"route": [f"127.0.0.11:{internal.port}"]}
        daemon.start()
        for source, sender in (("127.0.0.1", "victim@far.test"), ("127.0.0.2", "printer@example.test")):
            with RawClient(daemon.ports.smtp, source=source) as client:
                client.reply()
                client.cmd("EHLO client.test")
                assert client.cmd(f"MAIL FROM:<{sender}> RET=FULL")[0] == 250
                assert client.cmd("RCPT TO:<gone@local.test>")[0] == 250
                assert client.cmd("DATA")[0] == 354
                assert client.cmd(b"Subject: offer\r\n\r\nTHE WHOLE BODY\r\n.")[0] == 250

        def bounces() -> dict[str, bytes]:
            rows = daemon.query("SELECT m.queue_id, r.address FROM message m JOIN recipient r USING (queue_id)")
            return {
                address: daemon.body(qid)
                for qid, address in rows
                if address in ("victim@far.test", "printer@example.test")
            }

        wait_for(lambda: len(bounces()) == 2, what="both bounces queued")
        to_stranger, to_ours = bounces()["victim@far.test"], bounces()["printer@example.test"]
        assert b"text/rfc822-headers" in to_stranger and b"Subject: offer" in to_stranger
        assert b"THE WHOLE BODY" not in to_stranger
        assert b"message/rfc822" in to_ours and b"THE WHOLE BODY" in to_ours  # our own client's, whole
