"""What an accepted message becomes in the queue when an alias forwards some of its
recipients off-site (message/submit.py ``entries``), with and without SRS."""

from queue_helpers import NOW, new_message

from empath.addresses import Domain, EmailAddress
from empath.message.submit import entries
from empath.srs import Srs

SRS = Srs((b"a secret of sixteen chars",), "office.test")
OURS = (Domain("office.test"), Domain("mx.office.test"))


def addresses(*text: str) -> tuple[EmailAddress, ...]:
    return tuple(map(EmailAddress, text))


def message(sender: str = "friend@far.example"):
    return new_message(
        "01M86MFFNTC14267", sender=sender, rcpts=("alice@office.test", "alice@home.example", "bob@x.test")
    )


# sales@ was given and expands to alice@office.test and alice@home.example; bob@x.test was given as it is.
ALIASED = [
    (EmailAddress("sales@office.test"), addresses("alice@office.test", "alice@home.example")),
    (EmailAddress("bob@x.test"), ()),
]


def test_the_forwarded_recipients_go_in_a_copy_whose_sender_is_rewritten():
    kept, copy = entries(message(), ALIASED, OURS, SRS, NOW, "01M86MFFNTC1COPY")
    assert kept.queue_id == "01M86MFFNTC14267" and kept.sender == "friend@far.example"
    assert [r.address for r in kept.recipients] == ["alice@office.test", "bob@x.test"]  # bob was not forwarded
    assert copy.queue_id == "01M86MFFNTC1COPY" and copy.sender.startswith("SRS0=")
    assert copy.sender.endswith("=far.example=friend@office.test")
    assert [r.address for r in copy.recipients] == ["alice@home.example"]
    assert copy.events[-1] == ("received", "forwarded by an alias: the sender friend@far.example rewritten (SRS)")
    assert copy.body is kept.body and copy.head == kept.head


def test_a_message_all_of_whose_recipients_are_forwarded_keeps_its_id():
    only = [(EmailAddress("sales@office.test"), addresses("alice@home.example"))]
    msg = new_message("01M86MFFNTC14267", sender="friend@far.example", rcpts=("alice@home.example",))
    [copy] = entries(msg, only, OURS, SRS, NOW, "01M86MFFNTC1COPY")
    assert copy.queue_id == "01M86MFFNTC14267" and copy.sender.startswith("SRS0=")


def test_what_is_never_rewritten():
    theirs, ours, null = message(), message(sender="alice@office.test"), message(sender="")
    assert entries(theirs, ALIASED, OURS, None, NOW, "X") == (theirs,)  # no SRS configured
    assert entries(ours, ALIASED, OURS, SRS, NOW, "X") == (ours,)  # our own domain: SPF passes for us already
    assert entries(null, ALIASED, OURS, SRS, NOW, "X") == (null,)  # a bounce: no sender to rewrite
    inside = [(EmailAddress("sales@office.test"), addresses("alice@office.test"))]
    assert entries(theirs, inside, OURS, SRS, NOW, "X") == (theirs,)  # nothing goes off-site
