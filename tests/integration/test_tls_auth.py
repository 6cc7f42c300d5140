"""STARTTLS, implicit TLS, AUTH, the submission listener, swaks and empathctl users."""

import base64
import re
import smtplib
import ssl
import subprocess
import sys

import pytest
from support import ROOT, RawClient, lib_reply, raw_reply, wait_for

from empath.smtp import replies

PASSWORD = "correct horse battery staple"
BODY = b"From: alice@local.test\r\nTo: carol@remote.test\r\nSubject: hi\r\n\r\nhello\r\n"


@pytest.fixture
def auth_daemon(make_daemon):
    daemon = make_daemon()
    daemon.add_user("alice", PASSWORD)
    return daemon.start()


def queued_id(message: bytes) -> str:
    m = re.fullmatch(rb"2\.0\.0 OK queued as (\S+)", message)
    assert m, message
    return m.group(1).decode()


def ctl(daemon, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "empath.cmd.empathctl", "--config", str(daemon.config_path), *args],
        input=None if password is None else password + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )


def test_starttls_with_verified_certificate_then_auth_plain_and_login(auth_daemon, certs):
    for mechanism in ("PLAIN", "LOGIN"):
        with smtplib.SMTP("127.0.0.1", auth_daemon.ports.smtp, timeout=10) as client:
            client.ehlo("client.test")
            assert client.has_extn("starttls")
            assert not client.has_extn("auth")  # never offered in clear
            code, _ = client.starttls(context=certs.client_context())  # verifies chain and name
            assert code == replies.READY_TLS.code
            assert isinstance(client.sock, ssl.SSLSocket)
            client.ehlo("client.test")
            assert not client.has_extn("starttls")
            assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
            client.user, client.password = "alice", PASSWORD
            method = client.auth_plain if mechanism == "PLAIN" else client.auth_login
            assert client.auth(mechanism, method) == lib_reply(replies.AUTH_OK)
            # Authenticated: relaying to a remote domain is allowed even from untrusted 127.0.0.1.
            assert client.sendmail("alice@local.test", ["carol@remote.test"], BODY) == {}
    rows = auth_daemon.query("SELECT m.auth_user, r.address FROM message m JOIN recipient r USING (queue_id)")
    assert rows == [("alice", "carol@remote.test")] * 2


def test_wrong_password_is_refused(auth_daemon, certs):
    with smtplib.SMTP("127.0.0.1", auth_daemon.ports.smtp, timeout=10) as client:
        client.starttls(context=certs.client_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            client.login("alice", "not the password")
        assert (failed.value.smtp_code, failed.value.smtp_error) == lib_reply(replies.AUTH_FAILED)
        # Still unauthenticated: no relaying.
        client.mail("alice@local.test")
        assert client.rcpt("carol@remote.test") == lib_reply(replies.RELAY_DENIED)
    assert "result=failure" in auth_daemon.log()


def test_auth_before_tls_is_refused(auth_daemon):
    client = RawClient(auth_daemon.ports.smtp)
    try:
        assert client.reply()[0] == 220
        code, text = client.cmd("EHLO client.test")
        assert code == 250 and "AUTH" not in text
        blob = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
        assert client.cmd(f"AUTH PLAIN {blob}") == raw_reply(replies.AUTH_ENCRYPTION_REQUIRED)
        assert client.cmd("AUTH LOGIN") == raw_reply(replies.AUTH_ENCRYPTION_REQUIRED)
        assert client.cmd("NOOP") == raw_reply(replies.NOOP)
    finally:
        client.close()
    assert "auth " not in auth_daemon.log()  # no password check was even attempted


def test_submission_needs_tls_then_auth_before_mail(auth_daemon, certs):
    with smtplib.SMTP("127.0.0.1", auth_daemon.ports.submission, timeout=10) as client:
        client.ehlo("client.test")
        assert client.mail("alice@local.test") == lib_reply(replies.TLS_REQUIRED)
        client.starttls(context=certs.client_context())
        client.ehlo("client.test")
        assert client.mail("alice@local.test") == lib_reply(replies.AUTH_REQUIRED)
        client.login("alice", PASSWORD)
        assert client.mail("alice@local.test")[0] == 250
        assert client.rcpt("carol@remote.test") == lib_reply(replies.RECIPIENT_OK)
        code, message = client.data(BODY)
    assert code == 250
    queue_id = queued_id(message)
    assert auth_daemon.recipients(queue_id) == ["carol@remote.test"]
    [(listener, auth_user)] = auth_daemon.query("SELECT listener, auth_user FROM message WHERE queue_id = ?", queue_id)
    assert listener.startswith("submission@") and auth_user == "alice"


def test_smtps_implicit_tls(auth_daemon, certs):
    with smtplib.SMTP_SSL("127.0.0.1", auth_daemon.ports.smtps, timeout=10, context=certs.client_context()) as client:
        code, banner = client.ehlo("client.test")
        assert code == 250
        assert not client.has_extn("starttls")
        assert client.has_extn("auth")
        client.login("alice", PASSWORD)
        assert client.sendmail("alice@local.test", ["carol@remote.test"], BODY) == {}
    [(queue_id, _)] = auth_daemon.messages()
    body = auth_daemon.body(queue_id)
    assert b" with ESMTPSA id " in body.split(b"\r\n\r\n")[0]


def test_submission_adds_date_and_message_id_and_smtp_does_not(auth_daemon, certs):
    bare = b"Subject: no date\r\n\r\nbody\r\n"
    with smtplib.SMTP("127.0.0.1", auth_daemon.ports.submission, timeout=10) as client:
        client.starttls(context=certs.client_context())
        client.login("alice", PASSWORD)
        client.sendmail("alice@local.test", ["bob@local.test"], bare)
    with smtplib.SMTP("127.0.0.1", auth_daemon.ports.smtp, timeout=10) as client:
        client.sendmail("alice@sender.test", ["bob@local.test"], bare)
    dated = b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <mine@client.test>\r\n" + bare
    with smtplib.SMTP("127.0.0.1", auth_daemon.ports.submission, timeout=10) as client:
        client.starttls(context=certs.client_context())
        client.login("alice", PASSWORD)
        client.sendmail("alice@local.test", ["bob@local.test"], dated)

    (sub_id, _), (smtp_id, _), (dated_id, _) = auth_daemon.messages()

    def headers(queue_id):
        head = auth_daemon.body(queue_id).split(b"\r\n\r\n")[0]
        return [line.split(b":")[0].lower() for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t")]

    sub = headers(sub_id)
    assert sub.count(b"date") == 1 and sub.count(b"message-id") == 1
    assert f"Message-ID: <{sub_id}.".encode() in auth_daemon.body(sub_id)
    smtp = headers(smtp_id)
    assert b"date" not in smtp and b"message-id" not in smtp
    dated_headers = headers(dated_id)
    assert dated_headers.count(b"date") == 1 and dated_headers.count(b"message-id") == 1
    assert b"Message-ID: <mine@client.test>" in auth_daemon.body(dated_id)


def test_swaks_submission_with_starttls_and_auth(auth_daemon, certs):
    result = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{auth_daemon.ports.submission}",
            "--helo",
            "swaks.test",
            "--from",
            "alice@local.test",
            "--to",
            "carol@remote.test",
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            str(certs.ca_pem),
            "-au",
            "alice",
            "-ap",
            PASSWORD,
            "--auth",
            "PLAIN",
            "--header",
            "Subject: from swaks",
            "--body",
            "hello from swaks",
            "--timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    m = re.search(r"<~\s+250 2\.0\.0 OK queued as (\S+)", result.stdout)
    assert m, result.stdout
    queue_id = m.group(1)
    assert auth_daemon.recipients(queue_id) == ["carol@remote.test"]
    body = auth_daemon.body(queue_id)
    assert b"Subject: from swaks" in body and b"hello from swaks" in body
    assert b"from swaks.test ([127.0.0.1])" in body
    assert auth_daemon.query("SELECT auth_user FROM message WHERE queue_id = ?", queue_id) == [("alice",)]


def test_empathctl_users_take_effect_without_restart(auth_daemon, certs):
    def login(name: str, password: str) -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", auth_daemon.ports.smtp, timeout=10) as client:
            client.starttls(context=certs.client_context())
            client.ehlo("client.test")
            client.user, client.password = name, password
            try:
                return client.auth("PLAIN", client.auth_plain)
            except smtplib.SMTPAuthenticationError as exc:
                return exc.smtp_code, exc.smtp_error

    assert login("bob", "bobs-password") == lib_reply(replies.AUTH_FAILED)
    added = ctl(auth_daemon, "user", "add", "bob", "--password-stdin", password="bobs-password")
    assert added.returncode == 0, added.stderr
    listed = ctl(auth_daemon, "user", "list")
    assert listed.returncode == 0 and listed.stdout.split() == ["alice", "bob"]
    assert "bobs-password" not in auth_daemon.users_path.read_text()
    assert login("bob", "bobs-password") == lib_reply(replies.AUTH_OK)

    removed = ctl(auth_daemon, "user", "remove", "bob")
    assert removed.returncode == 0, removed.stderr
    assert ctl(auth_daemon, "user", "list").stdout.split() == ["alice"]
    assert login("bob", "bobs-password") == lib_reply(replies.AUTH_FAILED)
    assert login("alice", PASSWORD) == lib_reply(replies.AUTH_OK)

    missing = ctl(auth_daemon, "user", "remove", "bob")
    assert missing.returncode != 0 and "no user 'bob'" in missing.stderr


def test_passwords_never_appear_in_the_log(auth_daemon, certs):
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    secrets = [PASSWORD, "hunter2"]  # the right one, and a short wrong guess
    for password in secrets:
        plain = b64(f"\0alice\0{password}")
        # Every form of the exchange: initial response or continuation lines.
        for exchange in (
            [f"AUTH PLAIN {plain}"],
            ["AUTH PLAIN", plain],
            ["AUTH LOGIN", b64("alice"), b64(password)],
            [f"AUTH LOGIN {b64('alice')}", b64(password)],
        ):
            with smtplib.SMTP("127.0.0.1", auth_daemon.ports.smtp, timeout=10) as client:
                client.starttls(context=certs.client_context())
                client.ehlo("client.test")
                for line in exchange[:-1]:
                    assert client.docmd(line)[0] == replies.AUTH_CHALLENGE.code
                expected = replies.AUTH_OK if password == PASSWORD else replies.AUTH_FAILED
                assert client.docmd(exchange[-1]) == lib_reply(expected)
    # The debug log shows every command line, so this is where a leak would be.
    log = wait_for(lambda: (text := auth_daemon.log()).count(" auth ") >= 8 and text, what="auth log lines")
    shown = re.findall(r" command client=\S+ line=(\"[^\"]*\"|\S+)", log)
    auth_lines = [line.strip('"') for line in shown if "AUTH" in line.upper() or "hidden" in line]
    assert auth_lines.count("AUTH <hidden>") == 8
    # Continuation lines: 0 + 1 (PLAIN) and 2 + 1 (LOGIN), for each password; all hidden whole.
    assert auth_lines.count("<hidden>") == 8
    assert len(auth_lines) == 16
    for password in secrets:
        assert password not in log
        assert b64(password)[:6] not in log
        assert b64(f"\0alice\0{password}")[8:] not in log
