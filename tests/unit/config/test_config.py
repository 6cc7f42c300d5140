"""Config validation: a catalogue of broken configs, the defaults, and ``empath --check``.

In the spirit of chasquid's t-20-bad_configs: every broken config is refused
with its own problem line, naming the key and the line it is on.
"""

import ipaddress
import socket
from pathlib import Path

import pytest
import tomlkit
from config_helpers import AUTH, GOOD, TLS, check, line_of, problems_of, said

from empath.addresses import Domain
from empath.cmd import empath as cli
from empath.config import ConfigError, Limits, QueueSettings, Timeouts, check_files, load, values
from empath.config.reader import key_lines
from empath.config.sections import DEFAULT_TRUSTED, validate

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "conf" / "empath.toml"


@pytest.fixture(autouse=True)
def no_dns(monkeypatch):
    """load() asks for the host's FQDN as the default hostname; keep the resolver out of unit tests."""
    monkeypatch.setattr(socket, "getfqdn", lambda name="": "fqdn.example")


# Each entry: the config text, the key the problem names, the line it is on
# (a snippet of that line, or its number; None: the key is on no line), and
# the message.
BAD_CONFIGS = {
    "unknown section": (GOOD + "[smtp]\nport = 25\n", "smtp", "[smtp]", "unknown section"),
    "unknown top-level key": ("debug = true\n" + GOOD, "debug", "debug", "unknown section"),
    "unknown server key": (
        GOOD.replace('data_dir = "data"', 'data_dir = "data"\nhostnme = "x.example"'),
        "server.hostnme",
        "hostnme",
        "unknown key; did you mean hostname?",
    ),
    "no SMTP process": (
        GOOD.replace('data_dir = "data"', 'data_dir = "data"\nsmtp_processes = 0'),
        "server.smtp_processes",
        "smtp_processes",
        "must be at least 1",
    ),
    "SMTP processes by the thousand": (
        GOOD.replace('data_dir = "data"', 'data_dir = "data"\nsmtp_processes = 1000'),
        "server.smtp_processes",
        "smtp_processes",
        "must be at most 64",
    ),
    "SMTP processes as a string": (
        GOOD.replace('data_dir = "data"', 'data_dir = "data"\nsmtp_processes = "2"'),
        "server.smtp_processes",
        "smtp_processes",
        "must be an integer",
    ),
    "unknown relay key (a typo)": (
        GOOD + '[relay]\ntrusted_network = ["10.0.0.0/8"]\n',
        "relay.trusted_network",
        "trusted_network",
        "unknown key; did you mean trusted_networks?",
    ),
    "unknown limits key": (GOOD + "[limits]\nmax_rcpt = 5\n", "limits.max_rcpt", "max_rcpt", "unknown key"),
    "a typo in a limits key": (
        GOOD + "[limits]\nmax_recipents = 500\n",
        "limits.max_recipents",
        "max_recipents",
        "unknown key; did you mean max_recipients?",
    ),
    "a typo in a section": (
        GOOD + "[limit]\nmax_recipients = 500\n",
        "limit",
        "[limit]",
        "unknown section; did you mean limits?",
    ),
    "unknown timeouts key": (GOOD + '[timeouts]\nidle = "5m"\n', "timeouts.idle", "idle", "unknown key"),
    "unknown queue key": (GOOD + "[queue]\nretry = 1\n", "queue.retry", "retry", "unknown key"),
    "unknown tls key": (GOOD + '[tls]\nciphers = "ALL"\n', "tls.ciphers", "ciphers", "unknown key"),
    "unknown auth key": (GOOD + '[auth]\nusers = "u"\n', "auth.users", "users =", "unknown key"),
    "unknown listener key": (GOOD + "port = 25\n", "listeners[0].port", "port = 25", "unknown key"),
    "relay not a table": (
        'relay = "open"\n' + GOOD,
        "relay",
        "relay =",
        "must be a table",
    ),
    "missing data_dir": (
        GOOD.replace('data_dir = "data"\n', ""),
        "server.data_dir",
        "[server]",
        "is required (the queue database lives there)",
    ),
    "empty data_dir": (GOOD.replace('"data"', '""'), "server.data_dir", "data_dir", "must not be empty"),
    "data_dir not a string": (GOOD.replace('"data"', "5"), "server.data_dir", "data_dir", "must be a string"),
    "bad hostname": (
        GOOD.replace('"mx.example.test"', '"mx_1.example"'),
        "server.hostname",
        "hostname",
        "'mx_1.example' is not a domain name: bad domain",
    ),
    "bad log level": (
        GOOD.replace('data_dir = "data"', 'data_dir = "data"\nlog_level = "verbose"'),
        "server.log_level",
        "log_level",
        "must be one of debug, info, warning, error",
    ),
    "bad log format": (
        GOOD.replace('data_dir = "data"', 'data_dir = "data"\nlog_format = "xml"'),
        "server.log_format",
        "log_format",
        "must be one of text, json",
    ),
    "no listeners": (
        '[server]\ndata_dir = "data"\n',
        "listeners",
        None,
        "at least one [[listeners]] entry is required",
    ),
    "empty listeners": (
        'listeners = []\n[server]\ndata_dir = "data"\n',
        "listeners",
        "listeners =",
        "at least one [[listeners]] entry is required",
    ),
    "listeners not tables": (
        '[server]\ndata_dir = "data"\n\n[listeners]\naddress = "127.0.0.1:25"\n',
        "listeners",
        "[listeners]",
        "must be an array of tables: [[listeners]]",
    ),
    "listener without address": (
        GOOD + '\n[[listeners]]\nmode = "smtp"\n',
        "listeners[1]",
        8,  # its [[listeners]] header
        "address is required",
    ),
    "listener host name": (
        GOOD.replace("127.0.0.1:2525", "localhost:2525"),
        "listeners[0].address",
        "address",
        "'localhost' must be an IP address",
    ),
    "listener without port": (
        GOOD.replace("127.0.0.1:2525", "127.0.0.1"),
        "listeners[0].address",
        "address",
        "'127.0.0.1' must be address:port, such as 127.0.0.1:2525 or [::1]:2525",
    ),
    "listener IPv6 without brackets": (
        GOOD.replace("127.0.0.1:2525", "::1:25"),
        "listeners[0].address",
        "address",
        "'::1:25' must be address:port, such as 127.0.0.1:2525 or [::1]:2525",
    ),
    "listener port zero": (
        GOOD.replace("127.0.0.1:2525", "127.0.0.1:0"),
        "listeners[0].address",
        "address",
        "port 0 is out of range",
    ),
    "listener port too big": (
        GOOD.replace("127.0.0.1:2525", "127.0.0.1:65536"),
        "listeners[0].address",
        "address",
        "port 65536 is out of range",
    ),
    "listener address not a string": (
        GOOD.replace('"127.0.0.1:2525"', "2525"),
        "listeners[0].address",
        "address",
        "must be a string",
    ),
    "listener bad mode": (
        GOOD + 'mode = "lmtp"\n',
        "listeners[0].mode",
        "mode",
        "must be one of smtp, submission, smtps",
    ),
    "duplicate listener": (
        GOOD + '\n[[listeners]]\naddress = "127.0.0.1:2525"\nmode = "smtps"\n' + TLS,
        "listeners[1].address",
        9,
        "the same address is listed twice",
    ),
    "duplicate listener, two spellings": (
        GOOD.replace("127.0.0.1:2525", "[::1]:25") + '\n[[listeners]]\naddress = "[0:0::1]:25"\n',
        "listeners[1].address",
        "0:0::1",
        "the same address is listed twice",
    ),
    "smtps without tls": (
        GOOD + 'mode = "smtps"\n',
        "listeners[0].mode",
        "mode",
        "smtps needs [tls] certificate and key",
    ),
    "submission without tls": (
        GOOD + 'mode = "submission"\n' + AUTH,
        "listeners[0].mode",
        "mode",
        "submission needs [tls] and auth.users_file: clients must log in over TLS",
    ),
    "submission without users file": (
        GOOD + 'mode = "submission"\n' + TLS,
        "listeners[0].mode",
        "mode",
        "submission needs [tls] and auth.users_file: clients must log in over TLS",
    ),
    "certificate without key": (
        GOOD + '[tls]\ncertificate = "cert.pem"\n',
        "tls",
        "[tls]",
        "certificate and key must be given together",
    ),
    "key without certificate": (
        GOOD + '[tls]\nkey = "key.pem"\n',
        "tls",
        "[tls]",
        "certificate and key must be given together",
    ),
    "local_domains a string": (
        GOOD + '[relay]\nlocal_domains = "example.test"\n',
        "relay.local_domains",
        "local_domains",
        "must be a list of strings",
    ),
    "local_domains bad name": (
        GOOD + '[relay]\nlocal_domains = ["example.test", "bad domain"]\n',
        "relay.local_domains",
        "local_domains",
        "'bad domain' is not a domain name: bad domain",
    ),
    "trusted network bad": (
        GOOD + '[relay]\ntrusted_networks = ["10.0.0.0/33"]\n',
        "relay.trusted_networks",
        "trusted_networks",
        "'10.0.0.0/33' is not an IP network such as 192.0.2.0/24 or 2001:db8::/32",
    ),
    "trusted network a name": (
        GOOD + '[relay]\ntrusted_networks = ["office.example"]\n',
        "relay.trusted_networks",
        "trusted_networks",
        "'office.example' is not an IP network such as 192.0.2.0/24 or 2001:db8::/32",
    ),
    "max_recipients below the RFC minimum": (
        GOOD + "[limits]\nmax_recipients = 10\n",
        "limits.max_recipients",
        "max_recipients",
        "must be at least 100",
    ),
    "line_length below the RFC minimum": (
        GOOD + "[limits]\nline_length = 100\n",
        "limits.line_length",
        "line_length",
        "must be at least 512",
    ),
    "text_line_length below the RFC minimum": (
        GOOD + "[limits]\ntext_line_length = 998\n",
        "limits.text_line_length",
        "text_line_length",
        "must be at least 1000",
    ),
    "max_errors zero": (
        GOOD + "[limits]\nmax_errors = 0\n",
        "limits.max_errors",
        "max_errors",
        "must be at least 1",
    ),
    "max_errors a string": (
        GOOD + '[limits]\nmax_errors = "20"\n',
        "limits.max_errors",
        "max_errors",
        "must be an integer",
    ),
    "max_errors a boolean": (
        GOOD + "[limits]\nmax_errors = true\n",
        "limits.max_errors",
        "max_errors",
        "must be an integer",
    ),
    "max_message_size bad unit": (
        GOOD + '[limits]\nmax_message_size = "50MB"\n',
        "limits.max_message_size",
        "max_message_size",
        "must be a size such as 52428800 or 50M",
    ),
    "max_message_size a float": (
        GOOD + "[limits]\nmax_message_size = 1e6\n",
        "limits.max_message_size",
        "max_message_size",
        "must be a size such as 52428800 or 50M",
    ),
    "max_message_size too small": (
        GOOD + "[limits]\nmax_message_size = 100\n",
        "limits.max_message_size",
        "max_message_size",
        "must be at least 1024",
    ),
    "auth_failure_delay bad": (
        GOOD + '[limits]\nauth_failure_delay = "1 sec"\n',
        "limits.auth_failure_delay",
        "auth_failure_delay",
        "must be a duration such as 30s, 5m, 4h or 5d",
    ),
    "timeout bad unit": (
        GOOD + '[timeouts]\ncommand = "5x"\n',
        "timeouts.command",
        "command",
        "must be a duration such as 30s, 5m, 4h or 5d",
    ),
    "timeout negative": (
        GOOD + "[timeouts]\ndata = -1\n",
        "timeouts.data",
        "data =",
        "must not be negative",
    ),
    "timeout not a number": (
        GOOD + "[timeouts]\ndata = nan\n",
        "timeouts.data",
        "data =",
        "must be a finite duration such as 30s, 5m, 4h or 5d",
    ),
    "timeout infinite": (
        GOOD + "[timeouts]\ncommand = inf\n",
        "timeouts.command",
        "command",
        "must be a finite duration such as 30s, 5m, 4h or 5d",
    ),
    "queue lifetime too short": (
        GOOD + '[queue]\nlifetime = "30s"\n',
        "queue.lifetime",
        "lifetime",
        "must be at least 60",
    ),
    "queue min_free_space bad": (
        GOOD + '[queue]\nmin_free_space = "lots"\n',
        "queue.min_free_space",
        "min_free_space",
        "must be a size such as 52428800 or 50M",
    ),
    "queue max_size negative": (
        GOOD + "[queue]\nmax_size = -1\n",
        "queue.max_size",
        "max_size",
        "must not be negative",
    ),
    "queue commit_timeout zero": (
        GOOD + '[queue]\ncommit_timeout = "0s"\n',
        "queue.commit_timeout",
        "commit_timeout",
        "must be at least 1",
    ),
}


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_bad_config(name):
    text, key, snippet, message = BAD_CONFIGS[name]
    if snippet is None:
        where = key
    else:
        where = f"{key} (line {snippet if isinstance(snippet, int) else line_of(text, snippet)})"
    assert problems_of(text) == [f"{where}: {message}"]


def test_every_problem_is_reported_at_once():
    text = (
        "[server]\n"
        'hostname = "bad_host"\n'
        'log_level = "loud"\n'
        "[limits]\n"
        "max_recipients = 1\n"
        "[timeouts]\n"
        'command = "soon"\n'
    )
    assert problems_of(text) == [
        "server.hostname (line 2): 'bad_host' is not a domain name: bad domain",
        "server.data_dir (line 1): is required (the queue database lives there)",
        "server.log_level (line 3): must be one of debug, info, warning, error",
        "listeners: at least one [[listeners]] entry is required",
        "limits.max_recipients (line 5): must be at least 100",
        "timeouts.command (line 7): must be a duration such as 30s, 5m, 4h or 5d",
    ]


def test_bad_listener_does_not_hide_other_listener_problems():
    text = GOOD.replace("127.0.0.1:2525", "nowhere") + '\n[[listeners]]\naddress = "127.0.0.1:25"\nmode = "smtps"\n'
    assert problems_of(text) == [
        f"listeners[0].address (line 6): {values_message('nowhere')}",
        "listeners[1].mode (line 10): smtps needs [tls] certificate and key",
    ]


def values_message(address: str) -> str:
    return f"'{address}' must be address:port, such as 127.0.0.1:2525 or [::1]:2525"


# -- good configs -----------------------------------------------------------------


def test_minimal_config_defaults():
    config = check(GOOD, Path("/etc/empath/empath.toml"))
    assert config.hostname == "mx.example.test"
    assert config.data_dir == Path("/etc/empath/data")
    assert (config.log_level, config.log_format, config.log_file) == ("info", "text", None)
    assert [(x.host, x.port, x.mode) for x in config.listeners] == [("127.0.0.1", 2525, "smtp")]
    assert config.local_domains == ()
    assert config.tls_certificate is None and config.tls_key is None
    assert config.tls_certificate is None
    assert config.users_file is None
    assert config.limits == Limits()
    assert config.timeouts == Timeouts()
    assert config.queue == QueueSettings()
    assert config.smtp_processes == 1
    assert config.database_path == Path("/etc/empath/data/queue.sqlite3")


def test_default_hostname():
    config = check(GOOD.replace('hostname = "mx.example.test"\n', ""))
    assert config.hostname == "default.example" and type(config.hostname) is Domain


def test_default_hostname_that_is_no_domain_name_is_a_problem():
    text = GOOD.replace('hostname = "mx.example.test"\n', "")
    with pytest.raises(ConfigError) as info:
        validate(tomlkit.parse(text).unwrap(), text, Path("/etc/empath/empath.toml"), default_hostname="host_1.lan")
    assert [p for p in info.value.problems if p.startswith("server.hostname")] == [
        "server.hostname (line 1): not set, and this machine's name will not do:"
        " 'host_1.lan' is not a domain name: bad domain"
    ]


def test_domains_are_typed():
    config = check(GOOD + '[relay]\nlocal_domains = ["Example.ORG"]\n[domains."Bücher.example"]\nconcurrency = 2\n')
    assert config.local_domains == ("example.org",) and type(config.local_domains[0]) is Domain
    [domain] = config.domains
    assert domain == "xn--bcher-kva.example" and type(domain) is Domain


def test_trusted_networks_default_to_loopback_only():
    networks = check(GOOD).trusted_networks
    assert tuple(networks) == tuple(DEFAULT_TRUSTED)
    assert all(net.is_loopback for net in networks)
    assert {net.version for net in networks} == {4, 6}


def test_trusted_networks_may_be_emptied():
    assert check(GOOD + "[relay]\ntrusted_networks = []\n").trusted_networks == ()


def test_trusted_networks_parsed():
    config = check(GOOD + '[relay]\ntrusted_networks = ["192.0.2.7/24", "2001:db8::/32", "10.1.2.3"]\n')
    assert config.trusted_networks == (
        ipaddress.ip_network("192.0.2.0/24"),  # host bits are forgiven
        ipaddress.ip_network("2001:db8::/32"),
        ipaddress.ip_network("10.1.2.3/32"),
    )


def test_limit_defaults_are_rfc_values():
    limits = Limits()
    assert limits.line_length == 512  # RFC 5321 §4.5.3.1.4
    assert limits.text_line_length == 1000  # RFC 5321 §4.5.3.1.6
    assert limits.max_recipients == 100  # RFC 5321 §4.5.3.1.8
    timeouts = Timeouts()
    assert timeouts.command == 300  # RFC 5321 §4.5.3.2.7: five minutes
    assert timeouts.data >= 180  # RFC 5321 §4.5.3.2.5 and .6: at least three minutes
    assert QueueSettings().lifetime == 5 * 86400


def test_local_domains_normalised():
    config = check(GOOD + '[relay]\nlocal_domains = ["Example.TEST", "example.test.", "bücher.example", "b.example"]\n')
    assert config.local_domains == ("example.test", "xn--bcher-kva.example", "b.example")


def test_values_are_converted():
    text = (
        GOOD
        + 'mode = "smtps"\n'
        + '\n[[listeners]]\naddress = "[::1]:587"\nmode = "submission"\n'
        + TLS
        + AUTH
        + '[limits]\nmax_message_size = "10M"\nauth_failure_delay = "250ms"\nmax_recipients = 500\n'
        + '[timeouts]\ncommand = "2m"\ndata = 90\ngreet_pause = 1.5\n'
        + '[queue]\nlifetime = "2d"\nmin_free_space = "1G"\nmax_size = 1048576\n'
    )
    config = check(text, Path("/srv/mail/empath.toml"))
    assert [(x.host, x.port, x.mode) for x in config.listeners] == [
        ("127.0.0.1", 2525, "smtps"),
        ("::1", 587, "submission"),
    ]
    assert config.listeners[1].name == "submission@[::1]:587"
    assert config.tls_certificate is not None
    assert config.limits.max_message_size == 10 * 1024 * 1024
    assert config.limits.auth_failure_delay == 0.25
    assert config.limits.max_recipients == 500
    assert (config.timeouts.command, config.timeouts.data, config.timeouts.greet_pause) == (120, 90, 1.5)
    assert config.queue.lifetime == 2 * 86400
    assert config.queue.min_free_space == 1024**3
    assert config.queue.max_size == 1048576


def test_relative_paths_resolve_against_the_config_directory(tmp_path):
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    text = (
        '[server]\ndata_dir = "../var"\nlog_file = "logs/empath.log"\n'
        '[[listeners]]\naddress = "127.0.0.1:2525"\n'
        '[tls]\ncertificate = "tls/cert.pem"\nkey = "/etc/ssl/key.pem"\n'
        '[auth]\nusers_file = "./users"\n'
    )
    path = conf_dir / "empath.toml"
    path.write_text(text)
    config = load(path)
    assert config.path == path.resolve()
    assert config.data_dir == (tmp_path / "var").resolve()
    assert config.log_file == (conf_dir / "logs" / "empath.log").resolve()
    assert config.tls_certificate == (conf_dir / "tls" / "cert.pem").resolve()
    assert config.tls_key == Path("/etc/ssl/key.pem")
    assert config.users_file == (conf_dir / "users").resolve()


def test_load_defaults_the_hostname_to_the_fqdn(tmp_path):
    path = tmp_path / "empath.toml"
    path.write_text(GOOD.replace('hostname = "mx.example.test"\n', ""))
    assert load(path).hostname == "fqdn.example"


def test_relative_config_path_is_resolved(tmp_path, monkeypatch):
    (tmp_path / "empath.toml").write_text(GOOD)
    monkeypatch.chdir(tmp_path)
    config = load("empath.toml")
    assert config.path == (tmp_path / "empath.toml").resolve()
    assert config.data_dir == (tmp_path / "data").resolve()


def test_example_config_validates():
    config = load(EXAMPLE)
    assert config.hostname == "mail.example.test"
    assert [x.mode for x in config.listeners] == ["smtp", "submission", "smtps"]
    assert config.local_domains == ("example.test",)
    assert config.data_dir == (ROOT / "var").resolve()
    assert config.tls_certificate == (ROOT / "var" / "tls" / "cert.pem").resolve()
    assert config.limits.max_message_size == 50 * 1024 * 1024
    assert config.queue.lifetime == 5 * 86400
    assert tuple(config.trusted_networks) == tuple(DEFAULT_TRUSTED)


# -- load: files ------------------------------------------------------------------


def test_load_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "nope.toml")
    (problem,) = info.value.problems
    assert problem.startswith("cannot read ")
    assert "nope.toml" in problem


def test_load_invalid_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[server]\ndata_dir = "unterminated\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    (problem,) = info.value.problems
    assert "not valid TOML" in problem
    assert "line 2" in problem


def test_load_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nhostname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="cannot read"):
        load(path)


def test_check_files(tmp_path):
    config = check(GOOD + TLS + AUTH, tmp_path / "empath.toml")
    found = said(check_files(config))
    assert len(found) == 2
    assert found[0].startswith("tls.certificate: cannot load ")
    assert found[1].startswith("auth.users_file: ")
    assert "empathctl user add" in found[1]


def test_check_files_log_directory(tmp_path):
    text = GOOD.replace('data_dir = "data"', 'data_dir = "data"\nlog_file = "missing/empath.log"')
    config = check(text, tmp_path / "empath.toml")
    assert said(check_files(config)) == [f"server.log_file: directory {tmp_path / 'missing'} does not exist"]
    (tmp_path / "missing").mkdir()
    assert said(check_files(config)) == []


def test_check_files_users_present(tmp_path):
    (tmp_path / "users").write_text("")
    config = check(GOOD + AUTH, tmp_path / "empath.toml")
    assert said(check_files(config)) == []


def test_check_files_reads_the_senders_table(tmp_path):
    (tmp_path / "users").write_text("")
    config = check(GOOD + AUTH + 'senders = "senders"\n', tmp_path / "empath.toml")
    assert config.senders_file == tmp_path / "senders"
    [problem] = said(check_files(config))
    assert problem.startswith(f"auth.senders: {tmp_path / 'senders'}: ")
    (tmp_path / "senders").write_text("alice: alice@office.test\nbob bob@office.test\n")
    assert said(check_files(config)) == [
        f"auth.senders: {tmp_path / 'senders'}: line 2: not user: address, address, @domain"
    ]
    (tmp_path / "senders").write_text("alice: alice@office.test\n")
    assert said(check_files(config)) == []


def test_check_files_reads_the_aliases_and_says_what_they_get_wrong(tmp_path):
    (tmp_path / "aliases").write_text("root: it@office.test\n")
    (tmp_path / "virtual").write_text("sales@office.test a@office.test\nx@far.test y@office.test\n")
    # Without a postmaster alias, and a virtual key for a domain not ours:
    text = GOOD + '[relay]\nlocal_domains = ["office.test"]\n[aliases]\nfile = "aliases"\nvirtual = "virtual"\n'
    config = check(text + "expansion_limit = 5\n", tmp_path / "empath.toml")
    assert (config.aliases.file, config.aliases.expansion_limit) == (tmp_path / "aliases", 5)
    assert said(check_files(config)) == [
        f"aliases.virtual: {tmp_path / 'virtual'}, line 2: x@far.test: not an address of a local domain",
        "aliases.file: postmaster has no alias: mail to the postmaster must reach someone",
    ]
    (tmp_path / "aliases").write_text("root: |/bin/sh\n")
    [problem] = said(check_files(config))
    assert problem.startswith(f"aliases.file: {tmp_path / 'aliases'}, line 1: '|/bin/sh': pipes are not run")


def test_an_expansion_limit_of_nothing_is_refused():
    assert problems_of(GOOD + "[aliases]\nexpansion_limit = 0\n") == [
        "aliases.expansion_limit (line 8): must be at least 1"
    ]


def test_srs_needs_a_local_domain_and_secrets_worth_the_name(tmp_path):
    text = GOOD + '[relay]\nlocal_domains = ["office.test"]\n[srs]\nsecret_file = "srs.secret"\n'
    config = check(text, tmp_path / "empath.toml")
    assert config.srs_domain == "office.test" and config.srs.max_age == 21 * 86400
    [problem] = said(check_files(config))
    assert problem.startswith(f"srs.secret_file: {tmp_path / 'srs.secret'}: ")
    (tmp_path / "srs.secret").write_text("# rotate by adding a line on top\nshort\n")
    assert said(check_files(config)) == [
        f"srs.secret_file: {tmp_path / 'srs.secret'}: line 2: a secret must be at least 16 characters"
    ]
    (tmp_path / "srs.secret").write_text("sixteen or more characters\n")
    assert said(check_files(config)) == []
    assert problems_of(text + 'domain = "far.example"\n') == [
        "srs.domain (line 11): must be one of relay.local_domains: bounces to the rewritten senders come back to it"
    ]
    assert "srs.domain (line 7): must be one of" in problems_of(GOOD + '[srs]\nsecret_file = "srs.secret"\n')[0]
    assert problems_of(text + 'max_age = "1024d"\n') == ["srs.max_age (line 11): must be at most 1000d"]


def test_check_files_reads_the_sender_canonical_table(tmp_path):
    text = GOOD + '[rewrite]\nsender_canonical = "canonical"\nmasquerade_domains = ["Office.Test"]\n'
    config = check(text, tmp_path / "empath.toml")
    assert config.rewrite.masquerade_domains == ("office.test",)
    (tmp_path / "canonical").write_text("root@office.test\n")
    [problem] = said(check_files(config))
    assert problem == f"rewrite.sender_canonical: {tmp_path / 'canonical'}: line 1: not 'address new-address' or " + (
        "'@domain @new-domain'"
    )
    assert problems_of(GOOD + '[rewrite]\nmasquerade_domains = ["bad domain"]\n')[0].startswith(
        "rewrite.masquerade_domains (line 8): 'bad domain' is not a domain name"
    )


def test_a_senders_table_needs_users():
    assert problems_of(GOOD + '[auth]\nsenders = "senders"\n') == [
        "auth.senders (line 8): says who may send as whom after AUTH, which needs auth.users_file"
    ]


def test_sender_ownership_is_on_where_users_log_in_to_send():
    listeners = "".join(
        f'[[listeners]]\naddress = "127.0.0.1:{port}"\nmode = "{mode}"\n{extra}'
        for port, mode, extra in (
            (25, "smtp", ""),
            (587, "submission", ""),
            (465, "smtps", ""),
            (2587, "submission", "sender_ownership = false\n"),
            (2525, "smtp", "sender_ownership = true\n"),
        )
    )
    text = GOOD.split("[[listeners]]")[0] + TLS + AUTH + listeners
    config = check(text)
    assert [ln.sender_ownership for ln in config.listeners] == [False, True, True, False, True]


# -- values ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, seconds",
    [
        (0, 0.0),
        (30, 30.0),
        (1.5, 1.5),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("4h", 14400.0),
        ("5d", 432000.0),
        ("1.5h", 5400.0),
        (" 5m ", 300.0),
        ("0s", 0.0),
    ],
)
def test_duration(value, seconds):
    assert values.duration(value) == seconds


@pytest.mark.parametrize(
    "value",
    [
        "",
        "5",
        "30",
        "5 m",
        "5M",
        "5w",
        "-5s",
        "m",
        "1e3s",
        ".5s",
        True,
        False,
        None,
        [5],
        -1,
        -0.5,
        float("nan"),
        float("inf"),
    ],
)
def test_duration_rejects(value):
    with pytest.raises(ValueError):
        values.duration(value)


@pytest.mark.parametrize(
    "value, size",
    [
        (0, 0),
        (1048576, 1048576),
        ("1024", 1024),
        ("512K", 512 * 1024),
        ("50M", 50 * 1024**2),
        ("50m", 50 * 1024**2),
        ("1G", 1024**3),
        (" 2k ", 2048),
    ],
)
def test_size(value, size):
    assert values.size(value) == size


@pytest.mark.parametrize("value", ["", "1.5M", "50MB", "1T", "M", "-1", "5 M", 1.0, True, None, -1])
def test_size_rejects(value):
    with pytest.raises(ValueError):
        values.size(value)


def test_age():
    """An age as empathctl's --older-than gives it: bare seconds, or a duration."""
    assert values.age("90") == 90.0
    assert values.age("1.5") == 1.5
    assert values.age("2h") == 7200.0
    assert values.age(" 5d ") == 5 * 86400
    for bad in ("", "2x", "-3h", "h", "nan", "inf", "1e9", "-5"):
        with pytest.raises(ValueError, match="not an age"):
            values.age(bad)


# -- key_lines -------------------------------------------------------------------


def test_key_lines():
    text = (
        "top = 1\n"  # 1
        "[server]\n"  # 2
        'hostname = "x"\n'  # 3
        "  data_dir = 'y'   # indented\n"  # 4
        "# comment = 5\n"  # 5
        "[[listeners]]\n"  # 6
        'address = "a"\n'  # 7
        "[[listeners]]\n"  # 8
        'mode = "smtp"\n'  # 9
        '[ "relay" ]\n'  # 10
        '"local_domains" = []\n'  # 11
        "[limits]\n"  # 12
        "max_errors = 1\n"  # 13
        "max_errors = 2\n"  # 14: a repeat keeps the first line
    )
    assert key_lines(text) == {
        "top": 1,
        "server": 2,
        "server.hostname": 3,
        "server.data_dir": 4,
        "listeners[0]": 6,
        "listeners[0].address": 7,
        "listeners[1]": 8,
        "listeners[1].mode": 9,
        "relay": 10,
        "relay.local_domains": 11,
        "limits": 12,
        "limits.max_errors": 13,
    }


# -- empath --check ------------------------------------------------------------------


def test_cli_check_good_config(tmp_path, capsys):
    path = tmp_path / "empath.toml"
    path.write_text(GOOD)
    assert cli.main(["--config", str(path), "--check"]) == 0
    out, err = capsys.readouterr()
    assert out == f"empath: {path.resolve()} is valid\n"
    assert err == ""


def test_cli_check_bad_config(tmp_path, capsys):
    path = tmp_path / "empath.toml"
    path.write_text(GOOD + "[limits]\nmax_recipients = 5\nmax_errors = 0\n" + "[relay]\nlocal_domain = []\n")
    assert cli.main(["-c", str(path), "--check"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "empath: relay.local_domain (line 11): unknown key; did you mean local_domains?",
        "empath: limits.max_recipients (line 8): must be at least 100",
        "empath: limits.max_errors (line 9): must be at least 1",
    ]


def test_cli_check_reports_missing_files(tmp_path, capsys):
    path = tmp_path / "empath.toml"
    path.write_text(GOOD + AUTH)
    assert cli.main(["--config", str(path), "--check"]) == 1
    _, err = capsys.readouterr()
    (line,) = err.splitlines()
    # Named by the key and the line that point at the file.
    at = line_of(GOOD + AUTH, "users_file")
    assert line.startswith(f"empath: auth.users_file (line {at}): {tmp_path / 'users'} does not exist")


def test_cli_check_missing_config(tmp_path, capsys):
    assert cli.main(["--config", str(tmp_path / "none.toml"), "--check"]) == 1
    _, err = capsys.readouterr()
    assert err.startswith("empath: cannot read ")
    assert len(err.splitlines()) == 1


def test_cli_without_config_reads_empath_config(tmp_path, monkeypatch, capsys):
    # One lookup rule for every command: --config, else $EMPATH_CONFIG, else /etc/empath/empath.toml.
    monkeypatch.setenv("EMPATH_CONFIG", str(tmp_path / "from-env.toml"))
    assert cli.main(["--check"]) == 1
    assert capsys.readouterr().err.startswith(f"empath: cannot read {tmp_path / 'from-env.toml'}")


def test_a_listener_for_old_devices():
    text = (
        GOOD
        + TLS
        + (
            '[[listeners]]\naddress = "192.168.1.5:2526"\ntls_min_version = "TLSv1"\nrequire_auth = true\n'
            'networks = ["192.168.1.0/24"]\n'
        )
    )
    plain, old = check(text).listeners
    assert (plain.tls_min_version, plain.tls_ciphers, plain.require_auth, plain.networks) == ("1.2", None, False, ())
    assert (old.tls_min_version, old.require_auth) == ("1.0", True)
    assert old.networks == (ipaddress.ip_network("192.168.1.0/24"),)
    assert problems_of(GOOD + '[[listeners]]\naddress = "127.0.0.1:2526"\ntls_min_version = "SSLv3"\n') == [
        "listeners[1].tls_min_version (line 9): must be one of 1.0, 1.1, 1.2, 1.3"
    ]


def test_check_files_tries_a_listener_s_ciphers(tmp_path):
    config = check(GOOD.replace('"127.0.0.1:2525"', '"127.0.0.1:2525"\ntls_ciphers = "NO-SUCH-CIPHER"'))
    assert said(check_files(config)) == ["listeners[0].tls_ciphers: OpenSSL takes no cipher from 'NO-SUCH-CIPHER'"]
