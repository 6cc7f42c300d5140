"""A DATA reader with the limits a test chooses, its message held in memory
(tests/unit/smtp/test_data.py, test_wire.py, test_properties.py)."""

from empath.config import Limits
from empath.queue.spool import Spool
from empath.smtp.data import DataReader


def reader_for(
    max_size: int = 10_000, max_line: int = 1000, max_received: int = 3, max_header: int = 10_000, lenient: bool = False
):
    limits = Limits(
        max_message_size=max_size,
        text_line_length=max_line,
        max_received_headers=max_received,
        max_header_size=max_header,
    )
    return DataReader(Spool(), limits, lenient)
