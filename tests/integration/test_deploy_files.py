"""The deployment files: the systemd unit passes systemd-analyze verify."""

import shutil
import subprocess

import pytest
from support import ROOT


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies(tmp_path):
    # The unit names /opt/empath; point it at this checkout so its commands exist.
    unit = (ROOT / "conf" / "empath.service").read_text().replace("/opt/empath", str(ROOT))
    path = tmp_path / "empath.service"
    path.write_text(unit)
    result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if "empath.service" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr
