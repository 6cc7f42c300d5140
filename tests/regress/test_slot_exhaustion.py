"""Slot exhaustion by slow strangers (hostile-internet issue, point 1).

100 slow connections from two addresses locked everyone out: max_connections
counted trusted clients too, the command and data timeouts restarted on every
byte (a byte every four minutes kept a slot), and nothing changed when the
server was full. Now strangers have their own slots (trusted clients are not
counted), a command line must arrive whole within the command timeout and a
message at data_min_rate, a stranger connecting too often is refused, and a
server short of slots goes into stress mode: short timeouts and no patience
for the strangers that come then, logged when it starts and ends.
"""

import time

from support import RawClient, raw_reply, wait_for

from empath.smtp import replies

TRUSTED = "127.0.0.2"  # the test config's trusted network
STRANGERS = ["127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"]


def greeted(port: int, source: str) -> RawClient:
    client = RawClient(port, source=source)
    assert client.reply()[0] == 220
    return client


def test_strangers_filling_the_server_never_lock_out_a_trusted_client(make_daemon):
    daemon = make_daemon(
        tls=False, limits={"max_connections": 4, "stress_threshold": 100}, timeouts={"command": "30s"}
    ).start()
    port = daemon.ports.smtp
    held = [greeted(port, source) for source in STRANGERS]  # every stranger slot, sending nothing
    try:
        with RawClient(port, source="127.0.0.7") as late:
            assert late.reply() == raw_reply(replies.TOO_MANY_CONNECTIONS)
        started = time.monotonic()
        with RawClient(port, source=TRUSTED) as office:
            assert office.reply()[0] == 220
            assert time.monotonic() - started < 1.0
            assert office.cmd("EHLO printer.office.test")[0] == 250
            assert office.cmd("MAIL FROM:<scanner@office.test>")[0] == 250
            assert office.cmd("RCPT TO:<someone@elsewhere.test>")[0] == 250  # trusted: may relay
            assert office.cmd("DATA")[0] == 354
            assert office.cmd("Subject: scan\r\n\r\npage 1\r\n.")[0] == 250
    finally:
        for client in held:
            client.close()


def test_a_command_trickled_a_byte_at_a_time_is_cut_off_at_the_command_timeout(make_daemon):
    daemon = make_daemon(tls=False, timeouts={"command": "1s"}).start()
    with greeted(daemon.ports.smtp, STRANGERS[0]) as client:
        started = time.monotonic()
        try:
            for byte in b"EHLO a-very-slow-client.test\r\n":
                client.send(bytes([byte]))
                time.sleep(0.2)  # the attack's own pace, not a wait for the server
        except OSError:
            pass  # the server hung up mid-line
        assert client.reply() == raw_reply(replies.TIMEOUT)
        assert client.closed()
        assert time.monotonic() - started < 2.0  # the command timeout, plus a second


def test_a_message_trickled_slower_than_data_min_rate_is_cut_off(make_daemon):
    daemon = make_daemon(tls=False, timeouts={"data": "1s"}, limits={"data_min_rate": "1K"}).start()
    with greeted(daemon.ports.smtp, STRANGERS[0]) as client:
        assert client.cmd("EHLO slow.test")[0] == 250
        assert client.cmd("MAIL FROM:<a@far.test>")[0] == 250
        assert client.cmd("RCPT TO:<b@local.test>")[0] == 250
        assert client.cmd("DATA")[0] == 354
        started = time.monotonic()
        try:
            while time.monotonic() - started < 5:
                client.send(b"short line\r\n")  # 12 bytes: each line in time, the whole far too slow
                time.sleep(0.25)
        except OSError:
            pass
        assert client.reply() == raw_reply(replies.TIMEOUT)
        assert time.monotonic() - started < 2.5
    assert daemon.messages() == []


def test_a_stranger_that_connects_too_often_is_refused(make_daemon):
    daemon = make_daemon(tls=False, limits={"connection_rate_per_client": "3/m"}).start()
    for _ in range(3):
        with greeted(daemon.ports.smtp, STRANGERS[0]) as client:
            client.cmd("QUIT")
    with RawClient(daemon.ports.smtp, source=STRANGERS[0]) as fourth:
        assert fourth.reply() == raw_reply(replies.TOO_FAST_FROM_CLIENT)
    with greeted(daemon.ports.smtp, STRANGERS[1]) as other:  # its own allowance
        other.cmd("QUIT")
    for _ in range(5):  # trusted clients have no rate
        with greeted(daemon.ports.smtp, TRUSTED) as office:
            office.cmd("QUIT")
    wait_for(lambda: " reject CONNECT from unknown[127.0.0.3]: 421 4.7.0 Your address" in daemon.log(), what="it")


def test_short_of_slots_the_server_goes_into_stress_mode_and_out_again(make_daemon):
    daemon = make_daemon(
        tls=False,
        limits={"max_connections": 4, "stress_threshold": 75},
        timeouts={"command": "30s", "stress": "500ms"},
    ).start()
    port = daemon.ports.smtp
    calm = [greeted(port, source) for source in STRANGERS[:2]]  # 2 of 4: calm
    try:
        stressing = greeted(port, STRANGERS[2])  # 3 of 4: stress starts
        wait_for(lambda: " stress state=start smtp=3/4 " in daemon.log(), what="the stress line")
        started = time.monotonic()
        assert stressing.closed(timeout=5)  # it idles: cut off at the stress timeout
        assert time.monotonic() - started < 2.0
        assert calm[0].cmd("NOOP") == raw_reply(replies.NOOP)  # those that came before keep their patience
        with greeted(port, TRUSTED) as office:  # and the office is served as ever
            assert office.cmd("NOOP") == raw_reply(replies.NOOP)
        wait_for(lambda: " stress state=end " in daemon.log(), what="the end of stress")
    finally:
        for client in calm:
            client.close()
