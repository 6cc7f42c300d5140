"""The short fuzz run: every harness for ~15 s, none may crash.

Marked ``fuzz``, so the default pytest selection leaves it out; the whole
gate (scripts/test with no arguments, which CI runs) runs it last. Alone:
    scripts/test -m fuzz tests/fuzz
(scripts/fuzz all 60 is the one-minute form). Needs atheris, which
scripts/fuzz installs into .venv when it is missing.
"""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECONDS = 15

pytestmark = pytest.mark.fuzz


@pytest.mark.parametrize("target", ["commands", "addresses", "data", "config", "control"])
def test_fuzz_short(target):
    proc = subprocess.run(
        [str(ROOT / "scripts" / "fuzz"), target, str(SECONDS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SECONDS + 240,  # atheris instruments every module before it starts
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
