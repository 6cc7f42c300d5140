"""Metrics without a running daemon: the config key, reply names, the collectors, serving."""

import socket
import time
from collections import Counter
from functools import partial
from pathlib import Path

import pytest
import tomlkit
from support import free_port

from empath.config import ConfigError
from empath.config.sections import validate
from empath.daemon import Daemon
from empath.delivery.limits import Breaker, tripped
from empath.metrics import DeliveryCollector, Metrics, QueueCollector, certificate_expiry
from empath.queue import stats
from empath.queue.insert import NewMessage, NewRecipient, insert
from empath.queue.spool import Spool
from empath.queue.store import Queue, Write
from empath.smtp import replies
from empath.smtp.server import outcome_label

GOOD = """\
[server]
hostname = "mx.example.test"
data_dir = "data"
{extra}
[[listeners]]
address = "127.0.0.1:2525"
"""


def check(extra: str):
    text = GOOD.format(extra=extra)
    return validate(tomlkit.parse(text).unwrap(), text, Path("/etc/empath/empath.toml"), "default.example")


def problems(extra: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        check(extra)
    return info.value.problems


def samples(collector) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value for family in collector.collect() for s in family.samples
    }


# -- the config key -------------------------------------------------------------------


def test_metrics_are_off_by_default():
    assert check("").metrics_address is None


@pytest.mark.parametrize(
    "given, expected",
    [("127.0.0.1:9125", ("127.0.0.1", 9125)), ("[::1]:9125", ("::1", 9125)), ("0.0.0.0:80", ("0.0.0.0", 80))],
)
def test_metrics_address(given, expected):
    assert check(f'metrics_address = "{given}"').metrics_address == expected


@pytest.mark.parametrize(
    "given, message",
    [
        ('"localhost:9125"', "'localhost' must be an IP address"),
        ('"127.0.0.1"', "'127.0.0.1' must be address:port, such as 127.0.0.1:2525 or [::1]:2525"),
        ('"127.0.0.1:70000"', "port 70000 is out of range"),
        ("9125", "must be a string"),
        ('"127.0.0.1:2525"', "is also the address of a listener"),
    ],
)
def test_bad_metrics_address(given, message):
    assert problems(f"metrics_address = {given}") == [f"server.metrics_address (line 4): {message}"]


# -- reply names ----------------------------------------------------------------------


def test_every_catalogue_reply_knows_its_name():
    for key, value in vars(replies).items():
        if isinstance(value, replies.Reply):
            assert replies.name_of(value) == key.lower()


def test_derived_replies_keep_their_name_and_others_fall_back_to_code_and_status():
    assert replies.name_of(replies.NEED_HELO.with_text("Say EHLO first")) == "need_helo"
    assert replies.name_of(replies.DATA_LINE_TOO_LONG.format(limit=1000)) == "data_line_too_long"
    assert replies.name_of(replies.Reply(554, "5.7.1", "made up")) == "relay_denied"
    assert replies.name_of(replies.Reply(599, "", "made up")) == "other"
    # The name is no part of a reply's identity.
    assert replies.Reply(554, "5.7.1", "Relay access denied") == replies.RELAY_DENIED


def test_session_outcomes_are_bounded_labels():
    assert [outcome_label(o) for o in ("closed", "client hung up", "timeout", "shutdown")] == [
        "closed",
        "client_hung_up",
        "timeout",
        "shutdown",
    ]
    assert outcome_label("connection error: [Errno 104] reset") == "error"
    assert outcome_label("internal error") == "error"


# -- collectors -----------------------------------------------------------------------


def test_queue_collector(tmp_path):
    queue = Queue(tmp_path / "queue.sqlite3")
    queue.open()
    try:
        now = time.time()
        message = NewMessage(
            queue_id="01TEST0000000001",
            sender="a@example.test",
            body=Spool.holding(b"Subject: x\r\n\r\nx\r\n"),
            recipients=[NewRecipient("b@example.org", "example.org"), NewRecipient("c@example.org", "example.org")],
            received_at=now - 30,
            expires_at=now + 3600,
            client_address="127.0.0.1",
            client_helo="client.test",
            listener="smtp@127.0.0.1:25",
            trace_id="t",
        )
        queue.write_batch([Write(insert, (message,))])
        got = samples(QueueCollector(lambda: queue.call(stats.counts), queue.path, tmp_path))
    finally:
        queue.close()
    assert got[("empath_queue_recipients", (("state", "queued"),))] == 2
    for state in ("deferred", "delivered", "bounced", "held"):
        assert got[("empath_queue_recipients", (("state", state),))] == 0
    assert 30 <= got[("empath_queue_oldest_message_age_seconds", ())] < 60
    assert got[("empath_queue_database_bytes", ())] > 0
    assert got[("empath_queue_wal_bytes", ())] > 0
    assert got[("empath_data_dir_free_bytes", ())] > 0


def test_queue_collector_without_a_database_still_reports_files(tmp_path):
    got = samples(QueueCollector(lambda: None, tmp_path / "queue.sqlite3", tmp_path))
    assert got[("empath_queue_database_bytes", ())] == 0
    assert not any(name == "empath_queue_recipients" for name, _ in got)


def test_delivery_collector_names_configured_destinations_only():
    now = 1000.0
    opened = Breaker(1, 300.0, failures=1, opened_at=now - 10)
    half_open = Breaker(1, 300.0, failures=1, opened_at=now - 400)
    breakers = {
        "configured.test": opened,
        "smarthost": Breaker(1, 300.0),
        "a.example": opened,
        "b.example": half_open,
        "c.example": Breaker(1, 300.0),
    }
    dns = Counter(lookup=5, cache_hit=3, cache_miss=2, nxdomain=1, timeout=1)
    pool = Counter(reuse_hit=4, reuse_miss=1, reuse_stale=2)
    open_breakers = partial(tripped, breakers, now)
    collector = DeliveryCollector(dns, pool, open_breakers, ("configured.test", "idle.test", "smarthost"))
    got = samples(collector)
    breaker = {dict(labels)["destination"]: v for (name, labels), v in got.items() if name.endswith("breaker_open")}
    assert breaker == {"configured.test": 1, "idle.test": 0, "smarthost": 0, "other": 2}
    assert got[("empath_dns_lookups_total", ())] == 5
    assert got[("empath_dns_cache_hits_total", ())] == 3
    assert got[("empath_dns_cache_misses_total", ())] == 2
    assert got[("empath_dns_failures_total", (("kind", "nxdomain"),))] == 1
    assert got[("empath_dns_failures_total", (("kind", "servfail"),))] == 0
    assert got[("empath_delivery_connection_reuse_total", (("result", "hit"),))] == 4
    assert got[("empath_delivery_connection_reuse_total", (("result", "miss"),))] == 1
    assert got[("empath_delivery_connection_reuse_total", (("result", "stale"),))] == 2


def test_certificate_expiry(certs, tmp_path):
    assert certificate_expiry(certs.cert) > time.time()
    assert certificate_expiry(tmp_path / "missing.pem") is None
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    assert certificate_expiry(garbage) is None


# -- serving --------------------------------------------------------------------------


def test_each_metrics_has_its_own_registry():
    a, b = Metrics(), Metrics()
    a.auth.labels("failure").inc()
    assert b.registry.get_sample_value("empath_smtp_auth_total", {"result": "failure"}) == 0
    assert a.registry.get_sample_value("empath_smtp_auth_total", {"result": "failure"}) == 1


def test_not_served_until_asked():
    assert Metrics().address is None


def test_an_address_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"cannot serve metrics on 127.0.0.1:{port}: "):
            Metrics().serve("127.0.0.1", port)


def test_served_on_the_configured_address():
    metrics = Metrics()
    metrics.serve("127.0.0.1", 0)
    try:
        host, port = metrics.address
        assert host == "127.0.0.1" and port > 0
    finally:
        metrics.stop()
    assert metrics.address is None


@pytest.mark.parametrize("configured", [False, True])
def test_the_daemon_serves_metrics_only_when_configured(tmp_path, monkeypatch, configured):
    served = []
    monkeypatch.setattr(Metrics, "serve", lambda self, host, port: served.append((host, port)))
    extra = 'metrics_address = "127.0.0.1:9125"' if configured else ""
    text = GOOD.format(extra=extra).replace("2525", str(free_port())).replace('"data"', f'"{tmp_path}"')
    config = validate(tomlkit.parse(text).unwrap(), text, tmp_path / "empath.toml", "default.example")
    daemon = Daemon(config)
    daemon.start()
    try:
        assert served == ([("127.0.0.1", 9125)] if configured else [])
        assert daemon.metrics.address is None  # serve() was replaced: nothing listens
    finally:
        daemon.stop()


def test_a_helpers_counts_are_added_once_each():
    """An SMTP helper process reports running totals; the daemon adds only what grew since the last report."""
    helper, daemon = Metrics(), Metrics()
    helper.messages_received.labels("smtp").inc(3)
    helper.received_bytes.labels("smtp").inc(3000)
    helper.queue_in.inc(3)
    first = daemon.add_counts(helper.session_counts(), {})
    helper.messages_received.labels("smtp").inc()
    helper.commands_rejected.labels("NO_RELAY").inc()
    daemon.add_counts(helper.session_counts(), first)
    value = daemon.registry.get_sample_value
    assert value("empath_smtp_messages_received_total", {"listener": "smtp"}) == 4
    assert value("empath_smtp_received_bytes_total", {"listener": "smtp"}) == 3000
    assert value("empath_queue_messages_in_total") == 3
    assert value("empath_smtp_commands_rejected_total", {"reason": "NO_RELAY"}) == 1
