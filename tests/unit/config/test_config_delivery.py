"""Config of outbound delivery: [delivery], [smarthost] and [domains."..."].

The same catalogue style as test_config.py: every broken config is refused
with its own problem line, naming the key and the line it is on.
"""

import pytest
from config_helpers import GOOD, check, line_of, problems_of, said

from empath.addresses import Domain
from empath.config import check_files
from empath.config.model import Delivery, DomainPolicy, NextHop, Smarthost

LOGIN = '[smarthost]\nhosts = ["smart.example"]\nusername = "relay"\npassword_file = "relay.pw"\n'

# Each entry: the text added to a good config, the key the problem names, a
# snippet of its line (None: the key is on no line), and the message.
BAD = {
    "unknown delivery key": ("[delivery]\nretries = 5\n", "delivery.retries", "retries", "unknown key"),
    "bad rate unit": (
        '[delivery]\nrate = "10/x"\n',
        "delivery.rate",
        "rate",
        "must be 0 (no limit) or a rate such as 10/s, 60/m or 1000/h",
    ),
    "rate without unit": (
        "[delivery]\nrate = 10\n",
        "delivery.rate",
        "rate",
        "must be 0 (no limit) or a rate such as 10/s, 60/m or 1000/h",
    ),
    "negative rate": (
        '[delivery]\nrate = "-1/s"\n',
        "delivery.rate",
        "rate",
        "must be 0 (no limit) or a rate such as 10/s, 60/m or 1000/h",
    ),
    "rate per day": (
        '[delivery]\nrate = "100/d"\n',
        "delivery.rate",
        "rate",
        "must be 0 (no limit) or a rate such as 10/s, 60/m or 1000/h",
    ),
    "rate false is not 0": (
        "[delivery]\nrate = false\n",
        "delivery.rate",
        "rate",
        "must be 0 (no limit) or a rate such as 10/s, 60/m or 1000/h",
    ),
    "bad tls policy": (
        '[delivery]\ntls = "always"\n',
        "delivery.tls",
        "tls",
        "must be one of none, opportunistic, required, verify",
    ),
    "zero concurrency": ("[delivery]\nconcurrency = 0\n", "delivery.concurrency", "concurrency", "must be at least 1"),
    "breaker cooldown too short": (
        '[delivery]\nbreaker_cooldown = "10ms"\n',
        "delivery.breaker_cooldown",
        "breaker_cooldown",
        "must be at least 1",
    ),
    "bad port": ("[delivery]\nport = 70000\n", "delivery.port", "port", "must be a port number, 1 to 65535"),
    "nameserver by name": (
        '[delivery]\nnameservers = ["dns.example"]\n',
        "delivery.nameservers",
        "nameservers",
        "'dns.example' must be an IP address",
    ),
    "nameserver port out of range": (
        '[delivery]\nnameservers = ["192.0.2.53:65536"]\n',
        "delivery.nameservers",
        "nameservers",
        "port 65536 is out of range",
    ),
    "nameserver port zero": (
        '[delivery]\nnameservers = ["192.0.2.53:0"]\n',
        "delivery.nameservers",
        "nameservers",
        "port 0 is out of range",
    ),
    "nameservers not a list": (
        '[delivery]\nnameservers = "192.0.2.53"\n',
        "delivery.nameservers",
        "nameservers",
        "must be a list of strings",
    ),
    "retry_max shorter than retry_first": (
        '[delivery]\nretry_first = "1h"\nretry_max = "5m"\n',
        "delivery.retry_max",
        "retry_max",
        "must not be shorter than delivery.retry_first",
    ),
    "zero retry": ("[delivery]\nretry_first = 0\n", "delivery.retry_first", "retry_first", "must be at least 1"),
    "short lease": ('[delivery]\nlease_time = "30s"\n', "delivery.lease_time", "lease_time", "must be at least 60"),
    "zero connect timeout": (
        "[delivery]\nconnect_timeout = 0\n",
        "delivery.connect_timeout",
        "connect_timeout",
        "must be at least 0.001",
    ),
    "empty tls_ca_file": ('[delivery]\ntls_ca_file = ""\n', "delivery.tls_ca_file", "tls_ca_file", "must not be empty"),
    # [smarthost]
    "smarthost without hosts": (
        '[smarthost]\ntls = "required"\n',
        "smarthost.hosts",
        "[smarthost]",
        "is required: the relay host(s) to send all outbound mail through",
    ),
    "smarthost with no host": (
        "[smarthost]\nhosts = []\n",
        "smarthost.hosts",
        "hosts",
        "must list at least one host",
    ),
    "smarthost host with a bad port": (
        '[smarthost]\nhosts = ["smart.example:0"]\n',
        "smarthost.hosts",
        "hosts",
        "port 0 is out of range",
    ),
    "smarthost username without password_file": (
        '[smarthost]\nhosts = ["smart.example"]\nusername = "relay"\n',
        "smarthost",
        "[smarthost]",
        "username and password_file must be given together",
    ),
    "smarthost password_file without username": (
        '[smarthost]\nhosts = ["smart.example"]\npassword_file = "relay.pw"\n',
        "smarthost",
        "[smarthost]",
        "username and password_file must be given together",
    ),
    "smarthost login over opportunistic TLS": (
        LOGIN + 'tls = "opportunistic"\n',
        "smarthost.tls",
        "tls =",
        "must be required or verify when a username is set: passwords never go in clear",
    ),
    "smarthost login in clear": (
        LOGIN + 'tls = "none"\n',
        "smarthost.tls",
        "tls =",
        "must be required or verify when a username is set: passwords never go in clear",
    ),
    "unknown smarthost key": (
        '[smarthost]\nhosts = ["smart.example"]\npassword = "secret"\n',
        "smarthost.password",
        "password =",
        "unknown key; did you mean password_file?",
    ),
    # [domains."..."]
    "a recipients table for a domain not ours": (
        '[domains."a.example"]\nrecipients = "valid"\n',
        "domains.a.example.recipients",
        "recipients",
        "only a domain in relay.local_domains has a recipients table",
    ),
    "a callout for a domain not ours": (
        '[domains."a.example"]\nroute = ["192.0.2.1"]\nverify = "callout"\n',
        "domains.a.example.verify",
        "verify",
        "only a domain in relay.local_domains is verified",
    ),
    "a callout with nobody to ask": (
        '[relay]\nlocal_domains = ["a.example"]\n[domains."a.example"]\nverify = "callout"\n',
        "domains.a.example.verify",
        "verify",
        "callout asks the domain's route: set route to the server that holds its mailboxes",
    ),
    "a callout and a recipients table": (
        '[relay]\nlocal_domains = ["a.example"]\n[domains."a.example"]\nroute = ["192.0.2.1"]\n'
        'recipients = "valid"\nverify = "callout"\n',
        "domains.a.example.verify",
        "verify",
        "a domain is verified by its recipients table or by callout, not both",
    ),
    "verify neither none nor callout": (
        '[domains."a.example"]\nverify = "table"\n',
        "domains.a.example.verify",
        "verify",
        "must be one of none, callout",
    ),
    "a refresh after the expiry": (
        '[verification]\nnegative_refresh = "4d"\n',
        "verification.negative_refresh",
        "negative_refresh",
        "must not be longer than verification.negative_expire",
    ),
    "a callout timeout under a second": (
        '[verification]\ntimeout = "100ms"\n',
        "verification.timeout",
        "timeout",
        "must be at least 1",
    ),
    "no callout at all": (
        "[verification]\nconcurrency = 0\n",
        "verification.concurrency",
        "concurrency",
        "must be at least 1",
    ),
    "unknown domain key": (
        '[domains."a.example"]\nroutes = ["mx.a.example"]\n',
        "domains.a.example.routes",
        "routes",
        "unknown key; did you mean route?",
    ),
    "smarthost key in a domain": (
        '[domains."a.example"]\nusername = "u"\n',
        "domains.a.example.username",
        "username",
        "unknown key",
    ),
    "bad domain name": (
        '[domains."bad_name.example"]\ntls = "none"\n',
        "domains.bad_name.example",
        "[domains",
        "'bad_name.example' is not a domain name: bad domain",
    ),
    "domain that is not a table": (
        "[domains]\nexample = 1\n",
        "domains.example",
        "example = 1",
        "must be a table",
    ),
    "same domain twice": (
        '[domains."A.example"]\ntls = "none"\n[domains."a.example."]\ntls = "verify"\n',
        "domains.a.example.",
        '[domains."a.example."]',
        "the same domain is configured twice",
    ),
    "empty route": (
        '[domains."a.example"]\nroute = []\n',
        "domains.a.example.route",
        "route",
        "must list at least one host",
    ),
    "route with a bad host": (
        '[domains."a.example"]\nroute = ["a:b:c"]\n',
        "domains.a.example.route",
        "route",
        "'a:b:c' must be host or host:port, such as mail.example.org:25 or [2001:db8::1]:25",
    ),
    "route to a bad name": (
        '[domains."a.example"]\nroute = ["mx_1.a.example"]\n',
        "domains.a.example.route",
        "route",
        "'mx_1.a.example' is not a domain name: bad domain",
    ),
    "bad domain tls": (
        '[domains."a.example"]\ntls = "maybe"\n',
        "domains.a.example.tls",
        "tls",
        "must be one of none, opportunistic, required, verify",
    ),
    "bad domain rate": (
        '[domains."a.example"]\nrate = "fast"\n',
        "domains.a.example.rate",
        "rate",
        "must be 0 (no limit) or a rate such as 10/s, 60/m or 1000/h",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_config(name):
    extra, key, snippet, message = BAD[name]
    text = GOOD + extra
    where = key if snippet is None else f"{key} (line {line_of(text[len(GOOD) :], snippet) + GOOD.count(chr(10))})"
    assert problems_of(text) == [f"{where}: {message}"]


def test_empty_smarthost_username():
    assert problems_of(GOOD + LOGIN.replace('"relay"', '""')) == [
        f"smarthost.username (line {GOOD.count(chr(10)) + 3}): must not be empty",
        f"smarthost (line {GOOD.count(chr(10)) + 1}): username and password_file must be given together",
    ]


# -- good configs -----------------------------------------------------------------


def test_defaults():
    config = check(GOOD)
    assert config.delivery == Delivery()
    assert config.smarthost is None
    assert config.domains == {}
    d = config.delivery
    assert d.defaults == DomainPolicy(route=(), tls="opportunistic", rate=0.0)
    assert (d.port, d.nameservers, d.tls_ca_file) == (25, (), None)
    assert (d.retry_first, d.retry_max, d.delay_warning) == (300, 4 * 3600, 4 * 3600)
    assert d.data_timeout >= 600  # RFC 5321 §4.5.3.2.6: ten minutes for the reply to the dot
    assert d.command_timeout >= 300  # RFC 5321 §4.5.3.2.2-4: five minutes for MAIL and RCPT
    assert config.domain_policy("anything.example") is d.defaults


@pytest.mark.parametrize(
    "value, per_second",
    [
        (0, 0.0),
        (0.0, 0.0),
        ('"0/s"', 0.0),
        ('"10/s"', 10.0),
        ('"60/m"', 1.0),
        ('"1000/h"', 1000 / 3600),
        ('"1.5/s"', 1.5),
        ('" 30 / m "', 0.5),
    ],
)
def test_rate(value, per_second):
    config = check(GOOD + f'[delivery]\nrate = {value}\n[domains."a.example"]\nrate = {value}\n')
    assert config.delivery.defaults.rate == pytest.approx(per_second)
    assert config.domains["a.example"].rate == pytest.approx(per_second)


@pytest.mark.parametrize(
    "value, hop",
    [
        ("mx.example", NextHop("mx.example", 25)),
        ("MX.Example.", NextHop("mx.example", 25)),
        ("mx.example:587", NextHop("mx.example", 587)),
        ("bücher.example", NextHop("xn--bcher-kva.example", 25)),
        ("192.0.2.1", NextHop("192.0.2.1", 25)),
        ("192.0.2.1:2525", NextHop("192.0.2.1", 2525)),
        ("[2001:db8::1]", NextHop("2001:db8::1", 25)),
        ("[2001:DB8:0::1]:2525", NextHop("2001:db8::1", 2525)),  # one spelling per address
        ("[::ffff:192.0.2.1]:25", NextHop("::ffff:c000:201", 25)),
    ],
)
def test_next_hop(value, hop):
    config = check(GOOD + f'[smarthost]\nhosts = ["{value}"]\n[domains."a.example"]\nroute = ["{value}"]\n')
    assert config.smarthost.hosts == (hop,)
    assert config.domains["a.example"].route == (hop,)


def test_next_hops_take_the_delivery_port_by_default():
    config = check(GOOD + '[delivery]\nport = 2525\n[smarthost]\nhosts = ["a.example", "b.example:26"]\n')
    assert config.smarthost.hosts == (NextHop("a.example", 2525), NextHop("b.example", 26))


@pytest.mark.parametrize(
    "value, servers",
    [
        ('["192.0.2.53"]', (("192.0.2.53", 53),)),
        ('["192.0.2.53:5353", "[2001:db8::53]"]', (("192.0.2.53", 5353), ("2001:db8::53", 53))),
        ('["[2001:DB8::0:53]:5353"]', (("2001:db8::53", 5353),)),
        ("[]", ()),
    ],
)
def test_nameservers(value, servers):
    assert check(GOOD + f"[delivery]\nnameservers = {value}\n").delivery.nameservers == servers


def test_delivery_values():
    config = check(
        GOOD
        + "[delivery]\n"
        + 'workers = 4\nport = 2525\ndns_timeout = "2s"\nconnect_timeout = "5s"\ncommand_timeout = "1m"\n'
        + 'data_timeout = "10m"\nretry_first = "1m"\nretry_max = "1m"\ndelay_warning = 0\nidle_time = 0\n'
        + 'max_messages_per_connection = 7\nmax_addresses = 2\nlease_time = "1h"\ntls = "verify"\n'
        + 'concurrency = 3\nbreaker_failures = 2\nbreaker_cooldown = "30s"\n'
    )
    d = config.delivery
    assert (d.workers, d.port, d.dns_timeout, d.connect_timeout, d.command_timeout, d.data_timeout) == (
        4,
        2525,
        2,
        5,
        60,
        600,
    )
    assert (d.retry_first, d.retry_max, d.delay_warning, d.idle_time) == (60, 60, 0, 0)
    assert (d.max_messages_per_connection, d.max_addresses, d.lease_time) == (7, 2, 3600)
    assert d.defaults == DomainPolicy(tls="verify", concurrency=3, breaker_failures=2, breaker_cooldown=30)


def test_domains_inherit_the_delivery_defaults():
    config = check(
        GOOD
        + '[delivery]\ntls = "required"\nconcurrency = 4\nrate = "1/s"\n'
        + '[domains."Bücher.Example."]\nconcurrency = 1\n'
        + '[domains."b.example"]\nroute = ["mx.b.example"]\ntls = "none"\n'
    )
    assert config.domains == {
        "xn--bcher-kva.example": DomainPolicy((), "required", 1, 1.0, 5, 300),
        "b.example": DomainPolicy((NextHop("mx.b.example", 25),), "none", 4, 1.0, 5, 300),
    }
    assert config.domain_policy("xn--bcher-kva.example").concurrency == 1
    assert config.domain_policy("c.example") == config.delivery.defaults


@pytest.mark.parametrize(
    "default, explicit, tls",
    [
        (None, None, "opportunistic"),  # no login: the delivery default
        ("none", None, "none"),
        ("required", None, "required"),
        ("none", "verify", "verify"),
    ],
)
def test_smarthost_without_login(default, explicit, tls):
    text = GOOD + (f'[delivery]\ntls = "{default}"\n' if default else "") + '[smarthost]\nhosts = ["smart.example"]\n'
    text += f'tls = "{explicit}"\n' if explicit else ""
    assert check(text).smarthost == Smarthost((NextHop("smart.example", 25),), None, None, tls)


@pytest.mark.parametrize(
    "default, explicit, tls",
    [
        (None, None, "required"),  # a login makes TLS required
        ("opportunistic", None, "required"),
        ("none", None, "required"),
        ("verify", None, "verify"),  # never weaker than the operator's default
        (None, "verify", "verify"),
        ("verify", "required", "required"),  # what the operator says for the smarthost
    ],
)
def test_smarthost_login_needs_tls(tmp_path, default, explicit, tls):
    text = GOOD + (f'[delivery]\ntls = "{default}"\n' if default else "") + LOGIN
    text += f'tls = "{explicit}"\n' if explicit else ""
    smarthost = check(text, tmp_path / "empath.toml").smarthost
    assert smarthost == Smarthost((NextHop("smart.example", 25),), "relay", tmp_path / "relay.pw", tls)


# -- the files the config names -------------------------------------------------------


def test_check_files_password_file(tmp_path):
    config = check(GOOD + LOGIN, tmp_path / "empath.toml")
    pw = tmp_path / "relay.pw"
    [problem] = said(check_files(config))
    assert problem.startswith(f"smarthost.password_file: cannot read {pw}: ")
    pw.write_text("")
    assert said(check_files(config)) == [f"smarthost.password_file: {pw} is empty"]
    pw.write_text("\nsecret\n")  # the first line is the password
    assert said(check_files(config)) == [f"smarthost.password_file: {pw} is empty"]
    pw.write_bytes(b"\xff\xfe\n")
    [problem] = said(check_files(config))
    assert problem.startswith(f"smarthost.password_file: cannot read {pw}: ")
    pw.write_text("secret\n")
    assert said(check_files(config)) == []


def test_check_files_tls_ca_file(tmp_path, certs):
    config = check(GOOD + '[delivery]\ntls_ca_file = "ca.pem"\n', tmp_path / "empath.toml")
    ca = tmp_path / "ca.pem"
    [problem] = said(check_files(config))
    assert problem.startswith(f"delivery.tls_ca_file: cannot load {ca}: ")
    ca.write_text("not a certificate\n")
    [problem] = said(check_files(config))
    assert problem.startswith(f"delivery.tls_ca_file: cannot load {ca}: ")
    ca.write_bytes(certs.ca_pem.read_bytes())
    assert said(check_files(config)) == []


def test_check_files_reads_each_recipients_table(tmp_path):
    text = GOOD + '[relay]\nlocal_domains = ["office.test"]\n[domains."office.test"]\nrecipients = "valid"\n'
    config = check(text, tmp_path / "empath.toml")
    assert config.domains["office.test"].recipients == tmp_path / "valid"
    [problem] = said(check_files(config))
    assert problem.startswith(f"domains.office.test.recipients: {tmp_path / 'valid'}: ")
    (tmp_path / "valid").write_text("alice@office.test\nnot an address\n")
    [problem] = said(check_files(config))
    assert "line 2: 'not' is not an address" in problem
    (tmp_path / "valid").write_text("alice@office.test\n@lists.office.test\n")
    assert check_files(config) == []


def test_verification_defaults_are_postfixs():
    config = check(GOOD)
    v = config.verification
    day = 86400
    assert (v.positive_expire, v.positive_refresh) == (31 * day, 7 * day)
    assert (v.negative_expire, v.negative_refresh) == (3 * day, 3 * 3600)
    assert not config.domain_policy(Domain("a.example")).callout


def test_a_local_domain_verified_by_callout():
    text = GOOD + '[relay]\nlocal_domains = ["a.example"]\n[domains."a.example"]\nroute = ["192.0.2.1"]\n'
    config = check(text + 'verify = "callout"\n[verification]\ntimeout = "5s"\n')
    assert config.domains[Domain("a.example")].callout
    assert config.verification.timeout == 5.0
