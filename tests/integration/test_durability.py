"""Durable accept: crashes, full storage, the data directory lock, schema versions, shutdown, group commit."""

import os
import re
import smtplib
import socket
import sqlite3
import subprocess
import threading

import pytest
from support import RawClient, lib_reply, raw_reply, wait_for

from empath.queue import database, models
from empath.smtp import replies


def queued_id(text: str | bytes) -> str:
    if isinstance(text, bytes):
        text = text.decode()
    m = re.fullmatch(r"2\.0\.0 OK queued as (\S+)", text)
    assert m, f"not a QUEUED reply: {text!r}"
    return m.group(1)


def make_body(tag: str, size: int = 0) -> bytes:
    filler = b"".join(b"%06d %s\r\n" % (i, b"x" * 70) for i in range(size // 78 + 1)) if size else b""
    return f"Subject: {tag}\r\nX-Tag: {tag}\r\n\r\nbody of {tag}\r\n".encode() + filler


def greet(client: RawClient) -> None:
    assert client.reply()[0] == 220
    assert client.cmd("EHLO client.test")[0] == 250


def raw_send(client: RawClient, sender: str, rcpts: list[str], body: bytes) -> tuple[int, str]:
    """One pipelined transaction on an open session; returns the reply to the end of data."""
    client.send(
        f"MAIL FROM:<{sender}>\r\n".encode() + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in rcpts) + b"DATA\r\n"
    )
    for _ in range(1 + len(rcpts)):
        assert client.reply()[0] == 250
    assert client.reply()[0] == 354
    client.send(body + b".\r\n")
    return client.reply()


def stored_intact(daemon, queue_id: str, rcpts: list[str], body: bytes) -> bool:
    """The message is in the queue with exactly these recipients and this body (after our Received)."""
    stored = daemon.query("SELECT data FROM body WHERE queue_id = ?", queue_id)
    return bool(stored) and stored[0][0].endswith(body) and daemon.recipients(queue_id) == rcpts


# -- (1) SIGKILL right after 250 --------------------------------------------------


def test_message_survives_sigkill_right_after_250(make_daemon):
    daemon = make_daemon().start()
    rcpts = ["bob@local.test", "carol@example.test", "dave@local.test"]
    body = make_body("killed", 20_000)
    client = RawClient(daemon.ports.smtp)
    try:
        greet(client)
        code, text = raw_send(client, "alice@sender.test", rcpts, body)
        daemon.kill()  # the instant the 250 is read
    finally:
        client.close()
    assert code == 250
    queue_id = queued_id(text)

    daemon.start()
    assert daemon.messages() == [(queue_id, "alice@sender.test")]
    assert stored_intact(daemon, queue_id, rcpts, body)
    # The restarted daemon serves, and queues next to what survived.
    client = RawClient(daemon.ports.smtp)
    try:
        greet(client)
        assert raw_send(client, "", ["bob@local.test"], make_body("after"))[0] == 250
    finally:
        client.close()
    assert len(daemon.messages()) == 2


def test_concurrent_clients_killed_mid_stream_lose_nothing_acknowledged(make_daemon):
    daemon = make_daemon().start()
    clients, per_client, kill_after = 10, 5, 15
    acked: dict[str, tuple[list[str], bytes]] = {}
    lock = threading.Lock()
    enough = threading.Event()

    def run(n: int) -> None:
        try:
            client = RawClient(daemon.ports.smtp)
        except OSError:
            return
        try:
            greet(client)
            for m in range(per_client):
                rcpts = [f"u{n}.{m}.{k}@local.test" for k in range(1 + (n + m) % 3)]
                body = make_body(f"c{n}m{m}", 5_000 * (1 + m))
                code, text = raw_send(client, "alice@sender.test", rcpts, body)
                if code == 250:
                    with lock:
                        acked[queued_id(text)] = (rcpts, body)
                        if len(acked) >= kill_after:
                            enough.set()
        except (OSError, ConnectionError, AssertionError):
            pass  # the daemon died under us: expected
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    assert enough.wait(30), f"only {len(acked)} messages acknowledged"
    daemon.kill()
    for t in threads:
        t.join(15)
    assert len(acked) >= kill_after
    assert len(acked) < clients * per_client, "every message got through before the kill: not mid-stream"

    daemon.start()
    in_queue = {queue_id for queue_id, _ in daemon.messages()}
    missing = set(acked) - in_queue
    assert not missing, f"acknowledged but lost: {sorted(missing)}"
    for queue_id in acked:
        rcpts, body = acked[queue_id]
        assert stored_intact(daemon, queue_id, rcpts, body), queue_id
    # Nothing half-written: whatever else got in (committed just before the kill,
    # reply never read) is complete too.
    for queue_id in in_queue - set(acked):
        data = daemon.body(queue_id)
        m = re.search(rb"X-Tag: c(\d+)m(\d+)\r\n", data)
        n, m_ = int(m.group(1)), int(m.group(2))
        rcpts = [f"u{n}.{m_}.{k}@local.test" for k in range(1 + (n + m_) % 3)]
        assert stored_intact(daemon, queue_id, rcpts, make_body(f"c{n}m{m_}", 5_000 * (1 + m_)))
    orphans = daemon.query(
        "SELECT queue_id FROM message WHERE queue_id NOT IN (SELECT queue_id FROM body)"
        " OR queue_id NOT IN (SELECT queue_id FROM recipient)"
    )
    assert orphans == []


# -- (2) Storage full ---------------------------------------------------------------


def fill_until_refused(daemon, size: int, declare_size: bool = True, attempts: int = 60):
    """Send messages of ``size`` bytes until one is refused; return (acked, refusal)."""
    acked: dict[str, tuple[list[str], bytes]] = {}
    for i in range(attempts):
        rcpts = [f"bob{i}@local.test"]
        body = make_body(f"fill{i}", size)
        with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=20) as client:
            client.ehlo("client.test")
            # A full disk may be noticed at MAIL already (SIZE given), or only at the commit.
            reply = client.mail("alice@sender.test", [f"SIZE={len(body)}"] if declare_size else [])
            if reply[0] == 250:
                assert client.rcpt(rcpts[0])[0] == 250
                reply = client.data(body)
            if reply[0] != 250:
                return acked, reply
            acked[queued_id(reply[1])] = (rcpts, body)
    pytest.fail(f"{attempts} messages of {size} bytes were all accepted")


def assert_full_then_still_serving(daemon, acked, refusal):
    assert acked, "the very first message was refused: the limit is too small for this test"
    assert refusal == lib_reply(replies.INSUFFICIENT_STORAGE)
    for queue_id, (rcpts, body) in acked.items():
        assert stored_intact(daemon, queue_id, rcpts, body), queue_id
    # Only what was acknowledged is in the queue: a refused message is not kept either.
    assert {queue_id for queue_id, _ in daemon.messages()} == set(acked)
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
        assert client.noop() == lib_reply(replies.NOOP)
        client.ehlo("client.test")
        assert client.mail("alice@sender.test")[0] == 250
        assert client.rcpt("bob@local.test")[0] == 250


def test_queue_max_size_refuses_with_452_and_keeps_what_was_accepted(make_daemon):
    daemon = make_daemon(queue={"max_size": "1M"}).start()
    acked, refusal = fill_until_refused(daemon, 100_000)
    assert_full_then_still_serving(daemon, acked, refusal)
    assert "queue_full" in daemon.log_since_start()
    # The daemon restarts on the full file and still has everything.
    assert daemon.stop() == 0
    daemon.start()
    assert {queue_id for queue_id, _ in daemon.messages()} == set(acked)


def test_min_free_space_refuses_mail_with_452(make_daemon):
    daemon = make_daemon(queue={"min_free_space": "1000G"}).start()
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
        client.ehlo("client.test")
        assert client.mail("alice@sender.test") == lib_reply(replies.INSUFFICIENT_STORAGE)
        assert client.noop() == lib_reply(replies.NOOP)
    assert daemon.messages() == []


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 2 MiB tmpfs, if this process may mount one (root, and mount allowed)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    tried = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if tried.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {tried.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_disk_full_on_tiny_tmpfs_refuses_with_452(make_daemon, tiny_tmpfs):
    daemon = make_daemon()
    daemon.data_dir = tiny_tmpfs / "data"
    daemon.start()
    try:
        # Without SIZE the MAIL check cannot know, so the commit itself hits ENOSPC.
        acked, refusal = fill_until_refused(daemon, 100_000, declare_size=False)
        assert_full_then_still_serving(daemon, acked, refusal)
        assert "queue_full" in daemon.log_since_start()
        # With SIZE, a message that cannot fit is refused before its data is sent.
        with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
            client.ehlo("client.test")
            assert client.mail("alice@sender.test", ["SIZE=1000000"]) == lib_reply(replies.INSUFFICIENT_STORAGE)
    finally:
        daemon.stop()


# -- (3) One daemon per data directory ----------------------------------------------


def test_second_daemon_on_the_same_data_dir_exits_with_a_clear_message(make_daemon):
    first = make_daemon().start()
    second = make_daemon()
    second.data_dir = first.data_dir
    second.start(wait=False)
    out, err = second.proc.communicate(timeout=20)
    assert second.proc.returncode == 1
    text = err.decode()
    assert f"another Empath (pid {first.proc.pid}) is using the data directory {first.data_dir}" in text
    assert "Traceback" not in text
    # The first is untouched and still serving.
    assert (first.data_dir / "empath.lock").read_text().strip() == str(first.proc.pid)
    with smtplib.SMTP("127.0.0.1", first.ports.smtp, timeout=10) as client:
        assert client.sendmail("alice@sender.test", ["bob@local.test"], make_body("still")) == {}
    assert len(first.messages()) == 1


# -- (4) Schema versions ----------------------------------------------------------


def test_daemon_refuses_a_database_from_a_newer_schema(make_daemon):
    daemon = make_daemon().start()
    assert daemon.stop() == 0
    newer = models.SCHEMA_VERSION + 1
    db = sqlite3.connect(daemon.data_dir / "queue.sqlite3")
    with db:
        db.execute("UPDATE schema_info SET version = ?", (newer,))
    db.close()

    daemon.start(wait=False)
    out, err = daemon.proc.communicate(timeout=20)
    assert daemon.proc.returncode == 1
    text = err.decode()
    assert f"schema version {newer}, newer than this Empath understands ({models.SCHEMA_VERSION})" in text
    assert "Traceback" not in text
    assert daemon.query("SELECT version FROM schema_info") == [(newer,)]


def test_ensure_schema_runs_registered_migrations_and_records_the_version(tmp_path, monkeypatch):
    path = tmp_path / "queue.sqlite3"
    current = models.SCHEMA_VERSION
    db = database.connect(path)
    assert database.ensure_schema(db) == current
    db.execute_sql(
        "INSERT INTO message (queue_id, sender, size, received_at, expires_at, client_address, client_helo,"
        " listener, trace_id, smtputf8, body_type, held, kind) VALUES ('Q1', 'a@b.test', 1, 0, 0, '127.0.0.1',"
        " 'h', 'smtp', 't', 0, '7BIT', 0, 'mail')"
    )
    db.close()

    ran = []

    def add_priority(database):
        ran.append(current)
        database.execute_sql("ALTER TABLE message ADD COLUMN priority INTEGER NOT NULL DEFAULT 0")

    monkeypatch.setattr(models, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(database.MIGRATIONS, current, add_priority)
    db = database.connect(path)
    try:
        assert database.ensure_schema(db) == current + 1
        assert ran == [current]
        assert db.execute_sql("SELECT version FROM schema_info").fetchall() == [(current + 1,)]
        assert db.execute_sql("SELECT queue_id, priority FROM message").fetchall() == [("Q1", 0)]
        # Opening again at the new version migrates nothing.
        assert database.ensure_schema(db) == current + 1
        assert ran == [current]
    finally:
        db.close()


def test_a_failed_migration_leaves_the_file_at_its_old_version(tmp_path, monkeypatch):
    path = tmp_path / "queue.sqlite3"
    current = models.SCHEMA_VERSION
    db = database.connect(path)
    database.ensure_schema(db)
    db.close()

    def broken(database):
        database.execute_sql("ALTER TABLE message ADD COLUMN priority INTEGER")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(models, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(database.MIGRATIONS, current, broken)
    db = database.connect(path)
    try:
        with pytest.raises(RuntimeError, match="migration bug"):
            database.ensure_schema(db)
        assert db.execute_sql("SELECT version FROM schema_info").fetchall() == [(current,)]
        columns = [row[1] for row in db.execute_sql("PRAGMA table_info(message)").fetchall()]
        assert "priority" not in columns
    finally:
        db.close()


def test_ensure_schema_refuses_a_newer_file(tmp_path):
    db = database.connect(tmp_path / "queue.sqlite3")
    try:
        database.ensure_schema(db)
        db.execute_sql("UPDATE schema_info SET version = ?", (models.SCHEMA_VERSION + 5,))
        with pytest.raises(database.SchemaTooNew, match="newer than this Empath understands"):
            database.ensure_schema(db)
    finally:
        db.close()


# -- (5) SIGTERM with open sessions ---------------------------------------------------


def sigterm(daemon) -> None:
    daemon.proc.terminate()
    wait_for(lambda: " stopping " in daemon.log_since_start(), what="the daemon to begin stopping")


def refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.recv(1024)
    except ConnectionRefusedError:
        return True
    except OSError:
        pass
    return False


def test_sigterm_ends_an_idle_session_with_421_and_exits_0(make_daemon):
    daemon = make_daemon(timeouts={"shutdown_grace": "1s"}).start()
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
        client.sendmail("alice@sender.test", ["bob@local.test"], make_body("before"))
    [(queue_id, _)] = daemon.messages()

    idle = RawClient(daemon.ports.smtp)
    try:
        greet(idle)
        assert idle.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        assert idle.cmd("RCPT TO:<bob@local.test>")[0] == 250
        sigterm(daemon)
        wait_for(lambda: refused(daemon.ports.smtp), what="the listener to close")
        assert idle.reply() == raw_reply(replies.SHUTTING_DOWN)
        assert idle.closed()
    finally:
        idle.close()
    assert daemon.proc.wait(20) == 0
    assert " stopped" in daemon.log_since_start()
    assert daemon.messages() == [(queue_id, "alice@sender.test")]


@pytest.mark.parametrize("processes", [1, 2])
def test_sigterm_does_not_wait_for_a_session_with_no_transaction_open(make_daemon, processes):
    # One client idle after EHLO must not hold a restart for the whole grace (in a helper too).
    daemon = make_daemon(server={"smtp_processes": processes}, timeouts={"shutdown_grace": "60s"}).start()
    idle = RawClient(daemon.ports.smtp)
    try:
        greet(idle)
        sigterm(daemon)
        assert idle.reply() == raw_reply(replies.SHUTTING_DOWN)
        assert idle.closed()
    finally:
        idle.close()
    assert daemon.proc.wait(20) == 0  # far sooner than the grace
    assert "still open after" not in daemon.log_since_start()


def test_sigterm_lets_a_session_finish_its_message_within_the_grace(make_daemon):
    daemon = make_daemon(timeouts={"shutdown_grace": "10s"}).start()
    client = RawClient(daemon.ports.smtp)
    body = make_body("in-flight", 50_000)
    try:
        greet(client)
        assert client.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
        assert client.cmd("RCPT TO:<bob@local.test>")[0] == 250
        assert client.cmd("DATA")[0] == 354
        client.send(body[:1000])
        sigterm(daemon)
        client.send(body[1000:] + b".\r\n")
        code, text = client.reply()
        assert code == 250
        queue_id = queued_id(text)
        # Its transaction over, the session is ended like an idle one.
        assert client.reply() == raw_reply(replies.SHUTTING_DOWN)
        assert client.closed()
    finally:
        client.close()
    # Exits as soon as the last session is gone, well before the 10 s grace.
    assert daemon.proc.wait(8) == 0
    assert stored_intact(daemon, queue_id, ["bob@local.test"], body)


# -- (6) Group commit -------------------------------------------------------------


def test_concurrent_messages_are_committed_in_batches(make_daemon):
    daemon = make_daemon().start()
    count = 20
    clients = [RawClient(daemon.ports.smtp) for _ in range(count)]
    try:
        for n, client in enumerate(clients):
            greet(client)
            assert client.cmd("MAIL FROM:<alice@sender.test>")[0] == 250
            assert client.cmd(f"RCPT TO:<bob{n}@local.test>")[0] == 250
            assert client.cmd("DATA")[0] == 354
            client.send(make_body(f"group{n}"))
        # Every client ends its message at (nearly) the same moment.
        for client in clients:
            client.send(b".\r\n")
        ids = [queued_id(client.reply()[1]) for client in clients]
    finally:
        for client in clients:
            client.close()
    assert len(set(ids)) == count
    assert {queue_id for queue_id, _ in daemon.messages()} == set(ids)
    for n, queue_id in enumerate(ids):
        assert stored_intact(daemon, queue_id, [f"bob{n}@local.test"], make_body(f"group{n}"))
    batches = [int(n) for n in re.findall(r"committed (\d+) message\(s\)", daemon.log_since_start())]
    assert sum(batches) == count
    assert max(batches) > 1, f"every commit carried one message: {batches}"
