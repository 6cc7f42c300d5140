"""The words the queue is written in: a recipient's delivery state and a message's kind.

One enum each, used by the queue, the scheduler, the operator's tools and
their renderings. They are ``str`` enums: a row read from SQLite holds the
plain text, and compares equal to the member.
"""

import enum


class State(enum.StrEnum):
    """Where a recipient stands."""

    QUEUED = "queued"  # not tried yet (or put back without an attempt)
    DEFERRED = "deferred"  # tried, to be tried again
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    HELD = "held"  # kept from delivery by the operator


PENDING = (State.QUEUED, State.DEFERRED)  # what the scheduler claims from
WAITING = (*PENDING, State.HELD)  # still to deliver, as listings show it
DONE = (State.DELIVERED, State.BOUNCED)

# A listing's filter may also ask for the recipients being delivered right now (leased).
ACTIVE = "active"
FILTER_STATES: tuple[str, ...] = (*State, ACTIVE)


class Kind(enum.StrEnum):
    """What a message is, which decides where the report of its failure goes."""

    MAIL = "mail"  # ordinary mail: failures are reported to the sender
    DSN = "dsn"  # a report we made: its failure goes to the postmaster
    POSTMASTER = "postmaster"  # a report to the postmaster: its failure is only logged
