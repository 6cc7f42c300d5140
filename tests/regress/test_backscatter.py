"""Backscatter through unknown local recipients (issue 18's attack).

A stranger forges ``MAIL FROM:<victim@far.test>`` and sends to a local
address that does not exist. Accepting it and bouncing later mails the
whole message to the forged victim: backscatter, which gets an office's
address block-listed. With a recipients table for the domain, the unknown
recipient gets 550 5.1.1 at RCPT, nothing is queued, nobody is mailed, and
the refusal is one reject line; a known recipient is accepted, and an edit
of the table takes effect at the next RCPT, without a reload.
"""

import os

from support import RawClient, raw_reply

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
