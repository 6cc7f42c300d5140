"""Delivery results end to end: a real daemon delivers to scriptable peers on loopback.

Per-recipient verdicts in one transaction, failures after the final dot,
retries, RFC 3464 notices field by field, NOTIFY, expiry, delay warnings,
byte-exact bodies, SIZE and SMTPUTF8. Retries are forced with SIGUSR1,
never waited for.
"""

import email
import email.message
import email.policy
import email.utils
import os
import re
import signal
import smtplib
import sqlite3
import time

import pytest
from peer import HANG, SMTP_SINK, Peer, SmtpSink, Transaction
from support import wait_for

SENT_FROM = ("127.0.0.2", 0)  # the trusted network of the test config: may relay
REMOTE = "127.0.0.11"
SENDER_HOST = "127.0.0.12"  # where sender.test, the senders' domain, is routed

DELIVERY = {
    # Retries come when a test sends SIGUSR1, not by the clock (but see the delay warning).
    "retry_first": "1h",
    "retry_max": "1h",
    "connect_timeout": "2s",
    "command_timeout": "3s",
    "data_timeout": "3s",
    "idle_time": 0,
}

# For delay warnings, which need the clock to move: retries every second, a warning after one.
CLOCKED_RETRIES = {"retry_first": "1s", "retry_max": "1s", "delay_warning": "1s"}

# Complete (From, Date, Message-ID): mail from the trusted network gets what it lacks.
BODY = (
    b"From: alice@sender.test\r\nTo: bob@remote.test\r\nSubject: results\r\n"
    b"Date: Mon, 07 Dec 2026 12:00:00 +0000\r\nMessage-ID: <m1@sender.test>\r\n\r\nhello\r\n"
)


# -- helpers -----------------------------------------------------------------------


@pytest.fixture
def remote():
    with Peer(host=REMOTE) as p:
        yield p
    assert not p.errors, p.errors


@pytest.fixture
def sender_peer():
    """The MX of sender.test: where notices to alice@sender.test arrive."""
    with Peer(host=SENDER_HOST) as p:
        yield p
    assert not p.errors, p.errors


def hop(peer) -> str:
    return f"{peer.host}:{peer.port}"


def start(make_daemon, remote, sender_peer=None, delivery: dict | None = None, **routes):
    """A daemon that routes remote.test to ``remote`` and sender.test to ``sender_peer``.

    ``routes`` maps more domains to their peers (a list for several hops), e.g. local_test=peer.
    """
    sections = {
        "delivery": {**DELIVERY, **(delivery or {})},
        'domains."remote.test"': {"route": [hop(p) for p in (remote if isinstance(remote, list) else [remote])]},
    }
    if sender_peer is not None:
        sections['domains."sender.test"'] = {"route": [hop(sender_peer)]}
    for name, peer in routes.items():
        sections[f'domains."{name.replace("_", ".")}"'] = {"route": [hop(peer)]}
    return make_daemon(**sections).start()


def send(daemon, sender: str, recipients: list[str], body: bytes = BODY, mail_options=(), rcpt_options=()) -> str:
    """Send one message in from the trusted address; return its queue id.

    ``rcpt_options``: a list for every RCPT, or a dict of lists by recipient.
    """
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10, source_address=SENT_FROM) as client:
        client.ehlo("client.test")
        code, text = client.mail(sender, list(mail_options))
        assert code == 250, text
        for rcpt in recipients:
            options = rcpt_options.get(rcpt, []) if isinstance(rcpt_options, dict) else rcpt_options
            code, text = client.rcpt(rcpt, list(options))
            assert code == 250, text
        code, text = client.data(body)
    assert code == 250, text
    m = re.fullmatch(rb"2\.0\.0 OK queued as (\S+)", text)
    assert m, text
    return m.group(1).decode()


def flush(daemon) -> None:
    """Make every deferred recipient due now (as postqueue -f)."""
    os.kill(daemon.proc.pid, signal.SIGUSR1)


def recipients(daemon, queue_id: str) -> dict[str, dict]:
    cols = ("address", "state", "attempts", "next_attempt_at", "last_reply", "last_status", "remote_mta", "notified")
    rows = daemon.query(f"SELECT {', '.join(cols)} FROM recipient WHERE queue_id = ? ORDER BY id", queue_id)
    return {row[0]: dict(zip(cols, row, strict=True)) for row in rows}


def states(daemon, queue_id: str) -> dict[str, str]:
    return {a: r["state"] for a, r in recipients(daemon, queue_id).items()}


def wait_states(daemon, queue_id: str, expected: dict[str, str], timeout: float = 10.0) -> dict[str, dict]:
    wait_for(lambda: states(daemon, queue_id) == expected, timeout, what=f"states {expected}")
    return recipients(daemon, queue_id)


def wait_gone(daemon, queue_id: str, timeout: float = 10.0) -> None:
    wait_for(
        lambda: not daemon.query("SELECT 1 FROM message WHERE queue_id = ?", queue_id),
        timeout,
        what=f"{queue_id} to leave the queue",
    )


def outcomes(daemon, queue_id: str) -> dict[str, tuple[str, str]]:
    """The last attempt's (kind, detail) by recipient, from the events (they outlive the message)."""
    rows = daemon.query(
        "SELECT recipient, kind, detail FROM event WHERE queue_id = ? AND recipient IS NOT NULL ORDER BY id", queue_id
    )
    return {recipient: (kind, detail) for recipient, kind, detail in rows}


def wait_outcomes(daemon, queue_id: str, expected: dict[str, str], timeout: float = 10.0) -> dict[str, str]:
    """Wait until each recipient's last attempt ended as ``expected``; return the details."""

    def reached():
        got = outcomes(daemon, queue_id)
        return {a: got.get(a, ("", ""))[0] for a in expected} == expected and got

    return {a: detail for a, (_, detail) in wait_for(reached, timeout, what=f"outcomes {expected}").items()}


def notices(daemon, queue_id: str) -> list[str]:
    """The queue ids of the notices made about ``queue_id`` (from its events)."""
    rows = daemon.query("SELECT detail FROM event WHERE queue_id = ? AND kind = 'notice' ORDER BY id", queue_id)
    return [re.search(r"notice (\S+) to", d).group(1) for (d,) in rows]


def without_received(data: bytes) -> bytes:
    """The message without the Received header Empath put on top."""
    assert data.startswith(b"Received: "), data[:100]
    end = 0
    while True:
        end = data.index(b"\r\n", end) + 2
        if data[end : end + 1] not in (b" ", b"\t"):
            return data[end:]


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


def report_fields(dsn: email.message.EmailMessage) -> tuple[dict, list[dict]]:
    """(per-message fields, [per-recipient fields]) of a delivery-status part, by lower-case name."""
    # The second part (RFC 6522); walk() would also find those of a returned DSN.
    status = dsn.get_payload()[1]
    assert status.get_content_type() == "message/delivery-status"
    payload = status.get_payload()
    blocks = [{k.lower(): str(v) for k, v in part.items()} for part in payload]
    return blocks[0], blocks[1:]


def queue_write(daemon, sql: str, *args) -> None:
    """Change the queue behind the daemon's back, as an operator's SQL would."""
    db = sqlite3.connect(daemon.data_dir / "queue.sqlite3", timeout=10)
    try:
        db.execute("PRAGMA busy_timeout = 10000")
        with db:
            db.execute(sql, args)
    finally:
        db.close()


# -- 1. per-recipient results in one transaction ----------------------------------


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "lockstep"])
def test_per_recipient_results_in_one_transaction(make_daemon, remote, sender_peer, pipelining):
    if not pipelining:
        remote.extensions = [e for e in remote.extensions if e != "PIPELINING"]
    remote.rcpt_replies = {
        "ok@remote.test": "250 2.1.5 ok",
        "later@remote.test": "450 4.2.1 mailbox busy, come back later",
        "gone@remote.test": "550 5.1.1 no such user here",
    }
    sender_peer.final_reply = "451 4.3.0 not now"  # keep the notice in the queue to read it
    daemon = start(make_daemon, remote, sender_peer)
    rcpts = ["ok@remote.test", "later@remote.test", "gone@remote.test"]
    queue_id = send(daemon, "alice@sender.test", rcpts)
    rows = wait_states(
        daemon,
        queue_id,
        {"ok@remote.test": "delivered", "later@remote.test": "deferred", "gone@remote.test": "bounced"},
    )
    [t] = remote.wait_for_transactions(1)
    assert len(remote.connections) == 1
    assert [r.address for r in t.rcpts] == rcpts
    assert t.recipients == ["ok@remote.test"]
    assert without_received(t.data) == BODY
    later = rows["later@remote.test"]
    assert later["attempts"] == 1
    assert later["next_attempt_at"] > time.time()
    assert "450 4.2.1 mailbox busy, come back later" in later["last_reply"]
    assert later["last_status"] == "4.2.1"
    assert rows["gone@remote.test"]["last_status"] == "5.1.1"
    assert rows["ok@remote.test"]["attempts"] == 1
    # Exactly one failure notice, about the bounced recipient only.
    [notice] = notices(daemon, queue_id)
    assert daemon.recipients(notice) == ["alice@sender.test"]
    _, blocks = report_fields(parse(daemon.body(notice)))
    assert [b["final-recipient"] for b in blocks] == ["rfc822; gone@remote.test"]

    remote.rcpt_replies = {}
    flush(daemon)
    wait_gone(daemon, queue_id)
    second = remote.wait_for_transactions(2)[1]
    assert [r.address for r in second.rcpts] == ["later@remote.test"]
    assert second.accepted
    assert notices(daemon, queue_id) == [notice]  # still only the one
    assert not remote.violations and not sender_peer.violations


# -- 2. failures after the dot, 421 and dropped connections ------------------------


@pytest.mark.parametrize(
    ("final", "state", "status"),
    [("451 4.3.0 queue full, try later", "deferred", "4.3.0"), ("554 5.6.0 content rejected", "bounced", "5.6.0")],
)
def test_reply_after_the_dot_applies_to_every_accepted_recipient(make_daemon, remote, final, state, status):
    remote.rcpt_replies = {"gone@remote.test": "550 5.1.1 no such user"}
    remote.final_reply = final
    daemon = start(make_daemon, remote)
    queue_id = send(daemon, "alice@sender.test", ["a@remote.test", "b@remote.test", "gone@remote.test"])
    details = wait_outcomes(
        daemon, queue_id, {"a@remote.test": state, "b@remote.test": state, "gone@remote.test": "bounced"}
    )
    [t] = remote.wait_for_transactions(1)
    assert t.recipients == ["a@remote.test", "b@remote.test"] and t.final_reply == final
    for address in ("a@remote.test", "b@remote.test"):
        assert f"dsn={status} {final}" in details[address]
    # The refused recipient keeps its own RCPT reply, not the final one.
    assert "dsn=5.1.1 550 5.1.1 no such user" in details["gone@remote.test"]
    if state == "deferred":
        rows = recipients(daemon, queue_id)
        assert [rows[a]["attempts"] for a in ("a@remote.test", "b@remote.test")] == [1, 1]
    assert not remote.violations


def test_refused_data_applies_to_the_accepted_recipients_only(make_daemon, remote):
    remote.rcpt_replies = {"later@remote.test": "450 4.2.1 mailbox busy"}
    remote.data_reply = "554 5.7.1 not from you"
    daemon = start(make_daemon, remote)
    queue_id = send(daemon, "alice@sender.test", ["a@remote.test", "later@remote.test"])
    details = wait_outcomes(daemon, queue_id, {"a@remote.test": "bounced", "later@remote.test": "deferred"})
    assert "dsn=5.7.1 554 5.7.1 not from you" in details["a@remote.test"]
    assert "dsn=4.2.1 450 4.2.1 mailbox busy" in details["later@remote.test"]
    assert not remote.violations


@pytest.mark.parametrize("fail_at", [("MAIL", 1, "421 4.3.2 closing, busy"), ("RCPT", 2, "421 4.3.2 closing, busy")])
def test_421_mid_session_defers_then_delivers_on_retry(make_daemon, remote, fail_at):
    remote.once(fail_at=fail_at)
    daemon = start(make_daemon, remote)
    queue_id = send(daemon, "alice@sender.test", ["a@remote.test", "b@remote.test"])
    rows = wait_states(daemon, queue_id, {"a@remote.test": "deferred", "b@remote.test": "deferred"})
    for row in rows.values():
        assert (row["attempts"], row["last_status"]) == (1, "4.3.2")
        assert "421 4.3.2 closing, busy" in row["last_reply"]
    assert remote.transactions == []  # nothing reached the dot
    flush(daemon)
    wait_gone(daemon, queue_id)
    [t] = remote.wait_for_transactions(1)
    assert t.recipients == ["a@remote.test", "b@remote.test"]
    assert not remote.violations


@pytest.mark.parametrize("fail_at", [("MAIL", 1, "421 4.3.2 closing, busy"), ("RCPT", 2, "421 4.3.2 closing, busy")])
def test_421_mid_session_tries_the_next_address(make_daemon, fail_at):
    first, second = Peer(host=REMOTE).start(), Peer(host="127.0.0.13").start()
    try:
        first.fail_at = fail_at
        daemon = start(make_daemon, [first, second])
        queue_id = send(daemon, "alice@sender.test", ["a@remote.test", "b@remote.test"])
        wait_gone(daemon, queue_id)
        [t] = second.wait_for_transactions(1)
        assert t.recipients == ["a@remote.test", "b@remote.test"] and t.accepted
        assert first.transactions == [] and len(first.connections) == 1
        assert not first.violations and not second.violations
    finally:
        first.stop()
        second.stop()


def test_drop_after_the_dot_defers_and_delivers_on_retry(make_daemon, remote):
    remote.once(drop_after_dot=True)
    daemon = start(make_daemon, remote)
    queue_id = send(daemon, "alice@sender.test", ["a@remote.test"])
    [row] = wait_states(daemon, queue_id, {"a@remote.test": "deferred"}).values()
    assert row["attempts"] == 1 and row["last_status"].startswith("4.")
    assert row["last_reply"] == "end of data: connection closed by the remote"
    [dropped] = remote.wait_for_transactions(1)
    assert dropped.final_reply is None and dropped.complete
    flush(daemon)
    wait_gone(daemon, queue_id)
    dropped, delivered = remote.wait_for_transactions(2)
    # At least once: the peer may have kept the first copy, so the same message went twice.
    assert delivered.accepted and delivered.data == dropped.data
    assert without_received(delivered.data) == BODY
    assert not remote.violations


@pytest.mark.parametrize("after_dot", [HANG, "421 4.3.2 shutting down"], ids=["timeout", "421"])
def test_no_verdict_after_the_dot_defers_without_trying_the_next_address(make_daemon, after_dot):
    # The first host may have the message already: another now could make two
    # copies at once; later, at-least-once, is the safe side.
    first, second = Peer(host=REMOTE).start(), Peer(host="127.0.0.13").start()
    try:
        first.once(fail_at=(".", 1, after_dot))
        daemon = start(make_daemon, [first, second], delivery={"data_timeout": "500ms"})
        queue_id = send(daemon, "alice@sender.test", ["a@remote.test"])
        [row] = wait_states(daemon, queue_id, {"a@remote.test": "deferred"}).values()
        assert row["attempts"] == 1 and row["last_status"].startswith("4.")
        assert second.connections == []
        flush(daemon)
        wait_gone(daemon, queue_id)
        assert first.wait_for_transactions(2)[1].accepted
        assert not first.violations and not second.violations
    finally:
        first.stop()
        second.stop()


# -- 3. the failure notice, field by field ------------------------------------------


def dsn_at(peer: Peer, n: int = 1) -> Transaction:
    """The n-th transaction at ``peer``, checked to be a notice to alice@sender.test from <>."""
    [*_, t] = peer.wait_for_transactions(n)
    assert t.sender == "" and t.mail_line.upper().startswith(b"MAIL FROM:<>")
    assert t.recipients == ["alice@sender.test"]
    return t


def test_failure_notice_fields_with_ret_full(make_daemon, remote, sender_peer):
    remote.rcpt_reply = "550 5.1.1 no such user here"
    daemon = start(make_daemon, remote, sender_peer)
    before = time.time()
    queue_id = send(
        daemon,
        "alice@sender.test",
        ["gone1@remote.test", "gone2@remote.test"],
        mail_options=["RET=FULL", "ENVID=QQ314159"],
        rcpt_options={"gone1@remote.test": ["ORCPT=rfc822;Gone1@remote.test"]},
    )
    stored = daemon.body(queue_id)
    wait_gone(daemon, queue_id)
    t = dsn_at(sender_peer)
    assert len(notices(daemon, queue_id)) == 1  # one notice for both recipients
    dsn = parse(t.data)
    assert dsn["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.test.example"
    assert dsn["To"].addresses[0].addr_spec == "alice@sender.test"
    assert dsn["Auto-Submitted"] == "auto-replied"
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["Subject"] and dsn["Date"] and dsn["Message-ID"]
    message, blocks = report_fields(dsn)
    assert message["reporting-mta"] == "dns; mx.test.example"
    assert message["original-envelope-id"] == "QQ314159"
    arrival = email.utils.parsedate_to_datetime(message["arrival-date"]).timestamp()
    assert before - 2 <= arrival <= time.time() + 1
    assert len(blocks) == 2
    first, second = blocks
    assert first["final-recipient"] == "rfc822; gone1@remote.test"
    assert first["original-recipient"] == "rfc822; Gone1@remote.test"
    assert second["final-recipient"] == "rfc822; gone2@remote.test"
    assert "original-recipient" not in second
    for block in blocks:
        assert block["action"] == "failed"
        assert block["status"] == "5.1.1"
        assert block["remote-mta"] == f"dns; {REMOTE}"
        assert block["diagnostic-code"] == "smtp; 550 5.1.1 no such user here"
    # RET=FULL: the message comes back whole, byte for byte as we queued it.
    [returned] = [p for p in dsn.walk() if p.get_content_type() == "message/rfc822"]
    assert stored in t.data
    assert returned.get_payload()[0]["Subject"] == "results"
    assert not remote.violations and not sender_peer.violations


def test_failure_notice_with_ret_hdrs_returns_headers_only(make_daemon, remote, sender_peer):
    remote.rcpt_reply = "550 5.1.1 no such user here"
    daemon = start(make_daemon, remote, sender_peer)
    queue_id = send(daemon, "alice@sender.test", ["gone@remote.test"], mail_options=["RET=HDRS"])
    stored = daemon.body(queue_id)
    wait_gone(daemon, queue_id)
    dsn = parse(dsn_at(sender_peer).data)
    [headers] = [p for p in dsn.walk() if p.get_content_type() == "text/rfc822-headers"]
    section = stored[: stored.index(b"\r\n\r\n") + 2]
    assert headers.get_payload(decode=True) == section
    assert not [p for p in dsn.walk() if p.get_content_type() == "message/rfc822"]
    assert b"hello" not in dsn_at(sender_peer).data.split(b"text/rfc822-headers", 1)[1]
    message, [block] = report_fields(dsn)
    assert "original-envelope-id" not in message
    assert (block["action"], block["status"]) == ("failed", "5.1.1")
    assert not remote.violations and not sender_peer.violations


# -- 4. NOTIFY, and never a notice about a notice ------------------------------------


def test_notify_never_means_no_notice(make_daemon, remote, sender_peer):
    remote.rcpt_reply = "550 5.1.1 no such user here"
    daemon = start(make_daemon, remote, sender_peer)
    queue_id = send(daemon, "alice@sender.test", ["gone@remote.test"], rcpt_options=["NOTIFY=NEVER"])
    wait_gone(daemon, queue_id)
    assert notices(daemon, queue_id) == []
    assert daemon.messages() == []
    assert sender_peer.connections == []
    assert not remote.violations


def test_notify_success_to_a_peer_without_dsn_is_reported_relayed(make_daemon, remote, sender_peer):
    remote.extensions = [e for e in remote.extensions if e != "DSN"]
    daemon = start(make_daemon, remote, sender_peer)
    queue_id = send(
        daemon, "alice@sender.test", ["bob@remote.test"], mail_options=["ENVID=E1"], rcpt_options=["NOTIFY=SUCCESS"]
    )
    wait_gone(daemon, queue_id)
    [t] = remote.wait_for_transactions(1)
    assert t.rcpt_params("bob@remote.test") == {} and "ENVID" not in t.mail_params
    assert len(notices(daemon, queue_id)) == 1
    dsn = parse(dsn_at(sender_peer).data)
    message, [block] = report_fields(dsn)
    assert message["original-envelope-id"] == "E1"
    assert (block["action"], block["status"]) == ("relayed", "2.0.0")
    assert block["final-recipient"] == "rfc822; bob@remote.test"
    # Success reports carry the headers only (RFC 3461 §4.3).
    assert [p for p in dsn.walk() if p.get_content_type() == "text/rfc822-headers"]
    assert not remote.violations and not sender_peer.violations


def test_notify_to_a_peer_with_dsn_is_passed_on(make_daemon, remote, sender_peer):
    daemon = start(make_daemon, remote, sender_peer)
    queue_id = send(
        daemon,
        "alice@sender.test",
        ["bob@remote.test"],
        mail_options=["RET=HDRS", "ENVID=QQ+2B314"],
        rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob+2Btag@remote.test"],
    )
    wait_gone(daemon, queue_id)
    [t] = remote.wait_for_transactions(1)
    # xtext decoded on the way in, encoded again on the way out: the same octets.
    assert t.mail_params["RET"] == "HDRS" and t.mail_params["ENVID"] == "QQ+2B314"
    assert t.rcpt_params("bob@remote.test") == {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;Bob+2Btag@remote.test"}
    assert notices(daemon, queue_id) == []  # the next hop reports success now, not us
    assert sender_peer.connections == []
    assert not remote.violations


def test_null_sender_failure_goes_to_postmaster_once_and_never_loops(make_daemon, remote, sender_peer):
    local = Peer(host="127.0.0.13").start()
    try:
        remote.rcpt_reply = "550 5.1.1 no such user here"
        local.rcpt_reply = "550 5.1.1 postmaster unknown"  # the postmaster notice fails too
        daemon = start(make_daemon, remote, sender_peer, local_test=local)
        queue_id = send(daemon, "", ["bob@remote.test"])
        wait_for(lambda: daemon.messages() == [], what="the queue to empty")
        [t] = remote.all_transactions
        assert t.sender == ""
        [attempt] = local.all_transactions  # MAIL accepted, the RCPT refused
        assert attempt.sender == "" and [r.address for r in attempt.rcpts] == ["postmaster@local.test"]
        assert daemon.query("SELECT count(*) FROM event WHERE kind = 'notice'") == [(1,)]
        [notice] = notices(daemon, queue_id)
        assert daemon.query("SELECT kind FROM event WHERE queue_id = ? AND kind = 'bounced'", notice) == [("bounced",)]
        assert sender_peer.connections == []
        assert not remote.violations and not local.violations
    finally:
        local.stop()


def test_bounce_of_a_bounce_goes_to_the_postmaster(make_daemon, remote, sender_peer):
    local = Peer(host="127.0.0.13").start()
    try:
        remote.rcpt_reply = "550 5.1.1 no such user here"
        sender_peer.rcpt_reply = "550 5.1.1 alice left"  # the failure notice fails too
        daemon = start(make_daemon, remote, sender_peer, local_test=local)
        queue_id = send(daemon, "alice@sender.test", ["gone@remote.test"])
        wait_for(lambda: daemon.messages() == [], what="the queue to empty")
        [t] = local.wait_for_transactions(1)
        assert t.sender == "" and t.recipients == ["postmaster@local.test"]
        dsn = parse(t.data)
        assert dsn["To"].addresses[0].addr_spec == "postmaster@local.test"
        _, [block] = report_fields(dsn)
        assert block["final-recipient"] == "rfc822; alice@sender.test"
        assert (block["action"], block["status"]) == ("failed", "5.1.1")
        [notice] = notices(daemon, queue_id)
        assert len(notices(daemon, notice)) == 1
        assert daemon.query("SELECT count(*) FROM event WHERE kind = 'notice'") == [(2,)]
        assert not remote.violations and not local.violations and not sender_peer.violations
    finally:
        local.stop()


# -- 5. expiry and delay warnings ---------------------------------------------------


def test_expired_message_bounces_with_5_4_7_and_the_last_error(make_daemon, remote, sender_peer):
    remote.rcpt_reply = "450 4.2.1 mailbox busy"
    daemon = start(make_daemon, remote, sender_peer)
    queue_id = send(daemon, "alice@sender.test", ["bob@remote.test"])
    wait_states(daemon, queue_id, {"bob@remote.test": "deferred"})
    now = time.time()
    queue_write(daemon, "UPDATE message SET expires_at = ? WHERE queue_id = ?", now - 1, queue_id)
    queue_write(daemon, "UPDATE recipient SET next_attempt_at = ? WHERE queue_id = ?", now, queue_id)
    flush(daemon)
    wait_gone(daemon, queue_id)
    assert len(remote.all_transactions) == 2  # two attempts
    dsn = parse(dsn_at(sender_peer).data)
    _, [block] = report_fields(dsn)
    assert (block["action"], block["status"]) == ("failed", "5.4.7")
    assert "450 4.2.1 mailbox busy" in block["diagnostic-code"]
    assert not remote.violations and not sender_peer.violations


def test_delay_warning_is_sent_once(make_daemon, remote, sender_peer):
    remote.rcpt_reply = "450 4.2.1 mailbox busy"
    daemon = start(make_daemon, remote, sender_peer, delivery=CLOCKED_RETRIES)
    queue_id = send(daemon, "alice@sender.test", ["bob@remote.test"])
    wait_for(lambda: recipients(daemon, queue_id)["bob@remote.test"]["attempts"] >= 4, timeout=15, what="four attempts")
    assert len(notices(daemon, queue_id)) == 1
    t = dsn_at(sender_peer)
    dsn = parse(t.data)
    _, [block] = report_fields(dsn)
    assert (block["action"], block["status"]) == ("delayed", "4.2.1")
    assert "will-retry-until" in block
    assert dsn["Subject"].startswith("Delayed")
    assert recipients(daemon, queue_id)["bob@remote.test"]["notified"] == "delayed"
    assert len(sender_peer.transactions) == 1
    assert not remote.violations and not sender_peer.violations


def test_relayed_notice_follows_a_delay_warning(make_daemon, remote, sender_peer):
    remote.extensions = [e for e in remote.extensions if e != "DSN"]
    remote.rcpt_reply = "450 4.2.1 mailbox busy"
    daemon = start(make_daemon, remote, sender_peer, delivery=CLOCKED_RETRIES)
    queue_id = send(daemon, "alice@sender.test", ["bob@remote.test"], rcpt_options=["NOTIFY=SUCCESS,DELAY"])
    wait_for(lambda: len(notices(daemon, queue_id)) == 1, what="the delay warning")
    remote.rcpt_reply = "250 2.1.5 ok"
    flush(daemon)
    wait_gone(daemon, queue_id)
    assert len(notices(daemon, queue_id)) == 2
    delayed, relayed = sender_peer.wait_for_transactions(2)
    assert [b["action"] for b in report_fields(parse(delayed.data))[1]] == ["delayed"]
    assert [b["action"] for b in report_fields(parse(relayed.data))[1]] == ["relayed"]
    assert not remote.violations and not sender_peer.violations


# -- 6. byte-exact bodies -------------------------------------------------------------

TRICKY = (
    b"From: alice@sender.test\r\n"
    b"To: bob@remote.test\r\n"
    b"Subject: bytes\r\n"
    b"X-Long: " + b"x" * 988 + b"\r\n"
    b"Date: Mon, 07 Dec 2026 12:00:00 +0000\r\n"
    b"Message-ID: <tricky@sender.test>\r\n"
    b"\r\n"
    b".leading dot\r\n"
    b".\r\n"
    b"..two dots\r\n"
    b"caf\xc3\xa9 and \xff raw 8-bit\r\n"
    b" \t trailing space \r\n"
    b"\r\n"
)


def test_body_arrives_byte_exact(make_daemon, remote):
    assert len(TRICKY.split(b"\r\n")[3]) == 996
    daemon = start(make_daemon, remote)
    queue_id = send(daemon, "alice@sender.test", ["bob@remote.test"], TRICKY, mail_options=["BODY=8BITMIME"])
    wait_gone(daemon, queue_id)
    [t] = remote.wait_for_transactions(1)
    assert t.mail_params["BODY"] == "8BITMIME"
    assert without_received(t.data) == TRICKY
    assert b"\r\n..leading dot\r\n..\r\n...two dots\r\n" in t.data_raw
    assert t.data_raw.endswith(b" \t trailing space \r\n\r\n.\r\n")
    assert not remote.violations


def test_bounce_of_an_8bit_message_returns_it_byte_for_byte(make_daemon, remote, sender_peer):
    remote.rcpt_reply = "550 5.1.1 no such user here"
    daemon = start(make_daemon, remote, sender_peer)
    queue_id = send(daemon, "alice@sender.test", ["gone@remote.test"], TRICKY, mail_options=["BODY=8BITMIME"])
    stored = daemon.body(queue_id)
    wait_gone(daemon, queue_id)
    t = dsn_at(sender_peer)
    assert t.mail_params["BODY"] == "8BITMIME"  # the DSN carries 8-bit octets, so says so
    assert stored in t.data
    _, [block] = report_fields(parse(t.data))
    assert (block["action"], block["status"]) == ("failed", "5.1.1")
    assert not remote.violations and not sender_peer.violations


@pytest.mark.smoke
def test_body_arrives_intact_at_smtp_sink(make_daemon, tmp_path):
    if SMTP_SINK is None:
        pytest.skip("smtp-sink is not installed")
    with SmtpSink(tmp_path / "sink", host="127.0.0.14") as sink:
        daemon = start(make_daemon, sink)
        queue_id = send(daemon, "alice@sender.test", ["bob@remote.test"], TRICKY, mail_options=["BODY=8BITMIME"])
        [m] = sink.wait_for_messages(1)
        wait_gone(daemon, queue_id)
    assert (m.sender, m.recipients) == ("alice@sender.test", ["bob@remote.test"])
    assert "BODY=8BITMIME" in m.mail_args
    assert without_received(m.content.replace(b"\n", b"\r\n")) == TRICKY


# -- 7. what the next hop cannot take -------------------------------------------------


def test_message_larger_than_the_peer_takes_bounces_before_mail(make_daemon, remote, sender_peer):
    remote.extensions = [e if not e.startswith("SIZE") else "SIZE 1000" for e in remote.extensions]
    daemon = start(make_daemon, remote, sender_peer)
    big = BODY + b"y" * 70 + b"\r\n" + (b"z" * 78 + b"\r\n") * 64
    assert len(big) > 5000
    queue_id = send(daemon, "alice@sender.test", ["bob@remote.test"], big)
    wait_gone(daemon, queue_id)
    assert remote.all_transactions == []
    remote.wait_until_idle()
    [c] = remote.connections
    assert c.commands == ["EHLO", "QUIT"]  # RFC 5321 §4.1.1.10: no close without QUIT
    _, [block] = report_fields(parse(dsn_at(sender_peer).data))
    assert (block["action"], block["status"]) == ("failed", "5.3.4")
    assert not remote.violations and not sender_peer.violations


def test_smtputf8_message_to_a_peer_without_smtputf8_bounces(make_daemon, remote, sender_peer):
    remote.extensions = [e for e in remote.extensions if e != "SMTPUTF8"]
    daemon = start(make_daemon, remote, sender_peer)
    queue_id = send(daemon, "alice@sender.test", ["josé@remote.test"], mail_options=["SMTPUTF8"])
    details = wait_outcomes(daemon, queue_id, {"josé@remote.test": "bounced"})
    assert "dsn=5.6.7" in details["josé@remote.test"]
    wait_gone(daemon, queue_id)
    assert remote.all_transactions == []
    t = dsn_at(sender_peer)
    dsn = parse(t.data)
    assert "SMTPUTF8" in t.mail_params
    [status] = [p for p in dsn.walk() if p.get_content_type() == "message/global-delivery-status"]
    assert status is not None
    assert not remote.violations and not sender_peer.violations


def test_smtputf8_requested_but_not_needed_goes_as_plain_mail(make_daemon, remote):
    # ASCII addresses and header: nothing a server without SMTPUTF8 cannot take (as Postfix).
    remote.extensions = [e for e in remote.extensions if e != "SMTPUTF8"]
    daemon = start(make_daemon, remote)
    body = BODY + "caf\u00e9\r\n".encode()
    queue_id = send(daemon, "alice@sender.test", ["bob@remote.test"], body, mail_options=["SMTPUTF8"])
    wait_gone(daemon, queue_id)
    [t] = remote.wait_for_transactions(1)
    assert "SMTPUTF8" not in t.mail_params
    assert t.mail_params["BODY"] == "8BITMIME"  # SMTPUTF8 allowed the 8-bit body; now BODY must say so
    assert without_received(t.data) == body
    assert not remote.violations
