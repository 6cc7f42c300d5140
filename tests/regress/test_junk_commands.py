"""Commands that move no mail, without end (hostile-internet issue, point 1).

1,600 NOOP, RSET, VRFY and HELP in one session were all answered: a client
could hold a slot for ever by chattering. Postfix stops at 100. Now past
junk_command_limit (100 by default) such a command ends the session with
421, and a session that queues mail starts its count afresh.
"""

from support import RawClient, raw_reply

from empath.smtp import replies


def test_the_hundred_and_first_command_without_mail_ends_the_session(make_daemon):
    daemon = make_daemon(tls=False).start()
    with RawClient(daemon.ports.smtp) as client:
        assert client.reply()[0] == 220
        assert client.cmd("EHLO chatty.test")[0] == 250
        commands = ["NOOP", "RSET", "VRFY postmaster", "HELP"] * 25
        client.send("".join(c + "\r\n" for c in commands).encode())  # pipelined: all 100 at once
        assert all(client.reply()[0] < 400 for _ in commands)
        assert client.cmd("NOOP") == raw_reply(replies.TOO_MANY_JUNK)
        assert client.closed()
    assert " reject NOOP from unknown[127.0.0.1]: 421 4.7.0 Too many commands without mail" in daemon.log()


def test_a_client_that_moves_mail_may_reset_between_messages_without_end(make_daemon):
    daemon = make_daemon(tls=False, limits={"junk_command_limit": 2}).start()
    with RawClient(daemon.ports.smtp) as client:
        assert client.reply()[0] == 220
        assert client.cmd("EHLO bulk.test")[0] == 250
        for n in range(4):
            assert client.cmd("RSET")[0] == 250
            assert client.cmd("RSET")[0] == 250
            assert client.cmd("MAIL FROM:<a@far.test>")[0] == 250
            assert client.cmd("RCPT TO:<b@local.test>")[0] == 250
            assert client.cmd("DATA")[0] == 354
            assert client.cmd(f"Subject: {n}\r\n\r\nbody\r\n.")[0] == 250
        assert client.cmd("QUIT")[0] == 221
    assert len(daemon.messages()) == 4
