"""The queue's tables (peewee models) and its schema version.

The body lives in a table of its own so that scans of messages and
recipients never read it. Times are UNIX seconds (REAL) in UTC.

The models are bound to no database: every query is run on the database
its caller was handed (``query.execute(db)``, ``db.execute(query)``), so
one process can hold several queue files open, and none is reached
through a global.
"""

from collections.abc import Iterable
from typing import Any, cast

import peewee

from empath.queue.states import Kind, State

# 2: index on message.received_at (the oldest message's age);
# 3: the verified table, and message.stranger
SCHEMA_VERSION = 3


class BaseModel(peewee.Model):
    class Meta:
        legacy_table_names = False


class SchemaInfo(BaseModel):
    version = peewee.IntegerField()


class Message(BaseModel):
    queue_id = peewee.CharField(primary_key=True, max_length=16)
    sender = peewee.TextField()  # "" for the null sender <>
    size = peewee.IntegerField()
    received_at = peewee.FloatField(index=True)
    expires_at = peewee.FloatField()
    client_address = peewee.TextField()
    client_helo = peewee.TextField()
    auth_user = peewee.TextField(null=True)
    listener = peewee.TextField()
    trace_id = peewee.TextField()
    smtputf8 = peewee.BooleanField(default=False)
    body_type = peewee.TextField(default="7BIT")
    dsn_ret = peewee.TextField(null=True)
    dsn_envid = peewee.TextField(null=True)
    held = peewee.BooleanField(default=False)
    kind = peewee.TextField(default=Kind.MAIL.value)
    # From a client neither trusted nor logged in. DEFAULT 0 in the schema too, as the
    # migration that added it has: a row written by SQL that does not name it is ours.
    stranger = peewee.BooleanField(default=False, constraints=[peewee.SQL("DEFAULT 0")])


class Body(BaseModel):
    message = peewee.ForeignKeyField(Message, primary_key=True, on_delete="CASCADE", column_name="queue_id")
    data = peewee.BlobField()


class Recipient(BaseModel):
    id = peewee.AutoField()  # what peewee adds implicitly, spelled out so type checkers see it
    message = peewee.ForeignKeyField(Message, backref="recipients", on_delete="CASCADE", column_name="queue_id")
    address = peewee.TextField()
    domain = peewee.TextField(index=True)
    state = peewee.TextField(default=State.QUEUED.value)
    attempts = peewee.IntegerField(default=0)
    next_attempt_at = peewee.FloatField()
    last_reply = peewee.TextField(null=True)  # the remote's reply, or what went wrong
    last_status = peewee.TextField(null=True)  # its enhanced status code
    remote_mta = peewee.TextField(null=True)  # the host that gave it
    relayed = peewee.BooleanField(default=False)  # delivered to a next hop that took no DSN parameters
    notified = peewee.TextField(null=True)  # the last DSN action reported to the sender: delayed, failed, relayed
    dsn_notify = peewee.TextField(null=True)  # comma-separated NOTIFY values
    dsn_orcpt = peewee.TextField(null=True)
    lease_owner = peewee.TextField(null=True)
    lease_until = peewee.FloatField(null=True)

    class Meta:
        indexes = ((("state", "next_attempt_at"), False),)


class Event(BaseModel):
    """Append-only history: receipt, attempts, operator actions."""

    queue_id = peewee.CharField(max_length=16, index=True)
    recipient = peewee.TextField(null=True)
    at = peewee.FloatField()
    kind = peewee.TextField()
    detail = peewee.TextField(default="")


class Verified(BaseModel):
    """What a next hop said when asked whether a recipient exists (delivery/verify.py)."""

    address = peewee.TextField(primary_key=True)  # as it was sent to the next hop
    found = peewee.BooleanField()  # does the address exist?
    reply = peewee.TextField()  # the next hop's reply to RCPT, as the operator will want to see it
    checked_at = peewee.FloatField(index=True)


MODELS = (SchemaInfo, Message, Body, Recipient, Event, Verified)

# peewee's implicit id of the event table: the order events were written in.
event_id = cast(peewee.AutoField, Event._meta.primary_key)


def tuples(db: peewee.Database, query: Any) -> Iterable[tuple[Any, ...]]:
    """A query's rows as SQLite gives them (a boolean is 0 or 1): peewee's
    conversion of every value takes most of the time of a large listing."""
    return cast(Iterable[tuple[Any, ...]], db.execute(query))
