"""Password guessing across sessions (hostile-internet issue, point 3).

The limit on AUTH failures held per session only: one address made 135
guesses in 9 seconds over many sessions, more than a million a day. Now the
failures of an address are counted across its sessions (and across the SMTP
helper processes): past auth_failures_per_client within auth_failure_window,
AUTH gets 421 4.7.0 before any password is checked, and the refusal is a
reject line; other addresses are not touched.
"""

import smtplib
import ssl

import pytest
from support import wait_for

PASSWORD = "the right one"


def guess(daemon, certs, password: str, source: str = "127.0.0.1") -> int:
    """One session, one AUTH PLAIN: the reply code."""
    context = ssl.create_default_context(cafile=str(certs.ca_pem))
    with smtplib.SMTP("127.0.0.1", daemon.ports.submission, timeout=10, source_address=(source, 0)) as smtp:
        smtp.starttls(context=context)
        smtp.ehlo("guesser.test")
        smtp.user, smtp.password = "alice", password
        try:
            code, _ = smtp.auth("PLAIN", smtp.auth_plain)
        except smtplib.SMTPAuthenticationError as exc:
            code = exc.smtp_code
        except smtplib.SMTPServerDisconnected:
            code = 421
        return code


@pytest.mark.parametrize("processes", [1, 2])
def test_guesses_are_counted_across_sessions_and_processes(make_daemon, certs, processes):
    daemon = make_daemon(
        server={"smtp_processes": processes}, limits={"auth_failures_per_client": 3, "auth_failure_window": "1h"}
    )
    daemon.add_user("alice", PASSWORD)
    daemon.start()
    if processes > 1:
        wait_for(lambda: daemon.log().count("smtp_helper_ready") >= processes, what="the helpers")
    assert [guess(daemon, certs, f"guess {n}") for n in range(3)] == [535, 535, 535]
    # The fourth, even with the right password: refused before any check.
    assert guess(daemon, certs, PASSWORD) == 421
    assert guess(daemon, certs, "guess 4") == 421
    assert " reject AUTH from unknown[127.0.0.1]: 421 4.7.0 Too many authentication failures from your" in daemon.log()
    assert guess(daemon, certs, PASSWORD, source="127.0.0.3") == 235  # another address is not touched
