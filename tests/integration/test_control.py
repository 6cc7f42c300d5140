"""The control socket and empathctl against a real daemon: every verb, bad requests, reload,
pause and resume, tokens and the audit log, and empathctl with the daemon down."""

import contextlib
import hashlib
import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import time

import pytest
from peer import Peer
from support import empathctl, free_port, send_message, wait_for

from empath.control import sockfile


def ok(daemon, *args: str, env: dict | None = None) -> str:
    result = empathctl(daemon, *args, env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def fails(daemon, *args: str, fragment: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = empathctl(daemon, *args, env=env)
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    assert fragment in result.stderr, result.stderr
    return result


def as_json(daemon, *args: str, env: dict | None = None):
    return json.loads(ok(daemon, *args, "--json", env=env))


def result(daemon, verb: str, args: dict | None = None):
    reply = daemon.control(verb, args)
    assert reply["ok"], reply
    return reply["result"]


def rcpt_code(daemon, address: str) -> int:
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=30) as client:
        client.ehlo("client.test")
        client.mail("alice@sender.test")
        return client.rcpt(address)[0]


@pytest.mark.smoke
def test_read_verbs_status_connections_stats_queue_and_breakers(make_daemon):
    d = make_daemon(tls=False).start()
    queue_id = send_message(d, ["bob@local.test"], "first")
    with smtplib.SMTP("127.0.0.1", d.ports.smtp, timeout=30) as open_session:
        open_session.ehlo("probe.test")
        status = as_json(d, "status")
        assert status["pid"] == d.proc.pid and status["version"]
        assert status["listeners"] == [f"smtp@127.0.0.1:{d.ports.smtp}"]
        assert status["sessions"] == 1 and status["delivery"]["paused"] is False
        assert sum(status["queue"].values()) == 1
        assert "listeners:  smtp@127.0.0.1" in ok(d, "status")
        [session] = as_json(d, "connections")
        assert (session["client"], session["state"], session["helo"]) == ("127.0.0.1", "ready", "probe.test")
        assert session["listener"] == f"smtp@127.0.0.1:{d.ports.smtp}" and session["tls"] is None
        assert "probe.test" in ok(d, "connections")
    assert as_json(d, "stats")["received"] == 1
    assert "received: 1" in ok(d, "stats")

    assert [m["queue_id"] for m in as_json(d, "queue", "list")] == [queue_id]
    assert queue_id in ok(d, "queue", "list", "--domain", "local.test")
    assert ok(d, "queue", "list", "--sender", "nobody@else.test") == "Mail queue is empty\n"
    shown = ok(d, "queue", "show", queue_id, "--body")
    assert f"Queue ID:   {queue_id}" in shown and "<bob@local.test>" in shown and "body of first" in shown
    assert as_json(d, "queue", "show", queue_id)["recipients"][0]["address"] == "bob@local.test"
    fails(d, "queue", "show", "01KAW3V8Y4C0F7QZ", fragment="no message 01KAW3V8Y4C0F7QZ")

    # Nothing listens on the route's port: the attempt fails to connect, and the breaker counts it.
    breakers = wait_for(lambda: result(d, "breaker-list"), what="a breaker for local.test")
    assert breakers[0]["destination"] == "local.test" and breakers[0]["failures"] >= 1
    assert "local.test" in ok(d, "breaker", "list")
    assert "closed (was closed)" in ok(d, "breaker", "reset", "local.test")
    fails(d, "breaker", "reset", "nowhere.test", fragment="no circuit breaker for nowhere.test")


def test_queue_actions_hold_release_retry_delete(make_daemon):
    d = make_daemon(tls=False).start()
    first, second = send_message(d, ["bob@local.test"], "one"), send_message(d, ["carol@example.test"], "two")
    assert ok(d, "queue", "hold", first) == "1 message held\n"
    assert [m["queue_id"] for m in as_json(d, "queue", "list", "--state", "held")] == [first]
    assert d.query("SELECT state FROM recipient WHERE queue_id = ?", first) == [("held",)]
    assert ok(d, "queue", "release", first) == "1 message released\n"
    assert d.query("SELECT state FROM recipient WHERE queue_id = ?", first) != [("held",)]
    ok(d, "queue", "retry", "--domain", "example.test")
    ok(d, "queue", "retry", second)
    assert ok(d, "queue", "delete", first) == "1 message deleted\n"
    assert [qid for qid, _ in d.messages()] == [second]
    fails(d, "queue", "delete", "--all", fragment="add --yes to confirm")
    fails(d, "queue", "hold", fragment="give queue ids or --all --yes")
    fails(d, "queue", "hold", "../x", fragment="'../x', which is not a queue id")
    assert [qid for qid, _ in d.messages()] == [second]
    assert ok(d, "queue", "delete", "--all", "--yes") == "1 message deleted\n"
    assert d.messages() == []
    assert "no longer in the queue" in ok(d, "queue", "show", first)
    log = d.log()
    for verb in ("queue-hold", "queue-release", "queue-retry", "queue-delete"):
        assert re.search(rf"empath\.audit control who=uid:{os.getuid()} .*verb={verb} ", log), verb
    assert 'result="messages=1" via=socket' in log


def test_runtime_settings_log_level_and_domain_limits(make_daemon):
    d = make_daemon(tls=False).start()
    assert ok(d, "log-level", "warning") == "log level: warning\n"
    fails(d, "log-level", "loud", fragment="must be one of debug, info, warning, error")
    assert "rate 2/s, concurrency 3 (until restart or reload)" in ok(
        d, "domain", "set", "local.test", "rate=120/m", "concurrency=3"
    )
    assert as_json(d, "status")["delivery"]["overrides"] == {"local.test": {"rate": 2.0, "concurrency": 3}}
    fails(d, "domain", "set", "local.test", "speed=9", fragment="give rate=VALUE or concurrency=N")
    ok(d, "reload")
    assert as_json(d, "status")["delivery"]["overrides"] == {}  # a reload ends the overrides


def test_bad_requests_get_error_replies_while_smtp_goes_on(make_daemon):
    d = make_daemon(tls=False).start()
    with smtplib.SMTP("127.0.0.1", d.ports.smtp, timeout=30) as client:
        client.ehlo("client.test")
        assert client.mail("alice@sender.test")[0] == 250
        for raw, fragment in [
            (b"{not json\n", "not valid JSON"),
            (b'{"verb": "explode"}\n', "unknown verb 'explode'"),
            (b'{"verb": "queue-show", "args": {"id": "../x"}}\n', "'../x', not a queue id"),
            (b'{"verb": "queue-hold", "args": {"ids": ["1;id"]}}\n', "'1;id', which is not a queue id"),
            (b"\xff\n", "not UTF-8"),
        ]:
            reply = d.control("", raw=raw)
            assert reply["ok"] is False and fragment in reply["error"], reply

        # A line of a megabyte: refused once the cap is passed, and the connection closed.
        with sockfile.connect(d.control_socket, timeout=10) as sock:
            # The daemon stops reading at the cap and closes; its reply is already here.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(b"x" * 1_000_000)
            reply = json.loads(sock.recv(65536).split(b"\n")[0])
        assert reply == {"ok": False, "error": "request longer than 65536 bytes; closing"}

        # Idle clients up to the cap; the next one is told, and served again once they go.
        idle = [sockfile.connect(d.control_socket, timeout=10) for _ in range(16)]
        try:
            assert "too many control connections" in d.control("status")["error"]
        finally:
            for sock in idle:
                sock.close()
        wait_for(lambda: d.control("status")["ok"], what="the control socket to serve again")

        assert client.rcpt("bob@local.test")[0] == 250
        assert client.data(b"Subject: still here\r\n\r\nok\r\n")[0] == 250
    assert d.proc.poll() is None


def test_reload_refuses_a_bad_config_and_applies_a_good_one(make_daemon):
    d = make_daemon(tls=False).start()
    assert rcpt_code(d, "someone@new.test") >= 500  # not local, and this client may not relay

    d.sections["limits"] = {"max_recipients": "many"}
    d.write_config()
    line = next(n for n, text in enumerate(d.config_path.read_text().splitlines(), 1) if "max_recipients" in text)
    # empathctl reads the config too, and names the problem before asking the daemon;
    fails(d, "reload", fragment=f"limits.max_recipients (line {line}): must be an integer")
    # asked all the same, the daemon refuses and keeps its config.
    refused = d.control("reload")
    assert refused["ok"] is False
    assert refused["error"].splitlines() == [
        "the config was not reloaded; the running one stays:",
        f"limits.max_recipients (line {line}): must be an integer",
    ]
    assert d.proc.poll() is None and result(d, "status")["restart_needed"] == []
    assert rcpt_code(d, "someone@local.test") == 250  # the old config serves on
    assert re.search(r"empath\.audit reload config=\S+ result=refused problems=", d.log())

    del d.sections["limits"]
    d.sections["relay"] = {"local_domains": ["local.test", "example.test", "new.test"]}
    d.sections["server"] = {"metrics_address": f"127.0.0.1:{free_port()}"}
    d.write_config()
    assert "these changes wait for a restart: metrics_address" in ok(d, "reload")
    assert rcpt_code(d, "someone@new.test") == 250
    assert as_json(d, "status")["restart_needed"] == ["metrics_address"]
    assert "empath.audit reload" in d.log() and "result=applied restart_needed=" in d.log()


def test_sighup_reloads_and_a_bad_config_on_sighup_keeps_the_old_one(make_daemon):
    d = make_daemon(tls=False).start()
    d.sections["relay"] = {"local_domains": ["local.test", "hup.test"]}
    d.write_config()
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_for(lambda: rcpt_code(d, "x@hup.test") == 250, what="the SIGHUP reload")

    d.sections["relay"] = {"local_domains": "not a list"}
    d.write_config()
    os.kill(d.proc.pid, signal.SIGHUP)
    wait_for(lambda: "SIGHUP: the config was not reloaded" in d.log(), what="the refused SIGHUP reload")
    assert d.proc.poll() is None
    assert rcpt_code(d, "x@hup.test") == 250


def test_pause_and_resume_delivery(make_daemon):
    with Peer("127.0.0.11") as peer:
        route = {"route": [f"127.0.0.11:{peer.port}"]}
        d = make_daemon(tls=False, **{'domains."local.test"': route, 'domains."example.test"': route}).start()

        # One domain paused: the other recipient of the same message goes, this one waits, queued.
        assert "paused for local.test" in ok(d, "pause", "local.test")
        queue_id = send_message(d, ["bob@local.test", "carol@example.test"], "split")
        [first] = peer.wait_for_transactions(1)
        assert first.recipients == ["carol@example.test"]

        def bob():
            recipients = result(d, "queue-show", {"id": queue_id})["recipients"]
            [r] = [r for r in recipients if r["address"] == "bob@local.test"]
            return r

        wait_for(lambda: "paused by the operator" in (bob()["last_reply"] or ""), what="bob put back")
        assert bob()["attempts"] == 0 and len(peer.transactions) == 1
        assert as_json(d, "status")["delivery"]["paused_domains"] == ["local.test"]
        fails(d, "resume", "example.test", fragment="delivery to example.test is not paused")
        assert "due now: the mail of local.test" in ok(d, "resume", "local.test")
        second = peer.wait_for_transactions(2)[1]
        assert second.recipients == ["bob@local.test"]

        # Everything paused: new mail stays queued until resume.
        assert ok(d, "pause") == "delivery: PAUSED (all)\n"
        held_back = send_message(d, ["dave@example.test"], "later")
        time.sleep(1.0)  # an absence can only be seen over a window: the scheduler was woken by the commit
        assert len(peer.transactions) == 2
        assert [m["queue_id"] for m in result(d, "queue-list", {"state": "queued"})] == [held_back]
        ok(d, "resume")
        assert peer.wait_for_transactions(3)[2].recipients == ["dave@example.test"]
        log = d.log()
        assert "verb=pause args=\"{'domain': 'local.test'}\"" in log and "verb=resume" in log


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_tokens_scopes_and_an_audit_log_without_secrets(make_daemon, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text(f"viewer:read:{sha256('viewer-Secret-1')}\nops:operate:{sha256('ops-Secret-2')}\n")
    tokens.chmod(0o600)
    d = make_daemon(tls=False, control={"tokens_file": str(tokens)}).start()
    ops_file = tmp_path / "ops.token"
    ops_file.write_text("ops-Secret-2\n")

    fails(d, "status", fragment="this daemon wants a token")
    fails(d, "status", env={"EMPATH_TOKEN": "guess"}, fragment="the token is not known to this daemon")
    assert as_json(d, "status", env={"EMPATH_TOKEN": "viewer-Secret-1"})["pid"] == d.proc.pid
    fails(d, "pause", env={"EMPATH_TOKEN": "viewer-Secret-1"}, fragment="pause needs the operate scope")
    # The mail itself is more than a look at the queue: a read token sees envelopes, not bodies.
    queue_id = send_message(d, ["bob@local.test"], "private")
    viewer = {"EMPATH_TOKEN": "viewer-Secret-1"}
    assert queue_id in ok(d, "queue", "show", queue_id, env=viewer)
    fails(d, "queue", "show", queue_id, "--body", env=viewer, fragment="queue-show needs the operate scope")
    assert "body of private" in ok(d, "queue", "show", queue_id, "--body", "--token-file", str(ops_file))
    ok(d, "pause", "--token-file", str(ops_file))
    ok(d, "resume", "--token-file", str(ops_file))
    fails(d, "reload", "--token-file", str(ops_file), fragment="reload needs the admin scope; the token ops has")

    log = d.log()
    assert "empath.audit control who=token:ops" in log and "verb=pause" in log
    assert "control_denied who=uid:" in log and "token viewer has read" in log
    for secret in ("viewer-Secret-1", "ops-Secret-2", "guess"):
        assert secret not in log


def test_empathctl_with_the_daemon_down(make_daemon):
    d = make_daemon(tls=False).start()
    queue_id = send_message(d, ["bob@local.test"], "offline")
    # Its first attempt (to a port where nothing listens) recorded before the stop, for the stats below.
    deferred = [("deferred",)]
    wait_for(lambda: d.query("SELECT state FROM recipient WHERE queue_id = ?", queue_id) == deferred, what="deferral")
    assert d.stop() == 0
    assert not d.control_socket.exists()  # removed at a clean stop

    started = time.monotonic()
    down = fails(d, "status", fragment="the daemon is not running")
    assert len(down.stderr.splitlines()) == 1
    fails(d, "connections", fragment="the daemon is not running")
    assert time.monotonic() - started < 10

    listed = empathctl(d, "queue", "list")
    assert listed.returncode == 0 and queue_id in listed.stdout
    assert "using the queue database directly" in listed.stderr
    assert "<bob@local.test>" in ok(d, "queue", "show", queue_id)
    stats = ok(d, "stats")
    assert "from the queue database (the daemon is down)" in stats
    assert re.search(r"^recipients: .*\bdeferred 1\b", stats, re.M) and "last hour: received 1," in stats
    assert ok(d, "queue", "hold", queue_id) == "1 message held\n"
    fails(d, "queue", "show", "0000000000000000", fragment="no message 0000000000000000")
    assert re.search(r"empath\.audit control who=uid:\d+ .*verb=queue-hold .*via=database", d.log())

    d.start()
    assert [m["queue_id"] for m in result(d, "queue-list", {"state": "held"})] == [queue_id]


def test_a_daemon_that_does_not_answer_makes_empathctl_fail_fast(make_daemon):
    d = make_daemon(tls=False)
    d.data_dir.mkdir(parents=True)
    mute = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    mute.bind(str(d.control_socket))
    mute.listen(4)  # accepts into the backlog, never reads or replies
    try:
        d.write_config()
        started = time.monotonic()
        fails(d, "status", "--timeout", "1", fragment="no reply from the daemon within 1s")
        assert time.monotonic() - started < 10
    finally:
        mute.close()


def test_a_second_daemon_never_takes_a_live_control_socket(make_daemon):
    first = make_daemon(tls=False).start()
    second = make_daemon(tls=False, control={"socket": str(first.control_socket)})
    second.start(wait=False)
    assert second.proc.wait(20) == 1
    _, err = second.proc.communicate()
    assert "another daemon answers on the control socket" in err.decode()
    assert "Traceback" not in err.decode()
    assert result(first, "status")["pid"] == first.proc.pid


@pytest.mark.parametrize("verb", ["stats", "breaker-list"])
def test_daemon_only_read_verbs_need_the_daemon(make_daemon, verb):
    d = make_daemon(tls=False)
    d.write_config()
    words = verb.split("-")
    fails(d, *words, fragment="the daemon is not running")


def test_a_killed_daemons_socket_is_replaced_at_the_next_start(make_daemon):
    d = make_daemon(tls=False).start()
    d.kill()
    assert d.control_socket.exists()  # left behind, and nobody answers on it
    assert empathctl(d, "status").returncode == 1
    d.start()
    assert result(d, "status")["pid"] == d.proc.pid


def test_connections_show_tls_and_the_authenticated_user(make_daemon, certs):
    d = make_daemon()
    d.add_user("alice", "pw-alice")
    d.start()
    with smtplib.SMTP_SSL("127.0.0.1", d.ports.smtps, context=certs.client_context(), timeout=30) as client:
        client.ehlo("laptop.test")
        client.login("alice", "pw-alice")
        [session] = result(d, "connections")
        assert session["tls"] in ("TLSv1.2", "TLSv1.3") and session["user"] == "alice"
        assert session["listener"] == f"smtps@127.0.0.1:{d.ports.smtps}"


def relay(daemon, rcpt: str) -> None:
    """Send a message from the test config's trusted network, which may relay."""
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=30, source_address=("127.0.0.2", 0)) as client:
        assert client.sendmail("alice@sender.test", [rcpt], b"Subject: x\r\n\r\nhi\r\n") == {}


def test_every_number_says_what_it_counts_and_every_waiting_message_why(make_daemon):
    # status counted delivered rows (always 0) beside stats' 5 delivered; a domain set on a
    # smarthost-routed domain did nothing; mail held by a rate limit said nothing in mailq.
    with Peer("127.0.0.11") as peer:
        daemon = make_daemon(
            smarthost={"hosts": [f"127.0.0.11:{peer.port}"], "tls": "none"},
            **{'domains."slow.test"': {"route": [f"127.0.0.11:{peer.port}"], "rate": "1/h"}},
        ).start()
        relay(daemon, "bob@remote.test")
        peer.wait_for_transactions(1)
        wait_for(lambda: as_json(daemon, "status")["queue"] == {"queued": 0, "deferred": 0, "held": 0}, what="empty")
        assert "queue:      0 recipients waiting: queued 0, deferred 0, held 0" in ok(daemon, "status")
        assert "recipients delivered: 1\n" in ok(daemon, "stats")

        fails(
            daemon, "domain", "set", "remote.test", "rate=1/m", fragment="remote.test's mail goes through the smarthost"
        )
        assert "smarthost: rate 1/m" in ok(daemon, "domain", "set", "smarthost", "rate=1/m")

        relay(daemon, "first@slow.test")  # the hour's one goes
        peer.wait_for_transactions(2)
        relay(daemon, "second@slow.test")
        wait_for(lambda: "waiting for the rate limit of slow.test (1/h)" in ok(daemon, "queue", "list"), what="why")
