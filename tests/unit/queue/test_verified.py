"""The callout answers kept in the queue database (queue/verified.py), and the migration that made their table."""

from queue_helpers import NOW, db  # noqa: F401 (a fixture)

from empath.queue import database, models, verified
from empath.queue.verified import Answer

DAY = 86400.0


def test_remember_lookup_forget(db):  # noqa: F811
    conn = db.connection()
    assert verified.lookup(conn, "a@local.test") is None
    verified.remember(db, Answer("a@local.test", False, "550 no", NOW))
    verified.remember(db, Answer("a@local.test", True, "250 ok", NOW + 1))  # asked again: replaced
    assert verified.lookup(conn, "a@local.test") == Answer("a@local.test", True, "250 ok", NOW + 1)
    assert verified.forget(db, "a@local.test") == 1
    assert verified.forget(db, "a@local.test") == 0
    assert verified.lookup(conn, "a@local.test") is None


def test_prune_drops_the_expired_then_the_oldest_unknown_first(db):  # noqa: F811
    answers = [
        Answer("old-known@t", True, "", NOW - 40 * DAY),  # expired (31d)
        Answer("old-unknown@t", False, "", NOW - 4 * DAY),  # expired (3d)
        Answer("known-1@t", True, "", NOW - 10 * DAY),
        Answer("known-2@t", True, "", NOW - 9 * DAY),
        Answer("unknown-1@t", False, "", NOW - 2 * DAY),
        Answer("unknown-2@t", False, "", NOW - 1 * DAY),
    ]
    for answer in answers:
        verified.remember(db, answer)
    assert verified.prune(db, NOW - 31 * DAY, NOW - 3 * DAY, keep=10) == 2
    # Strangers' made-up names go before the addresses that exist, oldest first.
    assert verified.prune(db, NOW - 31 * DAY, NOW - 3 * DAY, keep=3) == 1
    left = sorted(a for (a,) in db.execute_sql("SELECT address FROM verified"))
    assert left == ["known-1@t", "known-2@t", "unknown-2@t"]
    assert verified.prune(db, NOW - 31 * DAY, NOW - 3 * DAY, keep=1) == 2
    assert [a for (a,) in db.execute_sql("SELECT address FROM verified")] == ["known-2@t"]


def test_a_version_2_queue_gets_the_verified_table_and_its_mail_is_ours(tmp_path):
    path = tmp_path / "queue.sqlite3"
    old = database.connect(path)
    database.ensure_schema(old)
    old.execute_sql("DROP TABLE verified")
    old.execute_sql("ALTER TABLE message DROP COLUMN stranger")
    old.execute_sql("UPDATE schema_info SET version = 2")
    old.execute_sql(
        "INSERT INTO message (queue_id, sender, size, received_at, expires_at, client_address, client_helo,"
        " listener, trace_id, smtputf8, body_type, held, kind) VALUES"
        " ('01M86MFFNTC14267', '', 1, 1, 2, '', '', 'smtp', 't', 0, '7BIT', 0, 'mail')"
    )
    assert database.ensure_schema(old) == models.SCHEMA_VERSION == 3
    assert old.execute_sql("SELECT stranger FROM message").fetchall() == [(0,)]
    verified.remember(old, Answer("a@t", True, "250", 1.0))
    assert verified.lookup(old.connection(), "a@t") is not None
    old.close()
