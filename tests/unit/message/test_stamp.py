"""Received, Date and Message-ID headers."""

import email.utils

import pytest

from empath.addresses import ReversePath
from empath.message import submit
from empath.message.stamp import header_names, missing_headers, protocol, received, trace_from

NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC


@pytest.mark.parametrize(
    "esmtp, tls, authenticated, smtputf8, name",
    [
        (False, False, False, False, "SMTP"),
        (True, False, False, False, "ESMTP"),
        (True, True, False, False, "ESMTPS"),
        (True, False, True, False, "ESMTPA"),
        (True, True, True, False, "ESMTPSA"),
        (True, False, False, True, "UTF8SMTP"),
        (True, True, False, True, "UTF8SMTPS"),
        (True, False, True, True, "UTF8SMTPA"),
        (True, True, True, True, "UTF8SMTPSA"),
    ],
)
def test_protocol(esmtp, tls, authenticated, smtputf8, name):
    assert protocol(esmtp, tls, authenticated, smtputf8) == name


def stamp(**overrides) -> bytes:
    facts = dict(
        helo="client.example",
        client_address="192.0.2.7",
        hostname="mx.example.test",
        with_="ESMTPS",
        queue_id="01HF0000000000AB",
        trace_id="0123456789abcdef0123456789abcdef",
        tls="using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384",
        recipient="u@example.test",
        now=NOW,
    )
    facts.update(overrides)
    return received(**facts)


def test_received_header():
    header = stamp()
    assert header.endswith(b"\r\n")
    text = header.decode()
    lines = text.split("\r\n")[:-1]
    assert lines[0] == "Received: from client.example ([192.0.2.7])"
    assert all(line.startswith("\t") for line in lines[1:])  # folded
    assert "\tby mx.example.test (Empath) with ESMTPS id 01HF0000000000AB" in lines
    assert "\t(Empath trace 0123456789abcdef0123456789abcdef on mx.example.test)" in lines
    assert "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)" in lines
    assert lines[-1] == "\tfor <u@example.test>; Tue, 14 Nov 2023 22:13:20 +0000"
    # No bare CR or LF, and no line longer than RFC 5322's 78 recommended.
    assert text.count("\r") == text.count("\n") == len(lines)
    assert all(len(line) <= 78 for line in lines)


def test_received_date_is_the_given_time():
    date = stamp().decode().rsplit(";", 1)[1].strip()
    assert email.utils.parsedate_to_datetime(date).timestamp() == NOW


def test_received_without_recipient_has_no_for_clause():
    text = stamp(recipient=None).decode()
    assert "for <" not in text
    assert text.endswith("\t; Tue, 14 Nov 2023 22:13:20 +0000\r\n")


def test_received_without_tls_has_no_tls_comment():
    text = stamp(tls=None, with_="ESMTP").decode()
    assert "(using" not in text
    assert "with ESMTP id" in text
    assert text.count("\r\n") == 4  # from, by, the trace comment, for


def test_received_ipv6_client_is_an_address_literal():
    text = stamp(client_address="2001:db8::7").decode()
    assert text.startswith("Received: from client.example ([IPv6:2001:db8::7])\r\n")


def test_received_parses_as_one_header():
    message = email.message_from_bytes(stamp() + b"Subject: x\r\n\r\nbody\r\n")
    assert len(message.get_all("Received")) == 1
    assert "for <u@example.test>" in message["Received"]
    assert message["Subject"] == "x"


@pytest.mark.parametrize(
    "body, date, message_id",
    [
        (b"Subject: x\r\n\r\nbody\r\n", True, True),
        (b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nSubject: x\r\n\r\n", False, True),
        (b"Message-ID: <a@b>\r\n\r\n", True, False),
        (b"date: x\r\nmessage-id: <a@b>\r\n\r\n", False, False),
        (b"DATE: x\r\nMESSAGE-ID: <a@b>\r\n\r\n", False, False),
        (b"Date : x\r\nMessage-Id:<a@b>\r\n\r\n", False, False),
        # Only the header section counts, not the body.
        (b"Subject: x\r\n\r\nDate: in the body\r\nMessage-ID: <x@y>\r\n", True, True),
        (b"", True, True),
    ],
)
def test_missing_headers_only_add_what_is_missing(body, date, message_id):
    added = missing_headers(body, None, "01HF0000000000AB", "mx.example.test", NOW).decode()
    assert ("Date: " in added) == date
    assert ("Message-ID: " in added) == message_id
    if added:
        assert added.endswith("\r\n")
        assert added.count("\r\n") == date + message_id


def test_missing_headers_values():
    added = missing_headers(b"\r\n", "scanner@office.test", "01HF0000000000AB", "mx.example.test", NOW)
    message = email.message_from_bytes(added + b"\r\n")
    assert message["From"] == "scanner@office.test"
    assert email.utils.parsedate_to_datetime(message["Date"]).timestamp() == NOW
    assert message["Date"].endswith(" +0000")  # a numeric zone, not GMT
    assert message["Message-ID"] == f"<01HF0000000000AB.{int(NOW)}@mx.example.test>"


def test_a_from_is_added_only_when_missing():
    assert b"From:" not in missing_headers(b"from: a@b\r\n\r\n", "x@y", "Q", "mx.test", NOW)


def client(trusted: bool = False, auth_user: str | None = None) -> submit.SmtpClient:
    return submit.SmtpClient("192.0.2.1", "printer", "smtp@0.0.0.0:25", "ESMTP", None, auth_user, trusted)


@pytest.mark.parametrize(
    "origin, sender, added",
    [
        (client(trusted=True), "scanner@office.test", ["From", "Date", "Message-ID"]),
        (client(auth_user="alice"), "alice@office.test", ["From", "Date", "Message-ID"]),
        (client(trusted=True), "", ["Date", "Message-ID"]),  # a null sender names no author
        (client(), "someone@far.example", []),  # a stranger's mail stays as it came
    ],
)
def test_the_office_s_clients_get_what_they_left_out_strangers_nothing(origin, sender, added):
    head = origin.missing_headers(b"Subject: scan\r\n", ReversePath(sender), "Q", "mx.test", NOW)
    assert [line.split(b":")[0].decode() for line in head.splitlines()] == added
    assert ("From" not in added) or f"From: {sender}\r\n".encode() in head


def test_header_names():
    body = b"From: a@b\r\nSubject: long\r\n  folded: not a field\r\nX-Thing:1\r\n\r\nBody: no\r\n"
    assert header_names(body) == {"from", "subject", "x-thing"}


def test_received_header_neutralises_helo_that_would_forge_clauses():
    header = received(
        helo="evil (by trusted.example); x",
        client_address="192.0.2.1",
        hostname="mx.test",
        with_="ESMTP",
        queue_id="Q",
        trace_id="0" * 32,
        tls=None,
        recipient=None,
        now=0,
    )
    first = header.split(b"\r\n")[0]
    assert first == b"Received: from evil??by?trusted.example???x ([192.0.2.1])"


def test_trace_from_our_own_received_header_only():
    ours = stamp(hostname="mx.example.test") + b"Subject: back again\r\n\r\nbody\r\n"
    assert trace_from(ours, "mx.example.test") == "0123456789abcdef0123456789abcdef"
    assert trace_from(ours, "other.example") is None  # another host's header
    in_body = b"Subject: x\r\n\r\n(Empath trace 0123456789abcdef0123456789abcdef on mx.example.test)\r\n"
    assert trace_from(in_body, "mx.example.test") is None  # only the header section counts
    forged = b"Received: by x\r\n\t(Empath trace NOT-HEX-AT-ALL-NOT-HEX-AT-ALL-XX on mx.example.test)\r\n\r\n"
    assert trace_from(forged, "mx.example.test") is None
