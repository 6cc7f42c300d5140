"""The SMTP client against a real, strict SMTP peer on loopback (tests/peer.py).

Plain threads and stdlib sockets, no daemon: each test opens a connection to
a Peer on 127.0.0.1 and checks both sides, what the client returned and what
the peer saw, and that the peer saw no protocol violation.
"""

import ssl

import pytest
from peer import HANG, Peer

from empath.addresses import EmailAddress
from empath.delivery.client import (
    ClientTimeouts,
    OutboundEnvelope,
    OutboundRecipient,
    SmtpError,
    Stale,
    TlsFailed,
    open_connection,
)
from empath.delivery.content import Content, Unreadable, Whole
from empath.delivery.courier import tls_contexts
from empath.smtp import replies, wire
from empath.smtp.replies import Reply

HELO = "client.example"
TIMEOUTS = ClientTimeouts(connect=2.0, command=2.0, data=2.0)
UNVERIFIED = tls_contexts(None)["required"]
BODY = b"Subject: hi\r\n\r\nHello\r\n"


def said(reply: replies.Reply) -> str:
    """A catalogue reply as a peer setting: "550 5.7.1 text"."""
    return f"{reply.code} {reply.status} {reply.text}"


# Replies a remote gives, by name.
SENDER_REFUSED = said(replies.RELAY_DENIED)
USER_UNKNOWN = "550 5.1.1 no such user"
MAILBOX_FULL = "452 4.2.2 mailbox full"
TRY_LATER = "451 4.3.0 try again later"
BYE = said(replies.SHUTTING_DOWN)
DELIVERED = "250 2.0.0 ok"

PLAIN_EXTENSIONS = ["SIZE 10485760", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN"]
PIPELINED_EXTENSIONS = ["PIPELINING", *PLAIN_EXTENSIONS]


@pytest.fixture
def make_peer():
    """Start peers on 127.0.0.1 (each on a free port); stop them and check for peer errors at the end."""
    made = []

    def make(**kwargs) -> Peer:
        peer = Peer(host="127.0.0.1", **kwargs).start()
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.stop()
        assert peer.errors == [], peer.transcript()


@pytest.fixture
def peer(make_peer) -> Peer:
    return make_peer()


@pytest.fixture
def tls_peer(make_peer, certs) -> Peer:
    return make_peer(certs=certs, users={"relay": "secret"})


def connect(peer: Peer, tls: str = "none", context=None, credentials=None, host: str = "mx.test.example"):
    return open_connection(host, "127.0.0.1", peer.port, HELO, TIMEOUTS, tls, context, credentials)


def envelope(*addresses: str, sender: str = "alice@example.test", **kwargs) -> OutboundEnvelope:
    recipients = tuple(OutboundRecipient(a) for a in addresses or ("bob@remote.test",))
    kwargs.setdefault("size", len(BODY))
    return OutboundEnvelope(sender, recipients, **kwargs)


def spy_writes(conn) -> list[bytes]:
    """Every write the connection makes, in order (the peer cannot see how bytes were grouped)."""
    writes: list[bytes] = []
    original = conn.write

    def write(step, data, timeout, elsewhere=True):
        writes.append(data)
        return original(step, data, timeout, elsewhere)

    conn.write = write
    return writes


# -- replies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, lines, status",
    [
        (250, ("2.1.0 sender ok",), "2.1.0"),
        (550, ("5.1.1 no such user",), "5.1.1"),
        (452, ("4.2.2 mailbox full",), "4.2.2"),
        (554, ("5.7.1",), "5.7.1"),  # the code alone
        (550, ("5.123.456 big numbers",), "5.123.456"),
        (250, ("mx.example Hello", "2.0.0 not the first line"), "2.0.0"),
        # derived from the reply code when there is none
        (550, ("no such user",), "5.0.0"),
        (451, ("local error",), "4.0.0"),
        (250, (), "2.0.0"),
        (220, ("mx.example ESMTP",), "2.0.0"),
        (550, ("5.1.1000 too many digits",), "5.0.0"),
        (550, ("5.1.1-not a separator",), "5.0.0"),
        (550, ("05.1.1 leading zero",), "5.0.0"),
        (550, ("5.1 short",), "5.0.0"),
        (550, ("", "5.1.1 only on the second line"), "5.0.0"),
        # an enhanced code whose class contradicts the reply code is ignored
        (451, ("5.1.1 permanent, says the text",), "4.0.0"),
        (550, ("2.0.0 fine, says the text",), "5.0.0"),
        (250, ("4.2.2 temporary, says the text",), "2.0.0"),
        (354, ("3.0.0 no such class",), "3.0.0"),  # no class 3: derived
    ],
)
def test_reply_status(code, lines, status):
    assert Reply.heard(code, lines).status == status


def test_reply_text_and_ok():
    reply = Reply.heard(550, ("5.1.1 no such user ", " try another"))
    assert reply.summary == "550 5.1.1 no such user try another"
    assert not reply.ok
    assert Reply.heard(354, ("go ahead",)).ok and Reply.heard(250, ()).ok
    assert not Reply.heard(421, ()).ok and not Reply.heard(199, ()).ok


@pytest.mark.parametrize(
    "error, permanent, diagnostic",
    [
        (SmtpError("RCPT", "refused", Reply.heard(550, ("5.1.1 unknown",))), True, "550 5.1.1 unknown"),
        (SmtpError("RCPT", "refused", Reply.heard(450, ("busy",))), False, "450 busy"),
        (SmtpError("connect", "cannot connect: refused"), False, "cannot connect: refused"),
        (SmtpError("MAIL", "too big", status="5.3.4"), True, "too big"),
    ],
)
def test_smtp_error(error, permanent, diagnostic):
    assert error.permanent is permanent
    assert error.diagnostic == diagnostic
    assert str(error).startswith(f"{error.step}: ")


# -- greeting and EHLO --------------------------------------------------------------


def test_ehlo_extensions_are_parsed(peer):
    peer.extensions = ["PIPELINING", "SIZE 1000", "8bitmime", "AUTH  PLAIN LOGIN ", "X-EXPERIMENT a=b c"]
    conn = connect(peer)
    assert conn.extensions == {
        "PIPELINING": "",
        "SIZE": "1000",
        "8BITMIME": "",
        "AUTH": "PLAIN LOGIN",
        "X-EXPERIMENT": "a=b c",
    }
    assert not conn.tls
    assert str(conn) == f"mx.test.example[127.0.0.1]:{peer.port}"
    conn.quit()
    [c] = peer.wait_for_connections(1)
    peer.wait_until_idle()
    assert (c.helo_verb, c.helo_name, c.commands, c.quit) == ("EHLO", HELO, ["EHLO", "QUIT"], True)
    assert peer.violations == []


def test_helo_when_ehlo_is_refused(peer):
    peer.ehlo_reply = "500 5.5.1 command unrecognized"
    conn = connect(peer)
    assert conn.extensions == {}
    assert conn.send(envelope(), Whole(BODY)) == {"bob@remote.test": Reply.heard(250, ("2.0.0 ok",))}
    conn.quit()
    peer.wait_until_idle()
    [c] = peer.connections
    assert c.commands == ["EHLO", "HELO", "MAIL", "RCPT", "DATA", "QUIT"]
    assert c.helo_verb == "HELO"
    # nothing an EHLO would have offered was used: no SIZE=, no pipelining
    assert peer.transactions[0].mail_line == b"MAIL FROM:<alice@example.test>"
    assert peer.violations == []


def test_helo_refused_too(peer):
    peer.ehlo_reply = "500 5.5.1 command unrecognized"
    peer.helo_reply = "550 5.7.1 go away"
    with pytest.raises(SmtpError) as info:
        connect(peer)
    assert (info.value.step, info.value.status, info.value.reply.code) == ("HELO", "5.7.1", 550)


@pytest.mark.parametrize(
    "greeting, status",
    [
        ("421 4.3.2 too busy", "4.3.2"),
        ("554 5.7.1 no service for you", "5.7.1"),
    ],
)
def test_greeting_refused(peer, greeting, status):
    peer.greeting = greeting
    with pytest.raises(SmtpError) as info:
        connect(peer)
    assert (info.value.step, info.value.status, info.value.elsewhere) == ("greeting", status, True)


def test_greeting_timeout(peer):
    peer.greeting = HANG
    with pytest.raises(SmtpError) as info:
        open_connection("h", "127.0.0.1", peer.port, HELO, ClientTimeouts(2.0, 0.2, 0.2), "none", None)
    assert info.value.step == "greeting"
    assert "timeout after 0.2s" in info.value.text
    assert info.value.status == "4.4.2" and not info.value.permanent


def test_connection_refused(peer):
    port = peer.port
    peer.stop()
    with pytest.raises(SmtpError) as info:
        open_connection("h", "127.0.0.1", port, HELO, TIMEOUTS, "none", None)
    assert (info.value.step, info.value.status, info.value.elsewhere) == ("connect", "4.4.2", True)


# -- transactions -------------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False])
def test_transaction(peer, pipelining):
    peer.extensions = PIPELINED_EXTENSIONS if pipelining else PLAIN_EXTENSIONS
    conn = connect(peer)
    writes = spy_writes(conn)
    result = conn.send(envelope("bob@remote.test", "carol@remote.test"), Whole(BODY))
    assert result == {
        "bob@remote.test": Reply.heard(250, ("2.0.0 ok",)),
        "carol@remote.test": Reply.heard(250, ("2.0.0 ok",)),
    }
    assert conn.messages == 1
    [t] = peer.wait_for_transactions(1)
    assert t.sender == "alice@example.test"
    assert t.recipients == ["bob@remote.test", "carol@remote.test"]
    assert t.mail_params == {"SIZE": str(len(BODY))}
    assert t.data == BODY and t.accepted
    commands = (
        b"MAIL FROM:<alice@example.test> SIZE=%d\r\nRCPT TO:<bob@remote.test>\r\nRCPT TO:<carol@remote.test>\r\n"
        % len(BODY)
    )
    if pipelining:
        assert writes == [commands + b"DATA\r\n", BODY + b".\r\n"]  # one write for the whole envelope
    else:
        assert writes == [line + b"\r\n" for line in commands.split(b"\r\n")[:-1]] + [b"DATA\r\n", BODY + b".\r\n"]
    conn.quit()
    peer.wait_until_idle()
    assert peer.violations == []


@pytest.mark.parametrize("pipelining", [True, False])
def test_each_recipient_gets_its_own_reply(peer, pipelining):
    peer.extensions = PIPELINED_EXTENSIONS if pipelining else PLAIN_EXTENSIONS
    peer.rcpt_replies = {"unknown@remote.test": USER_UNKNOWN, "full@remote.test": MAILBOX_FULL}
    peer.final_reply = "250 2.0.0 queued as 12345"
    conn = connect(peer)
    result = conn.send(envelope("bob@remote.test", "unknown@remote.test", "full@remote.test"), Whole(BODY))
    assert {a: (r.code, r.status, r.summary) for a, r in result.items()} == {
        "bob@remote.test": (250, "2.0.0", "250 2.0.0 queued as 12345"),
        "unknown@remote.test": (550, "5.1.1", "550 5.1.1 no such user"),
        "full@remote.test": (452, "4.2.2", "452 4.2.2 mailbox full"),
    }
    [t] = peer.wait_for_transactions(1)
    assert t.recipients == ["bob@remote.test"]
    conn.quit()
    peer.wait_until_idle()
    assert peer.violations == []


@pytest.mark.parametrize("pipelining", [True, False])
def test_every_recipient_refused(peer, pipelining):
    peer.extensions = PIPELINED_EXTENSIONS if pipelining else PLAIN_EXTENSIONS
    peer.rcpt_reply = USER_UNKNOWN
    conn = connect(peer)
    result = conn.send(envelope("a@remote.test", "b@remote.test"), Whole(BODY))
    assert {a: r.status for a, r in result.items()} == {"a@remote.test": "5.1.1", "b@remote.test": "5.1.1"}
    assert conn.messages == 0
    # no data went; after RSET (as the pool does) the connection carries the next message
    peer.rcpt_reply = DELIVERED
    assert conn.reset()
    assert conn.send(envelope("c@remote.test"), Whole(BODY))["c@remote.test"].ok
    conn.quit()
    peer.wait_until_idle()
    [c] = peer.connections
    assert [t.recipients for t in peer.transactions] == [["c@remote.test"]]
    if pipelining:
        # the pipelined DATA was refused by the peer (no valid recipients); RSET starts afresh
        assert c.commands == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA", "RSET", "RSET", "MAIL", "RCPT", "DATA", "QUIT"]
    else:
        assert c.commands == ["EHLO", "MAIL", "RCPT", "RCPT", "RSET", "MAIL", "RCPT", "DATA", "QUIT"]
    assert peer.violations == []


@pytest.mark.parametrize("pipelining", [True, False])
def test_sender_refused(peer, pipelining):
    peer.extensions = PIPELINED_EXTENSIONS if pipelining else PLAIN_EXTENSIONS
    peer.mail_reply = SENDER_REFUSED
    conn = connect(peer)
    with pytest.raises(SmtpError) as info:
        conn.send(envelope(), Whole(BODY))
    error = info.value
    assert (error.step, error.status, error.reply.code, error.permanent) == ("MAIL", "5.7.1", 554, True)
    assert error.elsewhere
    conn.quit()
    peer.wait_until_idle()
    [c] = peer.connections
    assert peer.all_transactions == []
    if pipelining:
        # RCPT and DATA were already on their way: the peer refuses them (503),
        # which it notes; pipelining allows it (RFC 2920 §3.1).
        assert c.commands == ["EHLO", "MAIL", "RCPT", "DATA", "RSET", "QUIT"]
        assert peer.violations == ["#1: RCPT without MAIL", "#1: DATA without MAIL"]
    else:
        assert c.commands == ["EHLO", "MAIL", "QUIT"]
        assert peer.violations == []


@pytest.mark.parametrize("pipelining", [True, False])
def test_data_refused(peer, pipelining):
    # A refusal of DATA is the verdict of each recipient accepted at RCPT; one
    # refused at RCPT keeps its own (a 452 there stays temporary after a 554).
    peer.extensions = PIPELINED_EXTENSIONS if pipelining else PLAIN_EXTENSIONS
    peer.rcpt_replies = {"full@remote.test": MAILBOX_FULL}
    peer.data_reply = "554 5.7.1 not from you"
    conn = connect(peer)
    result = conn.send(envelope("bob@remote.test", "full@remote.test"), Whole(BODY))
    assert {a: r.summary for a, r in result.items()} == {
        "bob@remote.test": "554 5.7.1 not from you",
        "full@remote.test": MAILBOX_FULL,
    }
    assert conn.messages == 0
    assert conn.reset()
    conn.quit()
    peer.wait_until_idle()
    assert peer.transactions == []
    assert peer.violations == []


@pytest.mark.parametrize(
    "fail_at, step",
    [
        (("MAIL", 1, BYE), "MAIL"),
        (("RCPT", 2, BYE), "RCPT"),
        (("DATA", 1, BYE), "DATA"),
    ],
)
@pytest.mark.parametrize("pipelining", [True, False])
def test_421_ends_the_transaction(peer, fail_at, step, pipelining):
    peer.extensions = PIPELINED_EXTENSIONS if pipelining else PLAIN_EXTENSIONS
    peer.fail_at = fail_at
    conn = connect(peer)
    with pytest.raises(SmtpError) as info:
        conn.send(envelope("a@remote.test", "b@remote.test"), Whole(BODY))
    error = info.value
    assert (error.step, error.status, error.reply.code, error.elsewhere) == (step, "4.3.2", 421, True)
    assert "closing" in error.text
    conn.close()
    peer.wait_until_idle()
    assert peer.transactions == []


def test_421_after_the_dot(peer):
    peer.final_reply = BYE
    conn = connect(peer)
    with pytest.raises(SmtpError) as info:
        conn.send(envelope(), Whole(BODY))
    assert (info.value.step, info.value.status, info.value.elsewhere) == ("end of data", "4.3.2", False)


def test_final_reply_refusal_applies_to_every_accepted_recipient(peer):
    peer.rcpt_replies = {"unknown@remote.test": USER_UNKNOWN}
    peer.final_reply = "554 5.6.0 content rejected"
    conn = connect(peer)
    result = conn.send(envelope("a@remote.test", "unknown@remote.test", "b@remote.test"), Whole(BODY))
    assert {a: r.summary for a, r in result.items()} == {
        "a@remote.test": "554 5.6.0 content rejected",
        "unknown@remote.test": USER_UNKNOWN,
        "b@remote.test": "554 5.6.0 content rejected",
    }


def test_dropped_after_the_dot(peer):
    # The remote may have the message: never try it at another address now.
    peer.drop_after_dot = True
    conn = connect(peer)
    with pytest.raises(SmtpError) as info:
        conn.send(envelope(), Whole(BODY))
    error = info.value
    assert (error.step, error.reply, error.elsewhere, error.permanent) == ("end of data", None, False, False)
    assert "connection closed" in error.text
    [t] = peer.wait_for_transactions(1)
    assert t.complete and t.final_reply is None


def test_timeout_after_the_dot(peer):
    peer.fail_at = (".", 1, HANG)
    conn = open_connection("h", "127.0.0.1", peer.port, HELO, ClientTimeouts(2.0, 2.0, 0.2), "none", None)
    with pytest.raises(SmtpError) as info:
        conn.send(envelope(), Whole(BODY))
    assert (info.value.step, info.value.elsewhere) == ("end of data", False)
    assert "timeout after 0.2s" in info.value.text
    conn.close()


def test_several_messages_on_one_connection(peer):
    conn = connect(peer)
    for n in range(3):
        assert conn.send(envelope(f"r{n}@remote.test"), Whole(BODY))[f"r{n}@remote.test"].ok
    assert conn.messages == 3
    conn.quit()
    peer.wait_until_idle()
    assert [t.recipients for t in peer.transactions] == [["r0@remote.test"], ["r1@remote.test"], ["r2@remote.test"]]
    assert len(peer.connections) == 1
    assert peer.violations == []


def test_body_goes_out_stuffed_with_crlf(peer):
    body = b"Subject: dots\n\n.\n..leading\nbare cr\rend\r\n" + b"x" * 1500 + b"\r\n"
    conn = connect(peer)
    conn.send(envelope(size=len(body)), Whole(body))
    [t] = peer.wait_for_transactions(1)
    assert (
        t.data
        == b"Subject: dots\r\n\r\n.\r\n..leading\r\nbare cr\r\nend\r\n" + b"x" * 998 + b"\r\n" + b"x" * 502 + (b"\r\n")
    )
    assert t.data_raw.startswith(b"Subject: dots\r\n\r\n..\r\n...leading\r\n")
    conn.quit()
    peer.wait_until_idle()
    assert peer.violations == []


class Pieces(Content):
    """A message read in pieces, as a large one is from the queue; ``fail_at``: the piece that cannot be read."""

    def __init__(self, pieces: list[bytes], fail_at: int | None = None):
        super().__init__(sum(map(len, pieces)))
        self.parts, self.fail_at = pieces, fail_at

    def pieces(self):
        for i, piece in enumerate(self.parts):
            if i == self.fail_at:
                raise Unreadable("the message was deleted from the queue")
            yield piece


def test_a_body_in_pieces_goes_out_as_the_whole_would(peer):
    # Cut inside a CRLF, before a dot that needs stuffing, inside a long line.
    whole = b"Subject: pieces\r\n\r\nline\r\n.dot\r\n" + b"y" * 2500 + b"\r\nend\r\n"
    cuts = [whole[:20], whole[20:27], whole[27:30], whole[30:1200], whole[1200:]]
    conn = connect(peer)
    writes = spy_writes(conn)
    assert conn.send(envelope(size=len(whole)), Pieces(cuts))["bob@remote.test"].ok
    [t] = peer.wait_for_transactions(1)
    assert b"".join(writes[1:]) == wire.encode(whole)  # after the envelope: the body, one piece at a time
    assert len(writes) > 2
    assert t.data == whole.replace(b"y" * 2500, b"y" * 998 + b"\r\n" + b"y" * 998 + b"\r\n" + b"y" * 504)
    conn.quit()
    peer.wait_until_idle()
    assert peer.violations == []


def test_a_body_that_cannot_be_read_to_its_end_is_never_ended(peer):
    conn = connect(peer)
    with pytest.raises(SmtpError) as info:
        conn.send(envelope(size=20), Pieces([b"Subject: x\r\n\r\n", b"part two\r\n"], fail_at=1))
    error = info.value
    assert (error.step, error.status, error.elsewhere) == ("end of data", "4.3.0", False)
    assert "deleted" in error.text and conn.broken
    conn.quit()  # broken: closed without QUIT, so the remote drops the half message
    peer.wait_until_idle()
    assert peer.delivered == [] and len(peer.all_transactions) == 1


def test_a_body_that_cannot_be_read_before_mail_is_a_deferral_not_a_crash(peer):
    # Without 8BITMIME the client asks whether the body is ASCII, which reads a large one
    # from the queue: deleted meanwhile, that is a temporary failure, raised as one.
    peer.extensions = ["PIPELINING"]
    conn = connect(peer)
    with pytest.raises(SmtpError) as info:
        conn.send(envelope(size=20), Pieces([b"Subject: x\r\n\r\n", b"part two\r\n"], fail_at=1))
    error = info.value
    assert (error.step, error.status, error.elsewhere) == ("MAIL", "4.3.0", False)
    assert "deleted" in error.text and not conn.broken  # nothing was sent: the connection is still good
    conn.quit()
    peer.wait_until_idle()
    assert peer.all_transactions == []


# -- what the remote must offer -------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False])
def test_too_big_for_the_remote(peer, pipelining):
    peer.extensions = ["PIPELINING", "SIZE 1000"] if pipelining else ["SIZE 1000"]
    conn = connect(peer)
    with pytest.raises(SmtpError) as info:
        conn.send(envelope(size=1001), Whole(b"x" * 1001))
    error = info.value
    assert (error.step, error.status, error.permanent, error.reply) == ("MAIL", "5.3.4", True, None)
    assert "1001 bytes" in error.text and "(1000)" in error.text
    # exactly the limit is fine
    assert conn.send(envelope(size=1000), Whole(b"x" * 998))["bob@remote.test"].ok
    conn.quit()
    peer.wait_until_idle()
    [c] = peer.connections
    assert c.commands.count("MAIL") == 1  # only the message that fits
    assert peer.violations == []


@pytest.mark.parametrize("offered", [["SIZE 0"], ["SIZE"], []])
def test_no_size_limit(peer, offered):
    peer.extensions = offered
    conn = connect(peer)
    assert conn.send(envelope(size=10**9), Whole(BODY))["bob@remote.test"].ok
    conn.quit()
    peer.wait_until_idle()
    assert peer.violations == []


def test_smtputf8_needed(peer):
    peer.extensions = [e for e in PIPELINED_EXTENSIONS if e != "SMTPUTF8"]
    conn = connect(peer)
    with pytest.raises(SmtpError) as info:
        conn.send(envelope("bøb@remote.test", smtputf8=True), Whole(BODY))
    assert (info.value.step, info.value.status, info.value.permanent) == ("MAIL", "5.6.7", True)
    conn.quit()
    peer.wait_until_idle()
    assert "MAIL" not in peer.connections[0].commands
    assert peer.violations == []


def test_smtputf8_offered(peer):
    body = "Subject: héllo\r\n\r\nçava\r\n".encode()
    conn = connect(peer)
    conn.send(envelope("bøb@remote.test", sender="ålice@example.test", smtputf8=True, size=len(body)), Whole(body))
    [t] = peer.wait_for_transactions(1)
    assert t.sender == "ålice@example.test" and t.recipients == ["bøb@remote.test"]
    assert "SMTPUTF8" in t.mail_params
    assert t.data == body
    conn.quit()
    peer.wait_until_idle()
    assert peer.violations == []


@pytest.mark.parametrize("offered", [True, False])
def test_8bitmime(peer, offered):
    peer.extensions = ["8BITMIME"] if offered else []
    body = "Subject: x\r\n\r\ncafé\r\n".encode() if offered else BODY
    conn = connect(peer)
    conn.send(envelope(size=len(body), body_type="8BITMIME"), Whole(body))
    [t] = peer.wait_for_transactions(1)
    assert t.mail_params == ({"BODY": "8BITMIME"} if offered else {})
    conn.quit()
    peer.wait_until_idle()
    assert peer.violations == []


DSN_ENVELOPE = OutboundEnvelope(
    "alice@example.test",
    (
        OutboundRecipient("bob@remote.test", notify="SUCCESS,FAILURE", orcpt="rfc822;Bob+x=y@remote.test"),
        OutboundRecipient("carol@remote.test", notify="NEVER"),
        OutboundRecipient("dave@remote.test", orcpt="rfc822;dave@old.test"),
        OutboundRecipient("erin@remote.test"),
    ),
    size=len(BODY),
    ret="HDRS",
    envid="id=1 +x",
)


def test_dsn_parameters_when_offered(peer):
    conn = connect(peer)
    conn.send(DSN_ENVELOPE, Whole(BODY))
    [t] = peer.wait_for_transactions(1)
    assert t.mail_params == {"SIZE": str(len(BODY)), "RET": "HDRS", "ENVID": "id+3D1+20+2Bx"}
    assert t.rcpt_params("bob@remote.test") == {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;Bob+2Bx+3Dy@remote.test"}
    assert t.rcpt_params("carol@remote.test") == {"NOTIFY": "NEVER"}
    assert t.rcpt_params("dave@remote.test") == {"ORCPT": "rfc822;dave@old.test"}
    assert t.rcpt_params("erin@remote.test") == {}
    conn.quit()
    peer.wait_until_idle()
    assert peer.violations == []


def test_no_dsn_parameters_when_not_offered(peer):
    peer.extensions = [e for e in PIPELINED_EXTENSIONS if e != "DSN"]
    conn = connect(peer)
    conn.send(DSN_ENVELOPE, Whole(BODY))
    [t] = peer.wait_for_transactions(1)
    assert t.mail_params == {"SIZE": str(len(BODY))}
    assert all(r.params == {} for r in t.rcpts)
    conn.quit()
    peer.wait_until_idle()
    assert peer.violations == []


# -- TLS ------------------------------------------------------------------------------


@pytest.mark.parametrize("tls", ["opportunistic", "required"])
def test_starttls_then_ehlo_again(tls_peer, tls):
    conn = connect(tls_peer, tls, UNVERIFIED)
    assert conn.tls
    assert "STARTTLS" not in conn.extensions  # what the second EHLO offered
    assert "AUTH" in conn.extensions  # offered only in TLS
    conn.send(envelope(), Whole(BODY))
    [t] = tls_peer.wait_for_transactions(1)
    assert t.tls
    conn.quit()
    tls_peer.wait_until_idle()
    [c] = tls_peer.connections
    assert c.commands == ["EHLO", "STARTTLS", "EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    assert c.tls_version in ("TLSv1.2", "TLSv1.3")
    assert tls_peer.violations == []


def test_starttls_verified(tls_peer, certs):
    conn = connect(tls_peer, "verify", certs.client_context())
    assert conn.tls
    conn.quit()


@pytest.mark.parametrize(
    "host, context",
    [
        ("wrong.example", "ours"),  # a name the certificate does not have
        ("mx.test.example", "system"),  # a CA we do not trust
    ],
)
def test_verify_fails_without_fallback(tls_peer, certs, host, context):
    ctx = certs.client_context() if context == "ours" else tls_contexts(None)["verify"]
    with pytest.raises(TlsFailed) as info:
        connect(tls_peer, "verify", ctx, host=host)
    assert (info.value.step, info.value.elsewhere, info.value.permanent) == ("STARTTLS", True, False)
    assert "certificate" in info.value.text.lower()
    tls_peer.wait_until_idle()
    assert len(tls_peer.connections) == 1  # no second try in clear


@pytest.mark.parametrize("tls", ["required", "verify"])
def test_tls_required_but_not_offered(peer, tls):
    with pytest.raises(SmtpError) as info:
        connect(peer, tls, UNVERIFIED)
    assert (info.value.step, info.value.status) == ("STARTTLS", "4.7.5")
    peer.wait_until_idle()
    assert peer.connections[0].commands == ["EHLO", "QUIT"]  # nothing sent in clear, a polite goodbye


@pytest.mark.parametrize("context", [UNVERIFIED, None])
def test_opportunistic_without_starttls_goes_in_clear(peer, context):
    conn = connect(peer, "opportunistic", context)
    assert not conn.tls
    conn.send(envelope(), Whole(BODY))
    [t] = peer.wait_for_transactions(1)
    assert not t.tls
    conn.quit()


def test_tls_none_never_starts_tls(tls_peer):
    conn = connect(tls_peer, "none", UNVERIFIED)
    assert not conn.tls and "STARTTLS" in conn.extensions
    conn.quit()


def tls13_only() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


@pytest.fixture
def tls12_peer(tls_peer) -> Peer:
    """A peer whose TLS stops at 1.2: a client insisting on 1.3 fails the handshake.

    Peer has no setting for this; its server context is read at each STARTTLS.
    """
    tls_peer._tls_context.maximum_version = ssl.TLSVersion.TLSv1_2
    return tls_peer


def test_opportunistic_falls_back_to_clear_when_the_handshake_fails(tls12_peer):
    conn = connect(tls12_peer, "opportunistic", tls13_only())
    assert not conn.tls
    conn.send(envelope(), Whole(BODY))
    conn.quit()
    tls12_peer.wait_until_idle()
    first, second = tls12_peer.connections
    assert first.commands == ["EHLO", "STARTTLS"] and first.tls_error and not first.tls
    assert second.commands == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    [t] = tls12_peer.transactions
    assert not t.tls
    assert tls12_peer.violations == []


@pytest.mark.parametrize(
    "tls, credentials",
    [
        ("required", None),
        ("opportunistic", ("relay", "secret")),  # credentials never go in clear
    ],
)
def test_failed_handshake_is_final(tls12_peer, tls, credentials):
    with pytest.raises(TlsFailed) as info:
        connect(tls12_peer, tls, tls13_only(), credentials)
    assert (info.value.step, info.value.status) == ("STARTTLS", "4.7.5")
    tls12_peer.wait_until_idle()
    assert len(tls12_peer.connections) == 1


# -- AUTH -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "offered, mechanism",
    [
        ("AUTH PLAIN LOGIN", "PLAIN"),
        ("AUTH LOGIN PLAIN", "PLAIN"),
        ("AUTH LOGIN", "LOGIN"),
        ("AUTH CRAM-MD5 login", "LOGIN"),
    ],
)
def test_auth_after_tls(tls_peer, offered, mechanism):
    tls_peer.ehlo_reply = f"250 peer.test\nPIPELINING\nSTARTTLS\n{offered}"
    conn = connect(tls_peer, "required", UNVERIFIED, ("relay", "secret"))
    conn.send(envelope(), Whole(BODY))
    [t] = tls_peer.wait_for_transactions(1)
    assert (t.tls, t.auth_user) == (True, "relay")
    conn.quit()
    tls_peer.wait_until_idle()
    [c] = tls_peer.connections
    assert c.auth_attempts == [(mechanism, "relay", True)]
    assert c.commands[:4] == ["EHLO", "STARTTLS", "EHLO", "AUTH"]
    assert tls_peer.violations == []


@pytest.mark.parametrize("offered", ["AUTH PLAIN LOGIN", "AUTH LOGIN"])
def test_auth_refused(tls_peer, offered):
    tls_peer.ehlo_reply = f"250 peer.test\nSTARTTLS\n{offered}"
    with pytest.raises(SmtpError) as info:
        connect(tls_peer, "required", UNVERIFIED, ("relay", "wrong"))
    error = info.value
    assert (error.step, error.status, error.reply.code, error.permanent) == ("AUTH", "5.7.8", 535, True)
    tls_peer.wait_until_idle()
    assert tls_peer.connections[0].auth_attempts == [(offered.split()[1], "relay", False)]


@pytest.mark.parametrize("offered", ["", "\nAUTH CRAM-MD5 XOAUTH2"])
def test_no_usable_auth_mechanism(tls_peer, offered):
    tls_peer.ehlo_reply = f"250 peer.test\nSTARTTLS{offered}"
    with pytest.raises(SmtpError) as info:
        connect(tls_peer, "required", UNVERIFIED, ("relay", "secret"))
    assert (info.value.step, info.value.status) == ("AUTH", "4.7.0")
    tls_peer.wait_until_idle()
    assert "AUTH" not in tls_peer.connections[0].commands


@pytest.mark.parametrize("tls", ["none", "opportunistic"])
def test_credentials_never_go_in_clear(make_peer, tls):
    # A peer offering AUTH in clear and no STARTTLS at all.
    peer = make_peer(users={"relay": "secret"})
    peer.auth_requires_tls = False
    with pytest.raises(SmtpError) as info:
        connect(peer, tls, UNVERIFIED, ("relay", "secret"))
    assert (info.value.step, info.value.status) == ("AUTH", "4.7.5")
    peer.wait_until_idle()
    [c] = peer.connections
    assert "AUTH PLAIN LOGIN" in c.offered
    assert c.commands == ["EHLO", "QUIT"]
    assert c.auth_attempts == []
    assert all(b"secret" not in line and b"c2VjcmV0" not in line for line in c.lines)


# -- RSET and QUIT ------------------------------------------------------------------------


def test_reset_on_a_live_connection(peer):
    conn = connect(peer)
    assert conn.reset()
    assert conn.reset()
    conn.quit()
    peer.wait_until_idle()
    assert peer.rset_count == 2


@pytest.mark.parametrize("how", ["stopped", "closed without a word", "421", "hangs"])
def test_reset_on_a_dead_connection(peer, how):
    if how == "closed without a word":
        peer.fail_at = ("RSET", 1, None)
    elif how == "421":
        peer.fail_at = ("RSET", 1, BYE)
    elif how == "hangs":
        peer.fail_at = ("RSET", 1, HANG)
    conn = open_connection("h", "127.0.0.1", peer.port, HELO, ClientTimeouts(2.0, 0.3, 0.3), "none", None)
    if how == "stopped":
        peer.stop()
    assert conn.reset() is False
    conn.close()


@pytest.mark.parametrize("pipelining", [True, False])
def test_an_idle_connection_starts_its_next_transaction_with_rset(peer, pipelining):
    # The pool marks a connection it hands back idle; RSET then leads the
    # pipelined group (no round trip of its own) or goes alone before MAIL.
    peer.extensions = PIPELINED_EXTENSIONS if pipelining else PLAIN_EXTENSIONS
    conn = connect(peer)
    assert conn.send(envelope("a@remote.test"), Whole(BODY))["a@remote.test"].ok
    conn.idle = True
    assert conn.send(envelope("b@remote.test"), Whole(BODY))["b@remote.test"].ok
    assert not conn.idle
    assert conn.send(envelope("c@remote.test"), Whole(BODY))["c@remote.test"].ok  # not idle in between: no RSET
    conn.quit()
    peer.wait_until_idle()
    [c] = peer.connections
    transaction = ["MAIL", "RCPT", "DATA"]
    assert c.commands == ["EHLO", *transaction, "RSET", *transaction, *transaction, "QUIT"]
    assert c.rset_pipelined == (1 if pipelining else 0)  # in MAIL's write: no round trip of its own
    assert [t.recipients for t in peer.transactions] == [["a@remote.test"], ["b@remote.test"], ["c@remote.test"]]
    assert peer.violations == []


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("how", ["stopped", "closed without a word", "421", "refused"])
def test_an_idle_connection_the_remote_dropped_is_stale(peer, pipelining, how):
    peer.extensions = PIPELINED_EXTENSIONS if pipelining else PLAIN_EXTENSIONS
    if how == "closed without a word":
        peer.fail_at = ("RSET", 1, None)
    elif how == "421":
        peer.fail_at = ("RSET", 1, BYE)
    elif how == "refused":  # still there, but out of sorts: the pipelined rest may be taken
        peer.rset_reply = "502 5.5.1 not now"
    conn = open_connection("h", "127.0.0.1", peer.port, HELO, ClientTimeouts(2.0, 2.0, 2.0), "none", None)
    if how == "stopped":
        peer.stop()
    conn.idle = True
    with pytest.raises(Stale) as info:
        conn.send(envelope(), Whole(BODY))
    assert info.value.step == "RSET" and info.value.elsewhere and not info.value.permanent
    assert conn.broken  # closed, never given back
    conn.close()
    peer.wait_until_idle()
    assert peer.transactions == []  # the body never went: nothing was delivered


def test_quit_on_a_dead_connection_does_not_raise(peer):
    conn = connect(peer)
    peer.stop()
    conn.quit()
    conn.close()  # twice is fine


def test_8bit_content_is_not_sent_to_a_server_without_8bitmime():
    with Peer(host="127.0.0.1") as peer:
        peer.extensions = [e for e in peer.extensions if e not in ("8BITMIME", "SMTPUTF8")]
        conn = open_connection("localhost", "127.0.0.1", peer.port, HELO, TIMEOUTS, "none", None)
        try:
            envelope = OutboundEnvelope("a@b.test", (OutboundRecipient("c@d.test"),), 20, body_type="8BITMIME")
            with pytest.raises(SmtpError) as caught:
                conn.send(envelope, Whole("Subject: caf\u00e9\r\n\r\nx\r\n".encode()))
        finally:
            conn.quit()
        assert caught.value.status == "5.6.3" and caught.value.permanent
        assert "MAIL" not in peer.connections[0].commands
        assert not peer.violations


# -- callouts (Connection.probe) ---------------------------------------------------


@pytest.mark.parametrize("pipelining", [True, False])
def test_a_probe_asks_with_the_null_sender_and_leaves_the_connection_clean(peer, pipelining):
    peer.extensions = PIPELINED_EXTENSIONS if pipelining else PLAIN_EXTENSIONS
    peer.rcpt_replies["nobody@remote.test"] = USER_UNKNOWN
    conn = connect(peer)
    assert conn.probe(EmailAddress("nobody@remote.test")).code == 550
    assert conn.probe(EmailAddress("bob@remote.test")).code == 250
    assert conn.messages == 2 and not conn.broken  # counted against max_messages_per_connection
    conn.quit()
    peer.wait_until_idle()
    [seen] = peer.connections
    assert seen.commands[1:] == ["MAIL", "RCPT", "RSET", "MAIL", "RCPT", "RSET", "QUIT"]
    assert seen.lines[1] == b"MAIL FROM:<>" and peer.transactions == [] and peer.violations == []


def test_a_probe_keeps_the_answer_when_the_rset_after_it_fails(peer):
    peer.extensions = PIPELINED_EXTENSIONS
    peer.rcpt_replies["nobody@remote.test"] = USER_UNKNOWN
    peer.fail_at = ("RSET", 1, BYE)  # Postfix's hard error limit: 421 after too many refusals
    conn = connect(peer)
    assert conn.probe(EmailAddress("nobody@remote.test")).code == 550
    assert conn.broken  # not to be pooled
    conn.quit()


def test_an_internationalized_address_is_not_asked_of_a_next_hop_without_smtputf8(peer):
    peer.extensions = [e for e in PIPELINED_EXTENSIONS if e != "SMTPUTF8"]
    conn = connect(peer)
    reply = conn.probe(EmailAddress("zoë@remote.test"))
    assert (reply.code, reply.status) == (553, "5.6.7")
    assert conn.messages == 0 and not conn.broken  # untouched, as good as it was
    conn.quit()
    peer.wait_until_idle()
    assert "MAIL" not in peer.connections[0].commands
