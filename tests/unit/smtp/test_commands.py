"""The command parser: lines to commands, MAIL and RCPT arguments to typed values."""

import pytest

from empath.smtp import replies
from empath.smtp.commands import (
    Command,
    CommandError,
    parse_command,
    parse_mail,
    parse_params,
    parse_rcpt,
    xtext_decode,
)


def same(actual, expected) -> bool:
    return (actual.code, actual.status) == (expected.code, expected.status)


def error_of(func, *args):
    with pytest.raises(CommandError) as info:
        func(*args)
    return info.value.reply


# -- parse_command --------------------------------------------------------------


@pytest.mark.parametrize(
    "line, verb, arg",
    [
        (b"EHLO mail.example.com", "EHLO", "mail.example.com"),
        (b"ehlo mail.example.com", "EHLO", "mail.example.com"),
        (b"QUIT", "QUIT", ""),
        (b"quit   ", "QUIT", ""),
        (b"MAIL FROM:<a@b.example> SIZE=10", "MAIL", "FROM:<a@b.example> SIZE=10"),
        (b"MAIL   FROM:<a@b.example>  ", "MAIL", "FROM:<a@b.example>"),
        (b"RCPT TO:<\xc3\xa4@b.example>", "RCPT", "TO:<\u00e4@b.example>"),
        (b"NOOP with\ttab", "NOOP", "with\ttab"),
        (b"GET / HTTP/1.1", "GET", "/ HTTP/1.1"),
    ],
)
def test_parse_command(line, verb, arg):
    assert parse_command(line) == Command(verb, arg)


@pytest.mark.parametrize(
    "line, expected",
    [
        (b"", replies.UNKNOWN_COMMAND),
        (b" NOOP", replies.UNKNOWN_COMMAND),  # no verb before the space
        (b"MAIL:FROM", replies.UNKNOWN_COMMAND),
        (b"HELO2 x", replies.UNKNOWN_COMMAND),
        (b"Host: example.com", replies.UNKNOWN_COMMAND),
        (b"\xc3\xa9HLO x", replies.UNKNOWN_COMMAND),  # non-ASCII letters are not a verb
        (b"NOOP\x00", replies.SYNTAX_ERROR),
        (b"NOOP \x1b[31m", replies.SYNTAX_ERROR),
        (b"NOOP\rRSET", replies.SYNTAX_ERROR),
        (b"NOOP \x7f", replies.SYNTAX_ERROR),
        (b"NOOP \xff\xfe", replies.SYNTAX_ERROR),  # not UTF-8
        (b"\xc3(", replies.UNKNOWN_COMMAND),  # 8-bit bytes in the command word: no such command
        (b"\xff\xfeHLO x", replies.UNKNOWN_COMMAND),
    ],
)
def test_parse_command_rejects(line, expected):
    assert same(error_of(parse_command, line), expected)


def test_invalid_utf8_and_control_characters_say_why():
    assert "UTF-8" in error_of(parse_command, b"NOOP \xff").text
    assert "Control" in error_of(parse_command, b"NOOP \x01").text


# -- parse_params and xtext ---------------------------------------------------


@pytest.mark.parametrize(
    "text, params",
    [
        ("", {}),
        ("SIZE=10", {"SIZE": "10"}),
        ("size=10 smtputf8", {"SIZE": "10", "SMTPUTF8": None}),
        ("X-FOO=bar", {"X-FOO": "bar"}),
    ],
)
def test_parse_params(text, params):
    assert parse_params(text) == params


@pytest.mark.parametrize("text", ["SIZE=", "=10", "SIZE==10", "SIZE=1=0", "-X=1", "SIZE=10 size=11"])
def test_parse_params_rejects(text):
    assert same(error_of(parse_params, text), replies.BAD_PARAMETER)


@pytest.mark.parametrize(
    "value, decoded",
    [
        ("abc", "abc"),
        ("a+2Bb", "a+b"),
        ("a+3Db", "a=b"),
        ("+20+2B+3D", " +="),
        ("", ""),
    ],
)
def test_xtext_decode(value, decoded):
    assert xtext_decode(value) == decoded


@pytest.mark.parametrize("value", ["a+b", "a+2b", "a+2", "a=b", "a b", "é"])
def test_xtext_rejects(value):
    assert same(error_of(xtext_decode, value), replies.BAD_PARAMETER)


# -- parse_mail ---------------------------------------------------------------


@pytest.mark.parametrize(
    "arg, address",
    [
        ("FROM:<a@b.example>", "a@b.example"),
        ("from:<a@b.example>", "a@b.example"),
        ("From:<a@B.Example>", "a@b.example"),
        ("FROM: <a@b.example>", "a@b.example"),  # a space after the colon (lenient)
        ("FROM:a@b.example", "a@b.example"),  # no brackets (old printers)
        ("FROM:<>", ""),
        ("FROM:<@relay.example:a@b.example>", "a@b.example"),
    ],
)
def test_parse_mail_sender(arg, address):
    mail = parse_mail(arg)
    assert mail.path.address == address
    assert not mail.has_params
    assert (mail.size, mail.body, mail.smtputf8, mail.ret, mail.envid) == (None, "7BIT", False, None, None)


def test_parse_mail_null_sender():
    assert parse_mail("FROM:<>").path.mailbox is None


@pytest.mark.parametrize(
    "arg, expected",
    [
        ("", replies.SYNTAX_ERROR),
        ("<a@b.example>", replies.SYNTAX_ERROR),  # missing FROM:
        ("FROM <a@b.example>", replies.SYNTAX_ERROR),
        ("TO:<a@b.example>", replies.SYNTAX_ERROR),
        ("FROM:", replies.BAD_SENDER),
        ("FROM:<a@b.example", replies.BAD_SENDER),
        ("FROM:<a@b.example>SIZE=1", replies.BAD_SENDER),
        ("FROM:<a@@b.example>", replies.BAD_SENDER),
        ("FROM:<a@b@c.example>", replies.BAD_SENDER),
        ("FROM:<a>", replies.BAD_SENDER),
        ("FROM:<Postmaster>", replies.BAD_SENDER),  # no domain to send from
        ("FROM:<jös@b.example>", replies.NEED_SMTPUTF8),
        ("FROM:<a@bücher.example>", replies.NEED_SMTPUTF8),
    ],
)
def test_parse_mail_rejects(arg, expected):
    assert same(error_of(parse_mail, arg), expected)


@pytest.mark.parametrize(
    "params, field, value",
    [
        ("SIZE=0", "size", 0),
        ("SIZE=1000000", "size", 1000000),
        ("size=42", "size", 42),
        ("BODY=7BIT", "body", "7BIT"),
        ("BODY=8BITMIME", "body", "8BITMIME"),
        ("body=8bitmime", "body", "8BITMIME"),
        ("SMTPUTF8", "smtputf8", True),
        ("RET=FULL", "ret", "FULL"),
        ("RET=hdrs", "ret", "HDRS"),
        ("ENVID=QQ314159", "envid", "QQ314159"),
        ("ENVID=a+2Bb+3Dc", "envid", "a+b=c"),
        ("ENVID=" + "x" * 100, "envid", "x" * 100),
    ],
)
def test_parse_mail_params(params, field, value):
    mail = parse_mail(f"FROM:<a@b.example> {params}")
    assert getattr(mail, field) == value
    assert mail.has_params


def test_parse_mail_all_params_together():
    mail = parse_mail("FROM:<jös@bücher.example> SIZE=5 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1")
    assert mail.path.address == "jös@xn--bcher-kva.example"
    assert (mail.size, mail.body, mail.smtputf8, mail.ret, mail.envid) == (5, "8BITMIME", True, "HDRS", "id+1")


def test_smtputf8_allows_non_ascii_sender():
    assert parse_mail("FROM:<jös@b.example> SMTPUTF8").path.address == "jös@b.example"


@pytest.mark.parametrize(
    "params",
    [
        "SIZE=",
        "SIZE",
        "SIZE=-1",
        "SIZE=1k",
        "SIZE=" + "9" * 21,
        "BODY",
        "BODY=BINARYMIME",
        "BODY=8BIT",
        "SMTPUTF8=yes",
        "RET",
        "RET=NONE",
        "ENVID",
        "ENVID=",
        "ENVID=a+b",
        "ENVID=" + "x" * 101,
        "AUTH=<>",  # not offered
        "FOO=bar",
        "FOO",
        "SIZE=1 SIZE=2",
        "SIZE=1 size=1",
        "RET=FULL RET=HDRS",
        "SIZE==1",
    ],
)
def test_parse_mail_bad_params(params):
    assert same(error_of(parse_mail, f"FROM:<a@b.example> {params}"), replies.BAD_PARAMETER)


def test_unknown_and_duplicate_params_are_named():
    assert "FOO" in error_of(parse_mail, "FROM:<> FOO=1").text
    assert "SIZE" in error_of(parse_mail, "FROM:<> SIZE=1 SIZE=1").text


# -- parse_rcpt ---------------------------------------------------------------


@pytest.mark.parametrize(
    "arg, address",
    [
        ("TO:<u@b.example>", "u@b.example"),
        ("to:<u@B.EXAMPLE>", "u@b.example"),
        ("TO: <u@b.example>", "u@b.example"),
        ("TO:u@b.example", "u@b.example"),
        ('TO:<"a b"@b.example>', '"a b"@b.example'),
    ],
)
def test_parse_rcpt(arg, address):
    rcpt = parse_rcpt(arg, utf8=False)
    assert rcpt.path.address == address
    assert (rcpt.notify, rcpt.orcpt, rcpt.has_params) == ((), None, False)


def test_parse_rcpt_postmaster():
    assert parse_rcpt("TO:<Postmaster>", utf8=False).path.postmaster


@pytest.mark.parametrize(
    "arg, expected",
    [
        ("", replies.SYNTAX_ERROR),
        ("<u@b.example>", replies.SYNTAX_ERROR),  # missing TO:
        ("FROM:<u@b.example>", replies.SYNTAX_ERROR),
        ("TO:", replies.BAD_ADDRESS),
        ("TO:<>", replies.BAD_ADDRESS),  # a null recipient makes no sense
        ("TO:<u@b.example", replies.BAD_ADDRESS),
        ("TO:<u@b@c.example>", replies.BAD_ADDRESS),
        ("TO:<u>", replies.BAD_ADDRESS),
        ("TO:<u@[999.1.1.1]>", replies.BAD_ADDRESS),
        ("TO:<jös@b.example>", replies.NEED_SMTPUTF8),
    ],
)
def test_parse_rcpt_rejects(arg, expected):
    assert same(error_of(parse_rcpt, arg, False), expected)


def test_parse_rcpt_utf8_follows_the_transaction():
    assert parse_rcpt("TO:<jös@bücher.example>", utf8=True).path.address == "jös@xn--bcher-kva.example"


@pytest.mark.parametrize(
    "value, notify",
    [
        ("NEVER", ("NEVER",)),
        ("never", ("NEVER",)),
        ("SUCCESS", ("SUCCESS",)),
        ("FAILURE", ("FAILURE",)),
        ("DELAY", ("DELAY",)),
        ("SUCCESS,FAILURE", ("SUCCESS", "FAILURE")),
        ("FAILURE,DELAY", ("FAILURE", "DELAY")),
        ("SUCCESS,FAILURE,DELAY", ("SUCCESS", "FAILURE", "DELAY")),
        ("delay,success", ("DELAY", "SUCCESS")),
    ],
)
def test_notify(value, notify):
    rcpt = parse_rcpt(f"TO:<u@b.example> NOTIFY={value}", utf8=False)
    assert rcpt.notify == notify
    assert rcpt.has_params


@pytest.mark.parametrize(
    "value",
    [
        "NEVER,SUCCESS",
        "FAILURE,NEVER",
        "NEVER,NEVER",
        "SUCCESS,SUCCESS",
        "ALWAYS",
        "SUCCESS,",
        ",SUCCESS",
        "SUCCESS,,DELAY",
    ],
)
def test_notify_rejects(value):
    assert same(error_of(parse_rcpt, f"TO:<u@b.example> NOTIFY={value}", False), replies.BAD_PARAMETER)


def test_notify_without_value():
    assert same(error_of(parse_rcpt, "TO:<u@b.example> NOTIFY", False), replies.BAD_PARAMETER)


@pytest.mark.parametrize(
    "value, orcpt",
    [
        ("rfc822;u@b.example", "rfc822;u@b.example"),
        ("RFC822;u@b.example", "rfc822;u@b.example"),
        ("rfc822;a+2Bb@b.example", "rfc822;a+b@b.example"),
        ("rfc822;a+3Db@b.example", "rfc822;a=b@b.example"),
        ("utf-8;jös@b.example", "utf-8;jös@b.example"),  # RFC 6533: not xtext
        ("x-other;thing", "x-other;thing"),
    ],
)
def test_orcpt(value, orcpt):
    rcpt = parse_rcpt(f"TO:<u@b.example> ORCPT={value}", utf8=False)
    assert rcpt.orcpt == orcpt
    assert rcpt.has_params


@pytest.mark.parametrize("value", ["rfc822", ";u@b.example", "rfc822;", "rfc822;a+zz@b.example", "rfc822;a+b"])
def test_orcpt_rejects(value):
    assert same(error_of(parse_rcpt, f"TO:<u@b.example> ORCPT={value}", False), replies.BAD_PARAMETER)


def test_notify_and_orcpt_together():
    rcpt = parse_rcpt("TO:<u@b.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u@b.example", utf8=False)
    assert rcpt.notify == ("SUCCESS", "FAILURE")
    assert rcpt.orcpt == "rfc822;u@b.example"


@pytest.mark.parametrize(
    "params",
    [
        "SIZE=10",  # a MAIL parameter
        "FOO=bar",
        "NOTIFY=NEVER NOTIFY=NEVER",
        "ORCPT=rfc822;a@b ORCPT=rfc822;a@b",
        "NOTIFY=NEVER notify=SUCCESS",
        "NOTIFY==NEVER",
    ],
)
def test_parse_rcpt_bad_params(params):
    assert same(error_of(parse_rcpt, f"TO:<u@b.example> {params}", False), replies.BAD_PARAMETER)
