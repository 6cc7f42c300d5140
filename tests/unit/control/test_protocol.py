"""The control protocol's request parser and its verbs table (pure)."""

import json

import pytest

from empath.control import protocol
from empath.control.protocol import MAX_LINE, VERBS, ProtocolError, parse, scope_of
from empath.control.tokens import ADMIN, OPERATE, READ

QID = "01KAW3V8Y4C0F7QZ"


def req(verb, args=None, **extra) -> bytes:
    data = {"verb": verb, **extra}
    if args is not None:
        data["args"] = args
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"status"', "must be a JSON object"),
        (b"{}", 'no "verb"'),
        (b'{"verb": 7}', 'no "verb"'),
        (req("explode"), "unknown verb 'explode'"),
        (req("status", extra=1), "unknown request field 'extra'"),
        (req("status", token=5), "token must be a string"),
        (req("status", token="x" * 300), "token must be a string"),
        (req("status", []), "args must be a JSON object"),
        (req("status", {"x": 1}), "status: unknown argument 'x' (known: none)"),
        (req("queue-show", {}), "argument 'id' is required"),
        (req("queue-show", {"id": "../x"}), "'../x', not a queue id"),
        (req("queue-show", {"id": "1;id"}), "'1;id', not a queue id"),
        (req("queue-show", {"id": QID.lower()}), "not a queue id"),
        (req("queue-show", {"id": 5}), "not a queue id"),
        (req("queue-show", {"id": QID, "body": "yes"}), "argument 'body' must be true or false"),
        (req("queue-hold", {"ids": [QID, "../etc/passwd"]}), "holds '../etc/passwd', which is not a queue id"),
        (req("queue-hold", {"ids": []}), "must be a list of 1 to"),
        (req("queue-hold", {"ids": QID}), "must be a list of 1 to"),
        (req("queue-hold", {"ids": [QID] * (protocol.MAX_IDS + 1)}), "must be a list of 1 to"),
        (req("queue-hold", {}), "give exactly one of ids, all"),
        (req("queue-hold", {"ids": [QID], "all": True, "confirm": True}), "give exactly one of ids, all"),
        (req("queue-delete", {"all": True}), "needs confirm: true"),
        (req("queue-delete", {"all": False}), "all must be true"),
        (req("queue-retry", {"domain": "a..b"}), "not a domain name"),
        (req("queue-retry", {"domain": "x.test", "all": True, "confirm": True}), "give exactly one of"),
        (req("queue-list", {"state": "lost"}), "argument 'state' must be one of"),
        (req("queue-list", {"older_than": "soon"}), "is not an age"),
        (req("queue-list", {"older_than": True}), "must be an age"),
        (req("queue-list", {"limit": 0}), "whole number from 1"),
        (req("queue-list", {"limit": 2.5}), "whole number from 1"),
        (req("queue-list", {"sender": "a\nb"}), "printable string"),
        (req("log-level", {"level": "loud"}), "must be one of debug"),
        (req("log-level", {}), "argument 'level' is required"),
        (req("domain-set", {"destination": "x.test"}), "give rate, concurrency or both"),
        (req("domain-set", {"destination": "x.test", "rate": "fast"}), "argument 'rate' must be 0"),
        (req("domain-set", {"destination": "x.test", "concurrency": 0}), "whole number from 1"),
        (req("domain-set", {"destination": "x.test", "concurrency": True}), "whole number from 1"),
        (req("breaker-reset", {"destination": "../x"}), "not a domain name"),
        (b"[" * 100000 + b"]" * 100000, "longer than"),
        (b"[" * 30000 + b"]" * 30000, "not usable JSON"),
        (b'{"verb": "status", "args": {"x": ' + b"9" * 5000 + b"}}", "not usable JSON"),
    ],
)
def test_bad_requests_get_clear_errors(line, error):
    with pytest.raises(ProtocolError) as caught:
        parse(line)
    assert error in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_a_line_over_the_cap_is_refused_before_it_is_decoded():
    with pytest.raises(ProtocolError, match=f"longer than {MAX_LINE} bytes"):
        parse(b"{" + b" " * MAX_LINE + b"}")


@pytest.mark.parametrize(
    ("line", "verb", "args"),
    [
        (b'{"verb": "status"}', "status", {}),
        (req("status", {}, token="t0k"), "status", {}),
        (req("queue-show", {"id": QID, "body": True}), "queue-show", {"id": QID, "body": True}),
        (req("queue-hold", {"ids": [QID, QID]}), "queue-hold", {"ids": [QID]}),
        (req("queue-delete", {"all": True, "confirm": True}), "queue-delete", {"all": True, "confirm": True}),
        (req("queue-retry", {"domain": "Bücher.Example."}), "queue-retry", {"domain": "xn--bcher-kva.example"}),
        (
            req("queue-list", {"state": "deferred", "older_than": "2h", "limit": 5, "sender": "<>"}),
            "queue-list",
            {"state": "deferred", "older_than": 7200.0, "limit": 5, "sender": "<>"},
        ),
        (req("queue-list", {"older_than": 90}), "queue-list", {"older_than": 90.0}),
        (req("log-level", {"level": "DEBUG"}), "log-level", {"level": "debug"}),
        (
            req("domain-set", {"destination": "x.test", "rate": "60/m", "concurrency": 2}),
            "domain-set",
            {"destination": "x.test", "rate": 1.0, "concurrency": 2},
        ),
        (
            req("domain-set", {"destination": "smarthost", "rate": "0"}),
            "domain-set",
            {"destination": "smarthost", "rate": 0.0},
        ),
        (req("pause", {"domain": "X.Test"}), "pause", {"domain": "x.test"}),
    ],
)
def test_good_requests_are_checked_and_converted(line, verb, args):
    request = parse(line)
    assert (request.verb, request.args) == (verb, args)


def test_the_token_is_carried_apart_from_the_arguments():
    request = parse(req("stats", token="secret"))
    assert request.token == "secret"
    assert "secret" not in json.dumps(request.args)


def test_scopes_read_only_verbs_need_read_and_the_rest_more():
    assert {name for name, verb in VERBS.items() if verb.scope == READ} == {
        "status",
        "connections",
        "stats",
        "breaker-list",
        "queue-list",
        "queue-show",
        "verify",
    }
    assert VERBS["reload"].scope == ADMIN
    assert VERBS["queue-delete"].scope == OPERATE
    assert all(verb.mutating == (verb.scope != READ) for verb in VERBS.values())


def test_replies_are_one_json_line_each():
    assert protocol.ok({"a": 1}) == b'{"ok": true, "result": {"a": 1}}\n'
    line = protocol.error("bad\nthing")
    assert line.count(b"\n") == 1 and json.loads(line) == {"ok": False, "error": "bad\nthing"}


def test_encode_request_round_trips_through_parse():
    line = protocol.encode_request("queue-hold", {"ids": [QID]}, "tok")
    assert line.endswith(b"\n")
    assert parse(line.rstrip(b"\n")) == protocol.Request("queue-hold", {"ids": [QID]}, "tok")


@pytest.mark.parametrize(
    "args, scope",
    [({}, READ), ({"ask": True}, OPERATE), ({"forget": True}, OPERATE), ({"ask": False}, READ)],
)
def test_verify_looks_with_read_and_asks_or_forgets_with_operate(args, scope):
    request = parse(req("verify", {"address": "<Bob@Office.test>", **args}))
    assert request.args["address"] == "Bob@office.test"
    assert scope_of(request) == scope


@pytest.mark.parametrize("address", ["", "<>", "not an address", "a@", "@b.test", "a@b@c"])
def test_verify_wants_one_address(address):
    with pytest.raises(ProtocolError, match="argument 'address'"):
        parse(req("verify", {"address": address}))
