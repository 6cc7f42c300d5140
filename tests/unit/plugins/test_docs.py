"""docs/plugins.md's complete example works as written: the module, its config, --check."""

import re
import sys
from pathlib import Path

import pytest

from empath.cmd import empath as cli
from empath.plugins.api import Accept, Context, Reject, parse_headers
from empath.plugins.loader import load

DOC = Path(__file__).resolve().parents[3] / "docs" / "plugins.md"
EXAMPLE = DOC.read_text().split("## A complete example", 1)[1]
MODULE = re.search(r"```python\n(.*?)```", EXAMPLE, re.S).group(1)
CONFIG = re.search(r"```toml\n(.*?)```", EXAMPLE, re.S).group(1)


@pytest.fixture
def mailrules(tmp_path, monkeypatch):
    (tmp_path / "mailrules.py").write_text(MODULE)
    mailboxes = tmp_path / "mailboxes"
    mailboxes.write_text("alice@example.org\nBob@Example.org\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = tmp_path / "empath.toml"
    config.write_text(
        '[server]\nhostname = "mx.example.org"\ndata_dir = "data"\n\n[[listeners]]\naddress = "127.0.0.1:2525"\n\n'
        + CONFIG.replace("/etc/empath/mailboxes", str(mailboxes))
    )
    yield config
    sys.modules.pop("mailrules", None)


def test_the_example_passes_check_and_loads(mailrules, capsys):
    assert cli.main(["--config", str(mailrules), "--check"]) == 0
    from empath.config import load as load_config

    chains = load(load_config(mailrules)).for_listener("smtp@127.0.0.1:2525")
    assert [p.name for p in chains["rcpt"]] == ["mailboxes"] and [p.name for p in chains["data"]] == ["executables"]


def test_the_example_rules(mailrules):
    from empath.config import load as load_config

    plugins = load(load_config(mailrules))
    chains = plugins.for_listener("smtp@127.0.0.1:2525")
    [mailboxes], [executables] = chains["rcpt"], chains["data"]

    def rcpt(address, **fields):
        return mailboxes.fn(Context("rcpt", "t", options=mailboxes.options, recipient=address, **fields))

    assert rcpt("someone@example.org") == Reject(550, "5.1.1", "<someone@example.org>: no such mailbox here")
    assert rcpt("bob@example.org") is None and rcpt("anyone@elsewhere.test") is None
    assert rcpt("someone@example.org", auth_user="alice") == Accept()

    read = sys.modules["mailrules"]._mailboxes
    assert read
    plugins.reload()  # as the daemon's reload does: mailrules.reload() forgets the files read
    assert not read

    attachment = b'Content-Type: application/octet-stream; name="invoice.pdf.exe"\r\n'
    message = b"Subject: invoice\r\nContent-Type: multipart/mixed\r\n\r\n--b\r\n" + attachment + b"\r\nMZ\r\n--b--\r\n"
    ctx = Context("data", "t", headers=parse_headers(message), message=message)
    assert executables.fn(ctx) == Reject(552, "5.7.0", "Executable attachments are not accepted here")
    clean = b"Subject: hi\r\n\r\nname=report.pdf\r\n"
    assert executables.fn(Context("data", "t", message=clean)) is None
