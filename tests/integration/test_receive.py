"""Receiving mail over SMTP: relay control, queueing, trace headers, extensions, logging."""

import re
import smtplib

import pytest
from support import RawClient, lib_reply, raw_reply

from empath.smtp import replies


def queued_id(message: bytes | str) -> str:
    text = message.decode() if isinstance(message, bytes) else message
    m = re.fullmatch(r"2\.0\.0 OK queued as (\S+)", text)
    assert m, f"not a QUEUED reply: {text!r}"
    return m.group(1)


def send(port: int, sender: str, recipients: list[str], body: bytes, **kwargs) -> str:
    """Send one message with smtplib; return the queue id from the 250."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo("client.test")
        client.mail(sender, kwargs.get("mail_options", []))
        for rcpt in recipients:
            code, _ = client.rcpt(rcpt, kwargs.get("rcpt_options", []))
            assert code == replies.RECIPIENT_OK.code
        code, message = client.data(body)
    assert code == replies.QUEUED.code
    return queued_id(message)


def split_received(stored: bytes) -> tuple[bytes, bytes]:
    """The stored message as (our Received header, everything after it)."""
    assert stored.startswith(b"Received: ")
    end = 0
    while True:
        end = stored.index(b"\r\n", end) + 2
        if stored[end : end + 1] not in (b" ", b"\t"):
            return stored[:end], stored[end:]


BODY = b"From: alice@sender.test\r\nTo: bob@local.test\r\nSubject: hi\r\n\r\nhello\r\n"


def test_local_domain_from_untrusted_client_is_accepted_and_queued(daemon):
    queue_id = send(daemon.ports.smtp, "alice@sender.test", ["bob@local.test"], BODY)
    assert daemon.messages() == [(queue_id, "alice@sender.test")]
    assert daemon.recipients(queue_id) == ["bob@local.test"]
    header, rest = split_received(daemon.body(queue_id))
    assert rest == BODY
    [(client_address, helo, listener)] = daemon.query(
        "SELECT client_address, client_helo, listener FROM message WHERE queue_id = ?", queue_id
    )
    assert (client_address, helo) == ("127.0.0.1", "client.test")
    assert listener.startswith("smtp@127.0.0.1:")


def test_remote_domain_from_untrusted_client_is_relay_denied(daemon):
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
        client.ehlo("client.test")
        assert client.mail("alice@sender.test")[0] == 250
        assert client.rcpt("carol@remote.test") == lib_reply(replies.RELAY_DENIED)
        # A local recipient in the same transaction is still fine, and only it is queued.
        assert client.rcpt("bob@local.test")[0] == 250
        code, message = client.data(BODY)
    assert code == 250
    queue_id = queued_id(message)
    assert daemon.recipients(queue_id) == ["bob@local.test"]


def test_relay_trick_addresses_are_denied(daemon):
    client = RawClient(daemon.ports.smtp)
    try:
        assert client.reply()[0] == 220
        assert client.cmd("EHLO client.test")[0] == 250
        assert client.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        for trick in ("carol%remote.test@local.test", '"carol@remote.test"@local.test', "carol@[192.0.2.1]"):
            code, text = client.cmd(f"RCPT TO:<{trick}>")
            assert (code, text) == raw_reply(replies.RELAY_DENIED), trick
    finally:
        client.close()
    assert daemon.messages() == []


def test_many_recipients_are_stored_once_each_and_received_names_none(daemon):
    rcpts = ["bob@local.test", "carol@example.test", "dave@local.test"]
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("alice@sender.test")
        for rcpt in [*rcpts, "bob@local.test", "BOB@local.test"]:
            assert client.rcpt(rcpt)[0] == 250
        code, message = client.data(BODY)
    queue_id = queued_id(message)
    stored = daemon.recipients(queue_id)
    # The exact duplicate is collapsed; every other address is kept once.
    assert stored.count("bob@local.test") == 1
    assert set(rcpts) <= set(stored)
    assert len(stored) == len(set(stored))
    header, rest = split_received(daemon.body(queue_id))
    assert rest == BODY
    # No Bcc leak: with several recipients, the Received header names none of them.
    assert b"for <" not in header
    for rcpt in rcpts:
        assert rcpt.encode() not in header.lower()


def test_received_header_names_the_single_recipient_and_the_queue_id(daemon):
    queue_id = send(daemon.ports.smtp, "alice@sender.test", ["bob@local.test"], BODY)
    header, _ = split_received(daemon.body(queue_id))
    text = header.decode()
    assert text.startswith("Received: from client.test ([127.0.0.1])\r\n")
    [(trace_id,)] = daemon.query("SELECT trace_id FROM message WHERE queue_id = ?", queue_id)
    assert f"\tby mx.test.example (Empath) with ESMTP id {queue_id}\r\n" in text
    assert f"\t(Empath trace {trace_id} on mx.test.example)\r\n" in text
    assert text.count("for <") == 1
    assert "\tfor <bob@local.test>; " in text


def test_received_with_keyword_for_helo_esmtps_and_esmtpsa(make_daemon, certs):
    daemon = make_daemon()
    daemon.add_user("alice", "s3cret-pass")
    daemon.start()
    ctx = certs.client_context()

    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
        client.helo("old.client.test")
        client.sendmail("alice@sender.test", ["bob@local.test"], BODY)
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
        client.starttls(context=ctx)
        client.sendmail("alice@sender.test", ["bob@local.test"], BODY)
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
        client.starttls(context=ctx)
        client.login("alice", "s3cret-pass")
        client.sendmail("alice@sender.test", ["bob@local.test"], BODY)

    withs = []
    for queue_id, _ in daemon.messages():
        header, _ = split_received(daemon.body(queue_id))
        m = re.search(rb"\(Empath\) with (\S+) id ", header)
        withs.append(m.group(1).decode())
        tls_comment = re.search(rb"\(using (TLSv1\.[23]) with cipher \S+\)", header)
        assert (tls_comment is not None) == (withs[-1] != "SMTP")
    assert withs == ["SMTP", "ESMTPS", "ESMTPSA"]
    [(auth_user,)] = daemon.query("SELECT auth_user FROM message WHERE auth_user IS NOT NULL")
    assert auth_user == "alice"


def test_8bitmime_body_is_stored_byte_exact(daemon):
    body = (
        b"Subject: caf\xc3\xa9\r\n"
        b"Content-Type: text/plain; charset=latin-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n"
        b"na\xefve \xe9l\xe8ve \xff\x80\x01\r\n"
        b"..a line that began with a dot\r\n"
        b"trailing spaces   \r\n"
        b"\r\n"
    )
    queue_id = send(daemon.ports.smtp, "alice@sender.test", ["bob@local.test"], body, mail_options=["BODY=8BITMIME"])
    _, rest = split_received(daemon.body(queue_id))
    # smtplib dot-stuffs "..a line" to "...a line"; the server must undo exactly that.
    assert rest == body
    [(body_type, size)] = daemon.query("SELECT body_type, size FROM message WHERE queue_id = ?", queue_id)
    assert body_type == "8BITMIME"
    assert size == len(daemon.body(queue_id))


def test_smtputf8_address_is_accepted_with_the_parameter(daemon):
    sender, rcpt = "j\u00f6rg@absender.test", "\u00fcser@local.test"
    body = "Subject: gr\u00fc\u00dfe\r\n\r\nhall\u00f6\r\n".encode()
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
        client.ehlo("client.test")
        assert client.has_extn("smtputf8")
        refused = client.sendmail(sender, [rcpt], body, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    assert refused == {}
    [(queue_id, stored_sender)] = daemon.messages()
    assert stored_sender == sender
    assert daemon.recipients(queue_id) == [rcpt]
    [(smtputf8,)] = daemon.query("SELECT smtputf8 FROM message WHERE queue_id = ?", queue_id)
    assert smtputf8
    header, rest = split_received(daemon.body(queue_id))
    assert rest == body
    assert b" with UTF8SMTP id " in header


@pytest.mark.parametrize(
    "mail, rcpt",
    [
        ("MAIL FROM:<j\u00f6rg@absender.test>", None),
        ("MAIL FROM:<alice@sender.test>", "RCPT TO:<\u00fcser@local.test>"),
    ],
)
def test_non_ascii_address_without_smtputf8_is_refused(daemon, mail, rcpt):
    client = RawClient(daemon.ports.smtp)
    try:
        assert client.reply()[0] == 220
        assert client.cmd("EHLO client.test")[0] == 250
        if rcpt is None:
            assert client.cmd(mail.encode()) == raw_reply(replies.NEED_SMTPUTF8)
        else:
            assert client.cmd(mail)[0] == 250
            assert client.cmd(rcpt.encode()) == raw_reply(replies.NEED_SMTPUTF8)
        assert client.cmd("QUIT")[0] == 221
    finally:
        client.close()
    assert daemon.messages() == []


def test_dsn_parameters_are_stored(daemon):
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
        client.ehlo("client.test")
        assert client.has_extn("dsn")
        assert client.mail("alice@sender.test", ["RET=HDRS", "ENVID=batch+2B42"])[0] == 250
        assert client.rcpt("bob@local.test", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;bob+2Bx@local.test"])[0] == 250
        assert client.rcpt("carol@local.test", ["NOTIFY=NEVER"])[0] == 250
        assert client.rcpt("dave@local.test")[0] == 250
        code, message = client.data(BODY)
    queue_id = queued_id(message)
    assert daemon.query("SELECT dsn_ret, dsn_envid FROM message WHERE queue_id = ?", queue_id) == [("HDRS", "batch+42")]
    rows = daemon.query("SELECT address, dsn_notify, dsn_orcpt FROM recipient WHERE queue_id = ? ORDER BY id", queue_id)
    assert rows == [
        ("bob@local.test", "SUCCESS,FAILURE", "rfc822;bob+x@local.test"),
        ("carol@local.test", "NEVER", None),
        ("dave@local.test", None, None),
    ]


def test_vrfy_help_and_noop(daemon):
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
        client.ehlo("client.test")
        assert client.verify("bob@local.test") == lib_reply(replies.VRFY)
        assert client.docmd("HELP") == lib_reply(replies.HELP)
        assert client.noop() == lib_reply(replies.NOOP)
        assert client.docmd("EXPN", "staff") == lib_reply(replies.NOT_IMPLEMENTED)


def test_pipelined_transaction_gets_every_reply_in_order(daemon):
    client = RawClient(daemon.ports.smtp)
    try:
        assert client.reply()[0] == 220
        code, text = client.cmd("EHLO client.test")
        assert "PIPELINING" in text.split("\n")
        client.send(
            b"MAIL FROM:<alice@sender.test>\r\n"
            b"RCPT TO:<bob@local.test>\r\n"
            b"RCPT TO:<carol@remote.test>\r\n"
            b"RCPT TO:<dave@example.test>\r\n"
            b"DATA\r\n"
        )
        assert client.reply() == raw_reply(replies.SENDER_OK)
        assert client.reply() == raw_reply(replies.RECIPIENT_OK)
        assert client.reply() == raw_reply(replies.RELAY_DENIED)
        assert client.reply() == raw_reply(replies.RECIPIENT_OK)
        assert client.reply() == raw_reply(replies.START_DATA)
        # The body, the end of data and the next transaction in one write too.
        client.send(BODY + b".\r\nRSET\r\nNOOP\r\nQUIT\r\n")
        code, text = client.reply()
        assert code == 250
        queue_id = queued_id(text)
        assert client.reply() == raw_reply(replies.RESET)
        assert client.reply() == raw_reply(replies.NOOP)
        assert client.reply() == raw_reply(replies.CLOSING)
        assert client.closed()
    finally:
        client.close()
    assert daemon.recipients(queue_id) == ["bob@local.test", "dave@example.test"]
    assert split_received(daemon.body(queue_id))[1] == BODY


def queued_log_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if " queued " in line]


def log_fields(line: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line)}


def test_one_log_line_per_accepted_message(make_daemon, certs):
    daemon = make_daemon()
    daemon.add_user("alice", "s3cret-pass")
    daemon.start()
    plain_id = send(daemon.ports.smtp, "alice@sender.test", ["bob@local.test", "carol@local.test"], BODY)
    with smtplib.SMTP("127.0.0.1", daemon.ports.submission, timeout=10) as client:
        client.starttls(context=certs.client_context())
        client.login("alice", "s3cret-pass")
        client.mail("alice@local.test")  # hers: submission checks that a user sends as their own
        client.rcpt("carol@remote.test")
        code, message = client.data(BODY)
    auth_id = queued_id(message)

    lines = queued_log_lines(daemon.log())
    assert len(lines) == 2
    plain, auth = (log_fields(line) for line in lines)
    assert plain["queue_id"] == plain_id
    assert plain["client"] == "127.0.0.1"
    assert plain["from"] == "alice@sender.test"
    assert plain["recipients"] == "2"
    assert int(plain["size"]) == len(daemon.body(plain_id))
    assert "tls" not in plain and "user" not in plain

    assert auth["queue_id"] == auth_id
    assert auth["recipients"] == "1"
    assert int(auth["size"]) == len(daemon.body(auth_id))
    assert auth["tls"].startswith("TLSv1.")
    assert auth["user"] == "alice"
    # A refused message is not logged as queued.
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
        client.ehlo("client.test")
        client.mail("alice@sender.test")
        assert client.rcpt("carol@remote.test")[0] == replies.RELAY_DENIED.code
    assert len(queued_log_lines(daemon.log())) == 2


def test_a_message_coming_back_keeps_its_trace_id(daemon):
    # Relayed out and handed back (by the office server, a forward), a message
    # carries our Received header; the second pass logs under the same trace.
    first = send(daemon.ports.smtp, "alice@sender.test", ["bob@local.test"], BODY)
    again = send(daemon.ports.smtp, "bob@local.test", ["carol@local.test"], daemon.body(first))
    fresh = send(daemon.ports.smtp, "alice@sender.test", ["dave@local.test"], BODY)
    traces = dict(daemon.query("SELECT queue_id, trace_id FROM message"))
    assert traces[again] == traces[first] != traces[fresh]
    assert f"queue_id={again}" in daemon.log() and "session_trace_id=" in daemon.log()
