"""The DATA reader: where a message ends, and every reason to refuse one."""

import pytest
from data_helpers import reader_for

from empath.smtp import replies
from empath.smtp.data import DataReader


def lines_of(raw: bytes) -> list[bytes]:
    """Split a byte stream the way the connection does: each line ends at an LF."""
    parts = raw.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])  # a fragment with no LF yet
    return lines


def read(raw: bytes, max_size: int = 10_000, max_line: int = 1000, max_received: int = 3):
    """Feed ``raw`` until the reader says stop; return the reader and the lines it did not take."""
    reader = reader_for(max_size, max_line, max_received)
    lines = lines_of(raw)
    for i, line in enumerate(lines):
        if reader.feed(line):
            return reader, lines[i + 1 :]
    return reader, None  # never ended


def key(reply) -> tuple[int, str]:
    return (reply.code, reply.status)


# -- the end of the message ---------------------------------------------------


def test_simple_message():
    reader, rest = read(b"Subject: hi\r\n\r\nHello\r\n.\r\n")
    assert reader.done
    assert reader.error is None
    assert not reader.fatal
    assert reader.spool.read() == b"Subject: hi\r\n\r\nHello\r\n"
    assert reader.size == len(reader.spool)
    assert rest == []


def test_empty_message():
    reader, rest = read(b".\r\n")
    assert reader.done and reader.error is None
    assert reader.spool.read() == b""


def test_commands_after_the_end_are_left_unread():
    reader, rest = read(b"a\r\n.\r\nQUIT\r\n")
    assert reader.done and reader.error is None
    assert rest == [b"QUIT\r\n"]


@pytest.mark.parametrize(
    "raw, body",
    [
        (b"..\r\n.\r\n", b".\r\n"),
        (b"...\r\n.\r\n", b"..\r\n"),
        (b"..leading dot\r\n.\r\n", b".leading dot\r\n"),
        (b"a.\r\n.\r\n", b"a.\r\n"),  # only a leading dot is stuffing
        (b"..\r\n..\r\n.\r\n", b".\r\n.\r\n"),
        (b".x\r\n.\r\n", b"x\r\n"),  # a lone leading dot is dropped too
    ],
)
def test_dot_unstuffing(raw, body):
    reader, _ = read(raw)
    assert reader.done and reader.error is None
    assert reader.spool.read() == body


@pytest.mark.parametrize(
    "raw",
    [
        b"a\r\n. \r\n",  # ". " is not the end
        b"a\r\n.\t\r\n",
        b"a\r\n..\r\n",  # an unstuffed dot
    ],
)
def test_not_the_end(raw):
    reader, rest = read(raw)
    assert rest is None
    assert not reader.done
    assert reader.error is None


# -- bare CR and LF (SMTP smuggling) ----------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"a\r\n\n.\n",  # <LF>.<LF>
        b"a\n.\r\n",  # <LF>.<CRLF>
        b"a\r\n.\n",  # <CRLF>.<LF>
        b"a\r.\r\n",  # <CR>.<CRLF>
        b"a\r\n.\r\r\n",
        b"x\n",  # bare LF at a line end
        b"a\rb\r\n",  # bare CR inside a line
        b"a\r\n\r.\r\n",
        b"\n",
        b"\r\r\n",
        b"Subject: x\r\n\r\nbody\n.\nMAIL FROM:<evil@example>\r\n",
    ],
)
def test_bare_newlines_are_fatal(raw):
    reader, rest = read(raw)
    assert reader.done
    assert reader.fatal
    assert key(reader.error) == key(replies.BARE_NEWLINE)


# The smuggling sequences above, from the office's own clients (lenient): a bare LF
# ends a line, the message goes on, and nothing after a dot next to one is a command.
@pytest.mark.parametrize(
    "raw, body",
    [
        (b"a\r\n\n.\n\r\n.\r\n", b"a\r\n\r\n.\r\n\r\n"),  # <LF>.<LF>: a dot line, content
        (b"a\n.\r\n\r\n.\r\n", b"a\r\n.\r\n\r\n"),  # <LF>.<CRLF>: the same
        (b"a\r\n.\nb\r\n.\r\n", b"a\r\n.\r\nb\r\n"),  # <CRLF>.<LF>
        (b"x\nMAIL FROM:<evil@example>\r\n.\r\n", b"x\r\nMAIL FROM:<evil@example>\r\n"),
        (b"..\n.\r\n\r\n.\r\n", b".\r\n.\r\n\r\n"),  # a stuffed dot with a bare LF is unstuffed
    ],
)
def test_a_lenient_reader_takes_a_bare_lf_as_a_line_end_never_as_the_end(raw, body):
    reader = reader_for(lenient=True)
    lines = lines_of(raw)
    ends = [i for i, line in enumerate(lines) if reader.feed(line)]
    assert ends == [len(lines) - 1] and reader.error is None
    assert reader.spool.read() == body


@pytest.mark.parametrize("raw", [b"a\rb\r\n", b"a\r.\r\n", b"\r\r\n", b"a\r\r\n"])
def test_a_lenient_reader_still_refuses_a_bare_cr(raw):
    reader = reader_for(lenient=True)
    assert any(reader.feed(line) for line in lines_of(raw))
    assert reader.fatal and key(reader.error) == key(replies.BARE_NEWLINE)


def test_crlf_line_is_fine_but_lf_line_is_not():
    reader = reader_for(100, 100, 3)
    assert reader.feed(b"x\r\n") is False
    assert reader.error is None
    assert reader.feed(b"x\n") is True
    assert reader.fatal


def test_bare_newline_is_fatal_even_after_another_error():
    reader = reader_for(100, 100, 3)
    reader.feed(b"nul\x00\r\n")
    assert key(reader.error) == key(replies.NUL_IN_DATA)
    assert reader.feed(b"then\n") is True
    assert reader.fatal
    assert key(reader.error) == key(replies.BARE_NEWLINE)


# -- non-fatal refusals: read on to the end ---------------------------------------------


def test_nul_is_refused_but_not_fatal():
    reader, rest = read(b"a\x00b\r\nmore\r\n.\r\nQUIT\r\n")
    assert reader.done
    assert not reader.fatal
    assert key(reader.error) == key(replies.NUL_IN_DATA)
    assert reader.spool.read() == b""
    assert rest == [b"QUIT\r\n"]  # it read to the end of the message, and no further


def test_nul_reply_does_not_claim_to_close():
    # The session stays open after this reply, so it must not say otherwise.
    assert "clos" not in replies.NUL_IN_DATA.text.lower()
    assert replies.NUL_IN_DATA.code in (550, 554)


@pytest.mark.parametrize(
    "size, refused",
    [
        (9, False),
        (10, False),
        (11, True),
    ],
)
def test_size_limit(size, refused):
    body = b"x" * (size - 2) + b"\r\n"
    reader, rest = read(body + b".\r\nQUIT\r\n", max_size=10)
    assert reader.done
    assert not reader.fatal
    assert rest == [b"QUIT\r\n"]
    assert reader.size == size
    if refused:
        assert key(reader.error) == key(replies.MESSAGE_TOO_BIG) == (552, "5.3.4")
        assert "10" in reader.error.text
        assert reader.spool.read() == b""
    else:
        assert reader.error is None
        assert reader.spool.read() == body


def test_size_counts_unstuffed_bytes():
    reader, _ = read(b"..\r\n.\r\n", max_size=3)
    assert reader.error is None
    assert reader.size == 3


def test_body_dropped_once_too_big():
    reader, _ = read(b"0123456789\r\n" * 5 + b".\r\n", max_size=30)
    assert key(reader.error) == key(replies.MESSAGE_TOO_BIG)
    assert reader.spool.read() == b""
    assert reader.size == 60  # still counted, for the log


@pytest.mark.parametrize(
    "line, refused",
    [
        (b"x" * 8 + b"\r\n", False),  # exactly 10 with CRLF
        (b"x" * 9 + b"\r\n", True),
        (b"." + b"x" * 8 + b"\r\n", False),  # the stuffed dot does not count
        (b".." + b"x" * 8 + b"\r\n", True),
    ],
)
def test_line_length(line, refused):
    reader, rest = read(line + b".\r\n", max_line=10)
    assert reader.done and not reader.fatal
    if refused:
        assert key(reader.error) == key(replies.DATA_LINE_TOO_LONG)
        assert "10" in reader.error.text
        assert "{" not in reader.error.text
        assert reader.spool.read() == b""
    else:
        assert reader.error is None


def test_overflow_flag_means_too_long():
    reader = reader_for(10_000, 1000, 3)
    assert reader.feed(b"short head\r\n", overflow=True) is False
    assert key(reader.error) == key(replies.DATA_LINE_TOO_LONG)
    assert not reader.fatal
    assert reader.feed(b"more\r\n") is False
    assert reader.feed(b".\r\n") is True
    assert not reader.fatal
    assert key(reader.error) == key(replies.DATA_LINE_TOO_LONG)


def test_overflow_cut_between_cr_and_lf_is_not_a_bare_cr():
    # The connection returns an over-long line as its first bytes plus its
    # own ending; when the cut falls just after the CR of that ending, the
    # head ends in CR. That is a long line, not a smuggling attempt.
    reader = reader_for(10_000, 1000, 3)
    reader.feed(b"x" * 1001 + b"\r" + b"\r\n", overflow=True)
    assert not reader.fatal
    assert key(reader.error) == key(replies.DATA_LINE_TOO_LONG)
    assert reader.feed(b".\r\n") is True


def test_overflow_with_bare_lf_ending_is_fatal():
    reader = reader_for(10_000, 1000, 3)
    assert reader.feed(b"x" * 1002 + b"\n", overflow=True) is True
    assert reader.fatal


# -- hop count ------------------------------------------------------------------


def received(n: int) -> bytes:
    return b"".join(b"Received: from h%d by h%d; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % (i, i + 1) for i in range(n))


@pytest.mark.parametrize("hops, refused", [(0, False), (3, False), (4, True)])
def test_too_many_hops(hops, refused):
    raw = received(hops) + b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    reader, rest = read(raw, max_received=3)
    assert reader.done and not reader.fatal
    assert rest == [b"QUIT\r\n"]
    if refused:
        assert key(reader.error) == key(replies.TOO_MANY_HOPS) == (554, "5.4.6")
        assert reader.spool.read() == b""
    else:
        assert reader.error is None


def test_hop_count_ignores_case_and_lookalikes():
    raw = b"RECEIVED: a\r\nreceived: b\r\nX-Received: c\r\nReceived-SPF: pass\r\n\r\n.\r\n"
    assert read(raw, max_received=2)[0].error is None
    assert key(read(raw, max_received=1)[0].error) == key(replies.TOO_MANY_HOPS)


def test_received_lines_in_the_body_are_not_hops():
    raw = b"Subject: forwarded\r\n\r\n" + received(10) + b".\r\n"
    reader, _ = read(raw, max_received=3)
    assert reader.error is None
    assert reader.spool.read().count(b"Received:") == 10


def test_folded_received_header_counts_once():
    raw = b"Received: from a\r\n\tby b\r\nReceived: from c\r\n by d\r\n\r\n.\r\n"
    assert read(raw, max_received=2)[0].error is None


# -- the first problem wins -------------------------------------------------------


def test_first_error_is_kept():
    reader, _ = read(b"a\x00\r\n" + b"x" * 50 + b"\r\n.\r\n", max_line=20)
    assert key(reader.error) == key(replies.NUL_IN_DATA)


# -- the header section is bounded: it is held in memory ------------------------------


def feed_all(reader: DataReader, raw: bytes) -> list[bytes] | None:
    lines = lines_of(raw)
    for i, line in enumerate(lines):
        if reader.feed(line):
            return lines[i + 1 :]
    return None


@pytest.mark.parametrize("extra, refused", [(0, False), (1, True)])
def test_a_header_section_over_the_limit_is_refused(extra, refused):
    header = b"Subject: " + b"x" * 80 + b"\r\n"
    fields = header * 10
    reader = reader_for(max_header=len(fields) - extra)
    rest = feed_all(reader, fields + b"\r\n" + b"body line\r\n" * 500 + b".\r\nQUIT\r\n")
    assert rest == [b"QUIT\r\n"] and not reader.fatal  # read to its end, in step with the client
    if refused:
        assert key(reader.error) == key(replies.HEADER_TOO_BIG) == (552, "5.3.4")
        assert str(len(fields) - extra) in reader.error.text
        assert len(reader.spool) == 0
    else:
        assert reader.error is None
        assert reader.spool.header_section() == fields


def test_a_message_with_no_blank_line_is_all_header_and_bounded_so():
    reader = reader_for(max_header=2000)
    assert feed_all(reader, b"no header here, just text\r\n" * 100 + b".\r\n") == []
    assert key(reader.error) == key(replies.HEADER_TOO_BIG)
