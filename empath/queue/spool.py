"""A message's bytes while it is being received and until it is queued.

The start of a message stays in memory: all of its header section (which
the session, the plug-ins and the Received and Date fields work on; the
DATA reader bounds it, limits.max_header_size) and, for a small message,
everything. Beyond ``IN_MEMORY`` bytes the rest goes to an unnamed file
in the queue's directory as it arrives, so a session holds at most about
``max(IN_MEMORY, max_header_size)`` of memory whatever the size of its
message. The file is not the message's durable copy: the queue's commit
is (250 only after it); the file vanishes when it is closed, or with the
process, and is never seen by anyone else.
"""

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

IN_MEMORY = 256 * 1024  # a message up to this size never touches a spool file
PIECE = 256 * 1024  # what is read from the file at once


class Spool:
    def __init__(self, directory: Path | None = None, in_memory: int = IN_MEMORY):
        """``directory``: where the file goes; None keeps everything in memory
        (a program on this host hands sendmail its own message, in its own process)."""
        self._directory = directory
        self._in_memory = in_memory
        self._memory = bytearray()
        self._file: IO[bytes] | None = None
        self._file_size = 0
        # Past the blank line that ends the header section; None until it has been written.
        self._body_at: int | None = None
        self.error: OSError | None = None  # the file could not be written: the message is lost

    @classmethod
    def holding(cls, data: bytes | bytearray) -> "Spool":
        """A spool that holds ``data``, in memory."""
        spool = cls()
        spool.write(data)
        return spool

    def __len__(self) -> int:
        return len(self._memory) + self._file_size

    @property
    def spilled(self) -> bool:
        """Is part of it in the file (so reading it whole costs memory it does not hold now)?"""
        return self._file is not None

    def write(self, data: bytes | bytearray) -> None:
        """Add ``data``; on a write error the spool keeps the error and takes nothing more."""
        if self.error is not None:
            return
        if self._file is None:
            self._memory += data
            if self._body_at is None:
                self._find_body(len(self._memory) - len(data))
            if self._body_at is not None and self._directory is not None and len(self._memory) > self._in_memory:
                self._spill()
            return
        try:
            _write_all(self._file, data)
        except OSError as exc:
            self._fail(exc)
            return
        self._file_size += len(data)

    def _find_body(self, written: int) -> None:
        if self._memory.startswith(b"\r\n"):
            self._body_at = 2  # no header fields at all
            return
        end = self._memory.find(b"\r\n\r\n", max(0, written - 3))
        if end >= 0:
            self._body_at = end + 4

    def _spill(self) -> None:
        """Move what lies beyond the header section and IN_MEMORY into a new file."""
        assert self._body_at is not None
        keep = max(self._body_at, self._in_memory)
        try:
            # Unbuffered: a full disk is seen at the write that meets it, not at some later flush.
            self._file = tempfile.TemporaryFile(dir=self._directory, buffering=0)  # noqa: SIM115 - closed by discard
            _write_all(self._file, self._memory[keep:])
        except OSError as exc:
            self._fail(exc)
            return
        self._file_size = len(self._memory) - keep
        del self._memory[keep:]

    def _fail(self, error: OSError) -> None:
        self.discard()
        self.error = error

    def header_section(self) -> bytes:
        """Every header field, each with its CRLF, without the blank line (all of it when
        there is none). Always in memory: the file only ever holds what follows it."""
        if self._body_at is None:
            return bytes(self._memory)
        return bytes(self._memory[: max(0, self._body_at - 2)])

    def replace_header_section(self, section: bytes) -> None:
        """Put ``section`` (fields each ending in CRLF) in place of the header section."""
        old = len(self.header_section())
        self._memory[:old] = section
        if self._body_at is not None:
            self._body_at += len(section) - old

    def pieces(self) -> Iterator[bytes | bytearray]:
        """All of it, in pieces: what memory holds, then the file PIECE bytes at a time.
        Read once it is all written: reading moves the file's position."""
        if self._memory:
            yield self._memory
        if self._file is None:
            return
        self._file.seek(0)
        while piece := self._file.read(PIECE):
            yield piece

    def read(self) -> bytes:
        """All of it in one bytes object: a copy, as big as the message."""
        return b"".join(self.pieces())

    def isascii(self) -> bool:
        return all(piece.isascii() for piece in self.pieces())

    def discard(self) -> None:
        """Let go of it all: the memory and the file."""
        self._memory = bytearray()
        self._body_at = None
        if self._file is not None:
            self._file.close()
            self._file = None
        self._file_size = 0


def _write_all(file: IO[bytes], data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[file.write(view) :]
