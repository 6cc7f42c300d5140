"""STARTTLS command injection: CVE-2011-0411 (Postfix) and its class (CVE-2021-33515 and others).

A man in the middle appends commands to the client's ``STARTTLS`` in the same
packet. A server that reads them from its buffer after the handshake runs
them as if the client had sent them inside TLS: it can reset the
transaction, set a sender, or answer with replies the real client then
takes for its own.

Empath drops whatever was buffered when the handshake starts, logs it as
``starttls_injection``, and forgets the session state learned in clear
(RFC 3207 §4.2), so the client must say EHLO again. A failure here means
that clear-text bytes were run as commands inside TLS, or that a reply to
them reached the client.
"""

import re

import pytest
from support import RawClient, raw_reply

from empath.smtp import replies

INJECTED = b"RSET\r\nMAIL FROM:<a@b>\r\n"


@pytest.fixture(scope="module")
def mx(make_module_daemon):
    return make_module_daemon().start()


def ehlo(client: RawClient) -> str:
    code, text = client.cmd("EHLO client.test")
    assert code == 250, text
    return text


def injections(daemon) -> list[str]:
    return [line for line in daemon.log().splitlines() if " starttls_injection " in line]


@pytest.mark.parametrize(
    ("listener", "mail_after_ehlo"),
    [("smtp", replies.SENDER_OK), ("submission", replies.AUTH_REQUIRED)],
)
def test_commands_pipelined_after_starttls_are_dropped(mx, certs, listener, mail_after_ehlo):
    seen = len(injections(mx))
    with RawClient(getattr(mx.ports, listener)) as client:
        assert client.reply()[0] == 220
        assert "STARTTLS" in ehlo(client).split("\n")
        client.send(b"STARTTLS\r\n" + INJECTED)
        assert client.reply() == raw_reply(replies.READY_TLS)
        client.starttls(certs.client_context())  # fails if anything came in clear after the 220
        # The first reply inside TLS answers our own command, and the
        # session has forgotten the EHLO given in clear.
        assert client.cmd("MAIL FROM:<a@b.test>") == raw_reply(replies.NEED_HELO)
        extensions = ehlo(client).split("\n")
        assert "STARTTLS" not in extensions
        assert "AUTH PLAIN LOGIN" in extensions
        # The injected MAIL did not open a transaction (that would give NESTED_MAIL).
        assert client.cmd("MAIL FROM:<a@b.test>") == raw_reply(mail_after_ehlo)
        assert client.cmd("NOOP") == raw_reply(replies.NOOP)
    [line] = injections(mx)[seen:]
    assert "client=127.0.0.1" in line
    assert re.search(rf"\bdropped_bytes={len(INJECTED)}\b", line), line


def test_plain_starttls_logs_no_injection(mx, certs):
    """Control: a client that waits for the 220 is not reported."""
    seen = len(injections(mx))
    with RawClient(mx.ports.smtp) as client:
        assert client.reply()[0] == 220
        ehlo(client)
        assert client.cmd("STARTTLS") == raw_reply(replies.READY_TLS)
        client.starttls(certs.client_context())
        ehlo(client)
        assert client.cmd("QUIT") == raw_reply(replies.CLOSING)
        assert client.closed()
    assert len(injections(mx)) == seen


def test_clear_text_sent_after_the_220_breaks_the_handshake(mx):
    """Injected bytes that arrive after the server read STARTTLS are not run either.

    They reach the TLS layer, which fails the handshake; the session ends
    without answering them.
    """
    before = mx.messages()
    with RawClient(mx.ports.smtp) as client:
        assert client.reply()[0] == 220
        ehlo(client)
        assert client.cmd("STARTTLS") == raw_reply(replies.READY_TLS)
        client.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<bob@local.test>\r\nDATA\r\nx\r\n.\r\n")
        assert client.closed()
        # At most a TLS alert record came back (it starts with content type 21), never an SMTP reply.
        assert client.buf == b"" or client.buf[:1] == b"\x15", client.buf
    assert mx.messages() == before


def test_starttls_is_refused_inside_a_transaction(mx):
    """The session state that STARTTLS discards never includes an open transaction."""
    with RawClient(mx.ports.smtp) as client:
        assert client.reply()[0] == 220
        ehlo(client)
        assert client.cmd("MAIL FROM:<a@b.test>") == raw_reply(replies.SENDER_OK)
        code, text = client.cmd("STARTTLS")
        assert (code, text.split(" ", 1)[0]) == (replies.BAD_SEQUENCE.code, replies.BAD_SEQUENCE.status)
        assert client.cmd("RSET") == raw_reply(replies.RESET)
