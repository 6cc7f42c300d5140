"""The benchmark scripts (scripts/bench/) run, in their smallest form, and end
with one parseable RESULT line. Their figures are not judged here: speed is
measured by scripts/bench/all, outside the test run."""

import os
import re
import shutil
import subprocess
import sys

import pytest
from support import ROOT

RESULT = re.compile(r"^RESULT (?P<scenario>\w+)(?P<figures>( \w+=-?[\d.]+(e[+-]?\d+)?| \w+=nan)+)$")


def run_bench(script: str, *args: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench" / script), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    m = RESULT.match(last)
    assert m, f"not a RESULT line: {last!r}"
    return {key: float(value) for key, value in (pair.split("=") for pair in m.group("figures").split())}


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("smtp-source", path="/usr/sbin:/usr/bin") is None,
    reason="a private Postfix needs root and the postfix package",
)
def test_accept_bench_compares_empath_with_postfix():
    figures = run_bench("accept.py", "--runs", "1", "--messages", "50", "--sessions", "20")
    assert figures["messages"] == 50
    for key in ("empath_s20", "postfix_s20", "empath_s20_reuse", "postfix_s20_reuse"):
        assert figures[key] > 0
    assert figures["ratio_s20"] == pytest.approx(figures["empath_s20"] / figures["postfix_s20"], rel=0.01)


@pytest.mark.skipif(
    shutil.which("smtp-source", path="/usr/sbin:/usr/bin") is None, reason="smtp-source comes with postfix"
)
def test_load_profile_plays_the_named_volumes_and_measures_each():
    figures = run_bench("load_profile.py", "--seconds", "2", "--largest", "100000", "--drain", "20")
    assert figures["d1000_rate"] == pytest.approx(1000 * 60 / 86400, rel=0.01)
    for volume in (1000, 10000, 100000):
        assert figures[f"d{volume}_rss_mib"] > 10 and figures[f"d{volume}_cpu"] >= 0
    # Disk writes are read from /proc/PID/io: every level queued something durably.
    assert figures["d100000_kib_written_per_msg"] > 0
    assert figures["sustained_per_day"] == 100000


def test_attack_bench_runs_each_scenario_and_checks_what_it_claims():
    figures = run_bench("attack.py", "--only", "slots", "--seconds", "4")
    assert figures["office_probes"] > 0 and figures["office_failed"] == 0
    assert figures["strangers_greeted"] >= 100 and figures["strangers_refused"] > 0  # the 100 strangers' slots
    figures = run_bench("attack.py", "--only", "drip", "--drip-timeout", "1")
    assert 1 <= figures["command_cut_seconds"] < 2 and 1 <= figures["data_cut_seconds"] < 2
    figures = run_bench("attack.py", "--only", "memory", "--parallel", "3", "--crowd", "2", "--size-mb", "1")
    assert figures["messages"] == figures["accepted"] == figures["byte_exact"] == 2
    assert figures["rss_peak_mib"] >= figures["rss_idle_mib"] > 10


def test_queue_scale_bench_claims_at_each_size():
    figures = run_bench("queue_scale.py", "--runs", "1", "--messages", "10000")
    assert set(figures) == {"claim_ms_1000", "claim_ms_10000", "commit_ms_1000", "commit_ms_10000", "ratio"}
    assert figures["claim_ms_1000"] > 0 and figures["claim_ms_10000"] > 0


def test_fsync_check_finds_a_250_sent_before_its_sync_completed():
    sys.path.insert(0, str(ROOT / "scripts" / "bench"))
    from fsync_check import check

    wal = "5</q/queue.sqlite3-wal>"

    def reply(queue_id: str) -> str:
        return f'11  sendto(7<socket:[1]>, "250 2.0.0 OK queued as {queue_id}\\r\\n", 41, 0, NULL, 0) = 41'

    synced_first = [
        f'10  pwrite64({wal}, "\\r\\0\\0\\0 01M86ZTA61C3RJP2 x", 4096, 0) = 4096',
        f"10  fdatasync({wal}) = 0",
        reply("01M86ZTA61C3RJP2"),
    ]
    replied_first = [
        f'10  pwrite64({wal}, "\\r\\0\\0\\0 01M86ZTA61MRVJEX x", 4096, 0) = 4096',
        f"10  fdatasync({wal} <unfinished ...>",
        reply("01M86ZTA61MRVJEX"),
        "10  <... fdatasync resumed>) = 0",
    ]
    assert check(synced_first) == (1, 1, [])
    replies, syncs, violations = check(synced_first + replied_first)
    assert (replies, syncs) == (2, 2)
    assert violations == [reply("01M86ZTA61MRVJEX")]


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("smtp-source", path="/usr/sbin:/usr/bin") is None,
    reason="a private Postfix needs root and the postfix package",
)
def test_verify_bench_times_callouts_at_rcpt_and_accept_with_verification():
    figures = run_bench("verify.py", "--runs", "1", "--messages", "50", "--recipients", "20")
    assert figures["recipients"] == 20 and figures["messages"] == 50
    for kind in ("plain", "miss", "hit"):
        assert figures[f"rcpt_p95_ms_{kind}"] >= figures[f"rcpt_ms_{kind}"] > 0
    for label in ("plain", "verify"):
        assert figures[f"empath_{label}"] > 0 and figures[f"postfix_{label}"] > 0
        assert figures[f"ratio_{label}"] == pytest.approx(
            figures[f"empath_{label}"] / figures[f"postfix_{label}"], rel=0.01
        )
    for mta in ("empath", "postfix"):
        assert figures[f"{mta}_verify_kept"] == pytest.approx(
            figures[f"{mta}_verify"] / figures[f"{mta}_plain"], rel=0.01
        )
