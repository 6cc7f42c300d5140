"""Plug-ins in a real daemon, over smtplib: the block list, failures and timeouts,
the tagger's header in the queue, a connect-time refusal, the reload of the
block list, and a before-delivery refusal that bounces."""

import os
import signal
import smtplib
import time

import pytest
from peer import Peer
from support import lib_reply, wait_for

from empath.smtp import replies

BODY = b"From: news@lists.test\r\nX-Empath-Tag: forged by the client\r\nSubject: hi\r\n\r\nhello\r\n"


def plugins_toml(blocked_file) -> str:
    return f"""
[[plugins]]
name = "no-strangers"
hook = "connect"
call = "tests.plugin_samples:no_strangers"

[[plugins]]
name = "helo"
hook = "helo"
call = "tests.plugin_samples:no_localhost_helo"

[[plugins]]
name = "blocklist"
hook = ["mail", "rcpt"]
call = "blocklist"
options = {{ file = "{blocked_file}" }}

[[plugins]]
name = "explode"
hook = "rcpt"
call = "tests.plugin_samples:explode"

[[plugins]]
name = "slow"
hook = "rcpt"
call = "tests.plugin_samples:slow"
timeout = "300ms"
options = {{ seconds = 10 }}

[[plugins]]
name = "tagger"
hook = "data"
call = "empath.plugins.tagger:tag"
options = {{ rules = [ {{ field = "sender", pattern = '@lists\\.test$', tag = "list" }} ] }}
"""


@pytest.fixture
def blocked(tmp_path):
    path = tmp_path / "blocked"
    path.write_text("# senders and recipients we refuse\nspam@bad.test\nnobody@example.test\n")
    return path


@pytest.fixture
def daemon(make_daemon, blocked):
    d = make_daemon(tls=False)
    d.extra = plugins_toml(blocked)
    return d.start()


def client(daemon, source: str = "127.0.0.1") -> smtplib.SMTP:
    c = smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10, source_address=(source, 0))
    c.ehlo("client.test")
    return c


def queue_id_of(reply: bytes) -> str:
    assert reply.startswith(b"2.0.0 OK queued as "), reply
    return reply.rsplit(b" ", 1)[1].decode()


def test_a_blocklisted_sender_and_recipient_get_the_plugins_reply(daemon):
    with client(daemon) as c:
        assert c.mail("spam@bad.test") == (550, b"5.7.1 Sender address rejected: <spam@bad.test> is blocked here")
        assert c.mail("someone@good.test")[0] == 250
        assert c.rcpt("nobody@example.test") == (
            550,
            b"5.7.1 Recipient address rejected: <nobody@example.test> is blocked here",
        )
        assert c.rcpt("bob@example.test")[0] == 250
        code, text = c.data(b"Subject: x\r\n\r\nx\r\n")
    assert code == 250
    assert daemon.recipients(queue_id_of(text)) == ["bob@example.test"]
    log = daemon.log_since_start()
    assert "plugin_reject plugin=blocklist hook=mail" in log


def test_a_raising_plugin_gives_451_and_the_next_session_works(daemon):
    with client(daemon) as c:
        c.mail("alice@good.test")
        assert c.rcpt("boom@example.test") == lib_reply(replies.PLUGIN_FAILURE)
        assert c.rcpt("bob@example.test")[0] == 250  # the same session goes on
    log = daemon.log_since_start()
    assert "plugin_error plugin=explode hook=rcpt" in log
    assert "RuntimeError: secret internals of the plug-in" in log
    assert "Traceback" not in log
    with client(daemon) as c:
        c.mail("alice@good.test")
        assert c.rcpt("carol@example.test")[0] == 250
        assert c.data(b"Subject: x\r\n\r\nx\r\n")[0] == 250


def test_a_slow_plugin_times_out_with_451(daemon):
    with client(daemon) as c:
        c.mail("alice@good.test")
        started = time.monotonic()
        reply = c.rcpt("slow@example.test")
        took = time.monotonic() - started
        assert reply == lib_reply(replies.PLUGIN_FAILURE)
        assert took < 2.0, took  # the plug-in sleeps 10 s; its timeout is 300 ms
        # Meanwhile another client is served: the hub was never blocked.
        with client(daemon) as other:
            assert other.noop()[0] == 250
    assert 'error="timeout: no answer within 0.3s"' in daemon.log_since_start()
    # The plug-in's thread still sleeps: it must not hold up a clean stop.
    started = time.monotonic()
    assert daemon.stop() == 0
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize("lines", [0, 40_000], ids=["small", "spooled"])
def test_the_taggers_header_is_in_the_queued_message(daemon, lines):
    # Over 256 KiB, the body waits in a spool file: the plug-in reads it whole, the tag goes on its header.
    rest = b"line of a long report\r\n" * lines
    with client(daemon) as c:
        c.mail("news@lists.test")
        c.rcpt("bob@example.test")
        code, text = c.data(BODY + rest)
    assert code == 250
    body = daemon.body(queue_id_of(text))
    assert body.startswith(b"Received: ")
    assert body.endswith(b"\r\nX-Empath-Tag: list\r\nFrom: news@lists.test\r\nSubject: hi\r\n\r\nhello\r\n" + rest)
    assert b"forged" not in body


def test_a_connect_plugin_refuses_a_client_before_the_greeting(daemon):
    with pytest.raises(smtplib.SMTPConnectError) as info:
        smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10, source_address=("127.0.0.3", 0))
    assert (info.value.smtp_code, info.value.smtp_error) == (554, b"5.7.1 no mail from 127.0.0.3 here")
    with client(daemon) as c:  # others are greeted as usual
        assert c.noop()[0] == 250


def test_a_helo_plugin_refuses_a_name_and_the_client_may_try_again(daemon):
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as c:
        assert c.ehlo("localhost") == (550, b"5.7.1 You are not localhost")
        assert c.mail("alice@good.test") == lib_reply(replies.NEED_HELO)
        assert c.ehlo("client.test")[0] == 250
        assert c.mail("alice@good.test")[0] == 250


def test_the_block_list_is_read_again_on_reload(daemon, blocked):
    with client(daemon) as c:
        assert c.mail("newcomer@bad.test")[0] == 250
    blocked.write_text("newcomer@bad.test\n")
    with client(daemon) as c:
        assert c.mail("newcomer@bad.test")[0] == 250  # not before the reload
    os.kill(daemon.proc.pid, signal.SIGHUP)
    wait_for(lambda: "reload" in daemon.log_since_start() and "result=applied" in daemon.log_since_start())
    with client(daemon) as c:
        assert c.mail("newcomer@bad.test")[0] == 550
        assert c.mail("spam@bad.test")[0] == 250  # off the list now


# -- before delivery ---------------------------------------------------------------------


def test_a_before_delivery_refusal_bounces_or_defers_that_recipient_only(make_daemon):
    with Peer(host="127.0.0.11") as remote:
        d = make_daemon(
            tls=False,
            delivery={"retry_first": "1h", "retry_max": "1h", "idle_time": 0},
            **{'domains."remote.test"': {"route": [f"{remote.host}:{remote.port}"]}},
        )
        d.extra = """
[[plugins]]
name = "gatekeeper"
hook = "before_delivery"
call = "tests.plugin_samples:gatekeeper"
"""
        d.start()
        with smtplib.SMTP("127.0.0.1", d.ports.smtp, timeout=10, source_address=("127.0.0.2", 0)) as c:
            c.ehlo("client.test")
            c.mail("alice@local.test")
            for rcpt in ("refuse@remote.test", "later@remote.test", "ok@remote.test"):
                assert c.rcpt(rcpt)[0] == 250
            code, text = c.data(b"Subject: x\r\n\r\nx\r\n")
        assert code == 250
        queue_id = queue_id_of(text)
        [t] = remote.wait_for_transactions(1)
        assert t.recipients == ["ok@remote.test"]

        def states():
            rows = d.query("SELECT address, state, last_reply FROM recipient WHERE queue_id = ?", queue_id)
            return {address: (state, reply) for address, state, reply in rows}

        wanted = {"refuse@remote.test": "bounced", "later@remote.test": "deferred", "ok@remote.test": "delivered"}
        got = wait_for(lambda: {a: s for a, (s, _) in states().items()} == wanted and states(), what=str(wanted))
        assert got["refuse@remote.test"][1] == "550 5.7.1 not to refuse@remote.test on route:remote.test, attempt 1"
        assert got["later@remote.test"][1] == "451 4.7.1 not now"

        # Every recipient refused: no connection is made at all.
        with smtplib.SMTP("127.0.0.1", d.ports.smtp, timeout=10, source_address=("127.0.0.2", 0)) as c:
            c.ehlo("client.test")
            c.mail("alice@local.test")
            c.rcpt("refuse@remote.test")
            queue_id = queue_id_of(c.data(b"Subject: y\r\n\r\ny\r\n")[1])
        sql = "SELECT kind, detail FROM event WHERE queue_id = ? AND recipient = ?"  # events outlive the message
        [(kind, detail)] = wait_for(lambda: d.query(sql, queue_id, "refuse@remote.test"), what="the bounce")
        reply = "550 5.7.1 not to refuse@remote.test on route:remote.test, attempt 1"
        assert (kind, detail) == ("bounced", f"relay=none dsn=5.7.1 {reply}")
        assert len(remote.connections) == 1
    assert not remote.errors, remote.errors
