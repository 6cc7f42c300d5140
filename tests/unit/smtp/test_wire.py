"""The body on the wire: CRLF only, no line over 998 octets, dot-stuffed, ended by .CRLF.

The round trip goes through the receiving side's own DATA reader, so what
we send is what an Empath (or any strict server) reads back.
"""

import re

import pytest
from data_helpers import reader_for

from empath.smtp.wire import MAX_LINE, encode, lines


def unstuff(wire: bytes) -> bytes:
    """The body a strict server reads from ``wire``, fed line by line as from a socket."""
    reader = reader_for(max_size=1 << 24, max_line=MAX_LINE + 2, max_received=100, max_header=1 << 24)
    chunks = wire.split(b"\r\n")
    assert chunks[-1] == b"", "the wire form ends with CRLF"
    for i, chunk in enumerate(chunks[:-1]):
        if reader.feed(chunk + b"\r\n"):
            assert i == len(chunks) - 2, "the message ended before the end of the data"
            break
    assert reader.done and reader.error is None, reader.error
    return reader.spool.read()


def wire_lines(wire: bytes) -> list[bytes]:
    assert wire.endswith(b"\r\n")
    return wire[:-2].split(b"\r\n")


@pytest.mark.parametrize(
    "body, wire",
    [
        (b"", b".\r\n"),
        (b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n"),
        (b"a\nb\n", b"a\r\nb\r\n.\r\n"),  # bare LF
        (b"a\rb\r", b"a\r\nb\r\n.\r\n"),  # bare CR
        (b"a\r\rb", b"a\r\n\r\nb\r\n.\r\n"),  # two CRs: two line ends
        (b"a\n\rb", b"a\r\n\r\nb\r\n.\r\n"),  # LF then CR: two line ends
        (b"a\r\nb", b"a\r\nb\r\n.\r\n"),  # no final line end: one is added
        (b"a\r\n\r\n", b"a\r\n\r\n.\r\n"),  # an empty last line is kept
        (b"\r\n", b"\r\n.\r\n"),
        (b"\n\n", b"\r\n\r\n.\r\n"),
        (b"x\r\n.\r\ny\r\n", b"x\r\n..\r\ny\r\n.\r\n"),  # the smuggling attempt is stuffed
        (b"x\n.\ny\n", b"x\r\n..\r\ny\r\n.\r\n"),
        (b"x\r.\ry", b"x\r\n..\r\ny\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b"..\r\n", b"...\r\n.\r\n"),
        (b".hidden\r\n", b"..hidden\r\n.\r\n"),
        (b" .not first\r\n", b" .not first\r\n.\r\n"),
        (b"caf\xc3\xa9\r\n", b"caf\xc3\xa9\r\n.\r\n"),  # 8-bit passes as is
    ],
)
def test_encode(body, wire):
    assert encode(body) == wire


def test_no_bare_cr_or_lf_leaves():
    body = b"a\rb\nc\r\nd\n\re\r\r\n\n" + bytes(range(256))
    for line in wire_lines(encode(body)):
        assert b"\r" not in line and b"\n" not in line


@pytest.mark.parametrize(
    "line, pieces",
    [
        (b"a" * 998, [998]),
        (b"a" * 999, [998, 1]),
        (b"a" * 1996, [998, 998]),
        (b"a" * 1997, [998, 998, 1]),
        (b"a" * 5000, [998] * 5 + [10]),
    ],
)
def test_long_lines_are_split(line, pieces):
    out = wire_lines(encode(line + b"\r\n"))
    assert out[-1] == b"."
    assert [len(x) for x in out[:-1]] == pieces
    assert b"".join(out[:-1]) == line


@pytest.mark.parametrize(
    "line, wire",
    [
        # a leading dot is stuffed, and the stuffed dot counts towards the 998
        (b"." + b"a" * 996, [b".." + b"a" * 996]),
        (b"." + b"a" * 997, [b".." + b"a" * 996, b"a"]),
        (b"." * 998, [b"." * 998, b".."]),  # the rest starts with a dot too: stuffed again
        (b"a" * 998 + b".b", [b"a" * 998, b"..b"]),
        (b"a" * 998 + b"." * 998, [b"a" * 998, b"." * 998, b".."]),
    ],
)
def test_long_lines_with_dots(line, wire):
    assert wire_lines(encode(line)) == [*wire, b"."]


def crlf(body: bytes) -> bytes:
    """``body`` with every CR, LF or CRLF made a CRLF, and a CRLF at the end of a last unended line."""
    body = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    return body + b"\r\n" if body and not body.endswith(b"\r\n") else body


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n",
        b"Subject: hi\r\n\r\nHello\r\n",
        b"Subject: hi\n\nHello\n.\n..\n...\nend",
        b"Subject: mac\r\rold\rstyle\r",
        b".\r\n",
        b".",
        b"\r\n.\r\n\r\n",
        b"mixed\r\nends\nhere\rand\r\n\rthere",
        b"From: a@b.test\r\n\r\n.\r\n..\r\nline\nbare lf\rbare cr\r\n",
        b"." * 997 + b"\r\n" + b"a" * 998,  # as long as lines may be, stuffed dot included
    ],
)
def test_round_trip_through_a_strict_reader(body):
    assert unstuff(encode(body)) == crlf(body)


def test_round_trip_of_long_lines_keeps_the_text():
    body = b"x" * 10 + b"\n" + b"." * 2000 + b"\n" + b"y" * 3000
    wire = encode(body)
    assert all(len(line) <= MAX_LINE for line in wire_lines(wire))
    read = unstuff(wire)
    assert read.endswith(b"\r\n")
    assert read.replace(b"\r\n", b"") == body.replace(b"\n", b"")


@pytest.mark.parametrize(
    "body, expected",
    [
        (b"", []),
        (b"\r\n", [b""]),
        (b"a", [b"a"]),
        (b"a\r\nb\nc\rd", [b"a", b"b", b"c", b"d"]),
        (b"a\r\n\r\n", [b"a", b""]),
        (b"a\n\r", [b"a", b""]),  # LF then CR: two ends, not one
    ],
)
def test_lines(body, expected):
    assert lines(body) == expected
