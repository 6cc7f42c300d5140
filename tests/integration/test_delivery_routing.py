"""Delivery end to end: routing (MX, implicit MX, null MX, smarthost, per-domain
routes), failover, TLS policies, connection reuse, the circuit breaker, a
crash mid-delivery and mail loops, against a real DNS server and real SMTP
peers on loopback.

Each test runs its own DnsServer and Peer(s) and points the daemon's
resolver and remote SMTP port at them. Mail comes in from 127.0.0.2, the
trusted network of the test config, so it may be relayed to remote.test.
"""

import os
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trustme
from dns_server import DnsServer
from peer import HANG, Peer, start_peers
from support import empathctl, free_port, wait_for

SENDER = "alice@local.test"


def body(subject: str = "hi") -> bytes:
    return f"From: {SENDER}\r\nSubject: {subject}\r\n\r\nhello\r\n".encode()


def delivery(dns: DnsServer, port: int, **extra) -> dict:
    """The [delivery] section: our DNS server, our peers' port, and short timeouts."""
    return {
        "nameservers": [f"127.0.0.1:{dns.port}"],
        "port": port,
        "dns_timeout": "500ms",
        "connect_timeout": "2s",
        "command_timeout": "5s",
        "retry_first": "1s",
        "idle_time": "0s",
        **extra,
    }


def send(daemon, *recipients: str, subject: str = "hi") -> None:
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10, source_address=("127.0.0.2", 0)) as client:
        assert client.sendmail(SENDER, list(recipients), body(subject)) == {}


def rows(daemon, address: str) -> list[tuple]:
    """(state, last_status, last_reply, next_attempt_at, attempts) of every queued recipient ``address``."""
    return daemon.query(
        "SELECT state, last_status, last_reply, next_attempt_at, attempts FROM recipient WHERE address = ?", address
    )


def delivered(daemon, address: str, n: int = 1, timeout: float = 10.0) -> None:
    """Wait until ``n`` deliveries to ``address`` are recorded and no copy is left in the queue."""

    def done():
        events = daemon.query("SELECT count(*) FROM event WHERE kind = 'delivered' AND recipient = ?", address)
        return events[0][0] >= n and not rows(daemon, address)

    wait_for(done, timeout, what=f"{n} delivery(ies) to {address} recorded")


def settled(daemon, address: str, state: str, timeout: float = 10.0) -> tuple:
    """Wait until the recipient ``address`` is in ``state`` after an attempt; its row."""

    def check():
        found = rows(daemon, address)
        return found[0] if found and found[0][0] == state and found[0][4] >= 1 else None

    return wait_for(check, timeout, what=f"{address} to be {state}")


def commands(peer: Peer) -> list[str]:
    return [verb for c in peer.connections for verb in c.commands]


# -- MX ---------------------------------------------------------------------------


def mx_records(*hosts: str) -> dict:
    """remote.test with MX 10, 20, ... pointing at mx1.remote.test, mx2.remote.test, ... on ``hosts``."""
    records = {"remote.test": {"MX": [(10 * i, f"mx{i}.remote.test") for i in range(1, len(hosts) + 1)]}}
    for i, host in enumerate(hosts, 1):
        records[f"mx{i}.remote.test"] = {"A": [host]}
    return records


def test_mx_priority_and_failover(make_daemon):
    first, second = start_peers("127.0.0.11", "127.0.0.12")
    with DnsServer(mx_records("127.0.0.11", "127.0.0.12")) as dns, first, second:
        daemon = make_daemon(delivery=delivery(dns, first.port)).start()

        send(daemon, "bob@remote.test", subject="one")
        [t] = first.wait_for_transactions(1)
        assert t.sender == SENDER and t.recipients == ["bob@remote.test"]
        delivered(daemon, "bob@remote.test")
        assert not second.connections

        # The first greets 421: the second takes it.
        first.once(greeting="421 4.3.2 busy")
        send(daemon, "carol@remote.test", subject="two")
        [t] = second.wait_for_transactions(1)
        assert t.recipients == ["carol@remote.test"]
        delivered(daemon, "carol@remote.test")
        assert len(first.transactions) == 1

        # The first refuses connections: the second takes it.
        first.stop()
        send(daemon, "dave@remote.test", subject="three")
        second.wait_for_transactions(2)
        assert second.transactions[1].recipients == ["dave@remote.test"]
        delivered(daemon, "dave@remote.test")
        assert not first.violations and not second.violations
        assert not first.errors and not second.errors


def can_bind_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not can_bind_ipv6_loopback(), reason="no IPv6 loopback (::1) to run a peer on")
def test_implicit_mx_from_a_and_aaaa_records(make_daemon):
    v4, v6 = start_peers("127.0.0.11", "::1")
    records = {
        "remote.test": {"A": ["127.0.0.11"]},  # no MX: the domain itself (RFC 5321 5.1)
        "six.test": {"AAAA": ["::1"]},  # no MX, IPv6 only
    }
    with DnsServer(records) as dns, v4, v6:
        daemon = make_daemon(delivery=delivery(dns, v4.port)).start()
        send(daemon, "bob@remote.test")
        [t] = v4.wait_for_transactions(1)
        assert t.recipients == ["bob@remote.test"]
        delivered(daemon, "bob@remote.test")

        send(daemon, "carol@six.test")
        [t] = v6.wait_for_transactions(1)
        assert t.recipients == ["carol@six.test"]
        assert v6.connections[0].client[0] == "::1"
        delivered(daemon, "carol@six.test")
        assert ("remote.test", "MX") in dns.queries and ("six.test", "AAAA") in dns.queries
        assert not v4.violations and not v6.violations


def events(daemon, kind: str, address: str) -> list[str]:
    return [r[0] for r in daemon.query("SELECT detail FROM event WHERE kind = ? AND recipient = ?", kind, address)]


def bounced(daemon, address: str) -> str:
    """Wait until ``address`` is bounced and its message gone; the bounce event's detail."""
    wait_for(lambda: events(daemon, "bounced", address) and not rows(daemon, address), what=f"{address} bounced")
    return events(daemon, "bounced", address)[0]


def dsn_to(daemon, sender: str) -> list[str]:
    """Queue ids of the notices queued to ``sender``."""
    return [
        r[0]
        for r in daemon.query(
            "SELECT m.queue_id FROM message m JOIN recipient r USING (queue_id)"
            " WHERE m.sender = '' AND m.kind = 'dsn' AND r.address = ?",
            sender,
        )
    ]


def test_null_mx_nxdomain_and_dns_timeout(make_daemon):
    records = {"nomail.test": {"MX": [(0, ".")], "A": ["127.0.0.11"]}}
    with DnsServer(records, drop={"slow.test"}) as dns, Peer("127.0.0.11") as peer:
        daemon = make_daemon(delivery=delivery(dns, peer.port, retry_first="1h")).start()

        send(daemon, "bob@nomail.test")
        assert "dsn=5.1.10" in bounced(daemon, "bob@nomail.test")
        wait_for(lambda: dsn_to(daemon, SENDER), what="a DSN to the sender")
        [dsn_id] = dsn_to(daemon, SENDER)
        assert b"bob@nomail.test" in daemon.body(dsn_id)

        send(daemon, "carol@missing.test")
        assert "dsn=5.1.2" in bounced(daemon, "carol@missing.test")
        wait_for(lambda: len(dsn_to(daemon, SENDER)) == 2, what="a second DSN")

        before = time.time()
        send(daemon, "dave@slow.test")
        state, status, reply, next_attempt_at, attempts = settled(daemon, "dave@slow.test", "deferred")
        assert status == "4.4.3", reply
        assert next_attempt_at > before + 60  # retry_first is an hour
        assert len(dsn_to(daemon, SENDER)) == 2  # a deferral owes no notice yet
        assert not peer.connections  # nothing ever connected


# -- TLS --------------------------------------------------------------------------


def test_opportunistic_tls_uses_starttls_when_offered(make_daemon, certs):
    with DnsServer(mx_records("127.0.0.11")) as dns, Peer("127.0.0.11", certs=certs) as peer:
        daemon = make_daemon(delivery=delivery(dns, peer.port)).start()
        send(daemon, "bob@remote.test")
        [t] = peer.wait_for_transactions(1)
        assert t.tls and t.recipients == ["bob@remote.test"]
        delivered(daemon, "bob@remote.test")
        assert commands(peer)[:3] == ["EHLO", "STARTTLS", "EHLO"]
        assert not peer.violations and not peer.errors


def test_opportunistic_tls_goes_in_clear_when_starttls_is_refused(make_daemon, certs):
    # RFC 3207 4: after a refused STARTTLS the client decides; opportunistic TLS
    # must not leave the mail stuck because a server's TLS is broken.
    with DnsServer(mx_records("127.0.0.11")) as dns, Peer("127.0.0.11", certs=certs) as peer:
        peer.once(fail_at=("STARTTLS", 1, "454 4.7.0 TLS not available due to temporary reason"))
        daemon = make_daemon(delivery=delivery(dns, peer.port, retry_first="1h")).start()
        send(daemon, "bob@remote.test")
        [t] = peer.wait_for_transactions(1)
        assert not t.tls and t.recipients == ["bob@remote.test"]
        delivered(daemon, "bob@remote.test")
        first, second = peer.connections
        assert first.commands == ["EHLO", "STARTTLS"] and "STARTTLS" not in second.commands
        assert not peer.violations and not peer.errors


def test_required_tls_without_starttls_defers_before_mail(make_daemon):
    with DnsServer(mx_records("127.0.0.11")) as dns, Peer("127.0.0.11") as peer:
        daemon = make_daemon(
            delivery=delivery(dns, peer.port, retry_first="1h"), **{'domains."remote.test"': {"tls": "required"}}
        ).start()
        send(daemon, "bob@remote.test")
        _, status, reply, _, _ = settled(daemon, "bob@remote.test", "deferred")
        assert status == "4.7.5" and "STARTTLS" in reply, reply
        peer.wait_until_idle()
        assert commands(peer) == ["EHLO", "QUIT"]  # said goodbye, sent no MAIL
        assert not peer.all_transactions
        assert not peer.violations and not peer.errors


def verify_config(dns: DnsServer, port: int, ca_file) -> dict:
    # The daemon is not mx.test.example here, so that name can be the MX
    # (the name the peer's certificate carries).
    return {
        "server": {"hostname": "relay.test"},
        "delivery": delivery(dns, port, tls_ca_file=str(ca_file), retry_first="1h"),
        'domains."remote.test"': {"tls": "verify"},
    }


VERIFY_RECORDS = {"remote.test": {"MX": [(10, "mx.test.example")]}, "mx.test.example": {"A": ["127.0.0.11"]}}


def test_verified_tls_delivers_with_the_right_ca(make_daemon, certs):
    with DnsServer(VERIFY_RECORDS) as dns, Peer("127.0.0.11", certs=certs) as peer:
        daemon = make_daemon(**verify_config(dns, peer.port, certs.ca_pem)).start()
        send(daemon, "bob@remote.test")
        [t] = peer.wait_for_transactions(1)
        assert t.tls
        delivered(daemon, "bob@remote.test")
        assert not peer.violations and not peer.errors


def test_verified_tls_with_a_wrong_ca_defers_before_mail(make_daemon, certs, tmp_path):
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    with DnsServer(VERIFY_RECORDS) as dns, Peer("127.0.0.11", certs=certs) as peer:
        daemon = make_daemon(**verify_config(dns, peer.port, other_ca)).start()
        send(daemon, "bob@remote.test")
        _, status, reply, next_attempt_at, _ = settled(daemon, "bob@remote.test", "deferred")
        assert status == "4.7.5" and "certificate" in reply.lower(), reply
        assert next_attempt_at > time.time() + 60
        peer.wait_until_idle()
        assert "MAIL" not in commands(peer) and not peer.all_transactions
        assert not peer.violations and not peer.errors


# -- smarthost and per-domain routes ----------------------------------------------


def smarthost_config(dns: DnsServer, tmp_path, *hosts: str, port: int) -> dict:
    password_file = tmp_path / "smarthost-password"
    password_file.write_text("secret\n")
    return {
        "delivery": delivery(dns, port, retry_first="1h"),
        "smarthost": {
            "hosts": [f"{host}:{port}" for host in hosts],
            "username": "relay",
            "password_file": str(password_file),
            "tls": "required",
        },
    }


def test_smarthost_auth_after_tls_and_failover(make_daemon, certs, tmp_path):
    first, second = start_peers("127.0.0.11", "127.0.0.12", certs=certs, users={"relay": "secret"})
    for peer in (first, second):
        peer.require_auth = True
    with DnsServer() as dns, first, second:
        config = smarthost_config(dns, tmp_path, "127.0.0.11", "127.0.0.12", port=first.port)
        daemon = make_daemon(**config).start()

        send(daemon, "bob@remote.test")
        [t] = first.wait_for_transactions(1)
        assert t.tls and t.auth_user == "relay" and t.recipients == ["bob@remote.test"]
        delivered(daemon, "bob@remote.test")
        assert commands(first)[:5] == ["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL"]
        assert first.connections[0].auth_attempts == [("PLAIN", "relay", True)]
        assert not second.connections
        assert not dns.queries  # a smarthost given by address needs no DNS

        # The first smarthost is down: the second takes the mail.
        first.stop()
        send(daemon, "carol@remote.test")
        [t] = second.wait_for_transactions(1)
        assert t.tls and t.auth_user == "relay" and t.recipients == ["carol@remote.test"]
        delivered(daemon, "carol@remote.test")
        assert not first.violations and not second.violations and not first.errors and not second.errors


def test_smarthost_by_name_with_verified_tls(make_daemon, certs, tmp_path):
    records = {"mx.test.example": {"A": ["127.0.0.11"]}}
    with DnsServer(records) as dns, Peer("127.0.0.11", certs=certs, users={"relay": "secret"}) as peer:
        peer.require_auth = True
        config = smarthost_config(dns, tmp_path, "mx.test.example", port=peer.port)
        config["smarthost"]["tls"] = "verify"
        config["delivery"]["tls_ca_file"] = str(certs.ca_pem)
        config["server"] = {"hostname": "relay.test"}
        daemon = make_daemon(**config).start()
        send(daemon, "bob@remote.test")
        [t] = peer.wait_for_transactions(1)
        assert t.tls and t.auth_user == "relay"
        delivered(daemon, "bob@remote.test")
        assert ("mx.test.example", "A") in dns.queries and ("remote.test", "MX") not in dns.queries
        assert not peer.violations and not peer.errors


def test_smarthost_without_starttls_gets_no_credentials(make_daemon, tmp_path):
    # users given but no certificate: the peer offers AUTH in clear, which we must not use.
    with DnsServer() as dns, Peer("127.0.0.11", users={"relay": "secret"}) as peer:
        peer.auth_requires_tls = False
        daemon = make_daemon(**smarthost_config(dns, tmp_path, "127.0.0.11", port=peer.port)).start()
        send(daemon, "bob@remote.test")
        _, status, reply, _, _ = settled(daemon, "bob@remote.test", "deferred")
        assert status == "4.7.5", reply
        peer.wait_until_idle()
        assert commands(peer) == ["EHLO", "QUIT"]  # no AUTH, no MAIL in clear
        assert not peer.connections[0].auth_attempts
        assert not peer.violations and not peer.errors


def test_domain_route_fails_over_to_the_second_host(make_daemon):
    first, second = start_peers("127.0.0.11", "127.0.0.12")
    with DnsServer() as dns, first, second:
        route = {"route": [f"127.0.0.11:{first.port}", f"127.0.0.12:{first.port}"]}
        daemon = make_daemon(delivery=delivery(dns, first.port), **{'domains."local.test"': route}).start()
        first.stop()
        send(daemon, "bob@local.test")
        [t] = second.wait_for_transactions(1)
        assert t.recipients == ["bob@local.test"]
        delivered(daemon, "bob@local.test")
        assert not dns.queries  # a route by address needs no DNS
        assert not second.violations and not second.errors


# -- connection reuse -------------------------------------------------------------


def test_messages_to_one_domain_share_a_connection(make_daemon):
    with DnsServer(mx_records("127.0.0.11")) as dns, Peer("127.0.0.11") as peer:
        # One delivery at a time, so each finds the connection the last one left idle.
        daemon = make_daemon(
            delivery=delivery(dns, peer.port, idle_time="2s"), **{'domains."remote.test"': {"concurrency": 1}}
        ).start()
        with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10, source_address=("127.0.0.2", 0)) as client:
            for i in range(3):
                client.sendmail(SENDER, [f"user{i}@remote.test"], body(f"message {i}"))
        peer.wait_for_transactions(3)
        for i in range(3):
            delivered(daemon, f"user{i}@remote.test")
        [conn] = peer.connections
        assert len(conn.transactions) == 3
        assert conn.rset_count == 2  # checked before each reuse
        assert conn.commands[:3] == ["EHLO", "MAIL", "RCPT"]
        # Idle longer than idle_time: closed politely.
        peer.wait_until_idle(timeout=10)
        assert conn.quit
        assert not peer.violations and not peer.errors


def test_an_idle_connection_the_remote_closed_is_replaced(make_daemon):
    with DnsServer(mx_records("127.0.0.11")) as dns, Peer("127.0.0.11") as peer:
        daemon = make_daemon(delivery=delivery(dns, peer.port, idle_time="30s")).start()
        send(daemon, "bob@remote.test")
        delivered(daemon, "bob@remote.test")
        # The remote drops every connection, the idle one included, and listens again.
        peer.stop()
        peer.start()
        send(daemon, "carol@remote.test")
        delivered(daemon, "carol@remote.test")
        assert [t.recipients for t in peer.delivered] == [["bob@remote.test"], ["carol@remote.test"]]
        first, second = peer.connections
        assert first.transactions[0].recipients == ["bob@remote.test"] and not first.quit
        assert second.transactions[0].recipients == ["carol@remote.test"]
        # The dead idle connection failed its RSET; carol went on a new one, in the same attempt.
        events = daemon.query("SELECT kind FROM event WHERE recipient = ?", "carol@remote.test")
        assert [kind for (kind,) in events if kind != "received"] == ["delivered"]
        assert not peer.violations and not peer.errors


def test_an_idle_connection_to_a_host_now_down_defers_as_a_connection_failure(make_daemon):
    # The idle connection fails its RSET, the new one is refused: the
    # deferral names the connect step, as any unreachable host's does.
    with DnsServer(mx_records("127.0.0.11")) as dns, Peer("127.0.0.11") as peer:
        daemon = make_daemon(delivery=delivery(dns, peer.port, idle_time="30s", retry_first="1h")).start()
        send(daemon, "bob@remote.test")
        delivered(daemon, "bob@remote.test")
        peer.stop()
        send(daemon, "carol@remote.test")
        state, status, reply, _, attempts = settled(daemon, "carol@remote.test", "deferred")
        assert (status, attempts) == ("4.4.2", 1)
        assert reply.startswith("connect: ")
        assert len(peer.connections) == 1 and [t.recipients for t in peer.delivered] == [["bob@remote.test"]]


def test_a_deferral_names_the_next_hop_that_is_down(make_daemon):
    # With failover next hops, the reason must say which one failed (the last tried).
    first, second = free_port(), free_port()
    route = {"route": [f"127.0.0.1:{first}", f"127.0.0.1:{second}"]}
    daemon = make_daemon(delivery={"retry_first": "1h"}, **{'domains."remote.test"': route}).start()
    send(daemon, "bob@remote.test")
    _, status, reply, _, _ = settled(daemon, "bob@remote.test", "deferred")
    down = f"127.0.0.1[127.0.0.1]:{second}"
    assert (status, reply) == ("4.4.2", f"connect: {down}: cannot connect: Connection refused")
    assert down in daemon.log_since_start()  # the delivery line
    listing = subprocess.run(
        [sys.executable, "-m", "empath.cmd.mailq", "-C", str(daemon.config_path)], capture_output=True, text=True
    )
    assert down in listing.stdout


def test_max_messages_per_connection_one_opens_a_connection_per_message(make_daemon):
    with DnsServer(mx_records("127.0.0.11")) as dns, Peer("127.0.0.11") as peer:
        daemon = make_daemon(
            delivery=delivery(dns, peer.port, idle_time="5s", max_messages_per_connection=1),
            **{'domains."remote.test"': {"concurrency": 1}},
        ).start()
        with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10, source_address=("127.0.0.2", 0)) as client:
            for i in range(3):
                client.sendmail(SENDER, [f"user{i}@remote.test"], body(f"message {i}"))
        peer.wait_for_transactions(3)
        for i in range(3):
            delivered(daemon, f"user{i}@remote.test")
        peer.wait_until_idle()
        assert len(peer.connections) == 3
        assert all(len(c.transactions) == 1 and c.quit and c.rset_count == 0 for c in peer.connections)
        assert not peer.violations and not peer.errors


# -- the circuit breaker ----------------------------------------------------------


def test_circuit_breaker_suspends_then_probes_and_closes(make_daemon):
    with DnsServer(mx_records("127.0.0.11")) as dns, Peer("127.0.0.11") as peer:
        daemon = make_daemon(
            delivery=delivery(dns, peer.port, retry_first="1h"),
            **{'domains."remote.test"': {"breaker_failures": 2, "breaker_cooldown": "2s"}},
        ).start()
        peer.stop()  # the MX refuses connections
        for i in (1, 2):
            send(daemon, f"user{i}@remote.test")
            _, status, reply, _, _ = settled(daemon, f"user{i}@remote.test", "deferred")
            assert status.startswith("4.") and "connect" in reply, reply

        # The breaker is open. The MX listens again but greets 421, so any
        # connection attempt would show in its record: there must be none.
        peer.greeting = "421 4.3.2 down for maintenance"
        peer.start()
        send(daemon, "user3@remote.test")
        found = wait_for(
            lambda: [r for r in rows(daemon, "user3@remote.test") if r[2] and "suspended" in r[2]],
            what="user3 suspended by the breaker",
        )
        assert found[0][4] == 0  # not counted as an attempt
        assert not peer.connections

        # The MX is back for real; after the cooldown user3 probes, gets through and
        # closes the breaker, and the mail held back for the domain goes at once:
        # the two deferred for an hour too, with no flush.
        peer.greeting = "220 {hostname} ESMTP peer"
        wait_for(lambda: len(peer.delivered) == 3, timeout=15, what="the three messages delivered after the cooldown")
        for i in (1, 2, 3):
            delivered(daemon, f"user{i}@remote.test")
        # Closed: the next message goes straight through.
        send(daemon, "user4@remote.test")
        delivered(daemon, "user4@remote.test")
        assert len(peer.delivered) == 4
        assert not peer.violations and not peer.errors


@pytest.mark.parametrize("how", ["queue retry", "sendmail -q"])
def test_an_operator_s_retry_closes_the_breaker_of_the_mail_it_makes_due(make_daemon, how):
    # As postqueue -f forgets dead hosts: "retry" must not answer "due now" while a
    # breaker keeps the mail from moving for its whole cooldown.
    with DnsServer(mx_records("127.0.0.11")) as dns, Peer("127.0.0.11") as peer:
        daemon = make_daemon(
            delivery=delivery(dns, peer.port, retry_first="1h"),
            **{'domains."remote.test"': {"breaker_failures": 1, "breaker_cooldown": "1h"}},
        ).start()
        peer.stop()
        send(daemon, "user1@remote.test")
        settled(daemon, "user1@remote.test", "deferred")
        send(daemon, "user2@remote.test")  # held back by the open breaker, with the real reason
        [(_, _, reply, _, _)] = wait_for(
            lambda: [r for r in rows(daemon, "user2@remote.test") if r[2] and "suspended" in r[2]],
            what="user2 held back by the breaker",
        )
        assert f"the last: connect: mx1.remote.test[127.0.0.11]:{peer.port}: cannot connect" in reply

        peer.start()
        if how == "queue retry":
            result = empathctl(daemon, "queue", "retry", "--domain", "remote.test")
            assert result.returncode == 0, result.stderr
            assert result.stdout.splitlines() == [
                "2 messages due now",
                "circuit breaker closed: remote.test (its mail may try to connect again)",
            ]
        else:
            env = dict(os.environ, EMPATH_CONFIG=str(daemon.config_path))
            flushed = subprocess.run([sys.executable, "-m", "empath.cmd.sendmail", "-q"], env=env, timeout=30)
            assert flushed.returncode == 0
        for i in (1, 2):
            delivered(daemon, f"user{i}@remote.test")
        assert " breaker_closed destination=remote.test " in daemon.log_since_start()


# -- a crash mid-delivery ---------------------------------------------------------


def test_killed_during_delivery_delivers_after_restart(make_daemon):
    with DnsServer(mx_records("127.0.0.11")) as dns, Peer("127.0.0.11") as peer:
        peer.fail_at = (".", 1, HANG)  # takes the data, never answers the final dot
        daemon = make_daemon(delivery=delivery(dns, peer.port)).start()
        send(daemon, "bob@remote.test")
        [t] = peer.wait_for_transactions(1)
        assert t.final_reply is None
        daemon.kill()
        peer.wait_until_idle()
        assert rows(daemon, "bob@remote.test")  # still queued

        peer.fail_at = None
        daemon.start()
        delivered(daemon, "bob@remote.test")
        assert [t.recipients for t in peer.delivered][:1] == [["bob@remote.test"]]  # at least once
        assert not peer.violations and not peer.errors


# -- loops --------------------------------------------------------------------------


def test_mx_pointing_at_ourselves_bounces(make_daemon):
    records = {
        "loop.test": {"MX": [(10, "mx.test.example")]},  # the daemon's own hostname
        "mx.test.example": {"A": ["127.0.0.11"]},
        "loop2.test": {"MX": [(10, "other.test")]},  # another name for our own listener
        "other.test": {"A": ["127.0.0.1"]},
    }
    with DnsServer(records) as dns, Peer("127.0.0.11") as peer:
        daemon = make_daemon(delivery=delivery(dns, peer.port))
        daemon.sections["delivery"]["port"] = daemon.ports.smtp
        daemon.start()
        send(daemon, "bob@loop.test")
        assert "dsn=5.4.6" in bounced(daemon, "bob@loop.test")
        send(daemon, "carol@loop2.test")
        assert "dsn=5.4.6" in bounced(daemon, "carol@loop2.test")
        assert not peer.connections
        assert not any(m[1] == SENDER for m in daemon.messages())  # nothing delivered to ourselves


def test_mx_of_equal_preference_to_ourselves_is_not_used(make_daemon):
    # RFC 5321 5.1: once we are an MX, only better (lower) preferences may take the mail.
    records = {
        "loop.test": {"MX": [(10, "mx.test.example"), (10, "peer.remote.test")]},
        "backup.test": {"MX": [(10, "peer.remote.test"), (20, "mx.test.example"), (30, "worse.remote.test")]},
        "peer.remote.test": {"A": ["127.0.0.11"]},
        "worse.remote.test": {"A": ["127.0.0.12"]},
    }
    with DnsServer(records) as dns, Peer("127.0.0.11") as peer:
        daemon = make_daemon(delivery=delivery(dns, peer.port)).start()
        # Equal preferences come shuffled: several messages, so a lucky order cannot hide the bug.
        for i in range(4):
            send(daemon, f"user{i}@loop.test")
        for i in range(4):
            assert "dsn=5.4.6" in bounced(daemon, f"user{i}@loop.test")
        assert not peer.connections
        # We are a backup MX: the better one gets the mail, the worse one is never tried.
        send(daemon, "bob@backup.test")
        delivered(daemon, "bob@backup.test")
        assert peer.delivered[0].recipients == ["bob@backup.test"]
        assert ("worse.remote.test", "A") not in dns.queries
        assert not peer.violations and not peer.errors


def test_breaker_waits_quietly_while_a_probe_is_in_flight(make_daemon):
    # A probe that hangs must not make the other suspended mail spin through
    # the queue until it ends: the daemon should sit nearly idle meanwhile.
    with DnsServer(mx_records("127.0.0.11")) as dns, Peer("127.0.0.11") as peer:
        peer.greeting = "421 4.3.2 down"
        daemon = make_daemon(
            delivery=delivery(dns, peer.port, retry_first="1h", command_timeout="3s"),
            **{'domains."remote.test"': {"breaker_failures": 1, "breaker_cooldown": "1s"}},
        ).start()
        send(daemon, "user1@remote.test")
        settled(daemon, "user1@remote.test", "deferred")
        peer.greeting = HANG  # the probe will wait for a greeting that never comes
        send(daemon, "user2@remote.test")
        send(daemon, "user3@remote.test")
        peer.wait_for_connections(2, timeout=5)  # the probe is in flight
        started, cpu = time.monotonic(), cpu_seconds(daemon.proc.pid)
        wait_for(lambda: time.monotonic() - started > 1.5, what="1.5 s to pass")
        used = cpu_seconds(daemon.proc.pid) - cpu
        assert used < 0.5 * (time.monotonic() - started), f"the daemon used {used:.2f}s of CPU while waiting"
        assert len(peer.connections) == 2  # one probe at a time
        assert not peer.violations and not peer.errors


def test_an_idle_daemon_sits_idle(make_daemon):
    # Its own queue writes once woke the scheduler, which wrote again: a busy
    # loop with a log line each time, with nothing to do.
    daemon = make_daemon().start()
    started, cpu, log_size = time.monotonic(), cpu_seconds(daemon.proc.pid), len(daemon.log())
    wait_for(lambda: time.monotonic() - started > 1.0, what="1 s to pass")
    used = cpu_seconds(daemon.proc.pid) - cpu
    assert used < 0.3 * (time.monotonic() - started), f"an idle daemon used {used:.2f}s of CPU"
    assert len(daemon.log()) - log_size < 2000


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (Linux /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the local address mail leaves from -------------------------------------------------


def test_delivery_leaves_from_the_source_address_of_its_route(make_daemon):
    with DnsServer() as dns, Peer("127.0.0.11") as peer:
        route = {"route": [f"127.0.0.11:{peer.port}"], "source_address": "127.0.0.5"}
        daemon = make_daemon(delivery=delivery(dns, peer.port), **{'domains."remote.test"': route}).start()
        send(daemon, "bob@remote.test")
        peer.wait_for_transactions(1)
        assert {conn.client[0] for conn in peer.connections} == {"127.0.0.5"}  # what the sink sees
        delivered(daemon, "bob@remote.test")
        # Only the IPv6 addresses of the next hop, and it has none: deferred, saying why.
        route = {"route": [f"127.0.0.11:{peer.port}"], "address_family": "ipv6"}
        daemon.sections['domains."remote.test"'] = route
        daemon.write_config()
        assert empathctl(daemon, "reload").returncode == 0
        send(daemon, "carol@remote.test")
        wait_for(lambda: rows(daemon, "carol@remote.test") and rows(daemon, "carol@remote.test")[0][0] == "deferred")
        assert "no address to deliver to of the family address_family = ipv6" in rows(daemon, "carol@remote.test")[0][2]
