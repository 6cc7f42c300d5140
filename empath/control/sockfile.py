"""The control socket's file: made safely, removed only if it is still ours.

- The directory must belong to us (or root) and be writable by nobody else:
  then no one else can plant, swap or remove names in it.
- A name already there is never followed: a symbolic link or any other kind
  of file is refused; a socket that answers belongs to a live daemon and is
  never taken; a socket that refuses connections is a dead daemon's and is
  replaced.
- The socket is bound under a temporary name, given its mode (and group)
  before ``listen``, so nobody can connect while its mode is still the
  umask's, then renamed over the final name in one atomic step.
- Every name is reached through a descriptor of the directory
  (``/proc/self/fd/N/NAME``), so the directory's path cannot be swapped
  between the checks and the bind, and a long path does not run into the
  107-byte limit of a Unix socket address.
"""

import grp
import os
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path


class SocketFileError(Exception):
    """The control socket cannot be made; the message says why and what to do."""


@dataclass
class Bound:
    sock: socket.socket
    path: Path
    dir_fd: int
    identity: tuple[int, int]  # (st_dev, st_ino) of the socket file made


def _via(dir_fd: int, name: str) -> str:
    return f"/proc/self/fd/{dir_fd}/{name}"


def _open_dir(directory: Path) -> int:
    try:
        return os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise SocketFileError(f"cannot open the control socket's directory {directory}: {exc.strerror}") from None


def _check_directory(dir_fd: int, directory: Path) -> None:
    st = os.fstat(dir_fd)
    if st.st_uid not in (os.geteuid(), 0):
        raise SocketFileError(f"{directory} belongs to uid {st.st_uid}, not to this user or root")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SocketFileError(
            f"{directory} is writable by its group or others (mode {stat.S_IMODE(st.st_mode):04o}): "
            "they could swap the control socket; use a directory only this user may write to"
        )


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "not a socket"


def _check_existing(dir_fd: int, name: str, path: Path) -> None:
    """Refuse anything at ``name`` but a dead daemon's socket (which the rename replaces)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketFileError(f"{path} exists and is {_kind(st.st_mode)}, not a socket: remove it, then start again")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(_via(dir_fd, name))
    except (ConnectionRefusedError, FileNotFoundError):
        return  # nobody listens: a daemon that was killed left it
    except OSError as exc:
        raise SocketFileError(f"cannot tell whether another daemon uses {path}: {exc}") from None
    finally:
        probe.close()
    raise SocketFileError(
        f"another daemon answers on the control socket {path}: stop it, or give this one its own [control] socket"
    )


def _remove_socket(dir_fd: int, name: str) -> None:
    """Remove ``name`` if it is a socket (a temporary name left by a crash)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISSOCK(st.st_mode):
        os.unlink(name, dir_fd=dir_fd)


def bind(path: Path, group: str | None = None, backlog: int = 16) -> Bound:
    """Make the listening control socket at ``path`` (mode 0600, or 0660 with ``group``)."""
    dir_fd = _open_dir(path.parent)
    name = path.name
    temporary = f".{name}.{os.getpid()}.tmp"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _check_directory(dir_fd, path.parent)
        _check_existing(dir_fd, name, path)
        _remove_socket(dir_fd, temporary)
        sock.bind(_via(dir_fd, temporary))
        try:
            if group is not None:
                os.chown(temporary, -1, grp.getgrnam(group).gr_gid, dir_fd=dir_fd, follow_symlinks=False)
            os.chmod(temporary, 0o660 if group is not None else 0o600, dir_fd=dir_fd)
            sock.listen(backlog)
            os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            _remove_socket(dir_fd, temporary)
            raise
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except KeyError:
        sock.close()
        os.close(dir_fd)
        raise SocketFileError(f"control.group: there is no group {group!r}") from None
    except OSError as exc:
        sock.close()
        os.close(dir_fd)
        raise SocketFileError(f"cannot make the control socket {path}: {exc.strerror or exc}") from None
    except BaseException:
        sock.close()
        os.close(dir_fd)
        raise
    return Bound(sock, path, dir_fd, (st.st_dev, st.st_ino))


def unbind(bound: Bound) -> None:
    """Close the socket and remove its file, unless another daemon's has replaced it since."""
    bound.sock.close()
    try:
        st = os.stat(bound.path.name, dir_fd=bound.dir_fd, follow_symlinks=False)
        if (st.st_dev, st.st_ino) == bound.identity:
            os.unlink(bound.path.name, dir_fd=bound.dir_fd)
    except FileNotFoundError:
        pass
    finally:
        os.close(bound.dir_fd)


def connect(path: Path, timeout: float) -> socket.socket:
    """A client's connection to the control socket at ``path`` (a long path goes through its directory)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        if len(os.fsencode(str(path))) < 100:
            sock.connect(str(path))
            return sock
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            sock.connect(_via(dir_fd, path.name))
        finally:
            os.close(dir_fd)
    except BaseException:
        sock.close()
        raise
    return sock


def peer(sock: socket.socket) -> tuple[int, int, int]:
    """The (pid, uid, gid) of the process at the other end (SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid
