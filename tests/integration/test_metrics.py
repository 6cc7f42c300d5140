"""Prometheus metrics end to end: real SMTP sessions and deliveries, then a scrape of /metrics.

The daemon is fresh, so every counter is asserted at its absolute value.
"""

import smtplib
import socket
import time

import pytest
from peer import Peer
from support import free_port, scrape, value, wait_for

from empath.smtp import replies

SENT_FROM = ("127.0.0.2", 0)  # the test config's trusted network: may relay
REMOTE = "127.0.0.11"
BODY = b"From: alice@sender.test\r\nTo: bob@remote.test\r\nSubject: metrics\r\n\r\nhello\r\n"


def send(port: int, recipient: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=SENT_FROM) as client:
        assert client.sendmail("alice@sender.test", [recipient], BODY) == {}


def states(daemon) -> list[str]:
    return [row[0] for row in daemon.query("SELECT state FROM recipient ORDER BY id")]


@pytest.fixture
def remote():
    with Peer(host=REMOTE) as p:
        yield p
    assert not p.errors, p.errors


def test_counters_and_gauges_after_sessions_and_deliveries(make_daemon, remote, certs):
    port = free_port()
    daemon = make_daemon(
        server={"metrics_address": f"127.0.0.1:{port}"},
        timeouts={"command": "1s"},
        delivery={"retry_first": "1h", "retry_max": "1h", "connect_timeout": "2s", "idle_time": 0},
        # local.test goes to a port where nothing listens: one refused connection opens its breaker.
        **{
            'domains."remote.test"': {"route": [f"{remote.host}:{remote.port}"]},
            'domains."local.test"': {"breaker_failures": 1},
        },
    ).start()
    listener = f"smtp@127.0.0.1:{daemon.ports.smtp}"

    # Accepted mail: one delivered by the peer, one deferred (connection refused).
    send(daemon.ports.smtp, "bob@remote.test")
    remote.wait_for_transactions(1)
    send(daemon.ports.smtp, "carol@local.test")
    wait_for(lambda: daemon.query("SELECT count(*) FROM message") == [(1,)], what="the delivered message to leave")
    wait_for(lambda: states(daemon) == ["deferred"], what="the deferral")

    # STARTTLS, a wrong password, then a relay denial in the same session.
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
        client.starttls(context=certs.client_context())
        client.ehlo("client.test")
        client.user, client.password = "alice", "not the password"
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            client.auth("PLAIN", client.auth_plain)  # one attempt; login() would try every mechanism
        assert failed.value.smtp_code == replies.AUTH_FAILED.code
        client.mail("alice@sender.test")
        assert client.rcpt("carol@elsewhere.test")[0] == replies.RELAY_DENIED.code

    # A client that says nothing until the command timeout (1s) ends its session.
    with socket.create_connection(("127.0.0.1", daemon.ports.smtp), timeout=10) as idle:
        assert idle.recv(1024).startswith(b"220")
        s = wait_for(
            lambda: (
                (s := scrape(port))
                and value(s, "empath_smtp_connections_total", listener=listener, outcome="timeout")
                and s
            ),
            what="the timeout to be counted",
        )
    s = wait_for(
        lambda: (s := scrape(port)) and value(s, "empath_smtp_connections_open", listener=listener) == 0 and s,
        what="every session to end",
    )

    # SMTP
    assert value(s, "empath_smtp_connections_total", listener=listener, outcome="timeout") == 1
    assert value(s, "empath_smtp_connections_total", listener=listener, outcome="closed") == 3
    assert value(s, "empath_smtp_connections_total", listener=listener, outcome="refused") == 0
    assert value(s, "empath_smtp_commands_rejected_total", reason="relay_denied") == 1
    assert value(s, "empath_smtp_commands_rejected_total", reason="auth_failed") == 1
    assert value(s, "empath_smtp_messages_received_total", listener=listener) == 2
    assert value(s, "empath_smtp_received_bytes_total", listener=listener) > 2 * len(BODY)
    assert value(s, "empath_smtp_tls_handshakes_total", result="success") == 1
    assert value(s, "empath_smtp_tls_handshakes_total", result="failure") == 0
    assert value(s, "empath_smtp_auth_total", result="failure") == 1
    assert value(s, "empath_smtp_auth_total", result="success") == 0

    # Queue
    assert value(s, "empath_queue_messages_in_total") == 2
    assert value(s, "empath_queue_messages_out_total", result="delivered") == 1
    assert value(s, "empath_queue_recipients", state="deferred") == 1
    for state in ("queued", "delivered", "bounced", "held"):
        assert (("empath_queue_recipients", frozenset({("state", state)})) in s) and value(
            s, "empath_queue_recipients", state=state
        ) == 0
    assert 0 < value(s, "empath_queue_oldest_message_age_seconds") < 60
    assert value(s, "empath_queue_database_bytes") > 0
    assert ("empath_queue_wal_bytes", frozenset()) in s
    assert value(s, "empath_data_dir_free_bytes") > 0

    # Delivery
    assert value(s, "empath_delivery_attempts_total", result="delivered", domain_class="routed") == 1
    assert value(s, "empath_delivery_attempts_total", result="deferred", domain_class="routed") == 1
    assert value(s, "empath_delivery_time_in_queue_seconds_count") == 1
    assert value(s, "empath_delivery_latency_seconds_count") == 1
    assert 0 < value(s, "empath_delivery_latency_seconds_sum") < 60
    assert value(s, "empath_delivery_tls_total", used="no") == 1
    assert value(s, "empath_delivery_connection_reuse_total", result="miss") == 2
    assert value(s, "empath_delivery_connection_reuse_total", result="hit") == 0
    assert value(s, "empath_delivery_breaker_open", destination="local.test") == 1
    assert value(s, "empath_delivery_breaker_open", destination="remote.test") == 0
    assert value(s, "empath_delivery_breaker_open", destination="other") == 0
    assert value(s, "empath_dns_lookups_total") == 0  # every route here is an IP address
    for kind in ("nxdomain", "servfail", "timeout", "no_answer", "unreachable", "error"):
        assert ("empath_dns_failures_total", frozenset({("kind", kind)})) in s
    assert value(s, "empath_delivery_rate_limited_total") == 0

    # Process
    assert value(s, "process_resident_memory_bytes") > 0
    assert value(s, "process_open_fds") > 0
    assert value(s, "empath_greenlets") >= 0
    assert value(s, "empath_tls_certificate_expiry_timestamp_seconds") > time.time()
    assert any(name == "empath_build_info" and v == 1 for (name, _), v in s.items())


def test_an_address_that_cannot_be_bound_stops_the_start(make_daemon):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        daemon = make_daemon(tls=False, server={"metrics_address": f"127.0.0.1:{port}"}).start(wait=False)
        assert daemon.proc.wait(20) == 1
        err = daemon.proc.stderr.read().decode()
    assert f"cannot serve metrics on 127.0.0.1:{port}" in err
