"""A queue.sqlite3 that is not a database, or cannot be read, stops the start with one line.

Found in the layout review: ``empath`` started on a garbage queue file
printed a peewee.DatabaseError traceback, because Store.open let it escape
and the command caught only QueueError and OSError. Queue.open now turns
whatever SQLite says of the file into a QueueError naming the file; the
command prints it on one line and exits 1. Nothing of the file is changed.
"""

import os
import subprocess
import sys

import pytest
from support import ROOT, free_port

CONFIG = """\
[server]
hostname = "mx.test.example"
data_dir = "data"

[[listeners]]
address = "127.0.0.1:{port}"
"""

GARBAGE = b"this is not an SQLite database, just bytes in its place\n" * 100


@pytest.mark.parametrize("broken", ["garbage", "unreadable"])
def test_a_queue_file_sqlite_cannot_use_is_one_line_and_exit_1(tmp_path, broken):
    data = tmp_path / "data"
    data.mkdir()
    queue = data / "queue.sqlite3"
    queue.write_bytes(GARBAGE)
    if broken == "unreadable":
        if os.geteuid() == 0:
            queue.unlink()
            queue.mkdir()  # root reads any file: a directory in its place is as unusable
        else:
            queue.chmod(0)
    config = tmp_path / "empath.toml"
    config.write_text(CONFIG.format(port=free_port()))
    result = subprocess.run(
        [sys.executable, "-m", "empath.cmd.empath", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"empath: cannot use the queue database {queue}: ")
    if broken == "garbage":
        assert "not a database" in line
        assert queue.read_bytes() == GARBAGE  # left as it was found, for the operator to look at
