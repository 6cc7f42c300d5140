"""Fixtures shared by the regression tests: daemons that live for a whole module.

Most regression tests only need a daemon with one config; starting it once per
module keeps the suite fast. Tests that share such a daemon must not depend on
what other tests queued: they compare the queue before and after.
"""

import pytest
from support import Daemon


@pytest.fixture(scope="module")
def make_module_daemon(tmp_path_factory, certs):
    """Like ``make_daemon``, but the daemons live until the end of the module."""
    made = []

    def make(tls: bool = True, **sections) -> Daemon:
        daemon = Daemon(tmp_path_factory.mktemp("regress"), certs if tls else None, sections)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.stop()
