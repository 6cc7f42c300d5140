import pytest
from support import Certs, Daemon, make_certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory) -> Certs:
    """A throwaway CA and a server certificate for mx.test.example, localhost and 127.0.0.1 (trustme, offline)."""
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def make_daemon(tmp_path, certs):
    """Build a Daemon with extra config sections; it is stopped at the end of the test."""
    made = []

    def make(tls: bool = True, **sections) -> Daemon:
        daemon = Daemon(tmp_path / f"d{len(made)}", certs if tls else None, sections)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.stop()


@pytest.fixture
def daemon(make_daemon) -> Daemon:
    """A running daemon with TLS, all three listeners and the test defaults."""
    return make_daemon().start()
