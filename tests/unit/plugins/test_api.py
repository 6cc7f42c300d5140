"""Plug-in decisions and the message header helpers (empath.plugins.api): pure, no I/O."""

import io
import tracemalloc

import pytest

from empath.plugins.api import (
    Accept,
    Context,
    DecisionError,
    Headers,
    Reject,
    apply_headers,
    body_offset,
    parse_headers,
    validate,
)

MESSAGE = (
    b"From: alice@example.test\r\n"
    b"Subject: a long\r\n"
    b"\tfolded subject\r\n"
    b"X-Empath-Tag: forged\r\n"
    b"To: bob@example.test\r\n"
    b"\r\n"
    b"Subject: not a header, the body\r\n"
)


# -- Reject ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "code, status, text",
    [(550, "5.7.1", "Go away"), (451, "4.7.1", "Try later"), (554, "5.0.0", "x"), (421, "4.3.2", "Closing")],
)
def test_reject_of_the_right_shape(code, status, text):
    reject = Reject(code, status, text)
    assert validate(reject, "rcpt") is reject
    assert reject.temporary == (code < 500)


@pytest.mark.parametrize(
    "code, status, text, why",
    [
        (250, "2.0.0", "OK", "4xx or 5xx"),
        (600, "5.0.0", "x", "4xx or 5xx"),
        (570, "5.0.0", "x", "4xx or 5xx"),  # second digit above 5
        (True, "5.0.0", "x", "4xx or 5xx"),
        ("550", "5.7.1", "x", "4xx or 5xx"),
        (550, "4.7.1", "x", "class of code"),
        (451, "5.7.1", "x", "class of code"),
        (550, "5.7", "x", "class of code"),
        (550, "", "x", "class of code"),
        (550, "5.7.1", "", "one line"),
        (550, "5.7.1", "  ", "one line"),
        (550, "5.7.1", "two\r\n250 lines", "one line"),
        (550, "5.7.1", "bare\nLF", "one line"),
        (550, "5.7.1", "tab\there", "one line"),
        (550, "5.7.1", "caf\u00e9", "one line"),
        (550, "5.7.1", "x" * 401, "one line"),
        (550, "5.7.1", b"bytes", "one line"),
    ],
)
def test_reject_of_the_wrong_shape_fails_when_made(code, status, text, why):
    with pytest.raises(DecisionError, match=why):
        Reject(code, status, text)


def test_a_reject_changed_after_it_was_made_is_caught_by_validate():
    reject = Reject(550, "5.7.1", "fine")
    object.__setattr__(reject, "text", "injected\r\n250 OK")
    with pytest.raises(DecisionError):
        validate(reject, "mail")


# -- Headers -----------------------------------------------------------------------------


def test_headers_take_lists_and_keep_tuples():
    h = Headers(add=[["X-One", "1"]], replace=[("X-Two", "")])
    assert h.add == (("X-One", "1"),) and h.replace == (("X-Two", ""),)
    assert validate(h, "data") is h


@pytest.mark.parametrize(
    "add",
    [
        [("X-Bad", "value\r\nBcc: victim@example.test")],
        [("X-Bad", "value\nx")],
        [("X-Bad", "nul\x00")],
        [("X-Bad", "caf\u00e9")],
        [("X Bad", "space in the name")],
        [("X-Bad:", "colon in the name")],
        [("", "empty name")],
        [("X-" + "a" * 80, "name too long")],
        [("X-Long", "v" * 1000)],
        [("X-Bad", 3)],
        [("X-Bad",)],
        "X-Bad: a string",
        [],
    ],
)
def test_headers_of_the_wrong_shape_fail_when_made(add):
    with pytest.raises(DecisionError):
        Headers(add=add)


@pytest.mark.parametrize("hook", ["connect", "helo", "mail", "rcpt", "before_delivery"])
def test_headers_are_a_decision_for_the_data_hook_only(hook):
    with pytest.raises(DecisionError, match="data hook only"):
        validate(Headers(add=[("X-A", "b")]), hook)


@pytest.mark.parametrize("garbage", ["550 no", 550, ("550", "5.7.1", "x"), True, Accept, object(), b"", [None]])
def test_anything_else_is_not_a_decision(garbage):
    with pytest.raises(DecisionError, match="not None, Accept, Reject or Headers"):
        validate(garbage, "rcpt")


@pytest.mark.parametrize("decision", [None, Accept()])
def test_no_opinion_and_accept_are_decisions(decision):
    assert validate(decision, "connect") == decision


# -- the header of a message ---------------------------------------------------------------


def test_parse_headers_unfolds_and_stops_at_the_body():
    assert parse_headers(MESSAGE) == (
        ("From", "alice@example.test"),
        ("Subject", "a long folded subject"),
        ("X-Empath-Tag", "forged"),
        ("To", "bob@example.test"),
    )
    ctx = Context("data", "t", headers=parse_headers(MESSAGE), message=MESSAGE)
    assert ctx.header("subject") == ["a long folded subject"]
    assert ctx.header("Cc") == []


def test_body_is_a_view_after_the_blank_line():
    ctx = Context("data", "t", message=MESSAGE)
    assert isinstance(ctx.body, memoryview)
    assert bytes(ctx.body) == b"Subject: not a header, the body\r\n"
    assert body_offset(b"\r\nbody only\r\n") == 2
    assert body_offset(b"Subject: no body\r\n") == len(b"Subject: no body\r\n")


def test_reading_a_big_message_through_the_context_copies_nothing():
    message = b"Subject: big\r\n\r\n" + (b"y" * 78 + b"\r\n") * 300_000  # 24 MB
    tracemalloc.start()
    try:
        ctx = Context("data", "t", message=message)
        view = ctx.body
        as_file = io.BytesIO(ctx.message)  # shares the bytes object until written to
        as_file.seek(-5, io.SEEK_END)
        tail = as_file.read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ctx.message is message
    assert tail == b"yyy\r\n" and len(view) == len(message) - 16
    assert peak < 1_000_000, peak


def test_apply_headers_adds_on_top_and_leaves_the_body():
    out = apply_headers(MESSAGE, [Headers(add=[("X-A", "1")]), Headers(add=[("X-B", "2")])])
    assert out == b"X-A: 1\r\nX-B: 2\r\n" + MESSAGE


def test_apply_headers_replaces_every_field_of_that_name_with_its_folds():
    out = apply_headers(MESSAGE, [Headers(replace=[("x-empath-tag", "real"), ("Subject", "new")])])
    assert out == (
        b"x-empath-tag: real\r\nSubject: new\r\n"
        b"From: alice@example.test\r\n"
        b"To: bob@example.test\r\n"
        b"\r\n"
        b"Subject: not a header, the body\r\n"
    )


def test_apply_no_edits_returns_the_same_object():
    assert apply_headers(MESSAGE, []) is MESSAGE
