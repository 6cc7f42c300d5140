import smtplib

import pytest


@pytest.mark.smoke
def test_accepts_mail_for_local_domain_and_queues_it(daemon):
    with smtplib.SMTP("127.0.0.1", daemon.ports.smtp, timeout=10) as client:
        client.ehlo("client.test")
        refused = client.sendmail("alice@sender.test", ["bob@local.test"], b"Subject: hi\r\n\r\nhello\r\n")
    assert refused == {}
    [(queue_id, sender)] = daemon.messages()
    assert sender == "alice@sender.test"
    assert daemon.recipients(queue_id) == ["bob@local.test"]
    assert daemon.body(queue_id).endswith(b"Subject: hi\r\n\r\nhello\r\n")
