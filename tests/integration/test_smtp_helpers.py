"""[server] smtp_processes: helper processes serve the sessions the daemon accepts.

What must hold with them as without: every 250 is durable and the mail is
delivered at once, the connection limits count every process's sessions,
`empathctl connections`, stats and reloads see the helpers, a helper that
dies is replaced without losing what was accepted, and no helper outlives
the daemon.
"""

import os
import signal
import smtplib
import socket

import pytest
from peer import Peer
from support import RawClient, raw_reply, send_message, wait_for

from empath.smtp import replies

HELPERS = 2


def helper_pids(daemon) -> list[int]:
    return [h["pid"] for h in daemon.control("status")["result"]["smtp_helpers"]]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def served_by(daemon, pid: int) -> int:
    """Sessions a helper has open, as the daemon counts them."""
    return next(h["sessions"] for h in daemon.control("status")["result"]["smtp_helpers"] if h["pid"] == pid)


def relay(daemon, tag: str) -> str:
    """One message to bob@remote.test from the test config's trusted address; its queue id."""
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10, source_address=("127.0.0.2", 0)) as client:
        client.ehlo("client.test")
        assert client.mail("alice@sender.test")[0] == 250
        assert client.rcpt("bob@remote.test")[0] == 250
        code, text = client.data(f"Subject: {tag}\r\n\r\nhi\r\n".encode())
    assert code == 250, text
    return text.decode().rsplit(" ", 1)[1]


@pytest.fixture
def start(make_daemon):
    def start(**sections):
        server = {"smtp_processes": HELPERS, **sections.pop("server", {})}
        return make_daemon(tls=False, server=server, **sections).start()

    return start


def test_helpers_serve_sessions_and_their_mail_is_queued_and_delivered_at_once(start):
    with Peer(host="127.0.0.11") as remote:
        daemon = start(
            delivery={"retry_first": "1h"},
            **{'domains."remote.test"': {"route": [f"{remote.host}:{remote.port}"], "tls": "none"}},
        )
        pids = helper_pids(daemon)
        assert len(pids) == HELPERS and daemon.proc.pid not in pids
        # Sessions held open at once land on different helpers (the least busy one takes each).
        clients = [RawClient(daemon.ports.smtp) for _ in range(HELPERS)]
        for client in clients:
            assert client.reply()[0] == 220
        wait_for(lambda: all(served_by(daemon, pid) == 1 for pid in pids), what="a session on each helper")
        for client in clients:
            client.close()
        ids = [relay(daemon, f"m{i}") for i in range(6)]
        assert len(set(ids)) == 6
        # The scheduler lives in the daemon: a helper's commit must wake it, not the next retry an hour away.
        delivered = remote.wait_for_transactions(6, timeout=15)
        assert sorted(t.data.split(b"Subject: ", 1)[1][:2] for t in delivered) == [f"m{i}".encode() for i in range(6)]
        wait_for(lambda: daemon.control("stats")["result"]["received"] == 6, what="the helpers' counts in stats")
    assert not remote.errors, remote.errors


def test_connection_limits_count_the_sessions_of_every_helper(start):
    daemon = start(limits={"max_connections_per_client": 3, "max_connections": 4})
    clients = [RawClient(daemon.ports.smtp) for _ in range(3)]
    for client in clients:
        assert client.reply()[0] == 220
    with RawClient(daemon.ports.smtp) as fourth:
        assert fourth.reply() == raw_reply(replies.TOO_MANY_FROM_CLIENT)
    with RawClient(daemon.ports.smtp, source="127.0.0.3") as other:
        assert other.reply()[0] == 220
        with RawClient(daemon.ports.smtp, source="127.0.0.4") as fifth:
            assert fifth.reply() == raw_reply(replies.TOO_MANY_CONNECTIONS)
        rows = daemon.control("connections")["result"]
        assert sorted(row["client"] for row in rows) == ["127.0.0.1"] * 3 + ["127.0.0.3"]
    for client in clients:
        client.close()
    wait_for(lambda: daemon.control("status")["result"]["sessions"] == 0, what="the sessions to be counted as ended")


def test_a_reload_and_a_log_level_reach_the_helpers(start):
    daemon = start()

    def size_offered() -> str:
        with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
            client.ehlo("client.test")
            return client.esmtp_features["size"]

    assert {size_offered() for _ in range(2 * HELPERS)} == {"52428800"}
    daemon.sections["limits"] = {"max_message_size": "64K"}
    daemon.write_config()
    assert daemon.control("reload")["ok"]
    assert {size_offered() for _ in range(2 * HELPERS)} == {"65536"}
    assert daemon.control("log-level", {"level": "warning"})["ok"]
    mark = len(daemon.log())
    send_message(daemon, ["bob@local.test"], tag="quiet")
    wait_for(lambda: daemon.control("stats")["result"]["received"] == 1, what="the message to be counted")
    assert " connect " not in daemon.log()[mark:]


def test_a_helper_that_dies_is_replaced_and_nothing_accepted_is_lost(start):
    daemon = start()
    before = send_message(daemon, ["bob@local.test"], tag="before")
    victim = helper_pids(daemon)[0]
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: victim not in helper_pids(daemon) and len(helper_pids(daemon)) == HELPERS,
        timeout=15,
        what="a new helper in the place of the killed one",
    )
    assert "smtp_helper_exited" in daemon.log()
    after = [send_message(daemon, ["bob@local.test"], tag=f"after{i}") for i in range(4)]
    assert {row[0] for row in daemon.messages()} >= {before, *after}


def test_no_helper_outlives_the_daemon(start):
    daemon = start()
    pids = helper_pids(daemon)
    client = RawClient(daemon.ports.smtp)
    assert client.reply()[0] == 220
    assert daemon.stop() == 0
    assert not any(alive(pid) for pid in pids)
    assert client.closed()


def test_helpers_stop_when_the_daemon_is_killed(start):
    daemon = start()
    pids = helper_pids(daemon)
    daemon.kill()
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=15, what="the helpers to stop")
    # The port is free again for the next daemon: no helper kept a listener open.
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", daemon.ports.smtp)) != 0
