"""Back up the queue while the daemon runs, check an archive, restore one.

A backup is a gzipped tar archive of flat members:

- ``queue.sqlite3``: a copy of the queue taken with SQLite's online backup
  API (one step, so one read transaction: a consistent snapshot while the
  daemon goes on writing), in rollback-journal mode so it is one file;
- ``config.toml``: the config file;
- the files it names that a new machine could not make again, those that
  exist: ``users`` (the AUTH users file), ``tls.certificate`` and ``tls.key``,
  ``smarthost.password``, ``delivery.tls_ca``, ``control.tokens`` and a
  ``dkim.N.key`` for each [[dkim]] table, each with its mode;
- ``MANIFEST.json`` (the first member): the format version, when and where
  it was made, the schema version, the message and recipient counts, and the
  sha256 and size of every other member.

``restore`` puts the queue in place, and each of those files where the
current config names it when nothing is there (a new machine), with its
mode. It overwrites nothing else: the config, and a named file that exists
with other contents, are written next to the data as ``*.restored`` for the
operator to compare; overwriting a live config or key (which may have
changed on purpose since) is the operator's decision, not ours. A file goes
only where the current config points, never where the archive says it came
from.
"""

import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import empath
from empath.config import Config
from empath.queue import models
from empath.queue.database import AlreadyRunning, lock_data_dir, lock_holder

FORMAT = "empath-backup"
FORMAT_VERSION = 1
MANIFEST = "MANIFEST.json"
DATABASE = "queue.sqlite3"
CONFIG = "config.toml"
USERS = "users"
MEMBER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
ARCHIVE_GLOB = "empath-backup-*.tar.gz"


class BackupError(Exception):
    """A backup could not be made, checked or restored; the message says why."""


@dataclasses.dataclass(frozen=True)
class Member:
    sha256: str
    size: int
    source: str = ""  # the path it was copied from, for the operator
    mode: int = 0o600  # its permission bits there, given back when restore installs it


@dataclasses.dataclass(frozen=True)
class Manifest:
    created: str  # ISO 8601, UTC
    hostname: str
    empath_version: str
    schema_version: int
    messages: int
    recipients: int
    files: dict[str, Member]
    version: int = FORMAT_VERSION

    def to_json(self) -> bytes:
        data = {"format": FORMAT, **dataclasses.asdict(self)}
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "Manifest":
        """Parse and check a manifest; BackupError says what is wrong with it."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BackupError(f"the manifest is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BackupError("the manifest does not describe an Empath backup")
        version = data.get("version")
        if version != FORMAT_VERSION:
            raise BackupError(f"the archive has format version {version!r}; this Empath reads version {FORMAT_VERSION}")
        try:
            files = {}
            for name, member in data["files"].items():
                if not MEMBER_NAME.fullmatch(name) or name == MANIFEST:
                    raise BackupError(f"the manifest lists a bad member name {name!r}")
                digest = member["sha256"]
                if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
                    raise BackupError(f"the manifest has no valid sha256 for {name}")
                mode = int(member.get("mode", 0o600))
                if not 0 <= mode <= 0o777:
                    raise BackupError(f"the manifest has a bad mode for {name}")
                files[name] = Member(digest, int(member["size"]), str(member.get("source", "")), mode)
            manifest = cls(
                created=str(data["created"]),
                hostname=str(data["hostname"]),
                empath_version=str(data["empath_version"]),
                schema_version=int(data["schema_version"]),
                messages=int(data["messages"]),
                recipients=int(data["recipients"]),
                files=files,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BackupError(f"the manifest is incomplete or malformed ({exc!r})") from None
        if DATABASE not in manifest.files:
            raise BackupError(f"the manifest lists no {DATABASE}")
        return manifest


@dataclasses.dataclass(frozen=True)
class Restored:
    database: Path
    replaced: list[Path]  # the files moved aside: the old database and its -wal/-shm
    installed: list[Path]  # named files that were missing, put where the config names them
    extras: list[Path]  # the archived config, and named files that differ here, written as *.restored
    manifest: Manifest


def _utc_stamp(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_database(path: Path) -> tuple[int, int, int]:
    """Integrity, schema version, message and recipient counts of a queue copy."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"the database copy cannot be opened: {exc}") from None
    try:
        rows = db.execute("PRAGMA integrity_check").fetchall()
        if [r[0] for r in rows] != ["ok"]:
            first = rows[0][0] if rows else "no answer"
            raise BackupError(f"the database copy fails its integrity check: {first}")
        try:
            (version,) = db.execute("SELECT version FROM schema_info").fetchone() or (0,)
            messages = db.execute("SELECT count(*) FROM message").fetchone()[0]
            recipients = db.execute("SELECT count(*) FROM recipient").fetchone()[0]
        except sqlite3.Error as exc:
            raise BackupError(f"the database is not an Empath queue ({exc})") from None
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        raise BackupError(f"the database copy is damaged: {exc}") from None
    finally:
        db.close()
    if not 1 <= version <= models.SCHEMA_VERSION:
        raise BackupError(
            f"the database has schema version {version}; this Empath understands 1 to {models.SCHEMA_VERSION}"
        )
    return version, messages, recipients


def _snapshot(source: Path, target: Path) -> None:
    """Copy the live queue into ``target`` with the online backup API."""
    if not source.exists():
        raise BackupError(f"there is no queue database at {source}")
    # With the daemon stopped, hold its lock (so it cannot start meanwhile) and
    # open the file read-write: the last connection to close then removes the
    # -wal and -shm it made, which a read-only one would leave behind, owned
    # by whoever ran the backup. With the daemon running, they are its own.
    try:
        lock: int | None = lock_data_dir(source.parent)
    except AlreadyRunning:
        lock = None
    try:
        src = sqlite3.connect(source if lock is not None else f"file:{source}?mode=ro", uri=lock is None, timeout=30)
    except sqlite3.Error as exc:
        if lock is not None:
            os.close(lock)
        raise BackupError(f"cannot open the queue database {source}: {exc}") from None
    try:
        dst = sqlite3.connect(target)
        try:
            # pages=-1: everything in one step, inside one read transaction,
            # so the daemon's commits during the copy cannot make it restart.
            src.backup(dst, pages=-1)
            # The copy inherits WAL mode; make it one self-contained file.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"the online backup of {source} failed: {exc}") from None
    finally:
        src.close()
        if lock is not None:
            os.close(lock)


def named_files(config: Config) -> dict[str, Path]:
    """The files the config names that a backup carries, by member name."""
    named: dict[str, Path | None] = {
        USERS: config.users_file,
        "tls.certificate": config.tls_certificate,
        "tls.key": config.tls_key,
        "smarthost.password": config.smarthost.password_file if config.smarthost else None,
        "delivery.tls_ca": config.delivery.tls_ca_file,
        "control.tokens": config.control.tokens_file,
        "auth.senders": config.senders_file,
        "aliases.file": config.aliases.file,
        "aliases.virtual": config.aliases.virtual,
        "srs.secret": config.srs.secret_file,
        "rewrite.sender_canonical": config.rewrite.sender_canonical,
    }
    named |= {f"dkim.{i}.key": key.key_file for i, key in enumerate(config.dkim)}
    named |= {f"domains.{d}.recipients": p.recipients for d, p in config.domains.items()}
    return {member: path for member, path in named.items() if path is not None}


def default_directory(config: Config) -> Path:
    return config.data_dir / "backups"


def _archive_name(now: float) -> str:
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "localhost"
    return f"empath-backup-{host}-{_utc_stamp(now)}"


def _publish(tmp: Path, final: Path) -> Path:
    """Link ``tmp`` in as ``final`` (or final-2, final-3 …), never over an existing file."""
    stem = final.name.removesuffix(".tar.gz")
    for n in range(1, 1000):
        candidate = final if n == 1 else final.with_name(f"{stem}-{n}.tar.gz")
        try:
            os.link(tmp, candidate)
        except FileExistsError:
            continue
        return candidate
    raise BackupError(f"too many archives named {final.name} already")


def backup(config: Config, output: Path | None = None) -> Path:
    """Write a backup archive and return its path.

    ``output``: a directory (the archive gets its usual name there), or the
    archive's own path; None: ``DATA_DIR/backups``.
    """
    now = time.time()
    name = _archive_name(now) + ".tar.gz"
    if output is None:
        directory = default_directory(config)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        final = directory / name
    elif output.is_dir():
        final = output / name
    else:
        if not output.parent.is_dir():
            raise BackupError(f"the directory {output.parent} does not exist")
        final = output
    workdir = Path(tempfile.mkdtemp(prefix=".empath-backup-", dir=final.parent))
    try:
        copy = workdir / DATABASE
        _snapshot(config.database_path, copy)
        schema_version, messages, recipients = _check_database(copy)
        # Copies, so that the bytes hashed are the bytes archived even if
        # `empathctl user add` rewrites the users file meanwhile.
        sources = {DATABASE: (copy, config.database_path)}
        originals = {CONFIG: config.path} | {m: p for m, p in named_files(config).items() if p.exists()}
        for member, original in originals.items():
            shutil.copyfile(original, workdir / member)
            sources[member] = (workdir / member, original)
        files = {
            member: Member(_sha256(path), path.stat().st_size, str(origin), origin.stat().st_mode & 0o777)
            for member, (path, origin) in sources.items()
        }
        manifest = Manifest(
            created=datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            hostname=socket.gethostname(),
            empath_version=empath.__version__,
            schema_version=schema_version,
            messages=messages,
            recipients=recipients,
            files=files,
        )
        tmp = workdir / "archive.tar.gz"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz") as tar:
                _add_bytes(tar, MANIFEST, manifest.to_json(), now)
                for member, (path, _) in sources.items():
                    with path.open("rb") as f:
                        info = tarfile.TarInfo(member)
                        info.size = files[member].size
                        info.mtime = int(now)
                        info.mode = 0o600
                        tar.addfile(info, f)
            raw.flush()
            os.fsync(raw.fileno())
        with _workdir(workdir) as check:
            _unpack(tmp, check)  # what restore will read back: never publish an archive that fails it
        if final == output and final.exists():
            os.replace(tmp, final)  # an explicit file name: the operator asked for this one
        else:
            final = _publish(tmp, final)
        _fsync_dir(final.parent)
        return final
    except OSError as exc:
        raise BackupError(f"cannot write the backup: {exc}") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, now: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(now)
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


def _unpack(archive: Path, workdir: Path) -> Manifest:
    """Check ``archive`` and write its members into ``workdir``; return its manifest."""
    if not archive.is_file():
        raise BackupError(f"no backup archive at {archive}")
    digests: dict[str, tuple[str, int]] = {}
    manifest_raw: bytes | None = None
    try:
        # The whole gzip stream first: its CRC catches a flipped byte or a cut
        # that tar would take for the end of the archive.
        with gzip.open(archive, "rb") as stream:
            while stream.read(1 << 20):
                pass
        with tarfile.open(archive, mode="r:gz") as tar:
            for info in tar:
                if not info.isfile() or not MEMBER_NAME.fullmatch(info.name):
                    raise BackupError(f"the archive holds an unexpected member {info.name!r}")
                f = tar.extractfile(info)
                assert f is not None  # a regular file
                if info.name == MANIFEST:
                    manifest_raw = f.read(1 << 20)
                    continue
                if info.name in digests:
                    raise BackupError(f"the archive holds {info.name} twice")
                digest = hashlib.sha256()
                fd = os.open(workdir / info.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
                digests[info.name] = (digest.hexdigest(), info.size)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise BackupError(f"{archive} is not a readable backup archive (damaged or truncated: {exc})") from None
    if manifest_raw is None:
        raise BackupError(f"{archive} has no {MANIFEST}")
    manifest = Manifest.from_json(manifest_raw)
    for name, member in manifest.files.items():
        if name not in digests:
            raise BackupError(f"{archive} lacks {name}, which its manifest lists")
        if digests[name][0] != member.sha256 or digests[name][1] != member.size:
            raise BackupError(f"checksum mismatch for {name} in {archive}: the archive is damaged")
    extra = sorted(set(digests) - set(manifest.files))
    if extra:
        raise BackupError(f"{archive} holds {', '.join(extra)}, which its manifest does not list")
    version, messages, recipients = _check_database(workdir / DATABASE)
    if (version, messages, recipients) != (manifest.schema_version, manifest.messages, manifest.recipients):
        raise BackupError(f"the database in {archive} does not match its manifest")
    return manifest


@contextlib.contextmanager
def _workdir(parent: Path | None = None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=".empath-restore-", dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def verify(archive: Path) -> Manifest:
    """Check an archive through and through; raise BackupError on the first fault."""
    with _workdir() as workdir:
        return _unpack(archive, workdir)


def stop_daemon(data_dir: Path, timeout: float) -> int | None:
    """SIGTERM the daemon holding ``data_dir`` and wait until its lock is free; its pid, or None."""
    pid = lock_holder(data_dir)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError:
        raise BackupError(f"not allowed to stop the daemon (pid {pid}); run as its user or root") from None
    deadline = time.monotonic() + timeout
    while lock_holder(data_dir) is not None:
        if time.monotonic() > deadline:
            raise BackupError(f"the daemon (pid {pid}) did not stop within {timeout:g}s")
        time.sleep(0.1)
    return pid


def _move_aside(database: Path, stamp: str) -> list[Path]:
    """Rename the database and its -wal/-shm to *.replaced-STAMP, keeping them a usable set.

    A checkpoint first folds the WAL into the file; if the file is too
    damaged for that, the WAL travels with it under the matching name.
    """
    if not database.exists():
        return []
    with contextlib.suppress(sqlite3.Error):
        db = sqlite3.connect(database, timeout=5)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
    target = database.with_name(f"{database.name}.replaced-{stamp}")
    moved = []
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{database}{suffix}")
        if path.exists():
            dest = Path(f"{target}{suffix}")
            os.rename(path, dest)
            moved.append(dest)
    return moved


def restore(config: Config, archive: Path, force_stop: bool = False, stop_timeout: float = 90.0) -> Restored:
    """Verify ``archive``, then put its queue in place of the current one.

    Refuses while a daemon holds the data directory, unless ``force_stop``:
    then the daemon is sent SIGTERM and its lock awaited. The replaced files
    are kept as ``queue.sqlite3.replaced-STAMP``. Each archived file the config
    names and lacks is installed where it names it; the config, and a named file
    that differs here, are written as ``*.restored`` next to the data.
    """
    data_dir = config.data_dir
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _workdir(data_dir) as workdir:
        manifest = _unpack(archive, workdir)
        if lock_holder(data_dir) is not None:
            if not force_stop:
                pid = lock_holder(data_dir)
                raise BackupError(
                    f"the daemon (pid {pid}) is running on {data_dir}; stop it first or use --stop-daemon"
                )
            stop_daemon(data_dir, stop_timeout)
        try:
            lock = lock_data_dir(data_dir)  # no daemon may start while the files move
        except AlreadyRunning as exc:
            raise BackupError(str(exc)) from None
        try:
            # First the files a new machine lacks: if one cannot be written, the queue is untouched.
            installed, extras = _put_named_files(config, manifest, workdir)
            database = config.database_path
            old_stat = database.stat() if database.exists() else None
            stamp = _utc_stamp(time.time())
            replaced = _move_aside(database, stamp)
            new = workdir / DATABASE
            if old_stat is not None and os.geteuid() == 0:
                os.chown(new, old_stat.st_uid, old_stat.st_gid)  # root restores for the daemon's user
            os.replace(new, database)
            if CONFIG in manifest.files:
                extras.insert(0, _set_aside(data_dir, CONFIG, manifest.files[CONFIG], workdir))
            _fsync_dir(data_dir)
        finally:
            os.close(lock)
    return Restored(database=database, replaced=replaced, installed=installed, extras=extras, manifest=manifest)


def _put_named_files(config: Config, manifest: Manifest, workdir: Path) -> tuple[list[Path], list[Path]]:
    """Install each archived file the config names and lacks; set aside those that differ.
    Returns (installed, set aside)."""
    named = named_files(config)
    installed, aside = [], []
    for member, archived in manifest.files.items():
        if member in (DATABASE, CONFIG):
            continue
        target = named.get(member)
        if target is not None and not target.exists():
            _install(workdir / member, target, archived.mode, config.data_dir)
            installed.append(target)
        elif target is None or _sha256(target) != archived.sha256:
            aside.append(_set_aside(config.data_dir, member, archived, workdir))
    return installed, aside


def _install(source: Path, target: Path, mode: int, data_dir: Path) -> None:
    """Write ``source`` at ``target`` (which does not exist) with ``mode``, durably."""
    try:
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out, source.open("rb") as f:
            shutil.copyfileobj(f, out)
            os.fchmod(out.fileno(), mode)
            if os.geteuid() == 0:
                owner = data_dir.stat()
                os.fchown(out.fileno(), owner.st_uid, owner.st_gid)  # root restores for the daemon's user
            out.flush()
            os.fsync(out.fileno())
        _fsync_dir(target.parent)
    except OSError as exc:
        raise BackupError(f"cannot install {target}: {exc}") from None


def _set_aside(data_dir: Path, member: str, archived: Member, workdir: Path) -> Path:
    """Write an archived file next to the data as ``NAME.restored``, for the operator to compare."""
    # The config and users file under their own names (empath.toml.restored); the others by
    # member name, so that a TLS key and a DKIM key both called key.pem do not collide.
    base = Path(archived.source).name if member in (CONFIG, USERS) and archived.source else member
    dest = data_dir / f"{base}.restored"
    os.replace(workdir / member, dest)
    return dest
