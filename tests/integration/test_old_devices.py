"""A listener for the LAN's old devices (issue 19): a 2012 scanner speaks TLS 1.0,
which port 25 and submission refuse; the old-device listener takes it, and only from
the networks it names. Debian's openssl s_client plays the scanner, its protocol forced."""

import shutil
import subprocess

import pytest
from support import RawClient, free_port, raw_reply

from empath.smtp import replies

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl (Debian package) is not installed")


def tls10(port: int, source: str = "127.0.0.1") -> subprocess.CompletedProcess:
    """A STARTTLS handshake forced to TLS 1.0 (security level 0: OpenSSL 3 offers it no cipher above)."""
    command = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-starttls", "smtp", "-tls1"]
    command += ["-cipher", "DEFAULT:@SECLEVEL=0", "-bind", f"{source}:0", "-brief"]
    return subprocess.run(command, input="QUIT\n", capture_output=True, text=True, timeout=20)


def test_tls_1_0_is_taken_on_the_old_device_listener_only_and_only_from_its_network(make_daemon):
    daemon = make_daemon()
    old = free_port()
    daemon.extra = (
        f'\n[[listeners]]\naddress = "127.0.0.1:{old}"\nmode = "smtp"\ntls_min_version = "1.0"\n'
        'networks = ["127.0.0.2/32"]\n'
    )
    daemon.start()

    done = tls10(old, source="127.0.0.2")
    assert "Protocol version: TLSv1\n" in done.stderr, done.stderr  # the scanner's handshake
    assert tls10(daemon.ports.smtp, source="127.0.0.2").returncode != 0  # port 25: TLS 1.2 and up
    assert tls10(daemon.ports.submission, source="127.0.0.2").returncode != 0

    with RawClient(old, source="127.0.0.3") as stranger:  # not in the listener's networks
        assert stranger.reply() == raw_reply(replies.NOT_FROM_HERE)
    log = daemon.log_since_start()
    assert "reject CONNECT from unknown[127.0.0.3]: 554 5.7.1 Connections from your address" in log
