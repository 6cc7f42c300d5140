"""The SMTP state machine, driven line by line without a socket."""

import base64
from dataclasses import replace

import pytest

from empath.addresses import EmailAddress
from empath.aliases import Expansion
from empath.config.model import Limits
from empath.smtp import replies
from empath.smtp.machine import Action, Machine, Policy, State, Step

LOCAL = ("example.test", "other.test")
STRANGER = "203.0.113.9"


def make(
    mode: str = "smtp",
    *,
    trusted: bool = False,
    tls_available: bool = False,
    auth_available: bool = False,
    tls_active: bool = False,
    local_domains: tuple[str, ...] = LOCAL,
    storage_available=lambda size: True,
    **limits,
) -> Machine:
    policy = Policy(
        hostname="mx.example.test",
        mode=mode,
        limits=replace(Limits(), **limits),
        local_domains=local_domains,
        tls_available=tls_available,
        auth_available=auth_available,
        storage_available=storage_available,
    )
    return Machine(policy, STRANGER, trusted, tls_active=tls_active)


def submission() -> Machine:
    return make("submission", tls_available=True, auth_available=True)


def say(m: Machine, line: str) -> Step:
    return m.handle(line.encode())


def codes(step: Step) -> list[tuple[int, str]]:
    return [(r.code, r.status) for r in step.replies]


def key(reply) -> tuple[int, str]:
    return (reply.code, reply.status)


def assert_reply(step: Step, expected, action: Action = Action.NONE) -> None:
    assert codes(step) == [key(expected)], [r.text for r in step.replies]
    assert step.action is action


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def plain(user: str, password: str, authzid: str = "") -> str:
    return b64(f"{authzid}\0{user}\0{password}")


def dialogue(m: Machine, lines: list[tuple[str, object]]) -> None:
    """Say each line and check the (single) reply to it, chasquid-style."""
    for line, expected in lines:
        step = say(m, line)
        assert codes(step) == [key(expected)], (line, [r.text for r in step.replies])


def login(m: Machine, user: str = "alice") -> None:
    step = say(m, f"AUTH PLAIN {plain(user, 'secret')}")
    assert step.action is Action.CHECK_AUTH
    assert_reply(m.auth_result(True), replies.AUTH_OK)


def ready(m: Machine) -> Machine:
    assert_reply(say(m, "EHLO client.example"), replies.HELLO)
    return m


# -- greeting and simple commands ---------------------------------------------


def test_greeting_names_the_host():
    greeting = make().greeting()
    assert greeting.code == 220
    assert greeting.text.startswith("mx.example.test ")


@pytest.mark.parametrize(
    "line, expected, action",
    [
        ("NOOP", replies.NOOP, Action.NONE),
        ("NOOP anything", replies.NOOP, Action.NONE),
        ("HELP", replies.HELP, Action.NONE),
        ("VRFY alice", replies.VRFY, Action.NONE),
        ("VRFY", replies.SYNTAX_ERROR, Action.NONE),
        ("RSET", replies.RESET, Action.NONE),
        ("RSET now", replies.SYNTAX_ERROR, Action.NONE),
        ("QUIT", replies.CLOSING, Action.CLOSE),
        ("QUIT now", replies.SYNTAX_ERROR, Action.NONE),  # RFC 5321 §4.1.1.10: no argument
        ("EXPN staff", replies.NOT_IMPLEMENTED, Action.NONE),
        ("ETRN example.test", replies.NOT_IMPLEMENTED, Action.NONE),
        ("BDAT 10 LAST", replies.NOT_IMPLEMENTED, Action.NONE),
        ("XYZZY", replies.UNKNOWN_COMMAND, Action.NONE),
        ("HELO", replies.BAD_HELO, Action.NONE),
        ("EHLO two words", replies.BAD_HELO, Action.NONE),
        ("DATA now", replies.SYNTAX_ERROR, Action.NONE),
        ("MAIL\x00", replies.SYNTAX_ERROR, Action.NONE),
    ],
)
def test_simple_commands(line, expected, action):
    assert_reply(say(ready(make()), line), expected, action)


@pytest.mark.parametrize("line", ["GET / HTTP/1.1", "POST /x HTTP/1.0", "CONNECT mx:25 HTTP/1.1", "get /"])
def test_http_verbs_hang_up(line):
    m = make()
    step = say(m, line)
    assert_reply(step, replies.NOT_SMTP, Action.CLOSE)
    assert key(replies.NOT_SMTP) == (521, "5.5.1")


def test_quit_works_before_helo():
    assert_reply(say(make(), "QUIT"), replies.CLOSING, Action.CLOSE)


# -- sequence rules -------------------------------------------------------------


def test_mail_before_helo():
    m = make()
    assert_reply(say(m, "MAIL FROM:<a@b.example>"), replies.NEED_HELO)
    assert m.state is State.FRESH


def test_rcpt_before_mail():
    assert_reply(say(make(), "RCPT TO:<u@example.test>"), replies.NEED_MAIL)
    assert_reply(say(ready(make()), "RCPT TO:<u@example.test>"), replies.NEED_MAIL)


def test_data_without_mail_or_rcpt():
    m = ready(make())
    assert_reply(say(m, "DATA"), replies.NEED_MAIL)
    assert_reply(say(m, "MAIL FROM:<a@b.example>"), replies.SENDER_OK)
    assert_reply(say(m, "DATA"), replies.NEED_RCPT)  # no RCPT tried: a sequence error (RFC 2920 §3.1)
    assert replies.NEED_RCPT.code == 503
    assert m.state is State.MAIL  # the transaction goes on


def test_data_after_refused_recipients_only():
    m = ready(make())
    dialogue(
        m,
        [
            ("MAIL FROM:<a@b.example>", replies.SENDER_OK),
            ("RCPT TO:<u@remote.example>", replies.RELAY_DENIED),
            ("DATA", replies.NO_VALID_RECIPIENTS),
        ],
    )


def test_nested_mail():
    m = ready(make())
    dialogue(m, [("MAIL FROM:<a@b.example>", replies.SENDER_OK), ("MAIL FROM:<c@d.example>", replies.NESTED_MAIL)])
    assert m.transaction.sender == "a@b.example"


def test_rset_ends_the_transaction():
    m = ready(make())
    dialogue(
        m,
        [
            ("MAIL FROM:<a@b.example>", replies.SENDER_OK),
            ("RCPT TO:<u@example.test>", replies.RECIPIENT_OK),
            ("RSET", replies.RESET),
            ("RCPT TO:<u@example.test>", replies.NEED_MAIL),
            ("MAIL FROM:<c@d.example>", replies.SENDER_OK),
        ],
    )
    assert m.transaction.sender == "c@d.example"
    assert m.transaction.recipients == []


def test_rset_before_helo_does_not_greet():
    m = make()
    dialogue(m, [("RSET", replies.RESET), ("MAIL FROM:<a@b.example>", replies.NEED_HELO)])


def test_ehlo_again_resets_the_transaction():
    m = ready(make())
    dialogue(
        m,
        [
            ("MAIL FROM:<a@b.example>", replies.SENDER_OK),
            ("EHLO again.example", replies.HELLO),
            ("RCPT TO:<u@example.test>", replies.NEED_MAIL),
        ],
    )
    assert m.helo == "again.example"


def test_full_transaction_flow():
    m = ready(make())
    dialogue(
        m,
        [
            ("MAIL FROM:<a@b.example> SIZE=100", replies.SENDER_OK),
            ("RCPT TO:<u@example.test>", replies.RECIPIENT_OK),
            ("RCPT TO:<v@other.test> NOTIFY=SUCCESS", replies.RECIPIENT_OK),
        ],
    )
    step = say(m, "DATA")
    assert_reply(step, replies.START_DATA, Action.READ_DATA)
    assert m.state is State.DATA
    step = m.data_end(None)
    assert step.replies == ()
    assert step.action is Action.ENQUEUE
    assert m.state is State.QUEUEING
    envelope = m.transaction
    assert envelope.sender == "a@b.example"
    assert envelope.mail.size == 100
    assert [(r.address, r.domain) for r in envelope.recipients] == [
        ("u@example.test", "example.test"),
        ("v@other.test", "other.test"),
    ]
    assert envelope.recipients[1].args.notify == ("SUCCESS",)
    step = m.queued("01ABCDEFGHJKMNPQ")
    assert_reply(step, replies.QUEUED)
    assert "01ABCDEFGHJKMNPQ" in step.replies[0].text
    assert m.transaction is None
    assert m.state is State.READY
    # A second transaction in the same session.
    assert_reply(say(m, "MAIL FROM:<>"), replies.SENDER_OK)


@pytest.mark.parametrize(
    "reply",
    [replies.INSUFFICIENT_STORAGE, replies.QUEUE_FAILURE],
)
def test_queue_failure_ends_the_transaction(reply):
    m = ready(make())
    dialogue(m, [("MAIL FROM:<a@b.example>", replies.SENDER_OK), ("RCPT TO:<u@example.test>", replies.RECIPIENT_OK)])
    say(m, "DATA")
    m.data_end(None)
    step = m.queue_failed(reply)
    assert_reply(step, reply)
    assert step.replies[0].code // 100 == 4
    assert m.transaction is None
    assert m.state is State.READY


@pytest.mark.parametrize(
    "error, fatal, action",
    [
        (replies.MESSAGE_TOO_BIG, False, Action.NONE),
        (replies.TOO_MANY_HOPS, False, Action.NONE),
        (replies.NUL_IN_DATA, False, Action.NONE),
        (replies.BARE_NEWLINE, True, Action.CLOSE),
    ],
)
def test_data_refused(error, fatal, action):
    m = ready(make())
    dialogue(m, [("MAIL FROM:<a@b.example>", replies.SENDER_OK), ("RCPT TO:<u@example.test>", replies.RECIPIENT_OK)])
    say(m, "DATA")
    assert_reply(m.data_end(error, fatal), error, action)
    assert m.transaction is None
    assert m.state is State.READY
    assert m.errors == 1


# -- EHLO -----------------------------------------------------------------------


def ehlo_lines(m: Machine) -> list[str]:
    step = say(m, "EHLO client.example")
    assert_reply(step, replies.HELLO)
    return step.replies[0].lines()


def keywords(m: Machine) -> list[str]:
    return [line[4:] for line in ehlo_lines(m)[1:]]


def test_ehlo_reply_is_multiline():
    lines = ehlo_lines(make(max_message_size=1234))
    assert lines[0] == "250-mx.example.test Hello client.example"
    assert all(line.startswith("250-") for line in lines[:-1])
    assert lines[-1] == "250 HELP"
    assert "250-SIZE 1234" in lines
    for ext in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "DSN"):
        assert f"250-{ext}" in lines


def test_helo_reply_has_no_extensions():
    m = make()
    step = say(m, "HELO client.example")
    assert step.replies[0].lines() == ["250 mx.example.test Hello client.example"]
    assert not m.esmtp
    assert m.helo == "client.example"


@pytest.mark.parametrize(
    "tls_available, auth_available, tls_active, starttls, auth",
    [
        (False, False, False, False, False),
        (True, False, False, True, False),
        (True, True, False, True, False),  # AUTH only after TLS
        (True, True, True, False, True),  # after STARTTLS, or on smtps
        (True, False, True, False, False),  # no users: no AUTH
        (False, True, False, False, False),
    ],
)
def test_ehlo_offers_starttls_and_auth(tls_available, auth_available, tls_active, starttls, auth):
    m = make(tls_available=tls_available, auth_available=auth_available, tls_active=tls_active)
    ext = keywords(m)
    assert ("STARTTLS" in ext) == starttls
    assert ("AUTH PLAIN LOGIN" in ext) == auth
    assert m.auth_offered == auth


# -- STARTTLS -------------------------------------------------------------------


@pytest.mark.parametrize(
    "lines, expected",
    [
        ([], replies.NEED_HELO),
        (["HELO client.example"], replies.NEED_HELO),  # STARTTLS is an extension
        (["EHLO client.example", "MAIL FROM:<a@b.example>"], replies.BAD_SEQUENCE),
    ],
)
def test_starttls_out_of_sequence(lines, expected):
    m = make(tls_available=True)
    for line in lines:
        say(m, line)
    assert_reply(say(m, "STARTTLS"), expected)


def test_starttls_not_available():
    assert_reply(say(ready(make()), "STARTTLS"), replies.TLS_NOT_AVAILABLE)


def test_starttls_with_argument():
    assert_reply(say(ready(make(tls_available=True)), "STARTTLS now"), replies.SYNTAX_ERROR)


def test_starttls_resets_the_session():
    m = ready(make(tls_available=True, auth_available=True))
    assert_reply(say(m, "STARTTLS"), replies.READY_TLS, Action.STARTTLS)
    m.tls_started()
    assert m.tls_active
    assert m.state is State.FRESH
    assert m.helo is None
    assert not m.esmtp
    assert m.transaction is None
    # RFC 3207 §4.2: the client must say EHLO again.
    assert_reply(say(m, "MAIL FROM:<a@b.example>"), replies.NEED_HELO)
    ext = keywords(m)
    assert "STARTTLS" not in ext
    assert "AUTH PLAIN LOGIN" in ext
    assert_reply(say(m, "STARTTLS"), replies.ALREADY_TLS)


def test_tls_started_forgets_authentication_and_transaction():
    m = ready(make(tls_available=True, auth_available=True, tls_active=True))
    login(m)
    say(m, "MAIL FROM:<a@b.example>")
    m.tls_started()
    assert m.auth_user is None
    assert m.transaction is None
    assert m.state is State.FRESH


# -- AUTH -----------------------------------------------------------------------


def auth_machine(**limits) -> Machine:
    return ready(make(tls_available=True, auth_available=True, tls_active=True, **limits))


def test_auth_plain_with_initial_response():
    m = auth_machine()
    step = say(m, f"AUTH PLAIN {plain('alice', 'pw 1')}")
    assert step.replies == ()
    assert step.action is Action.CHECK_AUTH
    assert step.credentials == ("alice", "pw 1")
    assert_reply(m.auth_result(True), replies.AUTH_OK)
    assert m.auth_user == "alice"


def test_auth_plain_mechanism_is_case_insensitive():
    step = say(auth_machine(), f"auth plain {plain('alice', 'pw')}")
    assert step.credentials == ("alice", "pw")


def test_auth_plain_with_challenge():
    m = auth_machine()
    step = say(m, "AUTH PLAIN")
    assert_reply(step, replies.AUTH_CHALLENGE)
    assert step.replies[0].lines() == ["334 "]
    assert m.in_auth_exchange
    step = say(m, plain("alice", "pw"))
    assert not m.in_auth_exchange
    assert step.action is Action.CHECK_AUTH
    assert step.credentials == ("alice", "pw")


def test_auth_plain_authzid_equal_to_user():
    step = say(auth_machine(), f"AUTH PLAIN {plain('alice', 'pw', authzid='alice')}")
    assert step.credentials == ("alice", "pw")


def test_auth_plain_authzid_of_another_user_fails_without_a_check():
    m = auth_machine()
    step = say(m, f"AUTH PLAIN {plain('alice', 'pw', authzid='bob')}")
    assert step.action is not Action.CHECK_AUTH
    assert codes(step) == [key(replies.AUTH_FAILED)]
    assert m.auth_user is None
    assert m.auth_failures == 1


def test_auth_login():
    m = auth_machine()
    step = say(m, "AUTH LOGIN")
    assert_reply(step, replies.AUTH_CHALLENGE)
    assert step.replies[0].text == b64("Username:")
    assert m.in_auth_exchange
    step = say(m, b64("alice"))
    assert_reply(step, replies.AUTH_CHALLENGE)
    assert step.replies[0].text == b64("Password:")
    assert m.in_auth_exchange
    step = say(m, b64("pw"))
    assert not m.in_auth_exchange
    assert step.action is Action.CHECK_AUTH
    assert step.credentials == ("alice", "pw")
    assert_reply(m.auth_result(True), replies.AUTH_OK)
    assert m.auth_user == "alice"


def test_auth_login_with_initial_response():
    m = auth_machine()
    step = say(m, f"AUTH LOGIN {b64('alice')}")
    assert step.replies[0].text == b64("Password:")
    assert say(m, b64("pw")).credentials == ("alice", "pw")


@pytest.mark.parametrize("start", ["AUTH PLAIN", "AUTH LOGIN", f"AUTH LOGIN {b64('alice')}"])
def test_auth_cancelled(start):
    m = auth_machine()
    say(m, start)
    assert m.in_auth_exchange
    assert_reply(say(m, "*"), replies.AUTH_CANCELLED)
    assert not m.in_auth_exchange
    assert m.auth_user is None
    # The session goes on with ordinary commands.
    assert_reply(say(m, "NOOP"), replies.NOOP)


@pytest.mark.parametrize(
    "lines",
    [
        ["AUTH PLAIN !!!"],
        ["AUTH PLAIN", "not base64"],
        ["AUTH LOGIN ###"],
        ["AUTH LOGIN", "%%%"],
        ["AUTH LOGIN", b64("alice"), "%%%"],
        ["AUTH PLAIN " + base64.b64encode(b"\xff\xfe\x00a\x00b").decode()],  # not UTF-8
        ["AUTH PLAIN " + b64("alice\0pw")],  # two fields, not three
        ["AUTH PLAIN " + b64("a\0b\0c\0d")],
    ],
)
def test_auth_bad_response(lines):
    m = auth_machine()
    for line in lines[:-1]:
        say(m, line)
    step = say(m, lines[-1])
    assert_reply(step, replies.AUTH_BAD_RESPONSE)
    assert not m.in_auth_exchange
    assert_reply(say(m, "NOOP"), replies.NOOP)


def test_auth_unknown_mechanism():
    assert_reply(say(auth_machine(), "AUTH CRAM-MD5"), replies.AUTH_MECHANISM_UNKNOWN)


def test_auth_without_a_mechanism_is_a_syntax_error():
    # RFC 4954 §4: the mechanism is required; 504 is for one we do not know.
    assert_reply(say(auth_machine(), "AUTH"), replies.SYNTAX_ERROR)


def test_auth_before_tls():
    m = ready(make(tls_available=True, auth_available=True))
    step = say(m, f"AUTH PLAIN {plain('alice', 'pw')}")
    assert_reply(step, replies.AUTH_ENCRYPTION_REQUIRED)
    assert key(replies.AUTH_ENCRYPTION_REQUIRED) == (538, "5.7.11")


def test_auth_not_available():
    m = ready(make(tls_active=True))
    assert_reply(say(m, f"AUTH PLAIN {plain('alice', 'pw')}"), replies.AUTH_NOT_AVAILABLE)


@pytest.mark.parametrize("lines", [[], ["HELO client.example"]])
def test_auth_needs_ehlo(lines):
    m = make(tls_available=True, auth_available=True, tls_active=True)
    for line in lines:
        say(m, line)
    assert_reply(say(m, f"AUTH PLAIN {plain('alice', 'pw')}"), replies.NEED_HELO)


def test_auth_twice():
    m = auth_machine()
    login(m)
    assert_reply(say(m, f"AUTH PLAIN {plain('bob', 'pw')}"), replies.AUTH_ALREADY)
    assert m.auth_user == "alice"


def test_auth_during_a_transaction():
    m = auth_machine()
    say(m, "MAIL FROM:<a@b.example>")
    assert_reply(say(m, f"AUTH PLAIN {plain('alice', 'pw')}"), replies.BAD_SEQUENCE)


def test_auth_failures_grow_the_delay_then_hang_up():
    m = auth_machine(auth_max_failures=3, auth_failure_delay=2.0)
    delays = []
    for _ in range(2):
        say(m, f"AUTH PLAIN {plain('alice', 'wrong')}")
        step = m.auth_result(False)
        assert_reply(step, replies.AUTH_FAILED)
        delays.append(step.delay)
    assert delays == [2.0, 4.0]
    say(m, f"AUTH PLAIN {plain('alice', 'wrong')}")
    step = m.auth_result(False)
    assert codes(step) == [key(replies.AUTH_FAILED), key(replies.AUTH_TOO_MANY_FAILURES)]
    assert step.action is Action.CLOSE
    assert step.delay == 6.0
    assert m.auth_user is None


def test_auth_success_after_a_failure():
    m = auth_machine()
    say(m, f"AUTH PLAIN {plain('alice', 'wrong')}")
    assert m.auth_result(False).delay > 0
    login(m)
    assert m.auth_user == "alice"
    assert m.auth_failures == 1


def test_auth_unavailable_is_temporary():
    m = auth_machine()
    say(m, f"AUTH PLAIN {plain('alice', 'pw')}")
    step = m.auth_unavailable()
    assert_reply(step, replies.AUTH_TEMPORARY)
    assert step.replies[0].code // 100 == 4
    assert m.auth_user is None
    assert m.auth_failures == 0


# -- submission -----------------------------------------------------------------


def test_submission_before_tls_asks_for_starttls():
    m = ready(submission())
    step = say(m, "MAIL FROM:<alice@example.test>")
    assert_reply(step, replies.TLS_REQUIRED)
    assert step.replies[0].code == 530


def test_submission_after_tls_asks_for_auth():
    m = submission()
    m.tls_started()
    ready(m)
    assert_reply(say(m, "MAIL FROM:<alice@example.test>"), replies.AUTH_REQUIRED)
    assert replies.AUTH_REQUIRED.code == 530


def test_submission_trusted_clients_still_log_in():
    m = make("submission", trusted=True, tls_available=True, auth_available=True, tls_active=True)
    ready(m)
    assert_reply(say(m, "MAIL FROM:<alice@example.test>"), replies.AUTH_REQUIRED)


def test_submission_after_auth_relays():
    m = submission()
    m.tls_started()
    ready(m)
    login(m)
    dialogue(
        m,
        [
            ("MAIL FROM:<alice@example.test>", replies.SENDER_OK),
            ("RCPT TO:<friend@remote.example>", replies.RECIPIENT_OK),
        ],
    )


# -- relay control at RCPT ------------------------------------------------------

STRANGER_CLIENT, TRUSTED_CLIENT, AUTHENTICATED_CLIENT = "stranger", "trusted", "authenticated"


def relay_machine(who: str) -> Machine:
    m = make(trusted=who == TRUSTED_CLIENT, tls_available=True, auth_available=True, tls_active=True)
    ready(m)
    if who == AUTHENTICATED_CLIENT:
        login(m)
    assert_reply(say(m, "MAIL FROM:<a@b.example>"), replies.SENDER_OK)
    return m


@pytest.mark.parametrize(
    "rcpt, stranger, trusted, authenticated",
    [
        ("<u@example.test>", True, True, True),
        ("<u@EXAMPLE.test>", True, True, True),
        ("<u@other.test>", True, True, True),
        ("<u@example.test.>", True, True, True),  # the fully qualified form of a local domain
        ("<u@remote.example>", False, True, True),
        ("<u@sub.example.test>", False, True, True),  # a subdomain is not local
        ("<u@example.test.evil.example>", False, True, True),
        ("<user%remote.example@example.test>", False, True, True),
        ('<"user@remote.example"@example.test>', False, True, True),
        ("<remote.example!user@example.test>", False, True, True),
        ("<user!remote@example.test>", False, True, True),
        ("<@example.test:user@remote.example>", False, True, True),
        ("<@example.test:user@example.test>", False, True, True),
        ("<user@[192.0.2.1]>", False, True, True),
        ("<user@[IPv6:2001:db8::1]>", False, True, True),
        ("<Postmaster>", True, True, True),
        ("<postmaster@example.test>", True, True, True),
    ],
)
@pytest.mark.parametrize("who", [STRANGER_CLIENT, TRUSTED_CLIENT, AUTHENTICATED_CLIENT])
def test_relay_decision(who, rcpt, stranger, trusted, authenticated):
    accepted = {STRANGER_CLIENT: stranger, TRUSTED_CLIENT: trusted, AUTHENTICATED_CLIENT: authenticated}[who]
    m = relay_machine(who)
    step = say(m, f"RCPT TO:{rcpt}")
    assert_reply(step, replies.RECIPIENT_OK if accepted else replies.RELAY_DENIED)
    assert len(m.transaction.recipients) == (1 if accepted else 0)


def test_relay_denied_is_permanent_and_policy():
    assert key(replies.RELAY_DENIED) == (554, "5.7.1")


@pytest.mark.parametrize("rcpt", ["<Postmaster>", "<postmaster>", "<POSTMASTER>"])
def test_postmaster_goes_to_the_first_local_domain(rcpt):
    m = relay_machine(STRANGER_CLIENT)
    assert_reply(say(m, f"RCPT TO:{rcpt}"), replies.RECIPIENT_OK)
    (recipient,) = m.transaction.recipients
    assert (recipient.address, recipient.domain) == ("postmaster@example.test", "example.test")


def test_postmaster_without_local_domains_goes_to_the_hostname():
    m = ready(make(local_domains=()))
    say(m, "MAIL FROM:<>")
    assert_reply(say(m, "RCPT TO:<Postmaster>"), replies.RECIPIENT_OK)
    assert m.transaction.recipients[0].address == "postmaster@mx.example.test"


def test_stranger_with_no_local_domains_relays_nothing():
    m = ready(make(local_domains=()))
    say(m, "MAIL FROM:<>")
    assert_reply(say(m, "RCPT TO:<u@mx.example.test>"), replies.RELAY_DENIED)


# -- limits -----------------------------------------------------------------------


def test_max_recipients():
    m = ready(make(max_recipients=3))
    say(m, "MAIL FROM:<a@b.example>")
    for i in range(3):
        assert_reply(say(m, f"RCPT TO:<u{i}@example.test>"), replies.RECIPIENT_OK)
    step = say(m, "RCPT TO:<u3@example.test>")
    assert_reply(step, replies.TOO_MANY_RECIPIENTS)
    assert key(replies.TOO_MANY_RECIPIENTS) == (452, "4.5.3")
    assert len(m.transaction.recipients) == 3
    # A repeat of an accepted recipient is still fine at the limit.
    assert_reply(say(m, "RCPT TO:<u0@example.test>"), replies.RECIPIENT_OK)


def test_duplicate_recipient_stored_once():
    m = ready(make())
    say(m, "MAIL FROM:<a@b.example>")
    for rcpt in ("<u@example.test>", "<u@EXAMPLE.TEST>", "<u@example.test> NOTIFY=NEVER"):
        assert_reply(say(m, f"RCPT TO:{rcpt}"), replies.RECIPIENT_OK)
    assert [r.address for r in m.transaction.recipients] == ["u@example.test"]
    # The local part is case-sensitive: this is someone else.
    assert_reply(say(m, "RCPT TO:<U@example.test>"), replies.RECIPIENT_OK)
    assert len(m.transaction.recipients) == 2


def test_size_over_the_limit():
    m = ready(make(max_message_size=1000))
    step = say(m, "MAIL FROM:<a@b.example> SIZE=1001")
    assert_reply(step, replies.MESSAGE_TOO_BIG)
    assert key(replies.MESSAGE_TOO_BIG) == (552, "5.3.4")
    assert "1000" in step.replies[0].text
    assert m.transaction is None
    assert_reply(say(m, "MAIL FROM:<a@b.example> SIZE=1000"), replies.SENDER_OK)


def test_storage_unavailable():
    asked = []

    def storage(size: int) -> bool:
        asked.append(size)
        return False

    m = ready(make(storage_available=storage))
    step = say(m, "MAIL FROM:<a@b.example> SIZE=4096")
    assert_reply(step, replies.INSUFFICIENT_STORAGE)
    assert key(replies.INSUFFICIENT_STORAGE) == (452, "4.3.1")
    assert asked == [4096]
    assert m.transaction is None
    assert m.errors == 0  # not the client's fault
    say(m, "MAIL FROM:<a@b.example>")
    assert asked == [4096, 0]


@pytest.mark.parametrize(
    "line",
    [
        "MAIL FROM:<a@b.example> SIZE=10",
        "MAIL FROM:<a@b.example> BODY=8BITMIME",
        "MAIL FROM:<jös@b.example> SMTPUTF8",
        "MAIL FROM:<a@b.example> RET=HDRS",
    ],
)
def test_mail_params_need_ehlo(line):
    m = make()
    say(m, "HELO client.example")
    assert_reply(say(m, line), replies.BAD_PARAMETER)
    assert m.transaction is None


@pytest.mark.parametrize("params", ["NOTIFY=NEVER", "ORCPT=rfc822;u@example.test"])
def test_rcpt_params_need_ehlo(params):
    m = make()
    dialogue(m, [("HELO client.example", replies.HELLO), ("MAIL FROM:<a@b.example>", replies.SENDER_OK)])
    assert_reply(say(m, f"RCPT TO:<u@example.test> {params}"), replies.BAD_PARAMETER)
    assert m.transaction.recipients == []


def test_helo_session_without_params_works():
    m = make()
    dialogue(
        m,
        [
            ("HELO client.example", replies.HELLO),
            ("MAIL FROM:<a@b.example>", replies.SENDER_OK),
            ("RCPT TO:<u@example.test>", replies.RECIPIENT_OK),
            ("DATA", replies.START_DATA),
        ],
    )


def test_smtputf8_transaction_allows_utf8_recipients():
    m = ready(make(local_domains=("bücher.example".encode("idna").decode(),)))
    dialogue(
        m,
        [
            ("RSET", replies.RESET),
            ("MAIL FROM:<jös@b.example> SMTPUTF8", replies.SENDER_OK),
            ("RCPT TO:<jörg@bücher.example>", replies.RECIPIENT_OK),
        ],
    )
    assert m.transaction.recipients[0].domain == "xn--bcher-kva.example"


def test_utf8_recipient_without_smtputf8():
    m = ready(make())
    say(m, "MAIL FROM:<a@b.example>")
    assert_reply(say(m, "RCPT TO:<jörg@example.test>"), replies.NEED_SMTPUTF8)


# -- errors -------------------------------------------------------------------------


def test_too_many_errors_closes():
    m = make(max_errors=3)
    assert_reply(say(m, "XYZZY"), replies.UNKNOWN_COMMAND)
    assert_reply(say(m, "MAIL FROM:<a@b.example>"), replies.NEED_HELO)
    assert_reply(say(m, "NOOP"), replies.NOOP)  # good commands do not count
    assert m.errors == 2
    step = say(m, "XYZZY")
    assert codes(step) == [key(replies.UNKNOWN_COMMAND), key(replies.TOO_MANY_ERRORS)]
    assert step.action is Action.CLOSE
    assert key(replies.TOO_MANY_ERRORS)[0] == 421


def test_line_problems_count_as_errors():
    m = make(max_errors=3)
    assert_reply(m.line_too_long(), replies.LINE_TOO_LONG)
    assert_reply(m.bare_lf(), replies.BARE_LF_IN_COMMAND)
    step = m.line_too_long()
    assert step.action is Action.CLOSE
    assert codes(step)[-1] == key(replies.TOO_MANY_ERRORS)


def test_relay_denials_count_as_errors():
    m = relay_machine(STRANGER_CLIENT)
    m.errors = 0
    limit = m.policy.limits.max_errors
    for _ in range(limit - 1):
        assert_reply(say(m, "RCPT TO:<u@remote.example>"), replies.RELAY_DENIED)
    step = say(m, "RCPT TO:<u@remote.example>")
    assert codes(step) == [key(replies.RELAY_DENIED), key(replies.TOO_MANY_ERRORS)]
    assert step.action is Action.CLOSE


def test_error_counters_are_per_session():
    a, b = make(max_errors=2), make(max_errors=2)
    say(a, "XYZZY")
    assert a.errors == 1
    assert b.errors == 0
    assert say(b, "XYZZY").action is Action.NONE


def test_postmaster_spellings_are_one_recipient():
    m = relay_machine(STRANGER_CLIENT)
    for rcpt in ("<Postmaster>", "<postmaster@example.test>", "<POSTMASTER>"):
        assert_reply(say(m, f"RCPT TO:{rcpt}"), replies.RECIPIENT_OK)
    assert [r.address for r in m.transaction.recipients] == ["postmaster@example.test"]


@pytest.mark.parametrize("refuse", [Machine.line_too_long, Machine.bare_lf])
def test_a_refused_line_ends_the_auth_exchange(refuse):
    m = auth_machine()
    say(m, "AUTH LOGIN")
    assert m.in_auth_exchange
    refuse(m)
    assert not m.in_auth_exchange
    # The next line is a command again, not a SASL response.
    assert_reply(say(m, "NOOP"), replies.NOOP)


def test_an_address_too_long_once_in_a_labels_is_refused_with_a_reply():
    # Parsed, it would have been accepted and failed later, when its text was asked for.
    m = make(trusted=True)
    say(m, "EHLO c.test")
    assert codes(say(m, "MAIL FROM:<a@b.test> SMTPUTF8")) == [(250, "2.1.0")]
    step = say(m, f"RCPT TO:<{'x' * 60}@{'.'.join(['ü'] * 27)}.de>")
    assert step.replies[0].code == 501 and not m.transaction.recipients


# -- commands that move no mail ---------------------------------------------------------


@pytest.mark.parametrize("junk", ["NOOP", "RSET", "VRFY someone", "HELP", "EHLO again.test", "HELO again.test"])
def test_past_the_junk_limit_a_command_that_moves_no_mail_ends_the_session(junk):
    m = make(junk_command_limit=3)
    say(m, "EHLO client.test")  # the first greeting is no junk
    for _ in range(3):
        assert say(m, junk).replies[0].code < 400
    assert_reply(say(m, junk), replies.TOO_MANY_JUNK, Action.CLOSE)


def test_queueing_a_message_clears_the_junk_count():
    """A client that moves mail may RSET between its messages for ever (connection reuse)."""
    m = make(junk_command_limit=2)
    say(m, "EHLO client.test")
    for _ in range(5):
        say(m, "RSET")
        say(m, "RSET")
        say(m, "MAIL FROM:<a@other.test>")
        say(m, "RCPT TO:<b@example.test>")
        assert say(m, "DATA").action is Action.READ_DATA
        assert m.data_end(None).action is Action.ENQUEUE
        m.queued("01ABCDEFGHJKMNPQ")
    assert_reply(say(m, "NOOP"), replies.NOOP)


def test_a_client_blocked_for_its_password_guesses_gets_421_and_no_check():
    m = submission()
    m.tls_started()
    say(m, "EHLO client.test")
    assert say(m, "AUTH PLAIN " + b64("\0alice\0guess")).action is Action.CHECK_AUTH
    assert_reply(m.auth_blocked(), replies.AUTH_BLOCKED, Action.CLOSE)


def test_a_recipient_its_domain_s_table_does_not_list_is_refused_at_rcpt():
    table = {"known@example.test"}
    m = ready(make())
    m.policy = replace(
        m.policy, recipient_exists=lambda address, domain: address in table if domain == "example.test" else None
    )
    say(m, "MAIL FROM:<victim@far.test>")
    assert_reply(say(m, "RCPT TO:<nosuch@example.test>"), replies.UNKNOWN_RECIPIENT)
    assert key(replies.UNKNOWN_RECIPIENT) == (550, "5.1.1")
    assert_reply(say(m, "RCPT TO:<known@example.test>"), replies.RECIPIENT_OK)
    assert_reply(say(m, "RCPT TO:<anyone@other.test>"), replies.RECIPIENT_OK)  # no table: everyone exists
    assert_reply(say(m, "RCPT TO:<Postmaster>"), replies.RECIPIENT_OK)  # RFC 5321 §4.5.1: always
    assert_reply(say(m, "RCPT TO:<POSTMASTER@example.test>"), replies.RECIPIENT_OK)  # at a local domain too
    assert [r.address for r in m.transaction.recipients] == [
        "known@example.test",
        "anyone@other.test",
        "postmaster@example.test",
        "POSTMASTER@example.test",
    ]


def test_a_recipient_of_a_domain_verified_by_callout_is_held_for_its_answer():
    m = ready(make())
    m.policy = replace(m.policy, callout_domains=frozenset({"example.test"}))
    say(m, "MAIL FROM:<victim@far.test>")
    step = say(m, "RCPT TO:<Someone@example.test>")
    assert step.action is Action.CHECK and not step.replies
    assert step.check.verify and step.check.recipient == "Someone@example.test"
    assert_reply(m.checked(replies.UNKNOWN_RECIPIENT), replies.UNKNOWN_RECIPIENT)
    step = say(m, "RCPT TO:<nobody@example.test>")
    assert_reply(m.checked(replies.UNVERIFIED_RECIPIENT), replies.UNVERIFIED_RECIPIENT)
    assert key(replies.UNVERIFIED_RECIPIENT) == (450, "4.1.1")
    say(m, "RCPT TO:<known@example.test>")
    assert_reply(m.checked(None), replies.RECIPIENT_OK)
    # Postmaster is never asked about, nor is another domain.
    for rcpt in ("<Postmaster>", "<postmaster@example.test>", "<anyone@other.test>"):
        assert_reply(say(m, f"RCPT TO:{rcpt}"), replies.RECIPIENT_OK)
    assert [r.address for r in m.transaction.recipients] == [
        "known@example.test",
        "postmaster@example.test",
        "anyone@other.test",
    ]
    assert m.errors == 2


def test_a_user_logged_in_may_send_only_as_an_address_they_own():
    owned = {("alice", "alice@example.test")}
    m = submission()
    m.policy = replace(m.policy, sender_ownership=True, may_send_as=lambda user, sender: (user, sender) in owned)
    m.tls_started()
    say(m, "EHLO client.test")
    say(m, "AUTH PLAIN " + plain("alice", "secret"))
    assert_reply(m.auth_result(True), replies.AUTH_OK)
    assert_reply(say(m, "MAIL FROM:<director@example.test>"), replies.SENDER_NOT_OWNED)
    assert key(replies.SENDER_NOT_OWNED) == (553, "5.7.1")
    assert m.transaction is None
    assert_reply(say(m, "MAIL FROM:<>"), replies.SENDER_OK)  # the null sender is nobody's
    say(m, "RSET")
    assert_reply(say(m, "MAIL FROM:<alice@example.test>"), replies.SENDER_OK)


def test_sender_ownership_asks_nothing_of_a_client_not_logged_in_or_a_listener_without_it():
    asked = []
    m = ready(make(trusted=True))
    m.policy = replace(m.policy, sender_ownership=True, may_send_as=lambda user, sender: asked.append(sender))
    assert_reply(say(m, "MAIL FROM:<printer@example.test>"), replies.SENDER_OK)
    m = submission()
    m.policy = replace(m.policy, may_send_as=lambda user, sender: asked.append(sender))  # ownership off
    m.tls_started()
    say(m, "EHLO client.test")
    say(m, "AUTH PLAIN " + plain("alice", "secret"))
    m.auth_result(True)
    assert_reply(say(m, "MAIL FROM:<anyone@far.test>"), replies.SENDER_OK)
    assert asked == []


def test_our_own_clients_recipients_are_not_verified_by_callout():
    m = ready(make(trusted=True))
    m.policy = replace(m.policy, callout_domains=frozenset({"example.test"}))
    say(m, "MAIL FROM:<printer@example.test>")
    assert_reply(say(m, "RCPT TO:<typo@example.test>"), replies.RECIPIENT_OK)


def test_an_aliased_recipient_is_taken_with_its_targets_and_a_broken_alias_is_refused():
    results = {
        "sales@example.test": Expansion(
            (EmailAddress("alice@example.test"), EmailAddress("bob@far.test")), aliased=True
        ),
        "loop@example.test": Expansion(problem="loop", aliased=True),
        "big@example.test": Expansion(problem="too_many", aliased=True),
        "root@mx.test": Expansion(problem="unknown"),
    }
    m = ready(make(local_domains=(*LOCAL, "mx.test")))  # with an aliases file, the hostname is local
    m.policy = replace(
        m.policy,
        expand=lambda address: results.get(address, Expansion((address,))),
        # The table does not list sales@: its alias makes it exist all the same.
        recipient_exists=lambda address, domain: address == "known@example.test",
        callout_domains=frozenset({"example.test"}),
    )
    say(m, "MAIL FROM:<victim@far.test>")
    assert_reply(say(m, "RCPT TO:<sales@example.test>"), replies.RECIPIENT_OK)  # not held for a callout either
    assert_reply(say(m, "RCPT TO:<loop@example.test>"), replies.ALIAS_LOOP)
    assert_reply(say(m, "RCPT TO:<big@example.test>"), replies.ALIAS_TOO_MANY)
    assert_reply(say(m, "RCPT TO:<root@mx.test>"), replies.UNKNOWN_RECIPIENT)
    assert (key(replies.ALIAS_LOOP), key(replies.ALIAS_TOO_MANY)) == ((554, "5.4.6"), (550, "5.5.3"))
    [sales] = m.transaction.recipients
    assert sales.address == "sales@example.test" and sales.targets == ("alice@example.test", "bob@far.test")


def test_an_srs_address_takes_bounces_only():
    back = Expansion((EmailAddress("friend@far.test"),), aliased=True, bounces_only=True)
    m = ready(make())
    m.policy = replace(m.policy, expand=lambda address: back if address.startswith("SRS0=") else Expansion((address,)))
    say(m, "MAIL FROM:<spammer@far.test>")
    assert_reply(say(m, "RCPT TO:<SRS0=abcdef=ab=far.test=friend@example.test>"), replies.SRS_BOUNCES_ONLY)
    say(m, "RSET")
    say(m, "MAIL FROM:<>")
    assert_reply(say(m, "RCPT TO:<SRS0=abcdef=ab=far.test=friend@example.test>"), replies.RECIPIENT_OK)
    assert m.transaction.recipients[0].targets == ("friend@far.test",)


def test_a_listener_that_requires_auth_takes_no_mail_before_it():
    m = make(tls_available=True, auth_available=True, trusted=True)
    m.policy = replace(m.policy, require_auth=True)
    m.tls_started()
    say(m, "EHLO printer.test")
    assert_reply(say(m, "MAIL FROM:<scan@example.test>"), replies.AUTH_REQUIRED)  # trusted or not
    login(m)
    assert_reply(say(m, "MAIL FROM:<scan@example.test>"), replies.SENDER_OK)
