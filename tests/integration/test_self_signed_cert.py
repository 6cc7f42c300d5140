"""The certificate scripts/run makes for trying Empath out (scripts/self-signed-cert):
a client that checks names, as every modern one does, accepts it for its name,
localhost and 127.0.0.1, which it could not with the name in the CN alone."""

import socket
import ssl
import subprocess
import threading

import pytest
from support import ROOT


def handshake(cert, key, server_hostname: str) -> None:
    """A TLS handshake over loopback, the client trusting ``cert`` and checking the name."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass  # the client refused us: its side says why

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=10) as raw,
                client.wrap_socket(raw, server_hostname=server_hostname),
            ):
                pass
        finally:
            thread.join(10)


def test_the_try_out_certificate_names_the_host_in_its_subject_alt_name(tmp_path):
    made = subprocess.run([ROOT / "scripts" / "self-signed-cert", tmp_path / "tls", "mail.example.test"], timeout=60)
    assert made.returncode == 0
    cert, key = tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    for name in ("mail.example.test", "localhost", "127.0.0.1"):
        handshake(cert, key, name)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(cert, key, "other.example.test")
