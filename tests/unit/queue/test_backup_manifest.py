"""The backup archive: its manifest, and verify() refusing every kind of damage."""

import hashlib
import io
import json
import sqlite3
import tarfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import queue_helpers

from empath.queue import backup, database, models
from empath.queue.backup import BackupError, Manifest, Member
from empath.queue.insert import insert


def make_config(tmp_path: Path, messages: int = 2) -> SimpleNamespace:
    """What backup() reads of a Config, around a real queue file holding ``messages`` messages."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    db = database.connect(data_dir / "queue.sqlite3")
    database.ensure_schema(db)
    for n in range(messages):
        body = f"Subject: {n}\r\n\r\nbody {n}\r\n".encode()
        insert(db, queue_helpers.new_message(f"ID{n:014d}", body, "a@sender.test", ("x@local.test", "y@b.test")))
    db.close()
    config = tmp_path / "empath.toml"
    config.write_text('[server]\nhostname = "mx.test"\n')
    users = tmp_path / "users"
    users.write_text("alice:scrypt$...\n")
    return SimpleNamespace(
        path=config,
        data_dir=data_dir,
        database_path=data_dir / "queue.sqlite3",
        users_file=users,
        # The other files a backup carries: none here (tests/integration/test_backup.py has them).
        tls_certificate=None,
        tls_key=None,
        smarthost=None,
        delivery=SimpleNamespace(tls_ca_file=None),
        control=SimpleNamespace(tokens_file=None),
        dkim=(),
        senders_file=None,
        aliases=SimpleNamespace(file=None, virtual=None),
        srs=SimpleNamespace(secret_file=None),
        rewrite=SimpleNamespace(sender_canonical=None),
        domains={},
    )


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:gz") as tar:
        return {info.name: tar.extractfile(info).read() for info in tar}


def write_archive(path: Path, contents: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def with_manifest_for(contents: dict[str, bytes]) -> dict[str, bytes]:
    """The same members with a manifest whose checksums match them (damage a checksum cannot see)."""
    manifest = json.loads(contents["MANIFEST.json"])
    for name, data in contents.items():
        if name != "MANIFEST.json":
            manifest["files"][name].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    return {**contents, "MANIFEST.json": json.dumps(manifest).encode()}


def edited_database(raw: bytes, tmp_path: Path, sql: str) -> bytes:
    path = tmp_path / "edit.sqlite3"
    path.write_bytes(raw)
    db = sqlite3.connect(path)
    db.execute(sql)
    db.commit()
    db.close()
    return path.read_bytes()


@pytest.fixture
def archive(tmp_path) -> Path:
    return backup.backup(make_config(tmp_path), tmp_path)


# -- the manifest ------------------------------------------------------------------


def test_manifest_round_trips_through_json():
    manifest = Manifest(
        created="2026-11-24T03:17:00+00:00",
        hostname="mx",
        empath_version="0.1.0",
        schema_version=2,
        messages=3,
        recipients=5,
        files={"queue.sqlite3": Member("a" * 64, 4096, "/var/lib/empath/queue.sqlite3")},
    )
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert json.loads(manifest.to_json())["format"] == "empath-backup"


GOOD = {
    "format": "empath-backup",
    "version": 1,
    "created": "2026-11-24T03:17:00+00:00",
    "hostname": "mx",
    "empath_version": "0.1.0",
    "schema_version": 2,
    "messages": 0,
    "recipients": 0,
    "files": {"queue.sqlite3": {"sha256": "0" * 64, "size": 1}},
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "tarball"}, "not describe an Empath backup"),
        ({"version": 2}, "format version 2"),
        ({"files": {}}, "lists no queue.sqlite3"),
        ({"files": {"../queue.sqlite3": {"sha256": "0" * 64, "size": 1}}}, "bad member name"),
        ({"files": {"queue.sqlite3": {"sha256": "xyz", "size": 1}}}, "no valid sha256"),
        ({"messages": "many"}, "malformed"),
        ({"hostname": None, "created": None, "files": None}, "malformed"),
        ({"files": {"queue.sqlite3": {"sha256": "0" * 64, "size": 1, "mode": 0o4755}}}, "bad mode"),
    ],
)
def test_a_bad_manifest_is_refused_with_its_reason(change, message):
    with pytest.raises(BackupError, match=message):
        Manifest.from_json(json.dumps({**GOOD, **change}).encode())


def test_a_manifest_that_is_not_json_is_refused():
    with pytest.raises(BackupError, match="not valid JSON"):
        Manifest.from_json(b"\x00garbage")


# -- backup and verify ---------------------------------------------------------------


def test_backup_holds_the_queue_config_users_and_a_manifest_of_their_checksums(tmp_path, archive):
    assert archive.name.startswith("empath-backup-") and archive.name.endswith(".tar.gz")
    assert archive.stat().st_mode & 0o777 == 0o600
    contents = members(archive)
    assert list(contents) == ["MANIFEST.json", "queue.sqlite3", "config.toml", "users"]
    manifest = backup.verify(archive)
    assert (manifest.messages, manifest.recipients, manifest.schema_version) == (2, 4, models.SCHEMA_VERSION)
    for name, data in contents.items():
        if name != "MANIFEST.json":
            assert manifest.files[name].sha256 == hashlib.sha256(data).hexdigest()
    assert contents["config.toml"] == (tmp_path / "empath.toml").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".empath-backup-")], "temp files left"


def test_restore_installs_a_named_file_that_is_missing_and_never_overwrites_one_that_differs(tmp_path):
    config = make_config(tmp_path)
    config.users_file.chmod(0o640)
    archive = backup.backup(config, tmp_path)
    users = config.users_file.read_bytes()
    config.users_file.unlink()  # a new machine: the users file is missing
    restored = backup.restore(config, archive)
    assert restored.installed == [config.users_file] and config.users_file.read_bytes() == users
    assert config.users_file.stat().st_mode & 0o777 == 0o640  # the mode it had
    config.users_file.write_text("bob:scrypt$changed since\n")  # the live one changed on purpose
    restored = backup.restore(config, archive)
    assert restored.installed == [] and config.users_file.read_text() == "bob:scrypt$changed since\n"
    assert [p.name for p in restored.extras] == ["empath.toml.restored", "users.restored"]
    assert (config.data_dir / "users.restored").read_bytes() == users


def test_two_backups_in_the_same_second_never_overwrite_each_other(tmp_path):
    config = make_config(tmp_path)
    first, second = backup.backup(config, tmp_path), backup.backup(config, tmp_path)
    assert first != second and first.exists() and second.exists()


def test_backup_to_the_default_directory_and_to_a_file_name(tmp_path):
    config = make_config(tmp_path)
    assert backup.backup(config, None).parent == config.data_dir / "backups"
    assert backup.backup(config, tmp_path / "mine.tar.gz") == tmp_path / "mine.tar.gz"


def test_backup_without_a_queue_database_says_so(tmp_path):
    config = make_config(tmp_path)
    config.database_path.unlink()
    with pytest.raises(BackupError, match="no queue database"):
        backup.backup(config, tmp_path)


def test_a_truncated_archive_is_refused(tmp_path, archive):
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(BackupError, match="not a readable backup archive"):
        backup.verify(archive)


def test_a_file_that_is_not_an_archive_is_refused(tmp_path):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(b"hello")
    with pytest.raises(BackupError, match="not a readable backup archive"):
        backup.verify(path)
    with pytest.raises(BackupError, match="no backup archive"):
        backup.verify(tmp_path / "missing.tar.gz")


def test_a_changed_byte_in_the_database_is_a_checksum_mismatch(tmp_path, archive):
    contents = members(archive)
    db = bytearray(contents["queue.sqlite3"])
    db[len(db) // 2] ^= 0xFF
    write_archive(archive, {**contents, "queue.sqlite3": bytes(db)})
    with pytest.raises(BackupError, match="checksum mismatch for queue.sqlite3"):
        backup.verify(archive)


def test_a_missing_manifest_or_member_or_an_unlisted_one_is_refused(tmp_path, archive):
    contents = members(archive)
    cases = [
        ({k: v for k, v in contents.items() if k != "MANIFEST.json"}, "has no MANIFEST.json"),
        ({k: v for k, v in contents.items() if k != "users"}, "lacks users"),
        ({**contents, "extra": b"x"}, "extra, which its manifest does not list"),
    ]
    for changed, message in cases:
        with pytest.raises(BackupError, match=message):
            backup.verify(write_archive(tmp_path / "case.tar.gz", changed))


def test_a_damaged_database_with_matching_checksums_fails_the_integrity_check(tmp_path, archive):
    contents = members(archive)
    db = bytearray(contents["queue.sqlite3"])
    page_size = int.from_bytes(db[16:18], "big")
    for start in range(page_size, len(db), page_size):
        db[start] = 0x42  # no such b-tree page type
    with pytest.raises(BackupError, match="integrity check|damaged"):
        backup.verify(write_archive(archive, with_manifest_for({**contents, "queue.sqlite3": bytes(db)})))


def test_a_database_newer_than_this_empath_is_refused(tmp_path, archive):
    contents = members(archive)
    newer = edited_database(contents["queue.sqlite3"], tmp_path, "UPDATE schema_info SET version = 99")
    with pytest.raises(BackupError, match="schema version 99"):
        backup.verify(write_archive(archive, with_manifest_for({**contents, "queue.sqlite3": newer})))


def test_counts_that_disagree_with_the_manifest_are_refused(tmp_path, archive):
    contents = members(archive)
    fewer = edited_database(contents["queue.sqlite3"], tmp_path, "DELETE FROM recipient WHERE domain = 'b.test'")
    with pytest.raises(BackupError, match="does not match its manifest"):
        backup.verify(write_archive(archive, with_manifest_for({**contents, "queue.sqlite3": fewer})))
