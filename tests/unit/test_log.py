"""The log formatters, the audit event and the run-time level change."""

import json
import logging
import re

import pytest

from empath import log
from empath.log import JsonFormatter, TextFormatter, audit, event, reply_code, set_level

DELIVERY = {
    "queue_id": "01M86NXG531A540W",
    "to": "bob@remote.test",
    "domain": "remote.test",
    "relay": "mx.remote.test[192.0.2.1]:25",
    "delay": 0.4,
    "attempt": 1,
    "status": "sent",
    "code": 250,
    "dsn": "2.0.0",
    "reply": "250 2.0.0 ok",
    "next_attempt": None,
    "trace_id": "5f0c",
    "took": 0.1,
}


def record(name: str, logger: str = "empath.delivery", level: int = logging.INFO, **fields) -> logging.LogRecord:
    rec = logging.LogRecord(logger, level, __file__, 1, name, None, None)
    rec.fields = fields
    return rec


def test_text_is_one_line_of_key_value_pairs():
    line = TextFormatter().format(record("queued", "empath.smtp", queue_id="Q1", client="127.0.0.1", **{"from": ""}))
    stamp, level, logger, rest = line.split(" ", 3)
    assert stamp.endswith("Z") and level == "info" and logger == "empath.smtp"
    # An empty value is quoted, so the pairs still parse.
    assert rest == 'queued queue_id=Q1 client=127.0.0.1 from=""'


def test_text_delivery_line_reads_like_postfix():
    line = TextFormatter().format(record("delivery", **DELIVERY))
    assert line.split(" ", 3)[3] == (
        "delivery queue_id=01M86NXG531A540W to=<bob@remote.test> relay=mx.remote.test[192.0.2.1]:25"
        " delay=0.4 attempt=1 dsn=2.0.0 status=sent (250 2.0.0 ok) trace_id=5f0c took=0.1"
    )


def test_text_delivery_line_of_a_local_failure():
    fields = {**DELIVERY, "relay": "none", "status": "deferred", "code": None, "dsn": "4.4.1"}
    fields.update(reply="connect: cannot connect:\nrefused", next_attempt=300)
    line = TextFormatter().format(record("delivery", level=logging.WARNING, **fields))
    assert "\n" not in line
    assert " relay=none " in line
    assert " dsn=4.4.1 status=deferred (connect: cannot connect: refused) next_attempt=300 " in line


def test_an_event_named_delivery_elsewhere_is_not_rewritten():
    line = TextFormatter().format(record("delivery", "empath.other", to="a@b.test"))
    assert line.endswith("delivery to=a@b.test")


def test_text_reject_line_reads_like_postfix():
    fields = dict(command="RCPT", client="192.0.2.1", code=554, dsn="5.7.1", reply="Relay access denied")
    fields |= {"helo": "evil.test", "from": "a@far.test", "to": "x@else.test", "user": None, "listener": "smtp@[::]:25"}
    line = TextFormatter().format(record("reject", "empath.smtp", **fields, trace_id="5f0c"))
    assert line.split(" ", 3)[3] == (
        "reject RCPT from unknown[192.0.2.1]: 554 5.7.1 Relay access denied;"
        " from=<a@far.test> to=<x@else.test> helo=<evil.test> listener=smtp@[::]:25 trace_id=5f0c"
    )
    # A refusal before any command, with neither status nor addresses.
    line = TextFormatter().format(
        record("reject", "empath.smtp", command="CONNECT", client="::1", code=421, reply="Go")
    )
    assert line.endswith(" empath.smtp reject CONNECT from unknown[::1]: 421 Go;")


def test_json_keeps_structured_fields():
    data = json.loads(JsonFormatter().format(record("delivery", **DELIVERY)))
    assert data.pop("time").endswith("Z")
    expected = {k: v for k, v in DELIVERY.items() if v is not None}
    assert data == {"level": "info", "logger": "empath.delivery", "event": "delivery", **expected}


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("250 2.0.0 ok", 250),
        ("450-4.2.1 busy", 450),
        ("554", 554),
        ("connect: cannot connect: refused", None),
        ("gave up after 5 days in the queue; last error: 450 4.2.1 busy", None),
        ("", None),
        (None, None),
        ("2500 not a code", None),
    ],
)
def test_reply_code(reply, code):
    assert reply_code(reply) == code


@pytest.fixture
def captured():
    """The root logger at WARNING, writing JSON into a list, restored afterwards."""
    lines: list[str] = []

    class ListHandler(logging.Handler):
        def emit(self, rec: logging.LogRecord) -> None:
            lines.append(self.format(rec))

    root = logging.getLogger()
    handler = ListHandler()
    handler.setFormatter(JsonFormatter())
    saved = root.level
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    yield lines
    root.removeHandler(handler)
    root.setLevel(saved)


def test_set_level_changes_what_is_written_at_run_time(captured):
    logger = logging.getLogger("empath.test")
    event(logger, "hidden", level=logging.INFO)
    set_level("info")
    event(logger, "shown", level=logging.INFO)
    event(logger, "hidden_debug", level=logging.DEBUG)
    set_level("DEBUG")
    event(logger, "shown_debug", level=logging.DEBUG)
    set_level("error")
    event(logger, "hidden_warning", level=logging.WARNING)
    assert [json.loads(line)["event"] for line in captured] == ["shown", "shown_debug"]


def test_set_level_refuses_an_unknown_name():
    before = logging.getLogger().level
    with pytest.raises(ValueError, match="unknown log level 'loud'"):
        set_level("loud")
    assert logging.getLogger().level == before


def test_audit_events_are_marked_and_pass_any_level(captured):
    set_level("error")
    audit("auth", client="127.0.0.1", user="alice", mechanism="PLAIN", result="success")
    [line] = captured
    data = json.loads(line)
    assert data["logger"] == "empath.audit" and data["event"] == "auth" and data["audit"] is True
    assert (data["user"], data["mechanism"], data["result"]) == ("alice", "PLAIN", "success")


def test_text_audit_line_is_marked():
    line = TextFormatter().format(record("auth", "empath.audit", user="alice", result="failure", audit=True))
    assert line.endswith("empath.audit auth user=alice result=failure audit=true")


def test_levels_are_the_config_names():
    assert list(log.LEVELS) == ["debug", "info", "warning", "error"]


@pytest.mark.parametrize(
    ("name", "logger", "fields"),
    [
        ("delivery", "empath.delivery", DELIVERY),
        (
            "reject",
            "empath.smtp",
            {
                "command": "RCPT",
                "client": "192.0.2.1",
                "code": 554,
                "dsn": "5.7.1",
                "reply": "Relay access denied",
                "helo": "h.test",
                "from": "a@b.test",
                "to": "x@y.test",
                "listener": "smtp@[::]:25",
            },
        ),
    ],
)
def test_the_two_formats_use_one_vocabulary(name, logger, fields):
    # Every name the text line shows (to=, dsn=, status=, from=, …) is a field of the JSON line.
    text = TextFormatter().format(record(name, logger, **fields))
    data = json.loads(JsonFormatter().format(record(name, logger, **fields)))
    shown = set(re.findall(r" ([a-z_]+)=", text))
    assert shown and shown <= set(data), shown - set(data)
