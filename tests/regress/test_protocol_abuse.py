"""Protocol abuse: clients that break SMTP to attack the server or what stands behind it.

- Cross-protocol requests (HTTP verbs, ``CONNECT`` as to a proxy, ``USER``)
  must be refused with NOT_SMTP and the connection closed, so a browser or
  a proxy tunnel cannot be used to send mail (the "HTML form" and
  "open proxy" spam of old, and cross-protocol attacks such as ALPACA).
- Talking before the greeting (spambots that do not wait) gets PREGREET.
- Over-long command lines, bare LF command lines, over-long DATA lines and
  over-sized messages are refused with their named replies, and the session
  stays in step with the client: no part of a refused line is run as a
  command (a desync would be a command injection).
- Limits that keep one client from exhausting the server: errors, recipients,
  message size, mail loops (Received headers), idle timeouts, connections
  in all and per client, and AUTH password guessing. Passwords and AUTH
  blobs must never be written to the log, even at debug level.

A failure means one of those limits no longer holds, or a refusal leaves the
session out of step with the client.
"""

import base64
import re
import socket
import time

import pytest
from support import RawClient, code_status, raw_reply, wait_for

from empath.smtp import replies

USER, PASSWORD = "brute-user", "c0rrect-Horse-battery"
MAX_ERRORS = 5
MAX_SIZE = 2048
MAX_HOPS = 3


@pytest.fixture(scope="module")
def mx(make_module_daemon):
    daemon = make_module_daemon(
        limits={"max_errors": MAX_ERRORS, "max_message_size": "2K", "max_received_headers": MAX_HOPS}
    )
    daemon.add_user(USER, PASSWORD)
    return daemon.start()


@pytest.fixture(scope="module")
def slow(make_module_daemon):
    """A daemon that pauses before its greeting and times out idle clients quickly. Its clients
    may flood it with HELP (to stall its writes) without the junk-command limit cutting them off."""
    return make_module_daemon(
        timeouts={"greet_pause": "300ms", "command": "300ms", "data": "300ms"},
        limits={"junk_command_limit": 1_000_000},
    ).start()


def greeted(port: int, **kwargs) -> RawClient:
    client = RawClient(port, **kwargs)
    assert client.reply() == raw_reply(replies.GREETING.format(hostname="mx.test.example"))
    return client


def session(port: int, **kwargs) -> RawClient:
    client = greeted(port, **kwargs)
    assert client.cmd("EHLO client.test")[0] == 250
    return client


def send_message(client: RawClient, body: bytes, sender: str = "sender@sender.test") -> tuple[int, str]:
    """One transaction for bob@local.test; the reply to the end of data."""
    assert client.cmd(f"MAIL FROM:<{sender}>") == raw_reply(replies.SENDER_OK)
    assert client.cmd("RCPT TO:<bob@local.test>") == raw_reply(replies.RECIPIENT_OK)
    assert client.cmd("DATA") == raw_reply(replies.START_DATA)
    client.send(body + b".\r\n")
    return client.reply()


def queued_id(reply: tuple[int, str]) -> str:
    code, text = reply
    m = re.fullmatch(r"2\.0\.0 OK queued as (\S+)", text)
    assert code == 250 and m, reply
    return m.group(1)


def new_messages(daemon, before: list[tuple]) -> list[tuple]:
    return [m for m in daemon.messages() if m not in before]


# -- cross-protocol -----------------------------------------------------------


@pytest.mark.parametrize(
    "request_line",
    [
        "GET / HTTP/1.1",
        "POST /cgi-bin/formmail HTTP/1.0",
        "CONNECT mx.remote.test:25 HTTP/1.1",
        "CONNECT remote.test:443 HTTP/1.1",
        "HEAD / HTTP/1.1",
        "USER admin",
    ],
)
def test_http_and_other_protocols_are_refused_and_closed(mx, request_line):
    with greeted(mx.ports.smtp) as client:
        # A proxy or browser sends its headers (and a body) without waiting.
        client.send(
            request_line.encode()
            + b"\r\nHost: mx.test.example\r\nContent-Length: 30\r\n\r\nMAIL FROM:<a@b.test>\r\nQUIT\r\n"
        )
        assert client.reply() == raw_reply(replies.NOT_SMTP)
        assert client.closed()
        assert client.buf == b"", "nothing after the refusal may be answered"


def test_http_verb_after_ehlo_is_refused_too(mx):
    with session(mx.ports.smtp) as client:
        assert client.cmd("POST / HTTP/1.1") == raw_reply(replies.NOT_SMTP)
        assert client.closed()


# -- before the greeting --------------------------------------------------------


def test_talking_before_the_greeting_is_refused(slow):
    with RawClient(slow.ports.smtp) as client:
        client.send(b"EHLO early.test\r\n")
        assert client.reply() == raw_reply(replies.PREGREET)  # and no 220 before it
        assert client.closed()
        assert client.buf == b""
    wait_for(
        lambda: " reject CONNECT from unknown[127.0.0.1]: 554 5.5.1 Talking before" in slow.log(),
        what="its reject line",
    )


def test_a_client_that_waits_for_the_greeting_is_served(slow):
    with greeted(slow.ports.smtp) as client:
        assert client.cmd("EHLO patient.test")[0] == 250
        assert client.cmd("QUIT") == raw_reply(replies.CLOSING)


# -- command lines ----------------------------------------------------------------


def test_command_line_over_512_octets_is_refused_and_session_stays_in_step(mx):
    with session(mx.ports.smtp) as client:
        # 512 octets with the CRLF is the limit (RFC 5321 §4.5.3.1.4) and is fine.
        assert client.cmd("NOOP " + "x" * 505) == raw_reply(replies.NOOP)
        # The tail of a too-long line looks like a command; it must not be run.
        assert client.cmd("NOOP " + "x" * 506) == raw_reply(replies.LINE_TOO_LONG)
        assert client.cmd("NOOP " + "x" * 600 + " MAIL FROM:<a@b.test>") == raw_reply(replies.LINE_TOO_LONG)
        assert client.cmd(b"NOOP " + b"y" * 200_000) == raw_reply(replies.LINE_TOO_LONG)
        assert client.cmd("NOOP") == raw_reply(replies.NOOP)
        assert client.cmd("RCPT TO:<bob@local.test>") == raw_reply(replies.NEED_MAIL)


def test_bare_lf_command_line_is_refused_and_session_stays_usable(mx):
    with session(mx.ports.smtp) as client:
        client.send(b"NOOP\n")
        assert client.reply() == raw_reply(replies.BARE_LF_IN_COMMAND)
        # A bare-LF command is not run: had this MAIL opened a transaction,
        # the next one would get NESTED_MAIL.
        client.send(b"MAIL FROM:<a@b.test>\n")
        assert client.reply() == raw_reply(replies.BARE_LF_IN_COMMAND)
        assert client.cmd("MAIL FROM:<c@d.test>") == raw_reply(replies.SENDER_OK)
        assert client.cmd("RSET") == raw_reply(replies.RESET)
        # A bare CR inside a line does not split it into two commands.
        got = client.cmd(b"NOOP\rMAIL FROM:<a@b.test>")
        assert code_status(got) == (replies.SYNTAX_ERROR.code, replies.SYNTAX_ERROR.status)
        assert client.cmd("MAIL FROM:<c@d.test>") == raw_reply(replies.SENDER_OK)
        assert client.cmd("NOOP") == raw_reply(replies.NOOP)


def test_too_many_errors_closes_the_session(mx):
    with session(mx.ports.smtp) as client:
        client.send(b"BOGUS\r\n" * (MAX_ERRORS + 2))
        for _ in range(MAX_ERRORS):
            assert client.reply() == raw_reply(replies.UNKNOWN_COMMAND)
        assert client.reply() == raw_reply(replies.TOO_MANY_ERRORS)
        assert client.closed()
        assert client.buf == b"", "no command after the limit may be answered"


# -- the transaction -----------------------------------------------------------------


def test_too_many_recipients(mx):
    before = mx.messages()
    with session(mx.ports.smtp) as client:
        assert client.cmd("MAIL FROM:<many@sender.test>") == raw_reply(replies.SENDER_OK)
        client.send(b"".join(b"RCPT TO:<user%d@local.test>\r\n" % i for i in range(101)))
        for _ in range(100):
            assert client.reply() == raw_reply(replies.RECIPIENT_OK)
        assert client.reply() == raw_reply(replies.TOO_MANY_RECIPIENTS)
        # A recipient given again is not counted twice.
        assert client.cmd("RCPT TO:<user7@local.test>") == raw_reply(replies.RECIPIENT_OK)
        assert client.cmd("DATA") == raw_reply(replies.START_DATA)
        queue_id = queued_id(client.cmd(b"Subject: many\r\n\r\nhi\r\n."))
    [(_, sender)] = new_messages(mx, before)
    assert sender == "many@sender.test"
    assert mx.recipients(queue_id) == [f"user{i}@local.test" for i in range(100)]


def test_message_over_the_size_limit(mx):
    too_big = (replies.MESSAGE_TOO_BIG.code, replies.MESSAGE_TOO_BIG.status)
    before = mx.messages()
    with session(mx.ports.smtp) as client:
        code, text = client.cmd("EHLO client.test")
        assert f"SIZE {MAX_SIZE}" in text.split("\n")
        assert code_status(client.cmd(f"MAIL FROM:<big@sender.test> SIZE={MAX_SIZE + 1}")) == too_big
        # The refused MAIL opened no transaction.
        assert client.cmd("RCPT TO:<bob@local.test>") == raw_reply(replies.NEED_MAIL)
        # A client that declares a small size and sends more is refused at the end of data.
        assert client.cmd("MAIL FROM:<big@sender.test> SIZE=100") == raw_reply(replies.SENDER_OK)
        assert client.cmd("RCPT TO:<bob@local.test>") == raw_reply(replies.RECIPIENT_OK)
        assert client.cmd("DATA") == raw_reply(replies.START_DATA)
        client.send(b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n" + (b"y" * 70 + b"\r\n") * 60 + b".\r\n")
        assert code_status(client.reply()) == too_big
        assert client.cmd("NOOP") == raw_reply(replies.NOOP)
        # Exactly the limit is fine (the Received header added by Empath does not count).
        header = b"Subject: limit\r\n\r\n"
        exact = header + b"z" * 98 + b"\r\n" + (b"w" * 98 + b"\r\n") * 19
        exact += b"v" * (MAX_SIZE - len(exact) - 2) + b"\r\n"
        assert len(exact) == MAX_SIZE
        queue_id = queued_id(send_message(client, exact, sender="limit@sender.test"))
        assert code_status(send_message(client, exact + b"!\r\n", sender="big@sender.test")) == too_big
        assert client.cmd("NOOP") == raw_reply(replies.NOOP)
    assert new_messages(mx, before) == [(queue_id, "limit@sender.test")]
    assert mx.body(queue_id).endswith(exact)


def test_too_many_received_headers_is_a_loop(mx):
    before = mx.messages()
    hop = b"Received: from a.test by b.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
    with session(mx.ports.smtp) as client:
        got = send_message(client, hop.lower() * (MAX_HOPS + 1) + b"Subject: loop\r\n\r\nhi\r\n", "loop@sender.test")
        assert got == raw_reply(replies.TOO_MANY_HOPS)
        assert client.cmd("NOOP") == raw_reply(replies.NOOP)
        # As many as allowed is fine, and Received lines in the body do not count.
        queue_id = queued_id(
            send_message(client, hop * MAX_HOPS + b"Subject: ok\r\n\r\n" + hop * 10, "hops@sender.test")
        )
    assert new_messages(mx, before) == [(queue_id, "hops@sender.test")]


def test_data_line_over_1000_octets_is_refused_and_session_stays_in_step(mx):
    too_long = raw_reply(replies.DATA_LINE_TOO_LONG.format(limit=1000))
    before = mx.messages()
    with session(mx.ports.smtp) as client:
        # 1001 octets with the CRLF.
        assert send_message(client, b"Subject: long\r\n\r\n" + b"x" * 999 + b"\r\n") == too_long
        assert client.cmd("NOOP") == raw_reply(replies.NOOP)
        # A huge line whose middle looks like the end of data and a new
        # transaction: none of it may end the data or be run as a command.
        fake = b"\r.\rMAIL FROM:<evil@x.test>\r"
        body = b"Subject: huge\r\n\r\n" + b"x" * 50_000 + fake + b"y" * 50_000 + b"\r\n"
        assert send_message(client, body) == too_long
        assert client.cmd("MAIL FROM:<c@d.test>") == raw_reply(replies.SENDER_OK)
        assert client.cmd("RSET") == raw_reply(replies.RESET)
        # 1000 octets with the CRLF is the limit (RFC 5321 §4.5.3.1.6) and is fine.
        queue_id = queued_id(send_message(client, b"Subject: ok\r\n\r\n" + b"x" * 998 + b"\r\n", "ok@sender.test"))
    assert new_messages(mx, before) == [(queue_id, "ok@sender.test")]


def test_data_and_what_follows_in_one_packet_stay_in_step(mx):
    """DATA is read a run of lines at a time: a long line inside a run is still
    refused as one, and commands sent after the end are still run as commands."""
    too_long = raw_reply(replies.DATA_LINE_TOO_LONG.format(limit=1000))
    before = mx.messages()
    with session(mx.ports.smtp) as client:
        for line in ("MAIL FROM:<run@sender.test>", "RCPT TO:<bob@local.test>", "DATA"):
            client.send(line.encode() + b"\r\n")
        client.send(b"Subject: run\r\n\r\n" + b"a\r\n" * 50 + b"x" * 1200 + b"\r\n" + b"b\r\n" * 50 + b".\r\nNOOP\r\n")
        assert [client.reply() for _ in range(5)] == [
            raw_reply(replies.SENDER_OK),
            raw_reply(replies.RECIPIENT_OK),
            raw_reply(replies.START_DATA),
            too_long,
            raw_reply(replies.NOOP),
        ]
        assert client.cmd("MAIL FROM:<run@sender.test>") == raw_reply(replies.SENDER_OK)
        assert client.cmd("RCPT TO:<bob@local.test>") == raw_reply(replies.RECIPIENT_OK)
        assert client.cmd("DATA") == raw_reply(replies.START_DATA)
        client.send(b"Subject: ok\r\n\r\n" + b"..a\r\n" * 100 + b".\r\nMAIL FROM:<next@sender.test>\r\n")
        queue_id = queued_id(client.reply())
        assert client.reply() == raw_reply(replies.SENDER_OK)
    assert new_messages(mx, before) == [(queue_id, "run@sender.test")]
    assert mx.body(queue_id).endswith(b"Subject: ok\r\n\r\n" + b".a\r\n" * 100)


# -- timeouts -----------------------------------------------------------------------


def test_idle_client_times_out(slow):
    with greeted(slow.ports.smtp) as client:
        started = time.monotonic()
        assert client.reply() == raw_reply(replies.TIMEOUT)
        assert time.monotonic() - started < 5
        assert client.closed()


def test_half_a_command_line_times_out(slow):
    with greeted(slow.ports.smtp) as client:
        client.send(b"NOOP")
        assert client.reply() == raw_reply(replies.TIMEOUT)
        assert client.closed()


def test_stalled_data_times_out_and_nothing_is_queued(slow):
    before = slow.messages()
    with greeted(slow.ports.smtp) as client:
        assert client.cmd("EHLO client.test")[0] == 250
        assert client.cmd("MAIL FROM:<slow@sender.test>") == raw_reply(replies.SENDER_OK)
        assert client.cmd("RCPT TO:<bob@local.test>") == raw_reply(replies.RECIPIENT_OK)
        assert client.cmd("DATA") == raw_reply(replies.START_DATA)
        client.send(b"Subject: slow\r\n\r\nhalf a message\r\n")
        assert client.reply() == raw_reply(replies.TIMEOUT)
        assert client.closed()
    assert slow.messages() == before


def test_client_that_does_not_read_its_replies_times_out(slow):
    """Pipelining without reading fills the socket buffers; the server's writes must time out too."""
    with greeted(slow.ports.smtp, source="127.0.0.5") as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            while True:  # until the server stops reading because its replies cannot be sent
                client.sock.sendall(b"HELP\r\n" * 10_000)  # a short command with a long reply
        # First the server works through the commands the kernel had buffered
        # for it (megabytes): seconds on a slow machine, more under coverage.
        wait_for(
            lambda: "client=127.0.0.5 outcome=timeout" in slow.log(), timeout=30, what="the stalled session to time out"
        )
        assert client.closed()


# -- connections -----------------------------------------------------------------


def test_connection_limits(make_daemon):
    daemon = make_daemon(tls=False, limits={"max_connections": 3, "max_connections_per_client": 2}).start()
    port = daemon.ports.smtp
    first, second = greeted(port), greeted(port)
    try:
        with RawClient(port) as third:
            assert third.reply() == raw_reply(replies.TOO_MANY_FROM_CLIENT)
            assert third.closed()
        # Another address still gets in, up to the limit for strangers; a trusted
        # client (127.0.0.2, the test config's trusted network) is not counted.
        with greeted(port, source="127.0.0.4") as other, RawClient(port, source="127.0.0.3") as fourth:
            assert other.cmd("NOOP") == raw_reply(replies.NOOP)
            assert fourth.reply() == raw_reply(replies.TOO_MANY_CONNECTIONS)
            assert fourth.closed()
            with greeted(port, source="127.0.0.2") as trusted:
                assert trusted.cmd("NOOP") == raw_reply(replies.NOOP)
        # The sessions still open are served.
        assert first.cmd("NOOP") == raw_reply(replies.NOOP)
        assert second.cmd("NOOP") == raw_reply(replies.NOOP)
    finally:
        first.close()
        second.close()

    # Closed sessions free their places: two from one address get in again.
    def admitted() -> RawClient | None:
        client = RawClient(port)
        if client.reply()[0] == 220:
            return client
        client.close()
        return None

    again = [wait_for(admitted, what="a free connection slot") for _ in range(2)]
    try:
        for client in again:
            assert client.cmd("NOOP") == raw_reply(replies.NOOP)
    finally:
        for client in again:
            client.close()


# -- AUTH ----------------------------------------------------------------------------


def tls_session(daemon, certs) -> RawClient:
    client = session(daemon.ports.smtp)
    assert client.cmd("STARTTLS") == raw_reply(replies.READY_TLS)
    client.starttls(certs.client_context())
    assert "AUTH PLAIN LOGIN" in client.cmd("EHLO brute.test")[1].split("\n")
    return client


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def plain(user: str, password: str) -> str:
    """The AUTH PLAIN response: authzid, authcid and password, NUL-separated, in base64."""
    return b64(f"\0{user}\0{password}")


def test_auth_password_guessing_is_cut_off_and_secrets_stay_out_of_the_log(mx, certs):
    guesses = ["guess-Number-1", "guess-Number-2", "guess-Number-3"]
    secrets = [PASSWORD, *guesses]
    blobs = [plain(USER, password) for password in secrets] + [b64(p) for p in secrets]
    failures = len(re.findall(r" auth .*result=failure", mx.log()))
    with tls_session(mx, certs) as client:
        # Three ways of giving a password: PLAIN with an initial response,
        # PLAIN after a 334, LOGIN in two steps.
        assert client.cmd(f"AUTH PLAIN {plain(USER, guesses[0])}") == raw_reply(replies.AUTH_FAILED)
        # Saying EHLO again does not reset the count of failures.
        assert client.cmd("EHLO brute.test")[0] == 250
        assert client.cmd("AUTH PLAIN") == raw_reply(replies.AUTH_CHALLENGE.format(challenge=""))
        assert client.cmd(plain(USER, guesses[1])) == raw_reply(replies.AUTH_FAILED)
        assert client.cmd("AUTH LOGIN") == raw_reply(replies.AUTH_CHALLENGE.format(challenge=b64("Username:")))
        assert client.cmd(b64(USER)) == raw_reply(replies.AUTH_CHALLENGE.format(challenge=b64("Password:")))
        client.send(f"{b64(guesses[2])}\r\n".encode())
        assert client.reply() == raw_reply(replies.AUTH_FAILED)
        assert client.reply() == raw_reply(replies.AUTH_TOO_MANY_FAILURES)
        assert client.closed()
    # The count is per session: the right password works on a new connection.
    with tls_session(mx, certs) as client:
        assert client.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}") == raw_reply(replies.AUTH_OK)
        assert client.cmd("QUIT") == raw_reply(replies.CLOSING)
    wait_for(lambda: len(re.findall(r" auth .*result=success", mx.log())) >= 1, what="the successful login logged")
    log = mx.log()
    assert len(re.findall(r" auth .*result=failure", log)) == failures + 3
    assert '"EHLO brute.test"' in log, "commands must be traced at debug level, or this test proves nothing"
    for secret in secrets + blobs:
        assert secret not in log
    # Not even a part of one: the base64 of each password, and the end of each PLAIN blob.
    for part in [b64(p)[:6] for p in secrets] + [blob[-8:] for blob in blobs]:
        assert part not in log


def test_bad_line_in_an_auth_exchange_ends_the_exchange(mx, certs):
    """A refused line must not leave the server waiting for a SASL response the client no longer sends."""
    with tls_session(mx, certs) as client:
        assert client.cmd("AUTH PLAIN") == raw_reply(replies.AUTH_CHALLENGE.format(challenge=""))
        assert client.cmd("x" * 600) == raw_reply(replies.LINE_TOO_LONG)
        assert client.cmd("NOOP") == raw_reply(replies.NOOP)
        assert client.cmd("AUTH LOGIN") == raw_reply(replies.AUTH_CHALLENGE.format(challenge=b64("Username:")))
        client.send(b64(USER).encode() + b"\n")
        assert client.reply() == raw_reply(replies.BARE_LF_IN_COMMAND)
        assert client.cmd("NOOP") == raw_reply(replies.NOOP)
        # The exchange works again afterwards.
        assert client.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}") == raw_reply(replies.AUTH_OK)
