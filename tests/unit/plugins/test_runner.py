"""The plug-in runner (empath.plugins.runner) with plain functions: order, accept,
reject, header edits, and every way a plug-in can fail. No sockets."""

import logging
import threading

import gevent
import pytest

from empath.plugins.api import Accept, Context, Headers, Reject
from empath.plugins.runner import PASS, Plugin, Runner

CTX = Context("rcpt", "trace0", client_address="192.0.2.1", recipient="bob@example.test")


@pytest.fixture
def runner():
    return Runner(pool_size=4)


def plugin(name, fn, **kw) -> Plugin:
    return Plugin(name, fn, **{"timeout": 2.0, **kw})


def test_no_plugins_pass(runner):
    assert runner.run([], CTX) == PASS
    assert PASS.passed


def test_plugins_run_in_order_until_one_rejects(runner):
    seen = []

    def note(name, result=None):
        def hook(ctx):
            seen.append((name, ctx.recipient))
            return result

        return hook

    verdict = runner.run(
        [plugin("a", note("a")), plugin("b", note("b", Reject(550, "5.1.1", "No such user"))), plugin("c", note("c"))],
        CTX,
    )
    assert seen == [("a", "bob@example.test"), ("b", "bob@example.test")]
    assert verdict.reject == Reject(550, "5.1.1", "No such user") and verdict.by == "b"
    assert not verdict.passed and not verdict.failed


def test_accept_skips_the_later_plugins(runner):
    later = []
    verdict = runner.run([plugin("ok", lambda ctx: Accept()), plugin("never", later.append)], CTX)
    assert verdict == PASS and later == []


def test_each_plugin_sees_its_own_options(runner):
    seen = []
    runner.run(
        [
            plugin("a", lambda ctx: seen.append(dict(ctx.options)), options={"file": "/a"}),
            plugin("b", lambda ctx: seen.append(dict(ctx.options)), options={"file": "/b"}),
        ],
        CTX,
    )
    assert seen == [{"file": "/a"}, {"file": "/b"}]


def test_header_edits_of_every_plugin_are_collected(runner):
    data = Context("data", "t")
    one, two = Headers(add=[("X-A", "1")]), Headers(replace=[("X-B", "2")])
    chain = [plugin("a", lambda ctx: one), plugin("b", lambda ctx: None), plugin("c", lambda ctx: two)]
    verdict = runner.run(chain, data)
    assert verdict.passed and verdict.headers == (one, two)


def test_plugins_run_off_the_hub_thread(runner):
    threads = []
    runner.run([plugin("a", lambda ctx: threads.append(threading.get_ident()))], CTX)
    assert threads and threads[0] != threading.get_ident()


def failing(exc):
    def hook(ctx):
        raise exc

    return hook


@pytest.mark.parametrize(
    "fn, logged",
    [
        (failing(KeyError("file")), "KeyError: 'file'"),
        (failing(SystemExit(3)), "SystemExit: 3"),
        (failing(KeyboardInterrupt()), "KeyboardInterrupt"),
        (lambda ctx: "550 go away", "returned str"),
        (lambda ctx: Reject, "returned type"),
        (lambda ctx: Headers(add=[("X-A", "1")]), "data hook only"),
        (lambda ctx: Reject(250, "2.0.0", "OK"), "4xx or 5xx"),
        (lambda ctx: Headers(add=[("X-A", "a\r\nBcc: x@example.test")]), "printable ASCII"),
    ],
)
def test_a_failing_plugin_tempfails_and_is_logged_by_name(runner, caplog, fn, logged):
    later = []
    with caplog.at_level(logging.ERROR, logger="empath.plugins"):
        verdict = runner.run([plugin("broken", fn), plugin("later", later.append)], CTX)
    assert verdict.failed and verdict.by == "broken" and verdict.reject is None
    assert later == []  # failing closed: nothing after it decides
    [record] = [r for r in caplog.records if r.getMessage() == "plugin_error"]
    fields = record.fields
    assert fields["plugin"] == "broken" and fields["hook"] == "rcpt" and fields["trace_id"] == "trace0"
    assert logged in fields["error"]


def test_a_failing_plugin_that_fails_open_is_skipped(runner, caplog):
    verdict = runner.run(
        [
            plugin("broken", failing(OSError("gone")), fail_open=True),
            plugin("next", lambda ctx: Reject(550, "5.7.1", "no")),
        ],
        CTX,
    )
    assert verdict.reject == Reject(550, "5.7.1", "no") and verdict.by == "next"
    assert any(r.getMessage() == "plugin_error" and r.fields["fail_open"] for r in caplog.records)


def test_a_blocking_plugin_times_out_and_the_hub_keeps_running(runner, caplog):
    release = threading.Event()
    ticks = []

    def tick():
        while True:
            gevent.sleep(0.01)
            ticks.append(1)

    ticker = gevent.spawn(tick)
    try:
        verdict = runner.run([plugin("stuck", lambda ctx: release.wait(30), timeout=0.2)], CTX)
    finally:
        release.set()
        ticker.kill()
    assert verdict.failed and verdict.by == "stuck"
    assert len(ticks) >= 5  # other greenlets ran while the plug-in blocked its thread
    [record] = [r for r in caplog.records if r.getMessage() == "plugin_error"]
    assert record.fields["error"] == "timeout: no answer within 0.2s"


def test_a_cpu_bound_plugin_times_out(runner):
    stop = threading.Event()

    def spin(ctx):
        while not stop.is_set():
            sum(range(1000))

    try:
        verdict = runner.run([plugin("spin", spin, timeout=0.2)], CTX)
    finally:
        stop.set()
    assert verdict.failed and verdict.by == "spin"


def test_hung_plugins_hold_their_threads_and_the_next_calls_time_out_not_hang(runner):
    release = threading.Event()
    try:
        for _ in range(6):  # more than the pool's 4 threads
            assert runner.run([plugin("stuck", lambda ctx: release.wait(30), timeout=0.05)], CTX).failed
        assert runner.run([plugin("quick", lambda ctx: None, timeout=0.05)], CTX).failed
    finally:
        release.set()
    # Once the stuck threads are free, plug-ins answer again.
    assert runner.run([plugin("quick", lambda ctx: None, timeout=5)], CTX) == PASS


def test_a_timeout_of_the_caller_is_not_taken_for_a_plugin_failure(runner):
    release = threading.Event()
    try:
        with pytest.raises(gevent.Timeout), gevent.Timeout(0.05):
            runner.run([plugin("slow", lambda ctx: release.wait(30), timeout=5)], CTX)
    finally:
        release.set()


def test_the_plugin_sees_the_context_it_was_given(runner):
    seen = []
    runner.run([plugin("a", seen.append)], CTX)
    assert seen[0].recipient == "bob@example.test" and seen[0].hook == "rcpt"
    with pytest.raises(AttributeError):
        seen[0].recipient = "mallory@example.test"
