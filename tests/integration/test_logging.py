"""The log as an operator reads it: one trace id for a message's whole life,
the stable field names, the Postfix-like delivery line, the audit events,
and no secret after AUTH.

Retries are forced with SIGUSR1, never waited for.
"""

import base64
import json
import os
import re
import signal
import smtplib
import subprocess

import pytest
from peer import Peer
from support import ROOT, RawClient, wait_for

SENT_FROM = ("127.0.0.2", 0)  # the trusted network of the test config: may relay
BODY = b"From: alice@sender.test\r\nTo: bob@remote.test\r\nSubject: trace\r\n\r\nhello\r\n"
PASSWORD = "correct horse battery staple"
DELIVERY = {"retry_first": "1h", "retry_max": "1h", "connect_timeout": "2s", "command_timeout": "3s", "idle_time": 0}

# Fields every line has, and those the lines of each event about a message must have.
ALWAYS = {"time", "level", "logger", "event"}
FIELDS = {
    "connect": {"client", "trace_id"},
    "queued": {"queue_id", "client", "from", "trace_id"},
    "delivery": {
        "queue_id",
        "to",
        "domain",
        "relay",
        "code",
        "dsn",
        "status",
        "attempt",
        "delay",
        "trace_id",
    },
    "notice": {"queue_id", "trace_id"},
    "disconnect": {"client", "trace_id"},
}


@pytest.fixture
def remote():
    with Peer(host="127.0.0.11") as p:
        yield p
    assert not p.errors, p.errors


@pytest.fixture
def sender_peer():
    """The MX of sender.test, where the notice goes."""
    with Peer(host="127.0.0.12") as p:
        yield p
    assert not p.errors, p.errors


def routed(make_daemon, remote, sender_peer=None, **server):
    sections = {
        "server": server,
        "delivery": DELIVERY,
        'domains."remote.test"': {"route": [f"{remote.host}:{remote.port}"]},
    }
    if sender_peer is not None:
        sections['domains."sender.test"'] = {"route": [f"{sender_peer.host}:{sender_peer.port}"]}
    return make_daemon(**sections)


def send(daemon) -> str:
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10, source_address=SENT_FROM) as client:
        client.ehlo("client.test")
        client.mail("alice@sender.test")
        client.rcpt("bob@remote.test")
        code, text = client.data(BODY)
    assert code == 250, text
    return re.fullmatch(rb"2\.0\.0 OK queued as (\S+)", text).group(1).decode()


def lines(daemon) -> list[dict]:
    """Every line of the JSON log, each parsed (a line that is not one JSON object fails the test)."""
    return [json.loads(line) for line in daemon.log().splitlines() if line.strip()]


def deliveries(daemon, queue_id: str) -> list[dict]:
    return [d for d in lines(daemon) if d["event"] == "delivery" and d.get("queue_id") == queue_id]


def state(daemon, queue_id: str) -> list[str]:
    return [r[0] for r in daemon.query("SELECT state FROM recipient WHERE queue_id = ?", queue_id)]


def test_one_trace_id_from_receive_to_the_notice_delivery_across_a_restart(make_daemon, remote, sender_peer):
    remote.rcpt_reply = "450 4.2.1 mailbox busy"
    daemon = routed(make_daemon, remote, sender_peer, log_format="json").start()
    queue_id = send(daemon)
    wait_for(lambda: state(daemon, queue_id) == ["deferred"], what="the first attempt to be deferred")

    # The retry is made by another worker: a new daemon process on the same queue.
    assert daemon.stop() == 0
    remote.rcpt_reply = "550 5.1.1 no such user"
    daemon.start()
    with RawClient(daemon.ports.smtp) as client:  # serving, so the signal handlers are in place
        assert client.reply()[0] == 220
    os.kill(daemon.proc.pid, signal.SIGUSR1)
    [dsn] = sender_peer.wait_for_transactions(1)
    assert dsn.recipients == ["alice@sender.test"]

    [notice] = wait_for(
        lambda: [d for d in lines(daemon) if d["event"] == "notice" and d.get("original") == queue_id],
        what="the notice line",
    )
    notice_id = notice["queue_id"]
    [dsn_delivery] = wait_for(lambda: deliveries(daemon, notice_id), what="the notice's delivery line")

    log = lines(daemon)
    [received] = [d for d in log if d["event"] == "queued"]
    trace = received["trace_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace)
    # Everything about the message or its notice carries its trace id...
    about = [d for d in log if d.get("queue_id") in (queue_id, notice_id) or d.get("original") == queue_id]
    assert {d.get("trace_id") for d in about} == {trace}
    # ... and one search for the trace id shows its whole life, in order.
    life = [d for d in log if d.get("trace_id") == trace]
    events = sorted(d["event"] for d in life if d["event"] != "command")
    assert events == sorted(["connect", "queued", "disconnect", "delivery", "delivery", "notice", "delivery"]), events
    assert {d["client"] for d in life if "client" in d} == {"127.0.0.2"}

    for d in log:
        assert d.keys() >= ALWAYS, d
    for d in life:
        assert FIELDS.get(d["event"], set()) <= d.keys(), d

    deferred, bounced = deliveries(daemon, queue_id)
    relay = f"127.0.0.11[127.0.0.11]:{remote.port}"
    assert {k: deferred[k] for k in ("to", "domain", "attempt", "status", "code", "dsn", "level")} == {
        "to": "bob@remote.test",
        "domain": "remote.test",
        "attempt": 1,
        "status": "deferred",
        "code": 450,
        "dsn": "4.2.1",
        "level": "warning",
    }
    assert deferred["reply"] == "450 4.2.1 mailbox busy" and deferred["relay"] == relay
    assert deferred["next_attempt"] > 0
    assert (bounced["attempt"], bounced["status"], bounced["code"], bounced["dsn"]) == (2, "bounced", 550, "5.1.1")
    assert bounced["delay"] >= deferred["delay"] >= 0
    assert "next_attempt" not in bounced
    assert dsn_delivery["to"] == "alice@sender.test" and dsn_delivery["domain"] == "sender.test"
    assert (dsn_delivery["status"], dsn_delivery["code"], dsn_delivery["attempt"]) == ("sent", 250, 1)


def test_text_log_delivery_line_reads_like_postfix(make_daemon, remote):
    daemon = routed(make_daemon, remote).start()
    queue_id = send(daemon)
    line = wait_for(
        lambda: [line for line in daemon.log().splitlines() if f" delivery queue_id={queue_id} " in line],
        what="the delivery line",
    )[0]
    pattern = (
        rf"\S+Z info empath\.delivery delivery queue_id={queue_id} to=<bob@remote\.test>"
        rf" relay=127\.0\.0\.11\[127\.0\.0\.11\]:{remote.port} delay=\d+\.?\d* attempt=1"
        r" dsn=2\.0\.0 status=sent \(250 2\.0\.0 ok\) trace_id=[0-9a-f]{32} took=\S+"
    )
    assert re.fullmatch(pattern, line), line


def test_auth_is_audited_and_no_secret_reaches_the_json_log(make_daemon, certs):
    daemon = make_daemon(server={"log_format": "json"})
    daemon.add_user("alice", PASSWORD)
    daemon.start()

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    wrong = "hunter2"
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
        client.starttls(context=certs.client_context())
        client.ehlo("client.test")
        assert client.docmd("AUTH LOGIN", b64("alice"))[0] == 334
        assert client.docmd(b64(wrong))[0] == 535
        assert client.docmd("AUTH PLAIN", b64(f"\0alice\0{PASSWORD}"))[0] == 235
    audited = wait_for(
        lambda: len(found := [d for d in lines(daemon) if d.get("audit")]) >= 2 and found, what="two audit lines"
    )
    failure, success = audited
    assert {k: failure[k] for k in ("logger", "event", "level", "user", "mechanism", "result", "client")} == {
        "logger": "empath.audit",
        "event": "auth",
        "level": "warning",
        "user": "alice",
        "mechanism": "LOGIN",
        "result": "failure",
        "client": "127.0.0.1",
    }
    assert (success["level"], success["mechanism"], success["result"]) == ("info", "PLAIN", "success")
    assert success["trace_id"] == failure["trace_id"]  # the same session
    assert not any(k in d for d in audited for k in ("password", "blob", "line"))

    # The debug log shows every command line: the SASL lines are hidden whole.
    commands = [d["line"] for d in lines(daemon) if d["event"] == "command"]
    assert "AUTH <hidden>" in commands and "<hidden>" in commands
    text = daemon.log()
    for secret in (PASSWORD, wrong):
        assert secret not in text
        assert b64(secret)[:6] not in text
        assert b64(f"\0alice\0{secret}")[8:] not in text
    assert b64("alice") not in text


def test_logrotate_with_the_shipped_snippet_and_the_log_goes_on_at_its_path(make_daemon, tmp_path):
    daemon = make_daemon().start()
    snippet = (ROOT / "conf" / "logrotate" / "empath").read_text()
    config = tmp_path / "logrotate.conf"
    config.write_text(snippet.replace("/var/log/empath/empath.log", str(daemon.log_path)))
    config.chmod(0o644)  # logrotate refuses a config others may write
    rotated = subprocess.run(
        ["logrotate", "--force", "--state", str(tmp_path / "state"), str(config)], capture_output=True, text=True
    )
    assert rotated.returncode == 0, rotated.stderr
    old = daemon.log_path.with_name(daemon.log_path.name + ".1")
    assert old.exists() and " started " in old.read_text()  # delaycompress: the first rotation stays plain

    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
        client.ehlo("after-rotation.test")
    wait_for(
        lambda: daemon.log_path.exists() and "after-rotation.test" in daemon.log_path.read_text(), what="a new log"
    )
    assert "after-rotation.test" not in old.read_text()
