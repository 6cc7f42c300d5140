"""Every reply in the catalogue is valid SMTP."""

import re

import pytest

from empath.smtp import replies
from empath.smtp.replies import Reply

CATALOGUE = {name: value for name, value in vars(replies).items() if isinstance(value, Reply)}

# Replies that carry no enhanced status code: the greeting and EHLO reply
# (RFC 2034 §3), and the intermediate 3xx replies.
WITHOUT_STATUS = {"GREETING", "HELLO", "START_DATA", "AUTH_CHALLENGE"}

LINE = re.compile(r"^([2-5][0-9][0-9])([- ])(.*)$")
STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
FIELDS = {
    "hostname": "mx.example.test",
    "helo": "client.example",
    "queue_id": "01HF0000000000AB",
    "limit": 1000,
    "challenge": "VXNlcm5hbWU6",
}


def test_catalogue_is_not_empty():
    assert len(CATALOGUE) > 40
    assert "RELAY_DENIED" in CATALOGUE


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_reply_is_valid_smtp(name):
    reply = CATALOGUE[name]
    assert 200 <= reply.code <= 599
    if reply.status:
        m = STATUS.match(reply.status)
        assert m, reply.status
        assert m.group(1) == str(reply.code)[0], "the status class must match the reply's first digit"
    else:
        assert name in WITHOUT_STATUS
    filled = reply.format(**FIELDS) if "{" in reply.text else reply
    assert "{" not in filled.text and "}" not in filled.text
    for enhanced in (True, False):
        data = filled.render(enhanced=enhanced)
        assert data.endswith(b"\r\n")
        text = data.decode("utf-8")
        lines = text.split("\r\n")[:-1]
        assert "\r" not in "".join(lines) and "\n" not in "".join(lines)
        for i, line in enumerate(lines):
            m = LINE.match(line)
            assert m, line
            assert int(m.group(1)) == reply.code
            assert m.group(2) == ("-" if i < len(lines) - 1 else " ")
            if enhanced and reply.status:
                assert m.group(3).startswith(reply.status + " ")
            else:
                assert not STATUS.match(m.group(3).split(" ")[0])
            assert len(line) + 2 <= 512  # RFC 5321 §4.5.3.1.5


@pytest.mark.parametrize("name", sorted(n for n in CATALOGUE if CATALOGUE[n].code >= 400))
def test_error_text_is_not_empty(name):
    assert CATALOGUE[name].text.strip()


def test_multiline_render():
    reply = Reply(250, "2.0.0", "first\nsecond\nthird")
    assert reply.render() == b"250-2.0.0 first\r\n250-2.0.0 second\r\n250 2.0.0 third\r\n"
    assert reply.render(enhanced=False) == b"250-first\r\n250-second\r\n250 third\r\n"


def test_single_line_render():
    assert replies.RELAY_DENIED.render() == b"554 5.7.1 Relay access denied\r\n"
    assert replies.RELAY_DENIED.render(enhanced=False) == b"554 Relay access denied\r\n"
    assert replies.START_DATA.render() == b"354 End data with <CR><LF>.<CR><LF>\r\n"


def test_empty_auth_challenge_is_code_and_space():
    assert replies.AUTH_CHALLENGE.format(challenge="").render() == b"334 \r\n"


def test_with_text_and_format_keep_code_and_status():
    changed = replies.BAD_PARAMETER.with_text("SIZE needs a number")
    assert (changed.code, changed.status, changed.text) == (555, "5.5.4", "SIZE needs a number")
    queued = replies.QUEUED.format(queue_id="ABC")
    assert (queued.code, queued.status) == (250, "2.0.0")
    assert queued.text.endswith("ABC")


def test_replies_are_immutable():
    with pytest.raises(AttributeError):
        replies.RELAY_DENIED.code = 250
