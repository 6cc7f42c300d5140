"""Aliases end to end (issue 18): /etc/aliases for local names, the virtual alias
table for the local domains, over SMTP and through sendmail alike.

The local domain goes to one Peer (the internal server), forwarded mail for
home.example to another; example.test goes nowhere (nothing listens), so
mail for it waits in the queue for `queue show`.
"""

import os
import subprocess
import sys

from peer import Peer, start_peers
from support import ROOT, RawClient, empathctl, raw_reply, wait_for

from empath.smtp import replies

ALIASES = """\
# local names
postmaster: root
root: it@local.test
backups: :include:team
"""
# An edit made while the daemon runs: --check would have refused it at start.
LOOP = "loop-a: loop-b\nloop-b: loop-a\n"
VIRTUAL = """\
sales@local.test      alice@local.test, Bob@local.test, alice@home.example
archive@local.test    keep@example.test
@branch.local.test    it@local.test
"""


def aliased_daemon(make_daemon, internal: Peer, home: Peer):
    daemon = make_daemon(delivery={"connect_timeout": "2s", "command_timeout": "5s", "retry_first": "1h"})
    (daemon.directory / "aliases").write_text(ALIASES)
    (daemon.directory / "team").write_text("carol@local.test,\ndave@home.example\n")
    (daemon.directory / "virtual").write_text(VIRTUAL)
    daemon.sections["relay"] = {"local_domains": ["local.test", "example.test", "branch.local.test"]}
    daemon.sections["aliases"] = {
        "file": str(daemon.directory / "aliases"),
        "virtual": str(daemon.directory / "virtual"),
    }
    daemon.sections['domains."local.test"'] = {"route": [f"{internal.host}:{internal.port}"]}
    daemon.sections['domains."home.example"'] = {"route": [f"{home.host}:{home.port}"]}
    return daemon


def send(daemon, *recipients: str, source: str = "127.0.0.1") -> list[tuple[int, str]]:
    """A stranger's message to ``recipients``: each RCPT's reply (and the message, if one was taken)."""
    with RawClient(daemon.ports.smtp, source=source) as client:
        client.reply()
        client.cmd("EHLO client.test")
        assert client.cmd("MAIL FROM:<friend@far.test>")[0] == 250
        got = [client.cmd(f"RCPT TO:<{r}>") for r in recipients]
        if any(code == 250 for code, _ in got):
            assert client.cmd("DATA")[0] == 354
            assert client.cmd(b"Subject: hello\r\n\r\nhi\r\n.")[0] == 250
        return got


def orcpt_of(transaction, address: str) -> str | None:
    return transaction.rcpt_params(address).get("ORCPT")


def test_a_virtual_alias_fans_out_keeping_the_address_given(make_daemon):
    internal, home = start_peers("127.0.0.11", "127.0.0.12")
    with internal, home:
        daemon = aliased_daemon(make_daemon, internal, home).start()
        assert send(daemon, "sales@local.test") == [raw_reply(replies.RECIPIENT_OK)]
        [inside] = internal.wait_for_transactions(1)
        [outside] = home.wait_for_transactions(1)
        assert inside.recipients == ["alice@local.test", "Bob@local.test"]
        assert outside.recipients == ["alice@home.example"]
        for t, address in ((inside, "alice@local.test"), (inside, "Bob@local.test"), (outside, "alice@home.example")):
            assert orcpt_of(t, address) == "rfc822;sales@local.test"  # DSN reports name what the sender wrote
        assert b"for <sales@local.test>" in inside.data  # the Received header's: the address given
        assert not internal.violations and not home.violations


def test_queue_show_names_the_address_given(make_daemon):
    internal, home = start_peers("127.0.0.11", "127.0.0.12")
    with internal, home:
        daemon = aliased_daemon(make_daemon, internal, home).start()
        send(daemon, "archive@local.test")
        [(queue_id, _)] = daemon.messages()
        assert daemon.recipients(queue_id) == ["keep@example.test"]
        wait_for(lambda: "deferred" in empathctl(daemon, "queue", "show", queue_id).stdout, what="a deferral")
        shown = empathctl(daemon, "queue", "show", queue_id).stdout
        assert "<keep@example.test> (for <archive@local.test>)  deferred" in shown


def test_local_names_catch_alls_loops_and_unknown_names_over_smtp(make_daemon):
    internal, home = start_peers("127.0.0.11", "127.0.0.12")
    with internal, home:
        daemon = aliased_daemon(make_daemon, internal, home).start()
        (daemon.directory / "aliases").write_text(ALIASES + LOOP)
        got = send(
            daemon,
            "root@mx.test.example",  # the hostname's local names are ours, from anyone
            "backups@localhost",  # an :include: file
            "anyone@branch.local.test",  # the catch-all
            "loop-a@mx.test.example",
            "nobody@mx.test.example",  # no alias, and no local mailboxes
        )
        ok = raw_reply(replies.RECIPIENT_OK)
        assert got == [ok, ok, ok, raw_reply(replies.ALIAS_LOOP), raw_reply(replies.UNKNOWN_RECIPIENT)]
        [inside] = internal.wait_for_transactions(1)
        assert inside.recipients == ["it@local.test", "carol@local.test"]  # it@ once, for root@ and the catch-all
        [outside] = home.wait_for_transactions(1)
        assert outside.recipients == ["dave@home.example"]
    log = daemon.log_since_start()
    assert "reject RCPT from unknown[127.0.0.1]: 554 5.4.6" in log and "to=<loop-a@mx.test.example>" in log


def test_sendmail_root_goes_where_the_aliases_say_as_over_smtp(make_daemon):
    internal, home = start_peers("127.0.0.11", "127.0.0.12")
    with internal, home:
        daemon = aliased_daemon(make_daemon, internal, home)
        daemon.write_config()
        env = dict(os.environ, EMPATH_CONFIG=str(daemon.config_path))

        def sendmail(*args: str) -> subprocess.CompletedProcess:
            command = [sys.executable, "-m", "empath.cmd.sendmail", *args]
            return subprocess.run(command, input=b"Subject: cron\n\nok\n", capture_output=True, env=env, cwd=ROOT)

        done = sendmail("-i", "root", "sales@local.test")
        assert done.returncode == 0, done.stderr
        [(queue_id, _)] = daemon.messages()
        assert daemon.recipients(queue_id) == [
            "it@local.test",
            "alice@local.test",
            "Bob@local.test",
            "alice@home.example",
        ]
        orcpts = dict(daemon.query("SELECT address, dsn_orcpt FROM recipient WHERE queue_id = ?", queue_id))
        assert orcpts["it@local.test"] == "rfc822;root@mx.test.example"
        refused = sendmail("-i", "nobody")
        assert refused.returncode == 67  # EX_NOUSER
        assert b"nobody@mx.test.example: leads to a local name with no alias" in refused.stderr
        (daemon.directory / "aliases").write_text(ALIASES + LOOP)
        assert sendmail("-i", "loop-a").returncode == 78  # EX_CONFIG: the aliases are at fault
        assert len(daemon.messages()) == 1


def test_an_edit_takes_effect_at_the_next_rcpt_and_a_bad_one_is_named_by_check_and_newaliases(make_daemon):
    internal, home = start_peers("127.0.0.11", "127.0.0.12")
    with internal, home:
        daemon = aliased_daemon(make_daemon, internal, home).start()
        aliases = daemon.directory / "aliases"
        aliases.write_text(ALIASES + "helpdesk: it@local.test\n")
        assert send(daemon, "helpdesk@mx.test.example") == [raw_reply(replies.RECIPIENT_OK)]

        aliases.write_text(ALIASES + "mailbox: /var/mail/mailbox\n" + LOOP)
        env = dict(os.environ, EMPATH_CONFIG=str(daemon.config_path))
        for module in ("empath.cmd.newaliases", "empath.cmd.empath"):
            args = [] if module.endswith("newaliases") else ["--check", "--config", str(daemon.config_path)]
            done = subprocess.run(
                [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=ROOT
            )
            assert done.returncode != 0
            assert f"{aliases}, line 5: '/var/mail/mailbox': files are not written" in done.stderr, done.stderr
        # The daemon keeps the last good table meanwhile: helpdesk still goes where it went.
        assert send(daemon, "helpdesk@mx.test.example") == [raw_reply(replies.RECIPIENT_OK)]
        aliases.write_text(ALIASES + LOOP)
        looped = subprocess.run([sys.executable, "-m", "empath.cmd.newaliases"], capture_output=True, env=env, cwd=ROOT)
        assert (
            looped.returncode == 78
            and f"{aliases}, line 5: loop-a: its aliases loop back to it".encode() in looped.stderr
        )
        aliases.write_text(ALIASES)
        ok = subprocess.run([sys.executable, "-m", "empath.cmd.newaliases"], capture_output=True, env=env, cwd=ROOT)
        assert ok.returncode == 0 and ok.stderr == b""


def test_empathctl_expand_and_senders(make_daemon):
    internal, home = start_peers("127.0.0.11", "127.0.0.12")
    with internal, home:
        daemon = aliased_daemon(make_daemon, internal, home)
        daemon.write_config()
        (daemon.directory / "aliases").write_text(ALIASES + LOOP)
        done = empathctl(daemon, "expand", "sales@local.test", "root", "bob@local.test", "loop-a")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            "sales@local.test: alice@local.test, Bob@local.test, alice@home.example",
            "root@mx.test.example: it@local.test",
            "bob@local.test: not aliased (delivered as it is)",
            "loop-a@mx.test.example: refused: its aliases loop back to it",
        ]
        done = empathctl(daemon, "senders", "alice")
        assert done.stdout == (
            "alice: alice@local.test, alice@example.test, alice@branch.local.test"
            " (the login at each local domain: no line in the senders table)\n"
        )


def test_forwarded_mail_carries_an_srs_sender_and_its_bounce_comes_back_to_the_original_sender(make_daemon):
    internal, home, far = start_peers("127.0.0.11", "127.0.0.12", "127.0.0.13")
    with internal, home, far:
        daemon = aliased_daemon(make_daemon, internal, home)
        secret = daemon.directory / "srs.secret"
        secret.write_text("# the first signs\nan office secret of some length\n")
        daemon.sections["srs"] = {"secret_file": str(secret)}
        daemon.sections['domains."far.test"'] = {"route": [f"{far.host}:{far.port}"]}
        daemon.start()
        assert send(daemon, "sales@local.test") == [raw_reply(replies.RECIPIENT_OK)]
        [inside] = internal.wait_for_transactions(1)
        [outside] = home.wait_for_transactions(1)
        assert inside.sender == "friend@far.test"  # not forwarded: never rewritten
        rewritten = outside.sender
        assert rewritten.startswith("SRS0=") and rewritten.endswith("=far.test=friend@local.test")
        assert outside.data == inside.data  # the same message, signed and stamped once

        # home.example bounces it: the bounce comes to the SRS address, and goes on to friend@far.test.
        with RawClient(daemon.ports.smtp) as bouncer:
            bouncer.reply()
            bouncer.cmd("EHLO home.example")
            assert bouncer.cmd("MAIL FROM:<>")[0] == 250
            assert bouncer.cmd(f"RCPT TO:<{rewritten}>") == raw_reply(replies.RECIPIENT_OK)
            forged = rewritten.replace("SRS0=", "SRS0=x", 1)
            assert bouncer.cmd(f"RCPT TO:<{forged}>") == raw_reply(replies.UNKNOWN_RECIPIENT)
            assert bouncer.cmd("DATA")[0] == 354
            assert bouncer.cmd(b"Subject: Undelivered Mail Returned to Sender\r\n\r\nsorry\r\n.")[0] == 250
        [bounce] = far.wait_for_transactions(1)
        assert bounce.sender == "" and bounce.recipients == ["friend@far.test"]
        assert orcpt_of(bounce, "friend@far.test") == "rfc822;" + rewritten.replace("=", "+3D")  # xtext

        # It takes bounces only: a message with a sender is not relayed to friend@ through it.
        with RawClient(daemon.ports.smtp) as spammer:
            spammer.reply()
            spammer.cmd("EHLO spam.test")
            assert spammer.cmd("MAIL FROM:<offers@spam.test>")[0] == 250
            assert spammer.cmd(f"RCPT TO:<{rewritten}>") == raw_reply(replies.SRS_BOUNCES_ONLY)

        # When Empath itself fails to deliver the forwarded copy, its bounce goes to friend@far.test
        # too, not to the SRS address (which the internal server would refuse).
        home.rcpt_reply = "550 5.2.1 mailbox disabled"
        assert send(daemon, "sales@local.test") == [raw_reply(replies.RECIPIENT_OK)]
        _, ours = far.wait_for_transactions(2)
        assert ours.sender == "" and ours.recipients == ["friend@far.test"]
        assert b"mailbox disabled" in ours.data and b"alice@home.example" in ours.data
        assert not [r for t in internal.transactions for r in t.recipients if r.startswith("SRS")]
