"""Backup and restore: `empathctl backup` under load, `empathctl restore`, scripts/empath-backup."""

import gzip
import io
import os
import re
import signal
import smtplib
import sqlite3
import subprocess
import tarfile
import threading
from pathlib import Path

from dkim_helpers import dns_lookup, keygen, verifies
from dns_server import DnsServer
from peer import Peer
from support import ROOT, empathctl, free_port, send_message, wait_for

from empath.queue import backup

CRON_SCRIPT = ROOT / "scripts" / "empath-backup"
SIGNED_BODY = b"From: Alice <alice@local.test>\r\nTo: bob@remote.test\r\nSubject: drill\r\n\r\n%s\r\n"


def ctl(daemon, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return empathctl(daemon, *args, timeout=timeout)


def queued_id(text: bytes) -> str:
    m = re.fullmatch(r"2\.0\.0 OK queued as (\S+)", text.decode())
    assert m, f"not a QUEUED reply: {text!r}"
    return m.group(1)


def send(daemon, tag: str, rcpts: list[str]) -> str:
    return send_message(daemon, rcpts, tag)


def one_line_failure(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert fragment in result.stderr, result.stderr


def data_files(daemon) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in daemon.data_dir.iterdir() if p.is_file() and p.name != "empath.lock"}


def make_backup(daemon, dest: Path) -> Path:
    result = ctl(daemon, "backup", "--output", str(dest))
    assert result.returncode == 0, result.stderr
    archive = Path(result.stdout.strip())
    assert archive.parent == dest and archive.is_file()
    return archive


# -- backup under load, restore on a fresh data directory ---------------------------


def test_backup_during_load_restores_every_message_acknowledged_before_it(make_daemon, tmp_path):
    source = make_daemon(tls=False).start()
    acked: list[tuple[str, list[str], str]] = []  # (queue id, recipients, tag), in order of the 250
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def load(n: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", source.ports.smtp, timeout=30) as client:
                client.ehlo("client.test")
                i = 0
                while not stop.is_set():
                    tag = f"load-{n}-{i}"
                    rcpts = [f"u{n}@local.test", f"m{i}@example.test"]
                    assert client.mail("alice@sender.test")[0] == 250
                    for rcpt in rcpts:
                        assert client.rcpt(rcpt)[0] == 250
                    code, text = client.data(f"Subject: {tag}\r\n\r\nbody of {tag}\r\n".encode())
                    assert code == 250, text
                    with lock:
                        acked.append((queued_id(text), rcpts, tag))
                    i += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: errors or len(acked) >= 40, timeout=30, what="40 messages queued")
        assert not errors, errors
        with lock:
            before = list(acked)
        result = ctl(source, "backup", "--output", str(tmp_path))
        during = len(acked) - len(before)  # acknowledged while empathctl ran: the daemon was not held up
        wait_for(lambda: len(acked) >= len(before) + 8, timeout=30, what="more mail after the backup")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not errors, errors
    assert result.returncode == 0, result.stderr
    archive = Path(result.stdout.strip())
    assert archive.parent == tmp_path and archive.stat().st_mode & 0o777 == 0o600
    assert during > 0
    assert backup.verify(archive).messages >= len(before)

    target = make_daemon(tls=False)
    target.write_config()
    assert not target.data_dir.exists()
    restored = ctl(target, "restore", str(archive))
    assert restored.returncode == 0, restored.stderr
    assert not list(target.data_dir.glob("queue.sqlite3.replaced-*"))  # there was nothing to replace
    target.start()
    stored = {qid for (qid,) in target.query("SELECT queue_id FROM message")}
    for queue_id, rcpts, tag in before:
        assert queue_id in stored, f"{tag} ({queue_id}), acknowledged before the backup, is missing"
        assert target.recipients(queue_id) == rcpts
        assert target.body(queue_id).endswith(f"Subject: {tag}\r\n\r\nbody of {tag}\r\n".encode())
    # Nothing half-written came back: every restored message has its body and recipients.
    assert target.query("SELECT count(*) FROM message WHERE queue_id NOT IN (SELECT queue_id FROM body)") == [(0,)]
    assert target.query("SELECT count(*) FROM message WHERE queue_id NOT IN (SELECT queue_id FROM recipient)") == [(0,)]


# -- refusals ----------------------------------------------------------------------


def corrupt_variants(archive: Path, directory: Path) -> dict[str, tuple[Path, str]]:
    """Damaged copies of ``archive``, each with the fragment of the message that refuses it."""
    raw = archive.read_bytes()
    truncated = directory / "truncated.tar.gz"
    truncated.write_bytes(raw[: len(raw) * 2 // 3])
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0x01
    flipped_path = directory / "flipped.tar.gz"
    flipped_path.write_bytes(bytes(flipped))
    # A byte of the database member changed inside a well-formed archive: only the checksum sees it.
    with tarfile.open(archive, "r:gz") as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar]
    tampered = io.BytesIO()
    with tarfile.open(fileobj=tampered, mode="w") as tar:
        for info, data in members:
            if info.name == "queue.sqlite3":
                data = data[:5000] + bytes([data[5000] ^ 0xFF]) + data[5001:]
            tar.addfile(info, io.BytesIO(data))
    tampered_path = directory / "tampered.tar.gz"
    tampered_path.write_bytes(gzip.compress(tampered.getvalue()))
    return {
        "truncated": (truncated, "not a readable backup archive"),
        "flipped": (flipped_path, "not a readable backup archive"),
        "tampered": (tampered_path, "checksum mismatch for queue.sqlite3"),
        "missing": (directory / "nothing-here.tar.gz", "no backup archive at"),
    }


def test_a_corrupt_archive_is_refused_and_nothing_is_replaced(make_daemon, tmp_path):
    source = make_daemon(tls=False).start()
    for n in range(5):
        send(source, f"corrupt-{n}", ["bob@local.test"])
    archive = make_backup(source, tmp_path)
    source.stop()

    target = make_daemon(tls=False).start()
    send(target, "already-here", ["carol@local.test"])
    target.stop()
    files = data_files(target)
    for name, (path, message) in corrupt_variants(archive, tmp_path).items():
        result = ctl(target, "restore", str(path))
        one_line_failure(result, message)
        assert result.stderr.startswith("empathctl: restore: "), name
        assert data_files(target) == files, f"{name}: the data directory changed"
        assert not [p for p in target.data_dir.iterdir() if p.name.startswith(".empath-restore-")]


def test_restore_over_a_running_daemon_is_refused_unless_told_to_stop_it(make_daemon, tmp_path):
    source = make_daemon(tls=False).start()
    queue_id = send(source, "restored", ["bob@local.test", "carol@local.test"])
    archive = make_backup(source, tmp_path)
    source.stop()

    with Peer("127.0.0.11") as peer:
        route = {"route": [f"127.0.0.11:{peer.port}"]}
        target = make_daemon(tls=False, **{'domains."local.test"': route}).start()
        other = send(target, "replaced", ["dave@example.test"])
        refused = ctl(target, "restore", str(archive))
        one_line_failure(refused, f"the daemon (pid {target.proc.pid}) is running")
        assert target.proc.poll() is None
        assert not list(target.data_dir.glob("queue.sqlite3.replaced-*"))

        stopped = ctl(target, "restore", str(archive), "--stop-daemon")
        assert stopped.returncode == 0, stopped.stderr
        assert target.proc.wait(30) == 0  # a clean SIGTERM shutdown
        [replaced] = target.data_dir.glob("queue.sqlite3.replaced-*")
        assert f"kept as {replaced}" in stopped.stdout
        assert (target.data_dir / "empath.toml.restored").read_bytes() == source.config_path.read_bytes()
        assert target.config_path.read_text() != source.config_path.read_text()  # the live config stays
        # The replaced queue is whole (its WAL folded in) and holds the message it had.
        db = sqlite3.connect(f"file:{replaced}?mode=ro", uri=True)
        try:
            assert db.execute("SELECT queue_id FROM message").fetchall() == [(other,)]
        finally:
            db.close()

        # Started again, the restored queue delivers.
        target.start()
        assert [qid for qid, _ in target.messages()] == [queue_id]

        def delivered():
            os.kill(target.proc.pid, signal.SIGUSR1)  # deferred mail is due now
            return peer.delivered

        [transaction] = wait_for(delivered, timeout=30, interval=0.5, what="the restored message delivered")
        assert sorted(transaction.recipients) == ["bob@local.test", "carol@local.test"]
        assert b"body of restored" in transaction.data
        wait_for(lambda: not target.messages(), what="the delivered message to leave the queue")


# -- the cron script ---------------------------------------------------------------


def cron(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CRON_SCRIPT), *args], capture_output=True, text=True, cwd="/", timeout=120)


def test_cron_script_keeps_the_newest_archives(make_daemon, tmp_path):
    daemon = make_daemon(tls=False).start()
    send(daemon, "cron", ["bob@local.test"])
    dest = tmp_path / "backups"
    runs = []
    for _ in range(3):
        result = cron(str(daemon.config_path), str(dest), "2")
        assert result.returncode == 0, result.stderr
        assert result.stdout == result.stderr == ""  # cron mails any output
        runs.append(sorted(dest.iterdir()))
    assert [len(r) for r in runs] == [1, 2, 2]
    [first] = runs[0]
    assert set(runs[1]) - set(runs[2]) == {first}  # the oldest went
    assert len(set(runs[2]) - set(runs[1])) == 1  # the newest came
    for archive in runs[2]:
        assert ctl(daemon, "restore", str(archive)).returncode != 0  # verified, then refused: daemon runs


def test_cron_script_fails_loudly(make_daemon, tmp_path):
    daemon = make_daemon(tls=False)
    daemon.write_config()
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nhostname = "mx.test"\ncolour = "blue"\n')
    cases = [
        ((str(bad), str(tmp_path / "out")), "empath-backup: the backup failed"),
        ((str(tmp_path / "missing.toml"),), "cannot read the config file"),
        ((str(daemon.config_path), str(tmp_path / "out"), "zero"), "KEEP must be a whole number"),
        ((str(daemon.config_path), str(tmp_path / "out")), "there is no queue database"),  # never started
        ((), "usage:"),
    ]
    for args, message in cases:
        result = cron(*args)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("**/*.tar.gz"))


# -- the disaster-recovery drill (docs/operations.md, "Restore") ---------------------


def test_a_restored_backup_on_a_new_machine_starts_and_delivers_signed(make_daemon, certs, tmp_path):
    """Back up a daemon with queued mail; on a "new machine" (a config naming the same
    kinds of files at paths where nothing is yet: TLS pair, DKIM key, users, smarthost
    password) restore it, start, and the queued mail and new mail leave signed."""
    with Peer("127.0.0.11") as peer, DnsServer() as dns_server:
        old = make_daemon(**{'domains."remote.test"': {"route": [f"127.0.0.1:{free_port()}"]}})  # nowhere yet
        old.write_config()
        dns_server.set("drill._domainkey.local.test", TXT=[keygen(old, "drill", "rsa-sha256")])
        old.add_user("alice", "secret")
        password = old.directory / "smarthost.password"
        password.write_text("relay-secret\n")
        password.chmod(0o600)
        smarthost = {"hosts": [f"127.0.0.1:{free_port()}"], "username": "relay", "password_file": str(password)}
        old.sections["smarthost"] = {**smarthost, "tls": "required"}
        old.start()
        with smtplib.SMTP("127.0.0.1", old.ports.smtp, timeout=10, source_address=("127.0.0.2", 0)) as client:
            client.sendmail("alice@local.test", ["bob@remote.test"], SIGNED_BODY % b"queued before the backup")
        (tmp_path / "archives").mkdir()
        archive = make_backup(old, tmp_path / "archives")
        old.stop()

        new_home = tmp_path / "new-machine"
        new = make_daemon(
            auth={"users_file": str(new_home / "users")},
            smarthost={**smarthost, "password_file": str(new_home / "smarthost.password"), "tls": "required"},
            **{'domains."remote.test"': {"route": [f"{peer.host}:{peer.port}"]}},
        )
        new.sections["tls"] = {
            "certificate": str(new_home / "tls" / "cert.pem"),
            "key": str(new_home / "tls" / "key.pem"),
        }
        new.extra = old.extra.replace(str(old.directory / "dkim"), str(new_home / "dkim"))
        new.write_config()
        restored = ctl(new, "restore", str(archive))
        assert restored.returncode == 0, restored.stderr
        originals = {
            "tls/key.pem": certs.key,
            "tls/cert.pem": certs.cert,
            "dkim/local.test.drill.key": old.directory / "dkim" / "local.test.drill.key",
            "smarthost.password": password,
            "users": old.users_path,
        }
        for path, original in originals.items():  # each where the new config names it, as it was
            assert f"{new_home / path} was missing: installed from the archive" in restored.stdout
            assert (new_home / path).read_bytes() == original.read_bytes()
            assert (new_home / path).stat().st_mode & 0o777 == original.stat().st_mode & 0o777

        new.start()  # fails its config check if a file it names is missing
        assert ctl(new, "queue", "retry", "--all", "--yes").returncode == 0  # the drill's "retry now"
        with smtplib.SMTP("127.0.0.1", new.ports.smtp, timeout=10, source_address=("127.0.0.2", 0)) as client:
            client.sendmail("alice@local.test", ["bob@remote.test"], SIGNED_BODY % b"sent after the restore")
        lookup = dns_lookup(dns_server)
        transactions = peer.wait_for_transactions(2, timeout=15)
        assert sorted(b"before" in t.data for t in transactions) == [False, True]
        assert all(verifies(t.data, 0, lookup) for t in transactions)
