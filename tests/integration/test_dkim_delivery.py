"""DKIM end to end: keys made with `empathctl dkim keygen`, their TXT records
served by the loopback DNS server, mail submitted to the real daemon (from a
trusted address, and with AUTH) and relayed to a peer, and the bytes the peer
received verified by dkimpy, which looks the keys up with a real DNS query."""

import os
import re
import smtplib
import subprocess
import sys

from dkim_helpers import dns_lookup, keygen, verifies
from dns_server import DnsServer
from peer import Peer
from support import ROOT, wait_for

BODY = b"From: Alice <alice@local.test>\r\nTo: bob@remote.test\r\nSubject: signed\r\n\r\nhello\r\n.dot\r\n"
LARGE = b"a line of the attached report\r\n" * 13_000


def test_submitted_mail_is_signed_once_and_verifies_against_the_published_keys(make_daemon, certs):
    with Peer("127.0.0.11") as peer, DnsServer() as dns_server:
        daemon = make_daemon(**{'domains."remote.test"': {"route": [f"{peer.host}:{peer.port}"]}})
        daemon.write_config()
        dns_server.set("rsa._domainkey.local.test", TXT=[keygen(daemon, "rsa", "rsa-sha256")])
        dns_server.set("ed._domainkey.local.test", TXT=[keygen(daemon, "ed", "ed25519-sha256")])
        daemon.add_user("alice", "secret")
        daemon.start()

        with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10, source_address=("127.0.0.2", 0)) as client:
            assert client.sendmail("alice@local.test", ["bob@remote.test"], BODY) == {}  # a trusted network
        with smtplib.SMTP("127.0.0.1", daemon.ports.submission, timeout=10) as client:
            client.starttls(context=certs.client_context())
            client.login("alice", "secret")
            # Large: it waits in a spool file, is read whole to be signed, and goes out in pieces.
            assert client.sendmail("alice@local.test", ["bob@remote.test"], BODY + LARGE) == {}

        lookup = dns_lookup(dns_server)
        transactions = peer.wait_for_transactions(2, timeout=15)
        assert sorted(len(t.data) > len(LARGE) for t in transactions) == [False, True]
        for transaction in transactions:
            data = transaction.data
            assert data.count(b"DKIM-Signature: ") == 2 and data.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
            assert verifies(data, 0, lookup) and verifies(data, 1, lookup)  # RSA, Ed25519
            tampered = data.replace(b"hello", b"hellO")
            assert not verifies(tampered, 0, lookup) and not verifies(tampered, 1, lookup)
        assert dns_server.count("rsa._domainkey.local.test", "TXT") >= 2 and not dns_server.errors
        assert not peer.violations


def test_mail_from_strangers_is_not_signed_and_a_bad_key_stops_the_start(make_daemon):
    daemon = make_daemon()
    daemon.write_config()
    keygen(daemon, "rsa", "rsa-sha256")
    daemon.start()
    # 127.0.0.1 is not in the test's trusted networks: an outsider writing to a local user.
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
        assert client.sendmail("alice@local.test", ["carol@local.test"], BODY) == {}
    [(queue_id, _)] = daemon.messages()
    assert b"DKIM-Signature" not in daemon.body(queue_id)
    daemon.stop()

    (daemon.directory / "dkim" / "local.test.rsa.key").chmod(0o644)
    check = subprocess.run(
        [sys.executable, "-m", "empath.cmd.empath", "--config", str(daemon.config_path), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert check.returncode == 1
    problem = r"empath: dkim\[0\]\.key_file \(line \d+\): \S+/local\.test\.rsa\.key is open to every user.*\n"
    assert re.fullmatch(problem, check.stderr)


def test_a_key_gone_after_the_start_leaves_mail_queued_unsigned_and_said_so(make_daemon):
    daemon = make_daemon()
    daemon.write_config()
    keygen(daemon, "rsa", "rsa-sha256")
    daemon.start()
    (daemon.directory / "dkim" / "local.test.rsa.key").unlink()

    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10, source_address=("127.0.0.2", 0)) as client:
        assert client.sendmail("alice@local.test", ["bob@remote.test"], BODY) == {}  # accepted all the same
    env = dict(os.environ, EMPATH_CONFIG=str(daemon.config_path))
    local = subprocess.run(
        [sys.executable, "-m", "empath.cmd.sendmail", "ops@remote.test"],
        input=BODY,
        capture_output=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert local.returncode == 0
    assert local.stderr.decode().startswith("sendmail: queued unsigned by local.test (DKIM selector rsa): cannot read ")

    messages = daemon.messages()
    assert len(messages) == 2 and not any(b"DKIM-Signature" in daemon.body(queue_id) for queue_id, _ in messages)
    for queue_id, _ in messages:
        [(detail,)] = daemon.query("SELECT detail FROM event WHERE queue_id = ? AND kind = 'dkim'", queue_id)
        assert detail.startswith("not signed: d=local.test s=rsa: cannot read ")
    wait_for(lambda: "dkim_failed" in daemon.log_since_start(), what="the dkim_failed log line")
    [line] = [line for line in daemon.log_since_start().splitlines() if "dkim_failed" in line]
    assert "domain=local.test" in line and "selector=rsa" in line and messages[0][0] in line


def test_the_office_s_senders_are_rewritten_before_they_are_signed_and_a_stranger_s_never(make_daemon):
    """Cron's root@mail.local.test leaves as it@local.test (the canonical table, then
    masquerading), in the envelope and the header, and the signature covers the new From."""
    with Peer("127.0.0.11") as peer, DnsServer() as dns_server:
        daemon = make_daemon(**{'domains."remote.test"': {"route": [f"{peer.host}:{peer.port}"]}})
        table = daemon.directory / "sender_canonical"
        table.write_text("root@local.test  it@local.test\n")
        daemon.sections["rewrite"] = {"sender_canonical": str(table), "masquerade_domains": ["local.test"]}
        daemon.write_config()
        dns_server.set("rsa._domainkey.local.test", TXT=[keygen(daemon, "rsa", "rsa-sha256")])
        daemon.start()
        cron = b'From: "Cron Daemon" <root@mail.local.test>\r\nTo: ops@remote.test\r\nSubject: backup\r\n\r\ndone\r\n'
        with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10, source_address=("127.0.0.2", 0)) as client:
            assert client.sendmail("scanner@printer.local.test", ["ops@remote.test"], cron) == {}  # trusted
        [t] = peer.wait_for_transactions(1, timeout=15)
        assert t.sender == "scanner@local.test"  # masqueraded: no table entry for it
        assert b'From: "Cron Daemon" <it@local.test>\r\n' in t.data  # root@mail. masqueraded, then the table
        assert verifies(t.data, 0, dns_lookup(dns_server))  # signed as rewritten: d=local.test, the new From

        # A stranger's mail to us is left as it came.
        with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
            assert client.sendmail("root@mail.local.test", ["carol@local.test"], cron) == {}
        stranger = [qid for qid, sender in daemon.messages() if sender == "root@mail.local.test"]
        assert len(stranger) == 1 and b"<root@mail.local.test>" in daemon.body(stranger[0])
