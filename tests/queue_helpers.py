"""Messages put straight into a queue database for the tests of the queue's
readers and actions (tests/unit/test_queue_admin.py, test_top.py)."""

import pytest

from empath.addresses import EmailAddress, ReversePath
from empath.queue import claims as work
from empath.queue import ids, store
from empath.queue.store import NewMessage, NewRecipient

NOW = 1_800_000_000.0
SETTINGS = work.NoticeSettings("mx.test", EmailAddress("postmaster@mx.test"), 14400, 5 * 86400)


@pytest.fixture
def db(tmp_path):
    """A new queue database in tmp_path, the models bound to it."""
    database = store.connect(tmp_path / "queue.sqlite3")
    store.ensure_schema(database)
    yield database
    database.close()


def add(sender="a@b.test", rcpts=("r@one.test",), age=0.0, body=b"Subject: x\r\n\r\nhello\r\n") -> str:
    """Queue a message received ``age`` seconds before NOW (the models must be bound); its queue id."""
    queue_id = ids.new_id(NOW - age)
    store.insert(
        NewMessage(
            queue_id=queue_id,
            sender=ReversePath(sender),
            body=body,
            recipients=[NewRecipient(EmailAddress(r), EmailAddress(r).domain) for r in rcpts],
            received_at=NOW - age,
            expires_at=NOW + 86400,
            client_address="127.0.0.1",
            client_helo="client.test",
            listener="smtp",
            trace_id="trace-1",
            events=[("received", "from client.test")],
        )
    )
    return queue_id
