"""The spool holds a message's start and header section in memory and the rest
in an unnamed file; it gives the message back as it was written, in pieces or
whole, and lets go of everything when discarded or when the disk fails it."""

import errno
import os

import pytest

from empath.queue.spool import PIECE, Spool

HEADER = b"From: a@b.test\r\nSubject: hi\r\n"


def written(spool: Spool, *parts: bytes) -> Spool:
    for part in parts:
        spool.write(part)
    return spool


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_small_message_stays_in_memory(tmp_path):
    spool = written(Spool(tmp_path, in_memory=1000), HEADER, b"\r\n", b"body\r\n")
    assert not spool.spilled
    assert spool.read() == HEADER + b"\r\nbody\r\n" and len(spool) == len(HEADER) + 8
    assert list(tmp_path.iterdir()) == []


def test_a_large_one_goes_to_an_unnamed_file_and_comes_back_whole(tmp_path):
    body = os.urandom(3 * PIECE + 5)
    spool = written(Spool(tmp_path, in_memory=1000), HEADER, b"\r\n", body[:10], body[10:])
    assert spool.spilled
    assert list(tmp_path.iterdir()) == []  # nothing anyone else can see, nothing left by a crash
    assert spool.header_section() == HEADER
    assert b"".join(spool.pieces()) == spool.read() == HEADER + b"\r\n" + body
    assert all(len(piece) <= max(PIECE, 1000) for piece in spool.pieces())
    assert spool.isascii() is False


def test_the_header_section_stays_in_memory_however_long(tmp_path):
    # Nothing spills before the blank line: the header is what the session works on.
    fields = b"X-Long: " + b"y" * 5000 + b"\r\n"
    spool = written(Spool(tmp_path, in_memory=100), fields[:50], fields[50:])
    assert not spool.spilled
    spool.write(b"\r")
    spool.write(b"\n" + b"body " * 100)  # the blank line arrives cut in two
    assert spool.spilled
    assert spool.header_section() == fields
    assert spool.read() == fields + b"\r\n" + b"body " * 100


def test_the_header_section_is_replaced_in_front_of_the_stored_body(tmp_path):
    spool = written(Spool(tmp_path, in_memory=10), HEADER, b"\r\n", b"z" * 5000)
    spool.replace_header_section(b"X-Tag: 1\r\n" + HEADER)
    assert spool.header_section() == b"X-Tag: 1\r\n" + HEADER
    assert spool.read() == b"X-Tag: 1\r\n" + HEADER + b"\r\n" + b"z" * 5000
    assert len(spool) == len(spool.read())


@pytest.mark.parametrize(
    "message, section",
    [(b"", b""), (b"\r\nbody\r\n", b""), (b"A: 1\r\n", b"A: 1\r\n"), (b"A: 1\r\n\r\n\r\nB\r\n", b"A: 1\r\n")],
    ids=["empty", "no header", "no body", "a blank line in the body"],
)
def test_the_header_section_is_what_comes_before_the_first_blank_line(message, section):
    spool = Spool.holding(message)
    assert spool.header_section() == section
    spool.replace_header_section(b"N: 2\r\n" + section)
    assert spool.read() == b"N: 2\r\n" + message


def test_without_a_directory_nothing_leaves_memory():
    spool = written(Spool(None, in_memory=10), HEADER, b"\r\n", b"z" * 5000)
    assert not spool.spilled and len(spool) == len(HEADER) + 5002


def test_discard_closes_the_file(tmp_path):
    before = open_files()
    spool = written(Spool(tmp_path, in_memory=10), b"\r\n", b"z" * 100)
    assert open_files() == before + 1
    spool.discard()
    assert open_files() == before
    assert len(spool) == 0 and spool.read() == b""


def test_a_file_that_cannot_be_made_is_an_error_kept_and_nothing_held(tmp_path):
    spool = written(Spool(tmp_path / "missing", in_memory=10), b"\r\n", b"z" * 100, b"more")
    assert isinstance(spool.error, OSError) and spool.error.errno == errno.ENOENT
    assert len(spool) == 0 and not spool.spilled


def test_a_full_disk_is_an_error_kept_and_nothing_held(tmp_path):
    spool = written(Spool(tmp_path, in_memory=10), b"\r\n", b"z" * 100)
    assert spool.spilled
    full = open("/dev/full", "wb", buffering=0)  # noqa: SIM115 - the spool closes it
    spool._file.close()
    spool._file = full  # every write to it fails with ENOSPC
    spool.write(b"more")
    assert spool.error is not None and spool.error.errno == errno.ENOSPC
    assert len(spool) == 0 and full.closed
    spool.write(b"still more")  # taken no more
    assert len(spool) == 0
