"""Which delivery status notifications a message owes, and to whom (RFC 3461)."""

import pytest

from empath.addresses import EmailAddress, ReversePath
from empath.delivery.notices import DELAYED, FAILED, RELAYED, Pending, owed, report_target, wants
from empath.queue.states import Kind, State

BOUNCED, DEFERRED, DELIVERED, HELD, QUEUED = State.BOUNCED, State.DEFERRED, State.DELIVERED, State.HELD, State.QUEUED
DSN, MAIL, POSTMASTER = Kind.DSN, Kind.MAIL, Kind.POSTMASTER

POSTMASTER_ADDRESS = "postmaster@example.test"


@pytest.mark.parametrize(
    "notify, failed, delayed, relayed",
    [
        ((), True, True, False),  # no NOTIFY: failures and delays, not successes
        (("NEVER",), False, False, False),
        (("FAILURE",), True, False, False),
        (("DELAY",), False, True, False),
        (("SUCCESS",), False, False, True),
        (("SUCCESS", "FAILURE"), True, False, True),
        (("FAILURE", "DELAY"), True, True, False),
        (("SUCCESS", "DELAY", "FAILURE"), True, True, True),
    ],
)
def test_wants(notify, failed, delayed, relayed):
    assert (wants(notify, FAILED), wants(notify, DELAYED), wants(notify, RELAYED)) == (failed, delayed, relayed)


RECEIVED = 1000.0
WARNING = 4 * 3600.0
LATE = RECEIVED + WARNING  # the delay warning is due from here
EARLY = LATE - 1


def rcpt(state: str, notify=(), notified=None, relayed=False, address="r@remote.test") -> Pending:
    return Pending(address, state, tuple(notify), notified, relayed)


def due(recipients, now=LATE, delay_warning=WARNING, to_sender=True) -> dict[str, list[str]]:
    found = owed(recipients, RECEIVED, now, delay_warning, to_sender)
    return {action: [r.address for r in rs] for action, rs in found.items()}


# Each case: the recipient, when, and the notice it is owed to the sender (None: none).
CASES = {
    "bounced: a failure notice": (rcpt(BOUNCED), LATE, FAILED),
    "bounced, already reported": (rcpt(BOUNCED, notified=FAILED), LATE, None),
    "bounced after a delay notice": (rcpt(BOUNCED, notified=DELAYED), LATE, FAILED),
    "bounced, NOTIFY=NEVER": (rcpt(BOUNCED, ("NEVER",)), LATE, None),
    "bounced, NOTIFY=SUCCESS only": (rcpt(BOUNCED, ("SUCCESS",)), LATE, None),
    "bounced, NOTIFY=FAILURE": (rcpt(BOUNCED, ("FAILURE",)), LATE, FAILED),
    "deferred, before the warning": (rcpt(DEFERRED), EARLY, None),
    "deferred, at the warning": (rcpt(DEFERRED), LATE, DELAYED),
    "deferred, long after": (rcpt(DEFERRED), LATE + 86400, DELAYED),
    "deferred, warned already": (rcpt(DEFERRED, notified=DELAYED), LATE + 86400, None),
    "deferred, NOTIFY=FAILURE": (rcpt(DEFERRED, ("FAILURE",)), LATE, None),
    "deferred, NOTIFY=DELAY": (rcpt(DEFERRED, ("DELAY",)), LATE, DELAYED),
    "deferred, NOTIFY=NEVER": (rcpt(DEFERRED, ("NEVER",)), LATE, None),
    "queued is not deferred": (rcpt(QUEUED), LATE, None),
    "held is not deferred": (rcpt(HELD), LATE, None),
    "delivered to a DSN host: nothing": (rcpt(DELIVERED, ("SUCCESS",)), LATE, None),
    "relayed, NOTIFY=SUCCESS": (rcpt(DELIVERED, ("SUCCESS",), relayed=True), EARLY, RELAYED),
    "relayed, NOTIFY=SUCCESS,FAILURE": (rcpt(DELIVERED, ("SUCCESS", "FAILURE"), relayed=True), EARLY, RELAYED),
    "relayed, no NOTIFY": (rcpt(DELIVERED, relayed=True), LATE, None),
    "relayed, NOTIFY=FAILURE": (rcpt(DELIVERED, ("FAILURE",), relayed=True), LATE, None),
    "relayed, reported already": (rcpt(DELIVERED, ("SUCCESS",), RELAYED, relayed=True), LATE, None),
    # RFC 3461 §4.1: NOTIFY=SUCCESS,DELAY asks for both, one after the other.
    "relayed after a delay notice": (rcpt(DELIVERED, ("DELAY", "SUCCESS"), DELAYED, relayed=True), LATE, RELAYED),
}


@pytest.mark.parametrize("name", list(CASES))
def test_owed_to_the_sender(name):
    recipient, now, action = CASES[name]
    assert due([recipient], now=now) == ({action: [recipient.address]} if action else {})


@pytest.mark.parametrize("name", list(CASES))
def test_the_postmaster_hears_only_of_failures(name):
    recipient, now, action = CASES[name]
    # whatever the NOTIFY: the postmaster is told of every failure not yet reported
    failed = recipient.state == BOUNCED and recipient.notified != FAILED
    assert due([recipient], now=now, to_sender=False) == ({FAILED: [recipient.address]} if failed else {})


def test_no_delay_warning_when_turned_off():
    assert due([rcpt(DEFERRED)], now=RECEIVED + 365 * 86400, delay_warning=0) == {}


def test_one_notice_per_action_listing_its_recipients():
    recipients = [
        rcpt(BOUNCED, address="a@x.test"),
        rcpt(DEFERRED, address="b@x.test"),
        rcpt(BOUNCED, ("FAILURE",), address="c@x.test"),
        rcpt(DELIVERED, ("SUCCESS",), relayed=True, address="d@x.test"),
        rcpt(DEFERRED, ("NEVER",), address="e@x.test"),
        rcpt(DELIVERED, address="f@x.test"),
    ]
    assert due(recipients) == {FAILED: ["a@x.test", "c@x.test"], DELAYED: ["b@x.test"], RELAYED: ["d@x.test"]}


@pytest.mark.parametrize(
    "kind, sender, target",
    [
        (MAIL, "alice@example.test", ("alice@example.test", DSN)),
        (MAIL, "", (POSTMASTER_ADDRESS, POSTMASTER)),  # someone else's bounce
        (DSN, "", (POSTMASTER_ADDRESS, POSTMASTER)),  # our own report
        (DSN, "alice@example.test", (POSTMASTER_ADDRESS, POSTMASTER)),
        (POSTMASTER, "", None),  # a failed report to the postmaster is only logged
        (POSTMASTER, "alice@example.test", None),
    ],
)
def test_report_target(kind, sender, target):
    assert report_target(kind, ReversePath(sender), EmailAddress(POSTMASTER_ADDRESS)) == target
