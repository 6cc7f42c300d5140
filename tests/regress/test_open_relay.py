"""Open relay through address tricks (the class of CVE-1999-0512 and the classic
``%``-hack, bang path and source-route relay tests of the 1990s).

A stranger may hand Empath mail for its local domains only. Relay testers
try to disguise a remote recipient as a local one: ``user%remote@local``,
``remote!user@local``, a quoted ``"user@remote"@local``, a source route
``<@local:user@remote>``, address literals, case and trailing-dot games,
look-alike Unicode domains and bytes that a later parser might cut at. Each
must get RELAY_DENIED or a 5xx syntax reply, never 250, from a stranger;
the honest forms (any case, ``<Postmaster>``) must still be accepted.

A trusted network or an authenticated session may relay, so the same tricks
are accepted there (and syntax errors stay syntax errors). A failure means
Empath is an open relay for spammers, or refuses mail it must take.
"""

import base64

import pytest
from support import RawClient, code_status, raw_reply

from empath.smtp import replies

DENIED = replies.RELAY_DENIED
OK = replies.RECIPIENT_OK
BAD = replies.BAD_ADDRESS
USER, PASSWORD = "relay-user", "relay-Pa55word"

# (RCPT TO argument, reply to a stranger, reply to a trusted or authenticated
# client, whether MAIL declares SMTPUTF8)
CASES = [
    # the honest forms
    ("<user@local.test>", OK, OK, False),
    ("<user@LOCAL.TEST>", OK, OK, False),
    ("<USER@Example.Test>", OK, OK, False),
    ("<Postmaster>", OK, OK, False),
    ("<POSTMASTER>", OK, OK, False),
    ("<postmaster@local.test>", OK, OK, False),
    ('<"user"@local.test>', OK, OK, False),
    # a remote domain, however written
    ("<user@remote.test>", DENIED, OK, False),
    ("user@remote.test", DENIED, OK, False),
    ("<user@REMOTE.TEST>", DENIED, OK, False),
    ("<Postmaster@remote.test>", DENIED, OK, False),
    ("<user@local.test.remote.test>", DENIED, OK, False),
    ("<user@remote.local.test>", DENIED, OK, False),
    ("<user@127.0.0.1>", DENIED, OK, False),
    # sender-specified routing in the local part
    ("<user%remote.test@local.test>", DENIED, OK, False),
    ("<USER%REMOTE.TEST@LOCAL.TEST>", DENIED, OK, False),
    ('<"user@remote.test"@local.test>', DENIED, OK, False),
    ('<"user%remote.test"@local.test>', DENIED, OK, False),
    ('<"user\\@remote.test"@local.test>', DENIED, OK, False),
    ("<remote.test!user@local.test>", DENIED, OK, False),
    ("<REMOTE.TEST!USER@LOCAL.TEST>", DENIED, OK, False),
    # source routes
    ("<@local.test:user@remote.test>", DENIED, OK, False),
    ("<@LOCAL.TEST:user@REMOTE.TEST>", DENIED, OK, False),
    ("<@local.test,@example.test:user@remote.test>", DENIED, OK, False),
    ("<@remote.test:user@local.test>", DENIED, OK, False),
    # the fully qualified form, with its trailing dot, is the same domain
    ("<user@local.test.>", OK, OK, False),
    ("<user@remote.test.>", DENIED, OK, False),
    # address literals
    ("<user@[127.0.0.1]>", DENIED, OK, False),
    ("<user@[IPv6:::1]>", DENIED, OK, False),
    ("<user@[ipv6:0:0:0:0:0:0:0:1]>", DENIED, OK, False),
    # a look-alike domain (Cyrillic "а" in "lоcal") is a different, remote domain
    ("<user@loc\u0430l.test>", replies.NEED_SMTPUTF8, replies.NEED_SMTPUTF8, False),
    ("<user@loc\u0430l.test>", DENIED, OK, True),
    # syntax errors, for everyone
    ("<user@remote.test@local.test>", BAD, BAD, False),
    ("<user@local.test@>", BAD, BAD, False),
    ("<user@[local.test]>", BAD, BAD, False),
    ("<user@remote.test>@local.test", BAD, BAD, False),
    ("<user@remote.test,user@local.test>", BAD, BAD, False),
    ("<user@local.test> <user@remote.test>", replies.BAD_PARAMETER, replies.BAD_PARAMETER, False),
    ("user@remote.test <user@local.test>", replies.BAD_PARAMETER, replies.BAD_PARAMETER, False),
    ("<@local.test user@remote.test>", BAD, BAD, False),
    (b"<user@remote.test\x00@local.test>", replies.SYNTAX_ERROR, replies.SYNTAX_ERROR, False),
    (b"<user@remote.test\xff@local.test>", replies.SYNTAX_ERROR, replies.SYNTAX_ERROR, False),
]
IDS = [repr(c[0]) + ("+SMTPUTF8" if c[3] else "") for c in CASES]


@pytest.fixture(scope="module")
def mx(make_module_daemon):
    daemon = make_module_daemon()
    daemon.add_user(USER, PASSWORD)
    return daemon.start()


def rcpt(client: RawClient, argument: str | bytes, smtputf8: bool) -> tuple[int, str]:
    """Open a transaction and give one recipient; the RCPT reply."""
    assert client.cmd("EHLO client.test")[0] == 250
    assert client.cmd("MAIL FROM:<sender@sender.test>" + (" SMTPUTF8" if smtputf8 else "")) == raw_reply(
        replies.SENDER_OK
    )
    if isinstance(argument, str):
        argument = argument.encode()
    return client.cmd(b"RCPT TO:" + argument)


def check(got: tuple[int, str], expected: replies.Reply) -> None:
    assert got[0] < 400 if expected.code < 400 else got[0] >= 500, got
    assert code_status(got) == (expected.code, expected.status), got


@pytest.mark.parametrize(("argument", "stranger", "privileged", "smtputf8"), CASES, ids=IDS)
def test_stranger(mx, argument, stranger, privileged, smtputf8):
    with RawClient(mx.ports.smtp) as client:
        assert client.reply()[0] == 220
        check(rcpt(client, argument, smtputf8), stranger)
        # Whatever the recipient did, the session is still in step.
        assert client.cmd("NOOP") == raw_reply(replies.NOOP)


@pytest.mark.parametrize(("argument", "stranger", "privileged", "smtputf8"), CASES, ids=IDS)
def test_trusted_network(mx, argument, stranger, privileged, smtputf8):
    with RawClient(mx.ports.smtp, source="127.0.0.2") as client:
        assert client.reply()[0] == 220
        check(rcpt(client, argument, smtputf8), privileged)


@pytest.mark.parametrize(("argument", "stranger", "privileged", "smtputf8"), CASES, ids=IDS)
def test_authenticated_over_starttls(mx, certs, argument, stranger, privileged, smtputf8):
    with RawClient(mx.ports.smtp) as client:
        assert client.reply()[0] == 220
        assert client.cmd("EHLO client.test")[0] == 250
        assert client.cmd("STARTTLS") == raw_reply(replies.READY_TLS)
        client.starttls(certs.client_context())
        assert client.cmd("EHLO client.test")[0] == 250
        blob = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
        assert client.cmd(f"AUTH PLAIN {blob}") == raw_reply(replies.AUTH_OK)
        check(rcpt(client, argument, smtputf8), privileged)


def test_tls_alone_does_not_allow_relay(mx, certs):
    with RawClient(mx.ports.smtp) as client:
        assert client.reply()[0] == 220
        assert client.cmd("EHLO client.test")[0] == 250
        assert client.cmd("STARTTLS") == raw_reply(replies.READY_TLS)
        client.starttls(certs.client_context())
        assert client.cmd("EHLO client.test")[0] == 250
        assert rcpt(client, "<user@remote.test>", False) == raw_reply(DENIED)


def test_failed_login_does_not_allow_relay(mx, certs):
    with RawClient(mx.ports.smtp) as client:
        assert client.reply()[0] == 220
        assert client.cmd("EHLO client.test")[0] == 250
        assert client.cmd("STARTTLS") == raw_reply(replies.READY_TLS)
        client.starttls(certs.client_context())
        assert client.cmd("EHLO client.test")[0] == 250
        blob = base64.b64encode(f"\0{USER}\0wrong".encode()).decode()
        assert client.cmd(f"AUTH PLAIN {blob}") == raw_reply(replies.AUTH_FAILED)
        # authzid naming someone else is refused too, even with the right password
        blob = base64.b64encode(f"admin\0{USER}\0{PASSWORD}".encode()).decode()
        assert client.cmd(f"AUTH PLAIN {blob}") == raw_reply(replies.AUTH_FAILED)
        assert rcpt(client, "<user@remote.test>", False) == raw_reply(DENIED)


def test_relayed_recipient_is_queued_as_given(mx):
    """From a trusted client, a source route is dropped (RFC 5321 §3.6.1) and the mailbox queued."""
    before = {queue_id for queue_id, _ in mx.messages()}
    with RawClient(mx.ports.smtp, source="127.0.0.2") as client:
        assert client.reply()[0] == 220
        assert rcpt(client, "<@local.test:User@Remote.Test>", False) == raw_reply(OK)
        assert client.cmd("DATA") == raw_reply(replies.START_DATA)
        code, _ = client.cmd(b"Subject: relayed\r\n\r\nhi\r\n.")
        assert code == 250
    [queue_id] = [q for q, _ in mx.messages() if q not in before]
    assert mx.recipients(queue_id) == ["User@remote.test"]
