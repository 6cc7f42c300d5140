"""Delivery status notifications (RFC 3464, RFC 6522, RFC 6533), read back
with the standard library's parser and checked field by field."""

import dataclasses
import email
import email.policy
import email.utils
import re
from email.message import EmailMessage

import pytest

from empath.message.dsn import DsnRecipient, Report, render, subject

ARRIVAL = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 +0000
ATTEMPT = 1_700_000_100.0  # Tue, 14 Nov 2023 22:15:00 +0000
NOW = 1_700_000_200.0  # Tue, 14 Nov 2023 22:16:40 +0000
UNTIL = 1_700_432_000.0  # Sun, 19 Nov 2023 22:13:20 +0000

HEADERS = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: =?utf-8?q?Quarterly_figures_=E2=82=AC?=\r\n"
    b"Message-ID: <orig-1@example.test>\r\n"
    b"Date: Tue, 14 Nov 2023 22:13:19 +0000\r\n"
)
ORIGINAL = HEADERS + b"\r\nHello Bob,\r\n\r\nthe figures are attached.\r\n"

BOB = DsnRecipient(
    address="bob@example.org",
    action="failed",
    status="5.1.1",
    diagnostic="550 5.1.1 <bob@example.org>: no such user",
    remote_mta="mx.example.org",
    last_attempt=ATTEMPT,
)


def report(*recipients: DsnRecipient, **overrides) -> Report:
    facts = dict(
        reporting_mta="mx.example.test",
        sender="alice@example.test",
        queue_id="01HF0000000000AB",
        arrival=ARRIVAL,
        original=ORIGINAL,
        recipients=recipients or (BOB,),
        now=NOW,
        message_id="01HF0000000000CD.dsn@mx.example.test",
    )
    facts.update(overrides)
    return Report(**facts)


def rcpt(**overrides) -> DsnRecipient:
    return dataclasses.replace(BOB, **overrides)


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def raw_parts(raw: bytes) -> list[tuple[bytes, bytes]]:
    """The (header section, body) of each part, exactly as rendered."""
    boundary = parse(raw).get_boundary().encode()
    chunks = raw.split(b"\r\n--" + boundary)
    assert chunks[-1] == b"--\r\n", "the closing delimiter ends the message"
    parts = []
    for chunk in chunks[1:-1]:
        assert chunk.startswith(b"\r\n")
        headers, blank, body = chunk[2:].partition(b"\r\n\r\n")
        assert blank
        parts.append((headers, body))
    return parts


def fields(block: str) -> dict[str, str]:
    """One block of status fields, unfolded (RFC 5322 §2.2.3)."""
    found: dict[str, str] = {}
    for line in re.sub(r"\r\n(?=[ \t])", "", block).split("\r\n"):
        name, colon, value = line.partition(":")
        assert colon, line
        assert name not in found, f"{name} appears twice"
        found[name] = value.strip()
    return found


def status_blocks(raw: bytes) -> list[dict[str, str]]:
    """The per-message block, then one block per recipient, from the raw second part."""
    body = raw_parts(raw)[1][1].decode("utf-8")
    assert body.endswith("\r\n") and not body.endswith("\r\n\r\n")
    return [fields(block) for block in body[:-2].split("\r\n\r\n")]


def text_of(raw: bytes) -> str:
    part = parse(raw).get_payload()[0]
    assert part.get_content_type() == "text/plain"
    return " ".join(part.get_content().split())  # one line, for phrases that wrapped


# --- The message and its headers ---------------------------------------------------------


def test_headers():
    msg = parse(render(report()))
    assert msg["From"].addresses[0].display_name == "Mail Delivery System"
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@mx.example.test"
    assert msg["To"].addresses[0].addr_spec == "alice@example.test"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert email.utils.parsedate_to_datetime(msg["Date"]).timestamp() == NOW
    assert msg["Message-ID"] == "<01HF0000000000CD.dsn@mx.example.test>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["MIME-Version"] == "1.0"
    assert msg.defects == []


def test_multipart_report_with_three_parts():
    raw = render(report())
    msg = parse(raw)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg.get_boundary()
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/delivery-status", "message/rfc822"]
    assert all(p.defects == [] for p in parts)
    assert "Content-Transfer-Encoding" not in msg, "a 7-bit original leaves the DSN 7-bit"
    assert raw.isascii()


def test_rendering_is_pure():
    assert render(report()) == render(report())
    assert render(report()) != render(report(now=NOW + 1))


def test_per_message_fields():
    blocks = status_blocks(render(report()))
    assert blocks[0] == {"Reporting-MTA": "dns; mx.example.test", "Arrival-Date": "Tue, 14 Nov 2023 22:13:20 +0000"}


def test_stdlib_reads_the_delivery_status_blocks():
    status = parse(render(report(BOB, rcpt(address="carol@example.org")))).get_payload()[1]
    blocks = status.get_payload()
    assert len(blocks) == 3
    assert blocks[0]["Reporting-MTA"] == "dns; mx.example.test"
    assert [b["Final-Recipient"] for b in blocks[1:]] == ["rfc822; bob@example.org", "rfc822; carol@example.org"]


def test_one_failed_recipient():
    blocks = status_blocks(render(report()))
    assert len(blocks) == 2
    assert blocks[1] == {
        "Final-Recipient": "rfc822; bob@example.org",
        "Action": "failed",
        "Status": "5.1.1",
        "Remote-MTA": "dns; mx.example.org",
        "Diagnostic-Code": "smtp; 550 5.1.1 <bob@example.org>: no such user",
        "Last-Attempt-Date": "Tue, 14 Nov 2023 22:15:00 +0000",
    }


def test_optional_recipient_fields_are_left_out_when_unknown():
    blocks = status_blocks(render(report(DsnRecipient("bob@example.org", "failed", "5.4.4"))))
    assert blocks[1] == {"Final-Recipient": "rfc822; bob@example.org", "Action": "failed", "Status": "5.4.4"}


def test_one_dsn_lists_every_failed_recipient():
    recipients = (
        BOB,
        rcpt(address="carol@example.org", status="5.2.2", diagnostic="552 5.2.2 mailbox full"),
        rcpt(address="dave@example.net", status="5.7.1", remote_mta="mx.example.net", diagnostic="554 5.7.1 spam"),
    )
    raw = render(report(*recipients))
    blocks = status_blocks(raw)[1:]
    assert [b["Final-Recipient"] for b in blocks] == [
        "rfc822; bob@example.org",
        "rfc822; carol@example.org",
        "rfc822; dave@example.net",
    ]
    assert [b["Status"] for b in blocks] == ["5.1.1", "5.2.2", "5.7.1"]
    assert [b["Diagnostic-Code"] for b in blocks] == [
        "smtp; 550 5.1.1 <bob@example.org>: no such user",
        "smtp; 552 5.2.2 mailbox full",
        "smtp; 554 5.7.1 spam",
    ]
    assert blocks[2]["Remote-MTA"] == "dns; mx.example.net"
    assert all(b["Action"] == "failed" for b in blocks)
    text = text_of(raw)
    assert "following recipients, and have stopped trying" in text
    for phrase in ("bob@example.org", "carol@example.org", "dave@example.net", "552 5.2.2 mailbox full"):
        assert phrase in text
    assert "The recipient's mailbox is full." in text


def test_delayed_recipient_says_until_when():
    late = rcpt(action="delayed", status="4.4.1", diagnostic="451 4.4.1 try later", will_retry_until=UNTIL)
    raw = render(report(late))
    msg = parse(raw)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    block = status_blocks(raw)[1]
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.4.1"
    assert block["Will-Retry-Until"] == "Sun, 19 Nov 2023 22:13:20 +0000"
    assert list(block)[-1] == "Will-Retry-Until", "RFC 3464 §2.3 order: it comes after Last-Attempt-Date"
    text = text_of(raw)
    assert "no need to send it again" in text
    assert "We will keep trying until Sunday 19 November 2023 at 22:13 UTC." in text
    assert "stopped trying" not in text


@pytest.mark.parametrize("action", ["relayed", "delivered"])
def test_success_report(action):
    done = rcpt(action=action, status="2.0.0", diagnostic="250 2.0.0 Ok: queued as 123", will_retry_until=UNTIL)
    raw = render(report(done))
    assert parse(raw)["Subject"] == "Successful Mail Delivery Report"
    block = status_blocks(raw)[1]
    assert block["Action"] == action
    assert block["Status"] == "2.0.0"
    assert "Will-Retry-Until" not in block, "only a delayed recipient has a retry limit"
    assert parse(raw).get_payload()[2]["Content-Description"] == "Delivered Message"
    assert "could not deliver" not in text_of(raw)


@pytest.mark.parametrize(
    "actions, expected",
    [
        (["failed"], "Undelivered Mail Returned to Sender"),
        (["delayed"], "Delayed Mail (still being retried)"),
        (["delivered"], "Successful Mail Delivery Report"),
        (["relayed"], "Successful Mail Delivery Report"),
        (["delayed", "failed"], "Undelivered Mail Returned to Sender"),
        (["relayed", "failed", "delayed"], "Undelivered Mail Returned to Sender"),
        (["relayed", "delayed"], "Delayed Mail (still being retried)"),
    ],
)
def test_subject_failed_wins(actions, expected):
    statuses = {"failed": "5.0.0", "delayed": "4.0.0", "delivered": "2.0.0", "relayed": "2.0.0"}
    r = report(*(rcpt(address=f"r{i}@example.org", action=a, status=statuses[a]) for i, a in enumerate(actions)))
    assert subject(r) == expected
    assert parse(render(r))["Subject"] == expected


def test_mixed_report_groups_recipients_by_action():
    recipients = (rcpt(address="late@example.org", action="delayed", status="4.4.1", will_retry_until=UNTIL), BOB)
    raw = render(report(*recipients))
    assert [b["Action"] for b in status_blocks(raw)[1:]] == ["delayed", "failed"]
    text = text_of(raw)
    assert text.index("have stopped trying") < text.index("bob@example.org") < text.index("still trying")
    assert text.index("still trying") < text.index("late@example.org")


def test_orcpt_becomes_original_recipient():
    block = status_blocks(render(report(rcpt(orcpt="rfc822;Bob.Old@example.org"))))[1]
    assert block["Original-Recipient"] == "rfc822; Bob.Old@example.org"
    assert list(block)[:2] == ["Original-Recipient", "Final-Recipient"]


def test_no_orcpt_no_original_recipient():
    assert "Original-Recipient" not in status_blocks(render(report()))[1]


def test_envid_becomes_original_envelope_id():
    blocks = status_blocks(render(report(envid="QQ314159")))
    assert blocks[0]["Original-Envelope-Id"] == "QQ314159"
    assert list(blocks[0])[0] == "Original-Envelope-Id", "RFC 3464 §2.2: the first per-message field"
    assert "Original-Envelope-Id" not in status_blocks(render(report()))[0]


def test_envid_with_line_breaks_cannot_add_fields():
    blocks = status_blocks(render(report(envid="id\r\nReporting-MTA: dns; evil.example")))
    assert blocks[0]["Original-Envelope-Id"] == "id+0D+0AReporting-MTA: dns; evil.example"
    assert blocks[0]["Reporting-MTA"] == "dns; mx.example.test"


# --- The returned original ----------------------------------------------------------------


def test_full_original_carried_byte_exact_with_8bit():
    original = HEADERS + b"\r\nCaf\xe9 cr\xe8me, \xff\xfe raw bytes\r\n\r\n.leading dot\r\nno final line end"
    raw = render(report(original=original))
    msg = parse(raw)
    part = msg.get_payload()[2]
    assert part.get_content_type() == "message/rfc822"
    assert part["Content-Transfer-Encoding"] == "8bit"
    assert msg["Content-Transfer-Encoding"] == "8bit"
    assert part.get_payload()[0]["Message-ID"] == "<orig-1@example.test>"
    headers, body = raw_parts(raw)[2]
    assert body == original
    assert b"Content-Type: message/rfc822" in headers


def test_full_original_ending_in_crlf_is_exact():
    assert raw_parts(render(report()))[2][1] == ORIGINAL


def test_ret_hdrs_returns_headers_only():
    raw = render(report(ret="HDRS"))
    part = parse(raw).get_payload()[2]
    assert part.get_content_type() == "text/rfc822-headers"
    assert part["Content-Description"] == "Undelivered Message Headers"
    assert raw_parts(raw)[2][1] == HEADERS
    assert b"the figures are attached" not in raw
    assert "as your mail program asked" in text_of(raw)


def test_a_stranger_s_message_returns_headers_only_whatever_ret_asks():
    for ret in ("FULL", None):
        raw = render(report(ret=ret, stranger=True))
        assert parse(raw).get_payload()[2].get_content_type() == "text/rfc822-headers"
        assert raw_parts(raw)[2][1] == HEADERS
        assert "as for all mail from outside: its sender address may not be yours" in text_of(raw)


def test_ret_full_returns_everything():
    raw = render(report(ret="FULL"))
    assert parse(raw).get_payload()[2].get_content_type() == "message/rfc822"
    assert raw_parts(raw)[2][1] == ORIGINAL


def test_original_over_return_limit_returns_headers_only():
    big = HEADERS + b"\r\n" + b"x" * 70 + b"\r\n" * 1000
    raw = render(report(original=big, return_limit=len(big) - 1))
    part = parse(raw).get_payload()[2]
    assert part.get_content_type() == "text/rfc822-headers"
    assert raw_parts(raw)[2][1] == HEADERS
    assert "too large to return" in text_of(raw)
    at_limit = render(report(original=big, return_limit=len(big)))
    assert raw_parts(at_limit)[2][1] == big


@pytest.mark.parametrize(
    "cut, kept",
    [(-5, False), (-2, False), (0, True), (8, True)],
    ids=["in its fold", "in its last CRLF", "at its end", "in the next field"],
)
def test_only_the_start_of_a_large_original_is_needed_and_no_field_is_cut(cut, kept):
    # The queue gives a notice return_limit + 1 bytes of a large message: a field it may cut is left out.
    folded = b"X-Folded: first\r\n second\r\n"
    original = HEADERS + folded + b"X-Last: " + b"v" * 60 + b"\r\n" + b"\r\n" + b"body\r\n" * 10_000
    limit = len(HEADERS) + len(folded) + cut
    raw = render(report(original=original[: limit + 1], return_limit=limit))
    assert parse(raw).get_payload()[2].get_content_type() == "text/rfc822-headers"
    assert raw_parts(raw)[2][1] == HEADERS + (folded if kept else b"")


def test_default_return_limit_is_50k():
    big = HEADERS + b"\r\n" + (b"y" * 98 + b"\r\n") * 600
    assert parse(render(report(original=big))).get_payload()[2].get_content_type() == "text/rfc822-headers"


def test_original_with_an_overlong_line_returns_headers_without_it():
    long_field = b"X-Long: " + b"z" * 1200 + b"\r\n"
    original = HEADERS + long_field + b"\r\n" + b"w" * 2000 + b"\r\n"
    raw = render(report(original=original))
    assert parse(raw).get_payload()[2].get_content_type() == "text/rfc822-headers"
    assert raw_parts(raw)[2][1] == HEADERS
    assert_lines_ok(raw)


# --- Internationalised mail (RFC 6533) ---------------------------------------------------


def test_smtputf8_recipient_makes_a_global_dsn():
    recipients = (rcpt(address="jürgen@bücher.example", orcpt="utf-8;jürgen@bücher.example"), BOB)
    raw = render(report(*recipients))
    msg = parse(raw)
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/global-delivery-status", "message/global"]
    assert parts[1]["Content-Transfer-Encoding"] == "8bit"
    blocks = status_blocks(raw)
    assert blocks[1]["Final-Recipient"] == "utf-8; jürgen@bücher.example"
    assert blocks[1]["Original-Recipient"] == "utf-8; jürgen@bücher.example"
    assert blocks[2]["Final-Recipient"] == "rfc822; bob@example.org", "an ASCII address keeps its type"
    assert "jürgen@bücher.example" in text_of(raw)
    assert raw_parts(raw)[2][1] == ORIGINAL


def test_smtputf8_sender_and_headers_only():
    raw = render(report(sender="zoë@exämple.test", ret="HDRS"))
    assert "\r\nTo: zoë@exämple.test\r\n".encode() in raw.partition(b"\r\n\r\n")[0]  # RFC 6532 UTF-8 header
    msg = parse(raw)
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts][1:] == ["message/global-delivery-status", "message/global-headers"]
    assert raw_parts(raw)[2][1] == HEADERS


def test_utf8_headers_in_the_original_make_a_global_dsn():
    original = "From: Zoë <zoe@example.test>\r\nSubject: Grüße\r\n\r\nBody\r\n".encode()
    raw = render(report(original=original))
    parts = parse(raw).get_payload()
    assert parts[1].get_content_type() == "message/global-delivery-status"
    assert parts[2].get_content_type() == "message/global"
    assert raw_parts(raw)[2][1] == original
    assert 'your message "Grüße"' in text_of(raw)


def test_8bit_body_alone_is_not_global():
    raw = render(report(original=HEADERS + b"\r\nCaf\xe9\r\n"))
    parts = parse(raw).get_payload()
    assert parts[1].get_content_type() == "message/delivery-status"
    assert parts[2].get_content_type() == "message/rfc822"


def test_utf8_address_special_characters_are_escaped():
    block = status_blocks(render(report(rcpt(address="a+b=c@bücher.example"))))[1]
    assert block["Final-Recipient"] == "utf-8; a\\x{2B}b\\x{3D}c@bücher.example"


# --- Hostile input --------------------------------------------------------------------------


def test_diagnostic_with_line_breaks_cannot_inject():
    evil = "550 5.1.1 no\r\nX-Injected: yes\r\n\r\nFinal-Recipient: rfc822; evil@example.net\nAction: delivered"
    raw = render(report(rcpt(diagnostic=evil, remote_mta="mx.example.org\r\nX-Also: yes")))
    msg = parse(raw)
    assert "X-Injected" not in msg and "X-Also" not in msg
    blocks = status_blocks(raw)
    assert len(blocks) == 2, "no second recipient block"
    assert blocks[1]["Action"] == "failed"
    assert blocks[1]["Final-Recipient"] == "rfc822; bob@example.org"
    assert blocks[1]["Diagnostic-Code"] == (
        "smtp; 550 5.1.1 no X-Injected: yes Final-Recipient: rfc822; evil@example.net Action: delivered"
    )
    assert blocks[1]["Remote-MTA"] == "dns; mx.example.org X-Also: yes"
    stdlib_blocks = msg.get_payload()[1].get_payload()
    assert len(stdlib_blocks) == 2
    assert "X-Injected" not in stdlib_blocks[1]


def test_diagnostic_with_control_characters_and_non_ascii():
    raw = render(report(rcpt(diagnostic="550 \x00bad\x1b[31m r\u00e9ply\u2028X-Sep: 1")))
    assert status_blocks(raw)[1]["Diagnostic-Code"] == "smtp; 550 bad [31m r?ply X-Sep: 1"
    assert raw_parts(raw)[1][1].isascii()


def test_diagnostic_that_is_not_an_smtp_reply():
    raw = render(report(rcpt(diagnostic="connect to mx.example.org[192.0.2.1]:25: Connection refused")))
    assert status_blocks(raw)[1]["Diagnostic-Code"] == (
        "X-Empath; connect to mx.example.org[192.0.2.1]:25: Connection refused"
    )


def test_boundary_is_not_in_the_original():
    first = parse(render(report())).get_boundary()
    original = HEADERS + b"\r\n--" + first.encode() + b"\r\n--" + first.encode() + b"_1--\r\n"
    raw = render(report(original=original))
    boundary = parse(raw).get_boundary()
    assert boundary != first
    assert boundary.encode() not in original
    assert len(parse(raw).get_payload()) == 3
    assert raw_parts(raw)[2][1] == original


def test_boundary_is_not_in_the_diagnostic():
    first = parse(render(report())).get_boundary()
    raw = render(report(rcpt(diagnostic=f"550 --{first}--")))
    assert parse(raw).get_boundary() != first
    assert len(raw_parts(raw)) == 3


def assert_lines_ok(raw: bytes) -> None:
    assert raw.endswith(b"\r\n")
    lines = raw.split(b"\r\n")[:-1]
    assert all(b"\r" not in line and b"\n" not in line for line in lines), "every line ends with CRLF"
    assert max(len(line) for line in lines) <= 998


def test_lines_are_crlf_and_at_most_998_octets():
    word = "é" * 1500
    long_reply = "550 5.7.1 " + " ".join(["blocked"] * 300) + " " + word + " https://example.org/" + "p" * 1200
    recipients = (
        rcpt(address="x" * 60 + "@" + "d" * 180 + ".example", diagnostic=long_reply, remote_mta="m" * 250),
        rcpt(address="ü" * 60 + "@bücher.example", orcpt="utf-8;" + "ü" * 60 + "@bücher.example"),
    )
    raw = render(report(*recipients, envid="E" * 100))
    assert_lines_ok(raw)
    diagnostic = status_blocks(raw)[1]["Diagnostic-Code"]
    assert diagnostic.startswith("smtp; 550 5.7.1 blocked blocked")
    assert diagnostic.replace(" ", "").endswith("p" * 1200), "long words are cut, not lost"
    assert sum(len(line) > 78 for line in raw.split(b"\r\n")) < 20, "folded at 78 where there are spaces"


def test_text_part_explains_for_people():
    late = rcpt(address="late@example.org", action="delayed", status="4.4.1", diagnostic=None, will_retry_until=UNTIL)
    text = text_of(render(report(BOB, late)))
    assert text.startswith("This is an automatic message from the mail system at mx.example.test.")
    assert 'your message "Quarterly figures €", which we received on Tuesday 14 November 2023 at 22:13 UTC' in text
    assert "The address does not exist. Please check it for typing mistakes." in text
    assert "The recipient's mail server (mx.example.org) replied: 550 5.1.1 <bob@example.org>: no such user" in text
    assert "The recipient's mail server did not answer." in text
    assert "A copy of your message is attached" in text
    assert "mention this reference: 01HF0000000000AB at mx.example.test" in text


def test_text_part_with_utf8_is_quoted_printable_in_a_7bit_dsn():
    raw = render(report())  # the original's subject decodes to a euro sign
    part = parse(raw).get_payload()[0]
    assert part.get_content_charset() == "utf-8"
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert raw.isascii()


def test_ascii_text_part():
    raw = render(report(original=b"Subject: hello\r\n\r\nbody\r\n"))
    part = parse(raw).get_payload()[0]
    assert part.get_content_charset() == "us-ascii"
    assert "Content-Transfer-Encoding" not in part
    assert 'your message "hello"' in text_of(raw)


# --- Refused reports ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"sender": ""},
        {"recipients": ()},
        {"ret": "BODY"},
        {"recipients": (rcpt(action="bounced"),)},
    ],
)
def test_refused_reports(overrides):
    with pytest.raises(ValueError):
        render(dataclasses.replace(report(), **overrides))


@pytest.mark.parametrize("action, status", [("failed", "5.0.0"), ("delayed", "4.0.0"), ("relayed", "2.0.0")])
def test_malformed_status_reported_as_generic(action, status):
    block = status_blocks(render(report(rcpt(action=action, status="550\r\nX: y"))))[1]
    assert block["Status"] == status
