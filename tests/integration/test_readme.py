"""The README's "Trying it", run as written: the example config (only its ports,
paths and DNS moved into the test's own, so that nothing here touches the
internet or a fixed port), its swaks and empathctl lines, and what the README
says the user will see."""

import os
import re
import signal
import socket
import subprocess

import pytest
import tomlkit
from support import ROOT, free_port, wait_for

README = (ROOT / "README.md").read_text()
TRYING = README.split("## Trying it", 1)[1].split("\n## ", 1)[0]
COMMANDS = re.search(r"```sh\n(.*?)```", TRYING, re.S).group(1).splitlines()


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def example(tmp_path):
    """conf/empath.toml running on free ports; its ports, by the README's."""
    doc = tomlkit.parse((ROOT / "conf" / "empath.toml").read_text())
    ports = {old: free_port() for old in ("2525", "2587", "2465", "2526")}
    for listener in doc["listeners"]:
        host, port = listener["address"].rsplit(":", 1)
        listener["address"] = f"{host}:{ports[port]}"
    var = tmp_path / "var"
    subprocess.run([ROOT / "scripts" / "self-signed-cert", var / "tls", "mail.example.test"], check=True)
    (var / "users").write_text("")
    doc["server"]["data_dir"] = str(var)
    doc["tls"]["certificate"], doc["tls"]["key"] = str(var / "tls" / "cert.pem"), str(var / "tls" / "key.pem")
    doc["auth"]["users_file"] = str(var / "users")
    doc["delivery"]["nameservers"] = [f"127.0.0.1:{free_port()}"]  # no DNS: elsewhere.test stays queued
    [route] = doc["domains"]["example.test"]["route"]
    assert route == "127.0.0.1:2526"  # what the README says the example routes to
    doc["domains"]["example.test"]["route"] = [f"127.0.0.1:{ports['2526']}"]
    config = tmp_path / "empath.toml"
    config.write_text(tomlkit.dumps(doc))
    daemon = subprocess.Popen([str(ROOT / ".venv" / "bin" / "empath"), "--config", str(config)], cwd=ROOT)
    try:
        wait_for(lambda: listening(ports["2525"]), what="the example config's listener")
        yield config, ports
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)


def run(line: str, config, ports: dict, stdin: str | None = None) -> subprocess.CompletedProcess:
    """One line of the README's block, with its ports and config moved to the test's."""
    line = line.split("  #", 1)[0].replace("conf/empath.toml", str(config))
    for old, new in ports.items():
        line = line.replace(f":{old}", f":{new}")
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}")
    return subprocess.run(line, shell=True, cwd=ROOT, input=stdin, capture_output=True, text=True, env=env, timeout=60)


def test_trying_it_as_the_readme_says(example):
    config, ports = example
    assert COMMANDS[0] == "scripts/run &"  # the fixture's daemon stands for it
    sent = run(COMMANDS[1], config, ports)
    assert sent.returncode == 0 and "250 2.0.0 OK queued as" in sent.stdout, sent.stdout + sent.stderr

    # "the first message is accepted, then waits in the queue, deferred (…)": the reason as quoted.
    quoted = re.search(r"deferred \(`(connect: .*?)`\)", " ".join(TRYING.split())).group(1)
    reason = quoted.replace(":2526", f":{ports['2526']}")
    listing = wait_for(lambda: reason in (out := run(COMMANDS[2], config, ports).stdout) and out, what=reason)
    assert "someone@example.test" in listing

    added = run(COMMANDS[3], config, ports, stdin="a-Pa55word\n")  # "asks twice" at a terminal; a pipe: one line
    assert added.returncode == 0, added.stderr
    submitted = run(COMMANDS[4].replace("PASSWORD", "a-Pa55word"), config, ports)
    assert submitted.returncode == 0 and "235 2.7.0" in submitted.stdout and "250 2.0.0 OK queued" in submitted.stdout


def test_the_readme_names_what_swaks_needs():
    # swaks --tls fails without Net::SSLeay, which apt's --no-install-recommends leaves out.
    assert "apt-get install swaks libnet-ssleay-perl" in TRYING
