"""Fuzz target: the DATA reader (DataReader.feed).

The input is cut into lines at each LF (as the socket reader does) and fed
in turn. The reader must never raise, and it may end the message only on a
line that is exactly ``.<CRLF>`` -- or stop the session (fatal) on a line
with a bare CR or LF. ``test_one_input`` is importable without atheris; fuzz
with ``scripts/fuzz data 60``.
"""

import sys

from empath.config import Limits
from empath.queue.spool import Spool
from empath.smtp.data import DataReader


def lines(data: bytes) -> list[bytes]:
    """Cut at each LF, the LF kept; a last piece without one is a line too."""
    parts = data.split(b"\n")
    return [part + b"\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def test_one_input(data: bytes) -> None:
    # The first byte picks small limits so the size/line/hop checks are reached.
    limits, body = (data[0], data[1:]) if data else (0, data)
    size = 64 + (limits & 0x0F) * 64
    chosen = Limits(
        max_message_size=size,
        text_line_length=8 + (limits >> 4) * 8,
        max_received_headers=limits & 3,
        max_header_size=size // 2,
    )
    reader = DataReader(Spool(), chosen)
    for line in lines(body):
        ended = reader.feed(line)
        if ended:
            assert reader.done
            if reader.fatal:
                assert not line.endswith(b"\r\n") or b"\r" in line[:-2] or b"\n" in line[:-1], line
            else:
                assert line == b".\r\n", line
            return
        assert not reader.done
        if reader.error is not None:
            assert len(reader.spool) == 0


if __name__ == "__main__":
    import atheris

    atheris.Setup(sys.argv, atheris.instrument_func(test_one_input), enable_python_coverage=True)
    atheris.instrument_all()
    atheris.Fuzz()
