"""Making the control socket's file safely: planted links, stale sockets, live ones, modes."""

import grp
import os
import socket
import stat
import subprocess
import sys

import pytest

from empath.control import sockfile
from empath.control.sockfile import SocketFileError


@pytest.fixture
def directory(tmp_path):
    d = tmp_path / "run"
    d.mkdir(mode=0o700)
    return d


def talks(bound: sockfile.Bound) -> bool:
    """A client can connect to the socket file and the bound socket accepts it."""
    client = sockfile.connect(bound.path, timeout=5)
    try:
        bound.sock.settimeout(5)
        conn, _ = bound.sock.accept()
        conn.close()
        return True
    finally:
        client.close()


def test_a_fresh_socket_is_private_and_works(directory):
    bound = sockfile.bind(directory / "control.sock")
    try:
        st = os.lstat(directory / "control.sock")
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert talks(bound)
        assert sorted(p.name for p in directory.iterdir()) == ["control.sock"]  # no temporary name left
    finally:
        sockfile.unbind(bound)
    assert not (directory / "control.sock").exists()


def test_with_a_group_the_mode_is_0660_and_the_group_is_set(directory):
    group = grp.getgrgid(os.getgid()).gr_name
    bound = sockfile.bind(directory / "control.sock", group)
    try:
        st = os.lstat(directory / "control.sock")
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == os.getgid()
    finally:
        sockfile.unbind(bound)


def test_a_planted_symlink_is_never_followed(directory, tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me")
    (directory / "control.sock").symlink_to(target)
    with pytest.raises(SocketFileError, match="exists and is a symbolic link, not a socket"):
        sockfile.bind(directory / "control.sock")
    assert target.read_text() == "keep me"
    assert (directory / "control.sock").is_symlink()
    assert sorted(p.name for p in directory.iterdir()) == ["control.sock"]


def test_a_regular_file_in_the_way_is_refused(directory):
    (directory / "control.sock").write_text("")
    with pytest.raises(SocketFileError, match="is a regular file"):
        sockfile.bind(directory / "control.sock")


def test_a_stale_socket_of_a_killed_daemon_is_replaced(directory):
    path = directory / "control.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: as after SIGKILL
    old = os.lstat(path).st_ino
    bound = sockfile.bind(path)
    try:
        assert os.lstat(path).st_ino != old
        assert talks(bound)
    finally:
        sockfile.unbind(bound)


def test_a_live_socket_of_another_process_is_never_stolen(directory):
    path = directory / "control.sock"
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import socket, sys, time\n"
            "s = socket.socket(socket.AF_UNIX)\n"
            f"s.bind({str(path)!r}); s.listen(4)\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout.readline().strip() == "ready"
        before = os.lstat(path).st_ino
        with pytest.raises(SocketFileError, match="another daemon answers on the control socket"):
            sockfile.bind(path)
        assert os.lstat(path).st_ino == before
        probe = sockfile.connect(path, timeout=5)  # still the other process's
        probe.close()
    finally:
        owner.kill()
        owner.wait(10)
        owner.stdout.close()


def test_a_directory_others_may_write_to_is_refused(directory):
    directory.chmod(0o770)
    with pytest.raises(SocketFileError, match="writable by its group or others"):
        sockfile.bind(directory / "control.sock")
    directory.chmod(0o757)
    with pytest.raises(SocketFileError, match="mode 0757"):
        sockfile.bind(directory / "control.sock")


def test_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(SocketFileError, match="cannot open the control socket's directory"):
        sockfile.bind(tmp_path / "absent" / "control.sock")


def test_unbind_removes_only_its_own_socket(directory):
    path = directory / "control.sock"
    bound = sockfile.bind(path)
    os.unlink(path)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(path))  # another daemon's socket took the name since
    try:
        sockfile.unbind(bound)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        other.close()


def test_a_leftover_temporary_socket_is_cleaned_and_a_long_path_works(tmp_path):
    deep = tmp_path.joinpath(*["d" * 30] * 5)
    deep.mkdir(parents=True, mode=0o700)
    path = deep / "control.sock"
    assert len(str(path)) > 108  # longer than a Unix socket address may be
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    leftover.bind(f"/proc/self/fd/{fd}/.control.sock.{os.getpid()}.tmp")
    os.close(fd)
    leftover.close()
    bound = sockfile.bind(path)
    try:
        assert talks(bound)
        assert sorted(p.name for p in deep.iterdir()) == ["control.sock"]
    finally:
        sockfile.unbind(bound)


def test_peer_credentials_name_the_connecting_process(directory):
    bound = sockfile.bind(directory / "control.sock")
    client = sockfile.connect(bound.path, timeout=5)
    try:
        conn, _ = bound.sock.accept()
        with conn:
            assert sockfile.peer(conn) == (os.getpid(), os.getuid(), os.getgid())
    finally:
        client.close()
        sockfile.unbind(bound)
