"""Self-tests of tests/peer.py, the scriptable next hop of the delivery tests, driven by smtplib and RawClient."""

import smtplib
import socket

import pytest
from peer import HANG, SMTP_SINK, Peer, SmtpSink, start_peers
from support import RawClient, wait_for

BODY = b"From: alice@local.test\r\nTo: bob@remote.test\r\nSubject: hi\r\n\r\n.dot\r\n..two\r\nend\r\n"
STUFFED = b"From: alice@local.test\r\nTo: bob@remote.test\r\nSubject: hi\r\n\r\n..dot\r\n...two\r\nend\r\n.\r\n"


@pytest.fixture
def peer():
    with Peer(host="127.0.0.11") as p:
        yield p
    assert not p.errors, p.errors


def smtp(p: Peer) -> smtplib.SMTP:
    return smtplib.SMTP(p.host, p.port, local_hostname="client.test", timeout=5)


def raw(p: Peer, timeout: float = 5.0) -> RawClient:
    return RawClient(p.port, host=p.host, timeout=timeout)


def test_transaction_is_recorded_byte_exact(peer):
    with smtp(peer) as client:
        assert client.sendmail("alice@local.test", ["bob@remote.test"], BODY) == {}
    [t] = peer.wait_for_transactions(1)
    assert t.data_raw == STUFFED
    assert t.data == BODY
    assert (t.mail_line, t.rcpt_lines) == (
        b"mail FROM:<alice@local.test> size=%d" % len(BODY),
        [b"rcpt TO:<bob@remote.test>"],
    )
    assert (t.sender, t.recipients, t.final_reply, t.accepted) == (
        "alice@local.test",
        ["bob@remote.test"],
        "250 2.0.0 ok",
        True,
    )
    assert (t.tls, t.auth_user, t.helo_name) == (False, None, "client.test")
    [c] = peer.connections
    assert c.commands == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    assert c.lines[0] == b"ehlo client.test"  # exactly as sent: smtplib writes the verb in lower case
    assert c.quit and c.greeting == "220 peer.test ESMTP peer"
    peer.wait_until_idle()
    assert not peer.violations


def test_dsn_parameters_are_recorded(peer):
    with smtp(peer) as client:
        client.sendmail(
            "alice@local.test",
            ["bob@remote.test"],
            BODY,
            mail_options=["RET=HDRS", "ENVID=QQ314159"],
            rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob@remote.test"],
        )
    [t] = peer.wait_for_transactions(1)
    assert t.mail_params == {"SIZE": str(len(BODY)), "RET": "HDRS", "ENVID": "QQ314159"}
    assert t.rcpt_params("bob@remote.test") == {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;Bob@remote.test"}
    assert t.rcpt_lines == [b"rcpt TO:<bob@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob@remote.test"]
    assert not peer.violations


def test_starttls_then_auth(certs):
    # 127.0.0.1: the address in the test certificate, so the client verifies it.
    with Peer(host="127.0.0.1", certs=certs, users={"relay": "secret"}) as p:
        for mechanism in ("PLAIN", "LOGIN"):
            with smtp(p) as client:
                client.ehlo("client.test")
                assert client.has_extn("starttls") and not client.has_extn("auth")
                assert client.starttls(context=certs.client_context())[0] == 220
                client.ehlo("client.test")
                assert not client.has_extn("starttls")
                assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
                client.user, client.password = "relay", "secret"
                method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
                assert client.auth(mechanism, method, initial_response_ok=mechanism == "PLAIN")[0] == 235
                client.sendmail("alice@local.test", ["bob@remote.test"], BODY)
        with smtp(p) as client:
            client.starttls(context=certs.client_context())
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("relay", "wrong")
        transactions = p.wait_for_transactions(2)
        assert [(t.tls, t.auth_user) for t in transactions] == [(True, "relay")] * 2
        connections = p.connections
        assert [(c.tls, c.tls_version is not None, c.auth_user) for c in connections] == [
            (True, True, "relay"),
            (True, True, "relay"),
            (True, True, None),
        ]
        assert connections[1].auth_attempts == [("LOGIN", "relay", True)]
        assert connections[2].auth_attempts[-1] == ("LOGIN", "relay", False)  # smtplib tries PLAIN, then LOGIN
        assert not p.violations and not p.errors


def test_auth_and_mail_in_clear_are_visible(certs):
    with Peer(host="127.0.0.1", certs=certs, users={"relay": "secret"}) as p:
        p.require_tls = True
        with raw(p) as client:
            assert client.reply()[0] == 220
            assert client.cmd("EHLO client.test")[0] == 250
            assert client.cmd("AUTH PLAIN AHJlbGF5AHNlY3JldA==")[0] == 503  # not offered in clear
            assert client.cmd("MAIL FROM:<a@local.test>")[0] == 530
        assert p.violations == ["#1: AUTH not offered (in clear)"]
        assert p.all_transactions == []


def test_per_recipient_replies_and_envelope(peer):
    peer.rcpt_replies["gone@remote.test"] = "550 5.1.1 no such user"
    peer.rcpt_replies["busy@remote.test"] = "450 4.2.1 mailbox busy"
    with smtp(peer) as client:
        refused = client.sendmail("alice@local.test", ["gone@remote.test", "bob@remote.test", "busy@remote.test"], BODY)
    assert refused == {
        "gone@remote.test": (550, b"5.1.1 no such user"),
        "busy@remote.test": (450, b"4.2.1 mailbox busy"),
    }
    [t] = peer.wait_for_transactions(1)
    assert t.recipients == ["bob@remote.test"]
    assert [(r.address, r.reply) for r in t.rcpts] == [
        ("gone@remote.test", "550 5.1.1 no such user"),
        ("bob@remote.test", "250 2.1.5 recipient ok"),
        ("busy@remote.test", "450 4.2.1 mailbox busy"),
    ]


@pytest.mark.parametrize(
    ("setting", "value", "step", "code"),
    [
        ("mail_reply", "451 4.3.0 sender check failed", "MAIL", 451),
        ("rcpt_reply", "550 5.7.1 relaying denied", "RCPT", 550),
        ("data_reply", "554 5.3.0 no data today", "DATA", 554),
        ("final_reply", "451 4.3.0 try later", ".", 451),
        ("final_reply", "554 5.7.1 rejected", ".", 554),
        ("final_reply", "250 2.0.0 first line\nsecond line", ".", 250),
    ],
)
def test_reply_overrides(peer, setting, value, step, code):
    setattr(peer, setting, value)
    dialogue = [("MAIL FROM:<a@local.test>", "MAIL"), ("RCPT TO:<b@remote.test>", "RCPT"), ("DATA", "DATA")]
    with raw(peer) as client:
        client.reply()
        client.cmd("EHLO client.test")
        for line, name in dialogue:
            got = client.cmd(line)
            if name == step:
                assert got == (code, value[4:])
                break
            assert got[0] in (250, 354)
        else:
            assert client.cmd(b"hello\r\n.") == (code, value[4:])
        assert client.cmd("QUIT")[0] == 221
    assert not peer.violations


@pytest.mark.parametrize(
    ("fail_at", "commands", "answered"),
    [
        (("EHLO", 1, "421 4.3.2 going down"), ["EHLO client.test"], 0),
        (("MAIL", 1, "421 4.3.2 bye"), ["EHLO c", "MAIL FROM:<a@local.test>"], 1),
        (
            ("RCPT", 2, "421 4.3.2 bye"),
            ["EHLO c", "MAIL FROM:<a@l.test>", "RCPT TO:<b@r.test>", "RCPT TO:<c@r.test>"],
            3,
        ),
        (("DATA", 1, None), ["EHLO c", "MAIL FROM:<a@l.test>", "RCPT TO:<b@r.test>", "DATA"], 3),
    ],
)
def test_fail_at_a_command_then_close(peer, fail_at, commands, answered):
    peer.fail_at = fail_at
    with raw(peer) as client:
        assert client.reply()[0] == 220
        for line in commands[:answered]:
            assert client.cmd(line)[0] == 250
        client.send(commands[answered].encode() + b"\r\n")
        if fail_at[2] is None:
            assert client.closed() and client.buf == b""
        else:
            assert client.reply() == (421, fail_at[2][4:])
            assert client.closed()
    [c] = peer.connections
    assert c.commands == [line.split()[0] for line in commands]
    assert not peer.violations


def test_drop_after_dot_records_the_message_and_sends_nothing(peer):
    peer.drop_after_dot = True
    with raw(peer) as client:
        client.reply()
        for line in ("EHLO c", "MAIL FROM:<a@local.test>", "RCPT TO:<b@remote.test>", "DATA"):
            client.cmd(line)
        client.send(STUFFED)
        assert client.closed() and client.buf == b""
    [t] = peer.wait_for_transactions(1)
    assert (t.complete, t.final_reply, t.data_raw, t.data) == (True, None, STUFFED, BODY)


def test_hang_after_dot_and_silent_greeting_end_on_stop(peer):
    peer.once(greeting=None)
    peer.once(fail_at=(".", 1, HANG))
    with raw(peer) as silent, raw(peer) as hung:
        assert not silent.closed(timeout=0.2) and silent.buf == b""  # no greeting
        hung.reply()
        for line in ("EHLO c", "MAIL FROM:<a@local.test>", "RCPT TO:<b@remote.test>", "DATA"):
            hung.cmd(line)
        hung.send(b"x\r\n.\r\n")
        peer.wait_for_transactions(1)
        assert not hung.closed(timeout=0.2)
        peer.stop(timeout=2)  # raises if a session thread is still blocked
        assert silent.closed() and hung.closed()
    assert [c.closed for c in peer.connections] == [True, True]
    assert peer.transactions[0].final_reply is None


def test_421_and_554_greetings(peer):
    peer.once(greeting="421 4.3.2 too busy")
    peer.once(greeting="554 5.3.2 no SMTP service here")
    with raw(peer) as client:
        assert client.reply() == (421, "4.3.2 too busy")
        assert client.closed()
    with raw(peer) as client:
        assert client.reply() == (554, "5.3.2 no SMTP service here")
        assert client.cmd("EHLO c")[0] == 503
        assert client.cmd("QUIT")[0] == 221
        assert client.closed()
    with smtp(peer) as client:  # the queue of once() is used up: a normal greeting
        assert client.noop()[0] == 250


def test_refused_ehlo_falls_back_to_helo(peer):
    peer.ehlo_reply = "500 5.5.1 command not recognized"
    with smtp(peer) as client:
        client.sendmail("alice@local.test", ["bob@remote.test"], BODY)
    [c] = peer.connections
    assert c.commands[:2] == ["EHLO", "HELO"] and c.helo_verb == "HELO" and c.offered == []
    assert peer.wait_for_transactions(1)[0].mail_params == {}  # nothing offered, nothing used
    assert not peer.violations


def test_two_peers_share_one_port():
    first, second = start_peers("127.0.0.11", "127.0.0.12")
    third = Peer(host="127.0.0.13", port=first.port)
    with first, second, third:
        assert first.port == second.port == third.port
        for p, rcpt in ((first, "one@remote.test"), (second, "two@remote.test"), (third, "three@remote.test")):
            with smtp(p) as client:
                client.sendmail("alice@local.test", [rcpt], BODY)
        assert [[t.recipients for t in p.transactions] for p in (first, second, third)] == [
            [["one@remote.test"]],
            [["two@remote.test"]],
            [["three@remote.test"]],
        ]


def test_stopped_peer_refuses_and_restarts_on_the_same_port(peer):
    port = peer.port
    peer.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((peer.host, port), timeout=2)
    peer.start()
    assert peer.port == port
    with smtp(peer) as client:
        assert client.noop()[0] == 250


def test_connection_reuse_is_counted(peer):
    with smtp(peer) as client:
        client.sendmail("alice@local.test", ["bob@remote.test"], BODY)
        client.rset()
        client.noop()
        client.sendmail("alice@local.test", ["carol@remote.test"], BODY)
    transactions = peer.wait_for_transactions(2)
    assert [t.connection for t in transactions] == [1, 1]
    assert (len(peer.connections), peer.rset_count, peer.noop_count) == (1, 1, 1)


def test_size_is_enforced(peer):
    peer.extensions = ["PIPELINING", "SIZE 100", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN"]
    with smtp(peer) as client, pytest.raises(smtplib.SMTPSenderRefused) as refused:
        client.sendmail("alice@local.test", ["bob@remote.test"], BODY * 2)
    assert refused.value.smtp_code == 552


@pytest.mark.parametrize(
    ("lines", "violation"),
    [
        ([b"MAIL FROM:<a@local.test>"], "MAIL before EHLO/HELO"),
        ([b"EHLO c", b"RCPT TO:<b@remote.test>"], "RCPT without MAIL"),
        ([b"EHLO c", b"DATA"], "DATA without MAIL"),
        ([b"EHLO c", b"MAIL FROM:<a@local.test>\nRCPT TO:<b@remote.test>"], "bare CR or LF in command"),
        ([b"EHLO c", b"MAIL FROM:<a@local.test> " + b"X" * 1000], "command line of 1027 octets"),
        ([b"EHLO c", b"MAIL FROM:<a@local.test> BODY=BINARYMIME"], "MAIL parameter BODY not offered"),
        ([b"HELO c", b"MAIL FROM:<a@local.test> RET=HDRS"], "MAIL parameter RET not offered"),
        ([b"EHLO c", "MAIL FROM:<rené@local.test>".encode()], "non-ASCII address"),
        ([b"EHLO c", b"MAIL FROM:a@local.test"], "path without angle brackets"),
        ([b"EHLO c", b"BDAT 10 LAST"], "unknown command"),
        ([b"EHLO c", b"STARTTLS"], "STARTTLS not offered"),
    ],
)
def test_violations_are_recorded(peer, lines, violation):
    peer.extensions.remove("8BITMIME")
    with raw(peer) as client:
        client.reply()
        for line in lines:
            client.cmd(line)
    wait_for(lambda: peer.violations, timeout=5, what="a violation")
    assert any(violation in v for v in peer.violations), peer.violations


@pytest.mark.parametrize(
    ("lines", "replies", "violation"),
    [
        ([b"EHLO c\r\nNOOP"], 2, "pipelined after EHLO"),
        ([b"HELO c", b"MAIL FROM:<a@local.test>\r\nRCPT TO:<b@remote.test>"], 3, "pipelined after MAIL"),
        ([b"EHLO c", b"MAIL FROM:<a@local.test>", b"RCPT TO:<b@remote.test>", b"DATA\r\nhi"], 4, "after DATA"),
    ],
)
def test_bad_pipelining_is_recorded(peer, lines, replies, violation):
    with raw(peer) as client:
        client.reply()
        client.send(b"".join(line + b"\r\n" for line in lines))
        for _ in range(replies):
            client.reply()
        wait_for(lambda: peer.violations, timeout=5, what="a violation")
    assert any(violation in v for v in peer.violations), peer.violations


@pytest.mark.parametrize(
    ("data", "violation"),
    [
        (b"one\ntwo\r\n.\r\n", "bare CR or LF in data"),
        (b"one\rtwo\r\n.\r\n", "bare CR or LF in data"),
        (b"x" * 999 + b"\r\n.\r\n", "data line of 1001 octets"),
        (b".dot\r\n.\r\n", "single dot"),
        (b"caf\xc3\xa9\r\n.\r\n", "8-bit data without BODY=8BITMIME"),
    ],
)
def test_data_violations_are_recorded(peer, data, violation):
    with raw(peer) as client:
        client.reply()
        for line in ("EHLO c", "MAIL FROM:<a@local.test>", "RCPT TO:<b@remote.test>", "DATA"):
            client.cmd(line)
        assert client.cmd(data[:-2])[0] == 250
    [t] = peer.wait_for_transactions(1)
    assert t.data_raw == data
    [found] = peer.violations
    assert violation in found


def test_bare_lf_cannot_end_the_data(peer):
    """SMTP smuggling: only CRLF.CRLF ends the data; LF.LF or LF.CRLF is content."""
    smuggled = b"one\r\n\n.\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@remote.test>\r\nDATA\r\nevil\r\n.\r\n"
    with raw(peer) as client:
        client.reply()
        for line in ("EHLO c", "MAIL FROM:<a@local.test>", "RCPT TO:<b@remote.test>", "DATA"):
            client.cmd(line)
        client.send(smuggled)
        assert client.reply()[0] == 250
        assert client.cmd("QUIT")[0] == 221
    [t] = peer.wait_for_transactions(1)
    assert t.data_raw == smuggled and peer.all_transactions == [t]
    assert any("bare CR or LF" in v for v in peer.violations)


def test_once_rejects_unknown_settings(peer):
    with pytest.raises(TypeError):
        peer.once(final_replies="250 ok")


@pytest.mark.skipif(SMTP_SINK is None, reason="smtp-sink (package postfix) is not installed")
def test_smtp_sink_witness(tmp_path, peer):
    with SmtpSink(tmp_path / "sink", host="127.0.0.14", port=peer.port) as sink:
        with smtplib.SMTP(sink.host, sink.port, local_hostname="client.test", timeout=5) as client:
            client.sendmail("alice@local.test", ["bob@remote.test"], BODY, rcpt_options=["NOTIFY=NEVER"])
            # A transaction in progress is not a message yet.
            client.mail("alice@local.test")
            client.rcpt("carol@remote.test")
            client.putcmd("data")
            assert client.getreply()[0] == 354
            client.send(b"Subject: half\r\n")
            assert len(sink.wait_for_messages(1)) == 1
            assert len(sink.messages()) == 1
            client.send(b".\r\n")
            assert client.getreply()[0] == 250
        first, second = sink.wait_for_messages(2)
    assert (first.client_addr, first.helo, first.sender) == ("127.0.0.1", "client.test", "alice@local.test")
    assert first.mail_args == "<alice@local.test>"  # smtp-sink offers no SIZE
    assert first.rcpt_args == ["<bob@remote.test> NOTIFY=NEVER"]
    assert first.content == BODY.replace(b"\r\n", b"\n")
    assert (second.recipients, second.content) == (["carol@remote.test"], b"Subject: half\n")
