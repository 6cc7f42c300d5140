"""Large messages held in memory (hostile-internet issue, point 2).

Bodies were held in memory while received and again while delivered: one
untrusted address sending 48 parallel 30 MB messages took the daemon from
0.29 to 1.74 GB RSS, and the default limits allowed about 6 GB. Now a
message's start stays in memory and the rest goes to an unnamed spool file
beside the queue as it arrives; delivery reads a large message from the
queue a piece at a time as it sends it. Here four 8 MB messages arrive in
parallel and are then delivered, each step costing the daemon far less
memory than the 32 MB in flight, and every byte arrives. A spool file the
disk refuses is a 451 for that message alone.
"""

import os
import resource
from pathlib import Path

from peer import Peer
from support import RawClient, wait_for

STRANGER = "127.0.0.3"
PARALLEL = 4
LINE = b"y" * 78 + b"\r\n"
LINES = 8 * 1024 * 1024 // len(LINE)
BOUND = 12 * 1024 * 1024  # what the daemon's peak RSS may grow by: well under the 32 MB in flight


def message(n: int) -> bytes:
    return b"Subject: large %d\r\n\r\n" % n + LINE * LINES


def peak_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def spool_files(pid: int, data_dir: Path) -> int:
    """The daemon's open files in its data directory that have no name (the spool's)."""
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            continue  # closed meanwhile
    return sum(1 for link in links if link.startswith(str(data_dir)) and link.endswith("(deleted)"))


def test_large_messages_go_through_spool_and_queue_not_memory(make_daemon):
    with Peer() as peer:
        daemon = make_daemon(tls=False, **{'domains."local.test"': {"route": [f"{peer.host}:{peer.port}"]}}).start()
        pid = daemon.proc.pid
        assert daemon.control("pause")["ok"]
        reset_peak(pid)
        before = peak_kib(pid)
        clients = [RawClient(daemon.ports.smtp, source=STRANGER, timeout=30) for _ in range(PARALLEL)]
        try:
            for n, client in enumerate(clients):
                assert client.reply()[0] == 220
                for line in ("EHLO big.test", "MAIL FROM:<big@far.test>", f"RCPT TO:<r{n}@local.test>"):
                    assert client.cmd(line)[0] == 250
                assert client.cmd("DATA")[0] == 354
            for n, client in enumerate(clients):
                client.send(message(n))  # every message in flight at once, none ended
            wait_for(lambda: spool_files(pid, daemon.data_dir) == PARALLEL, what="a spool file for each message")
            replies = []
            for client in clients:
                client.send(b".\r\n")
                replies.append(client.reply()[0])
            assert replies == [250] * PARALLEL
        finally:
            for client in clients:
                client.close()
        assert spool_files(pid, daemon.data_dir) == 0
        received = (peak_kib(pid) - before) * 1024
        assert received < BOUND, f"receiving grew the daemon by {received >> 20} MiB"

        reset_peak(pid)
        before = peak_kib(pid)
        assert daemon.control("resume")["ok"]
        delivered = peer.wait_for_transactions(PARALLEL, timeout=60)
        sent = (peak_kib(pid) - before) * 1024
        assert sent < BOUND, f"delivering grew the daemon by {sent >> 20} MiB"
        by_subject = {t.data.split(b"\r\n\r\n", 1)[0].rsplit(b"Subject: ", 1)[1]: t.data for t in delivered}
        for n in range(PARALLEL):
            assert by_subject[b"large %d" % n].endswith(message(n))


def test_a_spool_file_the_disk_refuses_is_a_temporary_failure_and_the_session_goes_on(make_daemon):
    daemon = make_daemon(tls=False).start()
    # No file of the daemon's may grow past 2 MB now (the queue file is far smaller): the
    # spool's writes fail with EFBIG, as they would with ENOSPC on a full disk.
    resource.prlimit(daemon.proc.pid, resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))
    with RawClient(daemon.ports.smtp, source=STRANGER, timeout=30) as client:
        assert client.reply()[0] == 220
        assert client.cmd("EHLO big.test")[0] == 250
        for body, code in ((message(0)[: 3 << 20] + b"\r\n", 451), (b"Subject: small\r\n\r\nfine\r\n", 250)):
            assert client.cmd("MAIL FROM:<big@far.test>")[0] == 250
            assert client.cmd("RCPT TO:<r@local.test>")[0] == 250
            assert client.cmd("DATA")[0] == 354
            client.send(body)
            assert client.cmd(".")[0] == code
    assert len(daemon.messages()) == 1
    wait_for(lambda: "spool file: [Errno 27] File too large" in daemon.log_since_start(), what="the cause logged")
