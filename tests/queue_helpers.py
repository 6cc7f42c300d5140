"""Messages put straight into a queue database for the tests of the queue's
readers and actions (tests/unit/queue/, tests/unit/cmd/test_top.py)."""

import pytest

from empath.addresses import EmailAddress, ReversePath
from empath.delivery.results import NoticeSettings
from empath.queue import database, ids
from empath.queue.insert import NewMessage, NewRecipient, insert
from empath.queue.models import Recipient
from empath.queue.spool import Spool
from empath.queue.states import State

NOW = 1_800_000_000.0
SETTINGS = NoticeSettings("mx.test", EmailAddress("postmaster@mx.test"), 14400, 5 * 86400)


@pytest.fixture
def db(tmp_path):
    """A new queue database in tmp_path."""
    opened = database.connect(tmp_path / "queue.sqlite3")
    database.ensure_schema(opened)
    yield opened
    opened.close()


def new_message(
    queue_id: str, body=b"Subject: x\r\n\r\nhello\r\n", sender="a@b.test", rcpts=("r@one.test",), age=0.0, events=()
) -> NewMessage:
    """A message received ``age`` seconds before NOW, as the session hands it to the queue."""
    return NewMessage(
        queue_id=queue_id,
        sender=ReversePath(sender),
        body=Spool.holding(body),
        recipients=[NewRecipient(EmailAddress(r), EmailAddress(r).domain) for r in rcpts],
        received_at=NOW - age,
        expires_at=NOW + 86400,
        client_address="127.0.0.1",
        client_helo="client.test",
        listener="smtp",
        trace_id="trace-1",
        events=list(events),
    )


def add(db, sender="a@b.test", rcpts=("r@one.test",), age=0.0, body=b"Subject: x\r\n\r\nhello\r\n") -> str:
    """Queue a message received ``age`` seconds before NOW; its queue id."""
    queue_id = ids.new_id(NOW - age)
    insert(db, new_message(queue_id, body, sender, rcpts, age, events=[("received", "from client.test")]))
    return queue_id


def defer(db, queue_id, address, reply="451 4.3.0 try later", due=NOW + 3600):
    """Make one recipient deferred, as after a first attempt."""
    Recipient.update(
        state=State.DEFERRED, attempts=1, last_reply=reply, last_status="4.3.0", next_attempt_at=due
    ).where(Recipient.message == queue_id, Recipient.address == address).execute(db)
