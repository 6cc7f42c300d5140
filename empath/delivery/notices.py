"""Which delivery status notifications a message owes, and to whom.

Pure. RFC 3461 decides by each recipient's NOTIFY: NEVER silences it;
without NOTIFY we report failures and delays (not successes). Reports go to
the envelope sender and never to the null sender: a message with a null
sender (a bounce, ours or another MTA's) that fails is reported to the
postmaster, and a report to the postmaster that fails is only logged, so
no notification can ever loop.
"""

from dataclasses import dataclass

from empath.addresses import EmailAddress, ReversePath
from empath.queue.states import Kind, State

FAILED = "failed"
DELAYED = "delayed"
RELAYED = "relayed"


@dataclass(frozen=True)
class Pending:
    """A recipient, as far as notifications care."""

    address: EmailAddress
    state: str  # a State, as stored
    notify: tuple[str, ...]  # empty: not given
    notified: str | None  # the last action already reported
    relayed: bool = False


def wants(notify: tuple[str, ...], action: str) -> bool:
    if "NEVER" in notify:
        return False
    if not notify:
        return action in (FAILED, DELAYED)
    return {FAILED: "FAILURE", DELAYED: "DELAY", RELAYED: "SUCCESS"}[action] in notify


def owed(
    recipients: list[Pending], received_at: float, now: float, delay_warning: float, to_sender: bool
) -> dict[str, list[Pending]]:
    """The notices due now, by action. Each recipient is reported at most once per action."""
    due: dict[str, list[Pending]] = {FAILED: [], DELAYED: [], RELAYED: []}
    for r in recipients:
        if r.state == State.BOUNCED and r.notified != FAILED:
            due[FAILED].append(r)
        elif not to_sender:
            continue  # the postmaster hears only of failures
        elif r.state == State.DEFERRED and r.notified is None and delay_warning and now - received_at >= delay_warning:
            due[DELAYED].append(r)
        elif r.state == State.DELIVERED and r.relayed and r.notified in (None, DELAYED):
            # NOTIFY=DELAY,SUCCESS asks for both: a delay notice, then the relay.
            due[RELAYED].append(r)
    wanted = {action: [r for r in rs if not to_sender or wants(r.notify, action)] for action, rs in due.items()}
    return {action: rs for action, rs in wanted.items() if rs}  # no empty notices


def report_target(kind: str, sender: ReversePath, postmaster: EmailAddress) -> tuple[EmailAddress, Kind] | None:
    """Where a message's notices go, and the kind of message the notice is."""
    if kind == Kind.MAIL and isinstance(sender, EmailAddress):  # not the null sender
        return sender, Kind.DSN
    if kind in (Kind.MAIL, Kind.DSN):
        return postmaster, Kind.POSTMASTER
    return None
