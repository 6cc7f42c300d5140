"""SMTP smuggling: CVE-2023-51764 (Postfix), CVE-2023-51765 (Sendmail), CVE-2023-51766 (Exim).

An attacker ends the DATA of one message with a sequence that one server
reads as content and another reads as the end of data (``<LF>.<LF>``,
``<CR>.<CR><LF>`` and the like), and puts a second SMTP transaction after it.
A server that relays such a message unchanged lets the next hop see a second,
smuggled message with a forged sender that passes SPF for the relay.

Empath ends DATA only on ``<CR><LF>.<CR><LF>`` and refuses a bare CR or LF
anywhere in the data with BARE_NEWLINE, closing the connection. A failure
here means that Empath either queued a message carrying a fake end of data
(which it would relay to a next hop that may be vulnerable), or read a
fake end of data itself and ran the smuggled commands.
"""

import pytest
from support import RawClient, raw_reply

from empath.smtp import replies

SMUGGLED = b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@local.test>\r\nDATA\r\nsmuggled\r\n.\r\n"
REAL_END = b"\r\n.\r\n"
BARE_ENDINGS = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r.\n"]
NUL_ENDINGS = [b"\r\n\x00.\r\n", b"\r\n.\x00\r\n"]


@pytest.fixture(scope="module")
def mx(make_module_daemon):
    return make_module_daemon().start()


def start_data(port: int, sender: str) -> RawClient:
    """A session that has just been told 354 for one local recipient."""
    client = RawClient(port)
    assert client.reply() == raw_reply(replies.GREETING.format(hostname="mx.test.example"))
    assert client.cmd("EHLO client.test")[0] == 250
    assert client.cmd(f"MAIL FROM:<{sender}>") == raw_reply(replies.SENDER_OK)
    assert client.cmd("RCPT TO:<bob@local.test>") == raw_reply(replies.RECIPIENT_OK)
    assert client.cmd("DATA") == raw_reply(replies.START_DATA)
    return client


@pytest.mark.parametrize("ending", BARE_ENDINGS, ids=repr)
def test_bare_cr_or_lf_end_of_data_is_refused_and_closes(mx, ending):
    before = mx.messages()
    with start_data(mx.ports.smtp, "outer@sender.test") as client:
        client.send(b"Subject: outer\r\n\r\nhello" + ending + SMUGGLED + REAL_END)
        assert client.reply() == raw_reply(replies.BARE_NEWLINE)
        assert client.closed(), "the session must end after a bare CR or LF in the data"
        # Nothing after the refusal: the smuggled commands got no replies.
        assert client.buf == b""
    # The session is over, so anything it would have queued is committed by now.
    assert mx.messages() == before, "neither the outer nor a smuggled message may be queued"


@pytest.mark.parametrize("ending", NUL_ENDINGS, ids=repr)
def test_nul_next_to_the_end_of_data_is_refused_and_session_stays_in_step(mx, ending):
    before = mx.messages()
    with start_data(mx.ports.smtp, "outer@sender.test") as client:
        client.send(b"Subject: outer\r\n\r\nhello" + ending + SMUGGLED + REAL_END)
        # The NUL line is content, so the data ends at the smuggled "\r\n.\r\n"
        # and the smuggled MAIL, RCPT and DATA were only text of a refused message.
        assert client.reply() == raw_reply(replies.NUL_IN_DATA)
        # A refusal of this message only: not 521, which would say the server is closing.
        assert replies.NUL_IN_DATA.code == 554
        # What follows is read as commands: the empty line and the lone dot.
        assert client.reply() == raw_reply(replies.UNKNOWN_COMMAND)
        assert client.reply() == raw_reply(replies.UNKNOWN_COMMAND)
        assert client.cmd("NOOP") == raw_reply(replies.NOOP)
        # No transaction is open: the smuggled MAIL was never run.
        assert client.cmd("RCPT TO:<bob@local.test>") == raw_reply(replies.NEED_MAIL)
    assert mx.messages() == before, "neither the outer nor a smuggled message may be queued"


def test_the_same_fake_endings_are_refused_when_pipelined_with_the_commands(mx):
    """The whole transaction in one packet, as an attacker's script would send it."""
    before = mx.messages()
    with RawClient(mx.ports.smtp) as client:
        assert client.reply()[0] == 220
        assert client.cmd("EHLO client.test")[0] == 250
        client.send(
            b"MAIL FROM:<outer@sender.test>\r\nRCPT TO:<bob@local.test>\r\nDATA\r\n"
            b"Subject: outer\r\n\r\nhello\n.\r\n" + SMUGGLED + REAL_END
        )
        assert client.reply() == raw_reply(replies.SENDER_OK)
        assert client.reply() == raw_reply(replies.RECIPIENT_OK)
        assert client.reply() == raw_reply(replies.START_DATA)
        assert client.reply() == raw_reply(replies.BARE_NEWLINE)
        assert client.closed()
        assert client.buf == b""
    assert mx.messages() == before


def test_dot_stuffed_lines_arrive_unstuffed(mx):
    """Positive control: only a lone "." on a CRLF line ends the data."""
    with start_data(mx.ports.smtp, "dots@sender.test") as client:
        client.send(b"Subject: dots\r\n\r\n..\r\n..leading\r\n...\r\n. \r\nend\r\n.\r\n")
        code, text = client.reply()
        assert code == 250 and text.startswith("2.0.0 OK queued as "), (code, text)
        queue_id = text.rsplit(" ", 1)[1]
        # The session is still usable after a message.
        assert client.cmd("NOOP") == raw_reply(replies.NOOP)
    assert mx.recipients(queue_id) == ["bob@local.test"]
    body = mx.body(queue_id)
    assert body.endswith(b"Subject: dots\r\n\r\n.\r\n.leading\r\n..\r\n \r\nend\r\n")
    assert [sender for _, sender in mx.messages() if sender == "evil@x"] == []
