"""A message as delivery sends it: whole in memory when it is small, read from
the queue a piece at a time while it is sent when it is not, so that the
delivery workers hold at most a piece each however large the mail in flight.
"""

import sqlite3
from collections.abc import Callable, Iterator
from typing import Any

from empath.queue import claims
from empath.queue.database import QueueError

PIECE = claims.WHOLE_UP_TO  # what is read from the queue at once


class Unreadable(Exception):
    """The message could not be read from the queue while it was being sent."""


class Content:
    def __init__(self, size: int):
        self.size = size
        self._ascii: bool | None = None

    def pieces(self) -> Iterator[bytes]:
        raise NotImplementedError

    def isascii(self) -> bool:
        if self._ascii is None:
            self._ascii = all(piece.isascii() for piece in self.pieces())
        return self._ascii

    def header_isascii(self) -> bool:
        """Is everything before the first blank line ASCII (the whole, when there is none)?"""
        tail = b""
        for piece in self.pieces():
            text = tail + piece
            end = text.find(b"\r\n\r\n")
            if end >= 0:
                return text[:end].isascii()
            if not text.isascii():
                return False
            tail = text[-3:]  # a blank line may straddle two pieces
        return True


class Whole(Content):
    def __init__(self, data: bytes):
        super().__init__(len(data))
        self.data = data

    def pieces(self) -> Iterator[bytes]:
        yield self.data


class Stored(Content):
    """The queued message ``queue_id``, ``size`` bytes, read through ``read`` (Queue.read)."""

    def __init__(self, read: Callable[..., Any], queue_id: str, size: int):
        super().__init__(size)
        self.read = read
        self.queue_id = queue_id

    def pieces(self) -> Iterator[bytes]:
        for offset in range(0, self.size, PIECE):
            try:
                piece = self.read(claims.read_body, self.queue_id, offset, PIECE)
            except (sqlite3.Error, QueueError) as exc:
                raise Unreadable(f"the queue could not be read: {exc}") from None
            if piece is None:
                raise Unreadable("the message was deleted from the queue")
            yield piece


def of(read: Callable[..., Any], message: claims.Loaded) -> Content:
    """The content of a message ``claims.load`` gave."""
    if message.data is not None:
        return Whole(message.data)
    return Stored(read, message.queue_id, message.size)
