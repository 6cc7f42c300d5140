"""Mail from the office's devices leaves with Date, Message-ID and From;
a stranger's mail is stored as it came (docs/configuration.md, [[listeners]])."""

import email
import smtplib
from email.policy import compat32

TRUSTED = "127.0.0.2"  # the test config's trusted network
SCAN = b"Subject: scan\r\n\r\npage 1\r\n"


def stored_headers(daemon, queue_id: str) -> email.message.Message:
    return email.message_from_bytes(daemon.body(queue_id), policy=compat32)


def test_a_trusted_device_s_mail_gets_the_headers_it_left_out(make_daemon):
    daemon = make_daemon().start()
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10, source_address=(TRUSTED, 0)) as client:
        client.sendmail("scanner@local.test", ["ops@remote.test"], SCAN)
    [(queue_id, _)] = daemon.messages()
    message = stored_headers(daemon, queue_id)
    assert message["From"] == "scanner@local.test"
    assert message["Date"] and message["Message-ID"].startswith(f"<{queue_id}.")
    assert message.get_payload() == "page 1\r\n"


def test_a_stranger_s_mail_is_left_as_it_came(make_daemon):
    daemon = make_daemon().start()
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:  # 127.0.0.1 is not trusted
        client.sendmail("someone@far.example", ["ops@local.test"], SCAN)
    [(queue_id, _)] = daemon.messages()
    message = stored_headers(daemon, queue_id)
    assert message.keys() == ["Received", "Subject"]
