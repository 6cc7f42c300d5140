"""The scheduler's queries must stay index lookups with a million queued rows.

Rather than time them, ask SQLite for each query's plan: every query the
delivery side runs must search an index, never scan a table or sort all
matching rows in a temporary B-tree.
"""

import re

import pytest
import queue_helpers
from queue_helpers import NOW

from empath.addresses import EmailAddress
from empath.delivery import results
from empath.delivery.results import NoticeSettings
from empath.queue import claims, database, stats
from empath.queue.insert import insert
from empath.queue.states import State


@pytest.fixture
def db(tmp_path):
    queue_db = database.connect(tmp_path / "queue.sqlite3")
    database.ensure_schema(queue_db)
    with queue_db.atomic():
        for i in range(50):
            body = b"Subject: x\r\n\r\nx\r\n"
            insert(queue_db, queue_helpers.new_message(f"Q{i:015d}", body, rcpts=(f"r{i}@d{i % 5}.test",), age=i))
    yield queue_db
    queue_db.close()


def traced(queue_db, fn, *args):
    """The statements ``fn(queue_db, *args)`` runs."""
    statements = []
    queue_db.connection().set_trace_callback(statements.append)
    try:
        with queue_db.atomic():
            fn(queue_db, *args)
    finally:
        queue_db.connection().set_trace_callback(None)
    return [s for s in statements if s.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE"))]


def plans(queue_db, statements):
    return {s: " | ".join(row[3] for row in queue_db.execute_sql("EXPLAIN QUERY PLAN " + s)) for s in statements}


def table_scans(plan):
    """Steps that read a whole table. peewee aliases tables (``t1``), so any name counts."""
    return [step for step in plan.split(" | ") if re.fullmatch(r"SCAN \w+", step)]


def assert_indexed(queue_db, statements):
    assert statements
    for sql, plan in plans(queue_db, statements).items():
        assert not table_scans(plan), (sql, plan)
        assert "TEMP B-TREE" not in plan, (sql, plan)


def test_a_table_scan_is_seen_under_any_alias():
    assert table_scans("SCAN t1 | SEARCH t2 USING INDEX x (a=?)") == ["SCAN t1"]
    assert table_scans("SEARCH t1 USING INDEX recipient_state_next_attempt_at (state=? AND next_attempt_at<?)") == []


def test_claim_searches_the_state_and_due_time_index(db):
    statements = traced(db, claims.claim, NOW, "owner", 60.0, 10)
    assert_indexed(db, statements)
    assert any("recipient_state_next_attempt_at" in plan for plan in plans(db, statements).values())


def test_next_due_and_flush_search_the_index(db):
    assert_indexed(db, traced(db, claims.next_due))
    assert_indexed(db, traced(db, claims.flush, NOW))
    assert_indexed(db, traced(db, claims.flush, NOW, "d1.test"))


def test_recording_an_outcome_touches_one_message_by_index(db):
    [claimed] = claims.claim(db, NOW, "owner", 60.0, 1)
    result = claims.Result(claimed.recipient_id, State.DELIVERED, "250 ok", "2.0.0", "mx.test")
    settings = NoticeSettings("mx.test", EmailAddress("postmaster@d.test"), 0, 86400)
    statements = traced(db, results.record, claimed.queue_id, [result], NOW, settings)
    assert_indexed(db, statements)


def test_the_metrics_queue_figures_are_index_searches(db):
    statements = traced(db, stats.counts)
    assert len(statements) == 6  # one count per state, and the oldest receipt
    assert_indexed(db, statements)
    assert all("SEARCH" in plan for plan in plans(db, statements).values())
