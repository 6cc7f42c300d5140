"""Bare LF line ends: the office's old printers and apps send them.

From trusted networks and authenticated sessions a bare LF ends a line, in
commands and in the message (stored with CRLF), but a dot line next to one
never ends the data, so nothing can be smuggled after it; strangers get 5xx
and a hang-up as before (tests/regress/test_smtp_smuggling.py); a listener
with `strict_line_ends = true` refuses them from everyone.
"""

import smtplib

from support import RawClient, free_port, raw_reply

from empath.smtp import replies

TRUSTED = "127.0.0.2"  # the test config's trusted network
PASSWORD = "printer-Pa55word"
# A scanner's dialogue in LF alone but for the last line and the final dot, with a
# dot line and a command inside its message that must stay content.
DIALOGUE = b"EHLO scanner.office\nMAIL FROM:<scanner@local.test>\nRCPT TO:<ops@remote.test>\nDATA\n"
MESSAGE = b"Subject: scan\n\npage 1\n.\nMAIL FROM:<evil@x.test>\nlast line\r\n"
STORED = b"Subject: scan\r\n\r\npage 1\r\n.\r\nMAIL FROM:<evil@x.test>\r\nlast line\r\n"


def send_dialogue(client: RawClient) -> list[int]:
    """The dialogue and the message, then the final dot; the reply codes."""
    codes = [client.reply()[0]]
    for line in DIALOGUE.splitlines(keepends=True):
        client.send(line)
        codes.append(client.reply()[0])
    client.send(MESSAGE + b".\r\n")
    codes.append(client.reply()[0])
    return codes


def test_a_trusted_client_may_end_its_lines_with_a_bare_lf(make_daemon):
    daemon = make_daemon().start()
    client = RawClient(daemon.ports.smtp, source=TRUSTED)
    try:
        assert send_dialogue(client) == [220, 250, 250, 250, 354, 250]
        assert client.cmd("QUIT") == raw_reply(replies.CLOSING)
    finally:
        client.close()
    [(queue_id, _)] = daemon.messages()
    assert daemon.body(queue_id).endswith(STORED)


def test_an_authenticated_client_may_too(make_daemon, certs):
    daemon = make_daemon()
    daemon.add_user("scanner", PASSWORD)
    daemon.start()
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:  # 127.0.0.1: a stranger
        client.ehlo("scanner.office")
        client.starttls(context=certs.client_context())
        client.ehlo("scanner.office")
        client.login("scanner", PASSWORD)
        for line in DIALOGUE.splitlines(keepends=True)[1:]:
            client.send(line)
            assert client.getreply()[0] in (250, 354)
        client.send(MESSAGE + b".\r\n")
        assert client.getreply()[0] == 250
    [(queue_id, _)] = daemon.messages()
    assert daemon.body(queue_id).endswith(STORED)


def test_a_strict_listener_refuses_a_bare_lf_even_from_a_trusted_client(make_daemon):
    port = free_port()
    daemon = make_daemon()
    daemon.extra = f'\n[[listeners]]\naddress = "127.0.0.1:{port}"\nmode = "smtp"\nstrict_line_ends = true\n'
    daemon.start()
    client = RawClient(port, source=TRUSTED)
    try:
        client.reply()
        client.send(b"EHLO scanner.office\n")
        assert client.reply() == raw_reply(replies.BARE_LF_IN_COMMAND)
        assert client.cmd("EHLO scanner.office")[0] == 250
        assert client.cmd("MAIL FROM:<scanner@local.test>")[0] == 250
        assert client.cmd("RCPT TO:<ops@remote.test>")[0] == 250
        assert client.cmd("DATA")[0] == 354
        client.send(MESSAGE + b".\r\n")
        assert client.reply() == raw_reply(replies.BARE_NEWLINE)
        assert client.closed()
    finally:
        client.close()
    assert daemon.messages() == []
