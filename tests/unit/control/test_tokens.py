"""Tokens and scopes, and how the control server answers a request line (no socket)."""

import hashlib
import json
import logging
from pathlib import Path

import pytest
from config_helpers import said

from empath.config.model import ControlSettings
from empath.control import tokens
from empath.control.protocol import VerbError
from empath.control.server import Caller, ControlServer
from empath.control.settings import problems as control_problems

QID = "01KAW3V8Y4C0F7QZ"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


TOKENS_TEXT = f"""# name:scope:sha256
viewer:read:{sha("look-only")}
ops:operate:{sha("ops-secret")}

root:admin:{sha("all-powerful")}
"""


def test_parse_reads_names_scopes_and_digests():
    parsed = tokens.parse(TOKENS_TEXT)
    assert [(t.name, t.scope) for t in parsed] == [("viewer", "read"), ("ops", "operate"), ("root", "admin")]
    assert tokens.find(parsed, "ops-secret").name == "ops"
    assert tokens.find(parsed, "guess") is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("ops:operate:abc\n", "line 1 is not NAME:read|operate|admin"),
        (f"ops:superuser:{sha('x')}\n", "line 1 is not"),
        (f"# c\nbad name:read:{sha('x')}\n", "line 2 is not"),
        (f"a:read:{sha('x')}\na:admin:{sha('y')}\n", "line 2: the name 'a' is used twice"),
    ],
)
def test_parse_refuses_bad_lines_naming_them(text, error):
    with pytest.raises(tokens.TokensFileError, match=error):
        tokens.parse(text)


def test_scopes_are_ordered_read_operate_admin():
    assert tokens.allows("admin", "read") and tokens.allows("operate", "operate")
    assert not tokens.allows("read", "operate") and not tokens.allows("operate", "admin")


@pytest.mark.parametrize(("mode", "ok"), [(0o600, True), (0o640, True), (0o644, False), (0o660, False), (0o602, False)])
def test_the_tokens_file_must_not_be_open_to_others(tmp_path, mode, ok):
    path = tmp_path / "tokens"
    path.write_text(TOKENS_TEXT)
    path.chmod(mode)
    problems = said(control_problems(ControlSettings(tokens_file=path)))
    if ok:
        assert problems == []
        assert len(tokens.read(path)) == 3
    else:
        assert problems and problems[0].startswith("control.tokens_file: ") and f"{mode:04o}" in problems[0]


def test_a_missing_tokens_file_or_group_is_a_config_problem(tmp_path):
    problems = said(control_problems(ControlSettings(group="no-such-group-here", tokens_file=tmp_path / "absent")))
    assert problems[0] == "control.group: there is no group 'no-such-group-here' on this system"
    assert problems[1].startswith("control.tokens_file: cannot read")


# -- the server's answer to a line --------------------------------------------------


class Recorder:
    def __init__(self, fail: Exception | None = None):
        self.requests = []
        self.fail = fail

    def __call__(self, request):
        self.requests.append(request)
        if self.fail is not None:
            raise self.fail
        return {"messages": 1}


def server(handler, with_tokens: bool = True) -> ControlServer:
    known = tokens.parse(TOKENS_TEXT) if with_tokens else None
    return ControlServer(Path("/nonexistent/control.sock"), None, known, handler)


def answer(srv: ControlServer, verb: str, args=None, token=None) -> dict:
    line = json.dumps({"verb": verb, "args": args or {}, **({"token": token} if token else {})}).encode()
    return json.loads(srv.answer(line, Caller(pid=4242, uid=1000)))


def test_without_a_tokens_file_the_peer_may_do_everything_and_is_named_by_uid(caplog):
    handler = Recorder()
    caplog.set_level(logging.INFO, logger="empath.audit")
    assert answer(server(handler, with_tokens=False), "queue-hold", {"ids": [QID]}) == {
        "ok": True,
        "result": {"messages": 1},
    }
    [record] = [r for r in caplog.records if r.name == "empath.audit"]
    assert record.getMessage() == "control"
    assert record.fields["who"] == "uid:1000" and record.fields["verb"] == "queue-hold"
    assert record.fields["args"] == {"ids": [QID]} and record.fields["result"] == "messages=1"


def test_with_tokens_a_request_needs_a_known_token_of_enough_scope(caplog):
    handler = Recorder()
    srv = server(handler)
    caplog.set_level(logging.INFO, logger="empath.audit")
    assert "wants a token" in answer(srv, "status")["error"]
    assert answer(srv, "status", token="wrong")["error"] == "the token is not known to this daemon"
    denied = answer(srv, "pause", token="look-only")
    assert denied["error"] == "pause needs the operate scope; the token viewer has read"
    assert answer(srv, "status", token="look-only")["ok"]
    assert answer(srv, "pause", token="ops-secret")["ok"]
    assert "needs the admin scope" in answer(srv, "reload", token="ops-secret")["error"]
    assert answer(srv, "reload", token="all-powerful")["ok"]
    assert [r.verb for r in handler.requests] == ["status", "pause", "reload"]
    audit_text = " ".join(f"{r.getMessage()} {r.fields}" for r in caplog.records if r.name == "empath.audit")
    for secret in ("look-only", "ops-secret", "all-powerful", "wrong"):
        assert secret not in audit_text
    assert "'who': 'token:ops'" in audit_text and "control_denied" in audit_text


def test_a_refused_or_failing_verb_is_an_error_reply_and_audited(caplog):
    caplog.set_level(logging.INFO, logger="empath.audit")
    not_paused = Recorder(VerbError("delivery to x.test is not paused"))
    refused = answer(server(not_paused, False), "resume", {"domain": "x.test"})
    assert refused == {"ok": False, "error": "delivery to x.test is not paused"}
    broken = answer(server(Recorder(RuntimeError("boom")), False), "pause")
    assert broken == {"ok": False, "error": "pause failed: boom"}
    results = [r.fields["result"] for r in caplog.records if r.name == "empath.audit"]
    assert results == ["refused: delivery to x.test is not paused", "failed: boom"]


def test_a_bad_line_never_reaches_the_handler():
    handler = Recorder()
    srv = server(handler, with_tokens=False)
    for line in (b"{", b'{"verb": "rm -rf"}', b'{"verb": "queue-show", "args": {"id": "1;id"}}'):
        reply = json.loads(srv.answer(line, Caller(1, 1)))
        assert reply["ok"] is False and reply["error"]
    assert handler.requests == []


def test_a_long_list_of_ids_is_audited_as_its_count(caplog):
    caplog.set_level(logging.INFO, logger="empath.audit")
    ids = [f"01KAW3V8Y4C0F{n:03d}" for n in range(50)]
    assert answer(server(Recorder(), False), "queue-delete", {"ids": ids})["ok"]
    [record] = [r for r in caplog.records if r.name == "empath.audit"]
    assert record.fields["args"]["ids"] == f"50 queue ids, first {ids[0]}"
