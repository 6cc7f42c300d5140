"""The state machine holds HELO, MAIL and RCPT for the plug-ins (Action.CHECK), then
applies their verdict: accepted as if no plug-in ran, or refused leaving no trace."""

from empath.config.model import Limits
from empath.smtp import replies
from empath.smtp.machine import Action, Check, Machine, Policy, State

REFUSAL = replies.plugin_rejection(550, "5.7.1", "Blocked")


def make(*checks: str, **limits) -> Machine:
    policy = Policy(hostname="mx.example.test", mode="smtp", limits=Limits(**limits), local_domains=("example.test",))
    return Machine(policy, "192.0.2.7", trusted=False, checks=frozenset(checks))


def say(m: Machine, line: str):
    return m.handle(line.encode())


def test_without_plugins_nothing_is_held():
    m = make()
    assert say(m, "EHLO client.test").action is Action.NONE
    assert say(m, "MAIL FROM:<a@client.test>").replies == (replies.SENDER_OK,)


def test_helo_is_held_then_accepted():
    m = make("helo")
    step = say(m, "EHLO Client.Test")
    assert step.action is Action.CHECK and step.replies == ()
    assert step.check == Check("helo", helo="Client.Test")
    assert m.state is State.FRESH and m.helo is None  # nothing changes before the verdict
    accepted = m.checked(None)
    assert accepted.replies[0].code == 250 and "PIPELINING" in accepted.replies[0].text
    assert m.state is State.READY and m.helo == "Client.Test" and m.esmtp


def test_refused_helo_leaves_the_session_as_it_was():
    m = make("helo")
    say(m, "HELO client.test")
    assert m.checked(REFUSAL).replies == (REFUSAL,)
    assert m.state is State.FRESH and m.helo is None
    assert say(m, "MAIL FROM:<a@client.test>").replies == (replies.NEED_HELO,)


def test_mail_is_held_with_its_parameters_then_refused():
    m = make("mail")
    say(m, "EHLO client.test")
    step = say(m, "MAIL FROM:<spam@bad.test> SIZE=100 BODY=8BITMIME")
    assert step.action is Action.CHECK
    assert step.check.hook == "mail" and step.check.mail.path.address == "spam@bad.test"
    assert step.check.mail.size == 100
    assert m.checked(REFUSAL).replies == (REFUSAL,)
    assert m.transaction is None and m.state is State.READY
    assert say(m, "RCPT TO:<bob@example.test>").replies == (replies.NEED_MAIL,)
    assert say(m, "MAIL FROM:<ok@client.test>").action is Action.CHECK  # a new MAIL is allowed
    assert m.checked(None).replies == (replies.SENDER_OK,)
    assert m.transaction is not None and m.transaction.sender == "ok@client.test"


def test_a_refused_recipient_is_not_added_and_counts_as_an_error():
    m = make("rcpt", max_errors=2)
    say(m, "HELO client.test")
    say(m, "MAIL FROM:<a@client.test>")
    assert say(m, "RCPT TO:<blocked@example.test>").check == Check("rcpt", recipient="blocked@example.test")
    m.checked(REFUSAL)
    assert say(m, "RCPT TO:<bob@example.test>").action is Action.CHECK
    m.checked(None)
    assert [r.address for r in m.transaction.recipients] == ["bob@example.test"]
    # A repeated recipient was checked already: answered at once.
    assert say(m, "RCPT TO:<bob@example.test>").replies == (replies.RECIPIENT_OK,)
    say(m, "RCPT TO:<x@example.test>")
    closing = m.checked(REFUSAL)
    assert closing.replies == (REFUSAL, replies.TOO_MANY_ERRORS) and closing.action is Action.CLOSE


def test_what_the_machine_refuses_itself_never_reaches_the_plugins():
    m = make("rcpt")
    say(m, "HELO client.test")
    say(m, "MAIL FROM:<a@client.test>")
    assert say(m, "RCPT TO:<someone@elsewhere.test>").replies == (replies.RELAY_DENIED,)


def test_a_421_from_a_plugin_closes_the_session():
    """RFC 5321 §3.8: after 421 the server closes the channel."""
    m = make("mail")
    say(m, "EHLO client.test")
    say(m, "MAIL FROM:<a@client.test>")
    closing = replies.plugin_rejection(421, "4.7.0", "Try again later")
    step = m.checked(closing)
    assert step.replies == (closing,) and step.action is Action.CLOSE


def test_a_refusal_in_place_of_the_greeting_is_554_or_421():
    """RFC 5321 §3.1, §4.3.2: no other code may stand where the 220 would."""
    assert replies.at_greeting(replies.plugin_rejection(550, "5.7.1", "No")).code == 554
    assert replies.at_greeting(replies.plugin_rejection(450, "4.7.1", "Later")).code == 421
    failure = replies.at_greeting(replies.PLUGIN_FAILURE)
    assert (failure.code, failure.status, failure.text) == (421, "4.3.0", replies.PLUGIN_FAILURE.text)
