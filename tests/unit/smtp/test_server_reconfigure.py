"""SmtpServer.reconfigure with recipients tables: a reload keeps the tables whose
file is the same (and their last good contents), and one it cannot read changes nothing."""

import pytest
from config_helpers import GOOD, check

from empath.smtp.server import SmtpServer
from empath.watched import FileError


def config_with(tmp_path, table: str):
    text = GOOD + f'[relay]\nlocal_domains = ["office.test"]\n[domains."office.test"]\nrecipients = "{table}"\n'
    return check(text, tmp_path / "empath.toml")


def test_a_reload_keeps_a_table_whose_file_is_the_same_and_a_bad_one_changes_nothing(tmp_path):
    (tmp_path / "valid").write_text("alice@office.test\n")
    server = SmtpServer(config_with(tmp_path, "valid"), queue=None)  # type: ignore[arg-type] # no queue needed
    table = server.recipients["office.test"]
    server.reconfigure(config_with(tmp_path, "valid"))
    assert server.recipients["office.test"] is table  # not read again, its last good table kept

    before = server.config
    with pytest.raises(FileError):
        server.reconfigure(config_with(tmp_path, "absent"))
    assert server.config is before and server.recipients["office.test"] is table
    assert server.recipient_exists("alice@office.test", "office.test") is True
