"""The config's schema, section by section: each table of the parsed document
checked and turned into the immutable values of model.py.

Every problem is collected with its key (reader.Reader), not just the first.
"""

import ipaddress
import re
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from empath.addresses import Domain
from empath.config import values
from empath.config.model import (
    DKIM_ALGORITHMS,
    HOOKS,
    MODES,
    TLS_POLICIES,
    TLS_VERSIONS,
    AliasSettings,
    Config,
    ControlSettings,
    Delivery,
    DkimKey,
    DomainPolicy,
    Limits,
    Listener,
    PluginSpec,
    QueueSettings,
    RewriteSettings,
    Smarthost,
    SrsSettings,
    Timeouts,
    Verification,
)
from empath.config.reader import ConfigError, Reader, plain, tables, unknown

LOG_LEVELS = ("debug", "info", "warning", "error")
# More SMTP processes than cores only adds contention for the queue's write lock;
# the cap keeps a typo (1000) from starting a thousand interpreters.
MAX_SMTP_PROCESSES = 64
LOG_FORMATS = ("text", "json")
# Safe by default: only this host may relay without logging in.
DEFAULT_TRUSTED = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


SECTIONS = (
    "server",
    "listeners",
    "relay",
    "tls",
    "auth",
    "limits",
    "timeouts",
    "queue",
    "delivery",
    "smarthost",
    "domains",
    "plugins",
    "control",
    "dkim",
    "verification",
    "aliases",
    "srs",
    "rewrite",
)


def _limits(r: Reader, doc: dict) -> Limits:
    t = r.table(doc, "limits", {f.name for f in fields(Limits)})
    d = Limits()
    sizes = {"max_message_size", "max_header_size"}
    delays = {"auth_failure_delay"}
    minimums = {"line_length": 512, "text_line_length": 1000, "max_recipients": 100, "max_received_headers": 1}
    # 0 turns these off.
    minimums |= {"data_min_rate": 0, "auth_failures_per_client": 0}
    convert: Callable[[Any], Any]
    kwargs = {}
    for f in fields(Limits):
        where = f"limits.{f.name}"
        if f.name in sizes:
            convert = values.at_least(values.size, 1024)
        elif f.name == "data_min_rate":
            convert = values.size
        elif f.name == "connection_rate_per_client":
            convert = values.rate
        elif f.name == "stress_threshold":
            convert = values.integer(1, 100)
        elif f.name == "auth_failure_window":
            convert = values.at_least(values.duration, 1)
        elif f.name in delays:
            convert = values.duration
        else:
            convert = values.integer(minimums.get(f.name, 1))
        kwargs[f.name] = r.get(t, f.name, getattr(d, f.name), convert, where)
    return Limits(**kwargs)


def _timeouts(r: Reader, doc: dict) -> Timeouts:
    t = r.table(doc, "timeouts", {f.name for f in fields(Timeouts)})
    d = Timeouts()
    # Only the pauses may be zero; a zero read timeout would drop every client.
    may_be_zero = {"greet_pause", "shutdown_grace"}
    return Timeouts(
        **{
            f.name: r.get(
                t,
                f.name,
                getattr(d, f.name),
                values.duration if f.name in may_be_zero else values.positive_duration,
                f"timeouts.{f.name}",
            )
            for f in fields(Timeouts)
        }
    )


def _queue(r: Reader, doc: dict) -> QueueSettings:
    t = r.table(doc, "queue", {f.name for f in fields(QueueSettings)})
    d = QueueSettings()
    return QueueSettings(
        lifetime=r.get(t, "lifetime", d.lifetime, values.at_least(values.duration, 60), "queue.lifetime"),
        min_free_space=r.get(t, "min_free_space", d.min_free_space, values.size, "queue.min_free_space"),
        max_size=r.get(t, "max_size", d.max_size, values.size, "queue.max_size"),
        commit_timeout=r.get(
            t, "commit_timeout", d.commit_timeout, values.at_least(values.duration, 1), "queue.commit_timeout"
        ),
    )


def _tls_version(value: Any) -> str:
    """``1.2``, or ``TLSv1.2`` as OpenSSL writes it (``TLSv1`` is 1.0)."""
    text = values.string(value)
    text = {"TLSv1": "1.0", "tlsv1": "1.0"}.get(text, text.removeprefix("TLSv").removeprefix("tlsv"))
    if text not in TLS_VERSIONS:
        raise ValueError(f"must be one of {', '.join(TLS_VERSIONS)}")
    return text


def _listeners(r: Reader, doc: dict) -> tuple[tuple[int, Listener], ...]:
    """The valid listeners, each with its index among the [[listeners]] tables."""
    result = []
    seen = set()
    keys: tuple[str, ...] = ("address", "mode", "plugins", "strict_line_ends", "sender_ownership")
    keys += ("tls_min_version", "tls_ciphers", "require_auth", "networks")
    for i, (where, entry) in enumerate(tables(r, doc, "listeners", keys, required=1)):
        if "address" not in entry:
            continue
        host_port = r.get(entry, "address", None, values.host_port, f"{where}.address")
        mode = r.get(entry, "mode", "smtp", values.choice(MODES), f"{where}.mode")
        plugins = r.get(entry, "plugins", None, lambda v: tuple(values.string_list(v)), f"{where}.plugins")
        strict = r.get(entry, "strict_line_ends", False, values.boolean, f"{where}.strict_line_ends")
        # Those who log in to send own their addresses; on port 25, AUTH is rare and the MX's own business.
        owned = r.get(entry, "sender_ownership", mode != "smtp", values.boolean, f"{where}.sender_ownership")
        oldest = r.get(entry, "tls_min_version", "1.2", _tls_version, f"{where}.tls_min_version")
        ciphers = r.get(entry, "tls_ciphers", None, values.string, f"{where}.tls_ciphers")
        require_auth = r.get(entry, "require_auth", False, values.boolean, f"{where}.require_auth")
        networks = r.get(
            entry,
            "networks",
            (),
            lambda v: tuple(values.network(n) for n in values.string_list(v)),
            f"{where}.networks",
        )
        if host_port is None:
            continue
        if host_port in seen:
            r.problem(f"{where}.address", "the same address is listed twice")
        seen.add(host_port)
        listener = Listener(host_port[0], host_port[1], mode, plugins, strict, owned, oldest, ciphers, require_auth)
        result.append((i, replace(listener, networks=networks)))
    if plain(doc.get("listeners", [])) == []:
        r.problem("listeners", "at least one [[listeners]] entry is required")
    return tuple(result)


_POLICY_KEYS = {
    "tls",
    "concurrency",
    "rate",
    "breaker_failures",
    "breaker_cooldown",
    "source_address",
    "address_family",
}
ADDRESS_FAMILIES = ("any", "ipv4", "ipv6")


def _sources(value: Any) -> tuple[str, ...]:
    """The local addresses to send from: an IPv4 one, an IPv6 one, or one of each."""
    found = []
    for text in [value] if isinstance(value, str) else values.string_list(value):
        try:
            found.append(ipaddress.ip_address(text))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address") from None
    if len({a.version for a in found}) != len(found):
        raise ValueError("give at most one IPv4 and one IPv6 address")
    return tuple(str(a) for a in found)


_DOMAIN_KEYS = {"route", "recipients", "verify"}
VERIFY = ("none", "callout")


def _policy(r: Reader, table: dict, where: str, base: DomainPolicy) -> DomainPolicy:
    return DomainPolicy(
        route=base.route,
        tls=r.get(table, "tls", base.tls, values.choice(TLS_POLICIES), f"{where}.tls"),
        concurrency=r.get(table, "concurrency", base.concurrency, values.integer(1), f"{where}.concurrency"),
        rate=r.get(table, "rate", base.rate, values.rate, f"{where}.rate"),
        breaker_failures=r.get(
            table, "breaker_failures", base.breaker_failures, values.integer(1), f"{where}.breaker_failures"
        ),
        breaker_cooldown=r.get(
            table,
            "breaker_cooldown",
            base.breaker_cooldown,
            values.at_least(values.duration, 1),
            f"{where}.breaker_cooldown",
        ),
        source_address=r.get(table, "source_address", base.source_address, _sources, f"{where}.source_address"),
        address_family=r.get(
            table, "address_family", base.address_family, values.choice(ADDRESS_FAMILIES), f"{where}.address_family"
        ),
    )


def _delivery(r: Reader, doc: dict, path: Callable[[Any], Path]) -> Delivery:
    d = Delivery()
    own = {
        "workers",
        "port",
        "nameservers",
        "dns_timeout",
        "tls_ca_file",
        "connect_timeout",
        "command_timeout",
        "data_timeout",
        "retry_first",
        "retry_max",
        "delay_warning",
        "idle_time",
        "max_messages_per_connection",
        "max_addresses",
        "lease_time",
    }
    t = r.table(doc, "delivery", own | _POLICY_KEYS)

    def get(key: str, convert: Callable[[Any], Any]) -> Any:
        return r.get(t, key, getattr(d, key), convert, f"delivery.{key}")

    def nameservers(value: Any) -> tuple[tuple[str, int], ...]:
        hops = [values.next_hop(53)(v) for v in values.string_list(value)]
        for hop in hops:
            try:
                ipaddress.ip_address(hop.host)
            except ValueError:
                raise ValueError(f"{hop.host!r} must be an IP address") from None
        return tuple((hop.host, hop.port) for hop in hops)

    positive = values.at_least(values.duration, 0.001)
    delivery = Delivery(
        workers=get("workers", values.integer(1)),
        port=get("port", values.port),
        nameservers=get("nameservers", nameservers),
        dns_timeout=get("dns_timeout", positive),
        tls_ca_file=get("tls_ca_file", path),
        connect_timeout=get("connect_timeout", positive),
        command_timeout=get("command_timeout", positive),
        data_timeout=get("data_timeout", positive),
        retry_first=get("retry_first", values.at_least(values.duration, 1)),
        retry_max=get("retry_max", values.at_least(values.duration, 1)),
        delay_warning=get("delay_warning", values.duration),
        idle_time=get("idle_time", values.duration),
        max_messages_per_connection=get("max_messages_per_connection", values.integer(1)),
        max_addresses=get("max_addresses", values.integer(1)),
        lease_time=get("lease_time", values.at_least(values.duration, 60)),
        defaults=_policy(r, t, "delivery", d.defaults),
    )
    if delivery.retry_max < delivery.retry_first:
        r.problem("delivery.retry_max", "must not be shorter than delivery.retry_first")
    return delivery


def _smarthost(r: Reader, doc: dict, delivery: Delivery, path: Callable[[Any], Path]) -> Smarthost | None:
    if "smarthost" not in doc:
        return None
    t = r.table(doc, "smarthost", {"hosts", "username", "password_file", "tls", "source_address", "address_family"})
    hosts = r.get(t, "hosts", (), values.hops(delivery.port), "smarthost.hosts")
    if "hosts" not in t:
        r.problem("smarthost.hosts", "is required: the relay host(s) to send all outbound mail through")
    username = r.get(t, "username", None, values.login, "smarthost.username")
    password_file = r.get(t, "password_file", None, path, "smarthost.password_file")
    if (username is None) != (password_file is None):
        r.problem("smarthost", "username and password_file must be given together")
    # With a password, never below required; a default of verify stays verify.
    default_tls = delivery.defaults.tls
    if username and default_tls in ("none", "opportunistic"):
        default_tls = "required"
    tls = r.get(t, "tls", default_tls, values.choice(TLS_POLICIES), "smarthost.tls")
    if username and tls in ("none", "opportunistic"):
        r.problem("smarthost.tls", "must be required or verify when a username is set: passwords never go in clear")
    d = delivery.defaults
    source = r.get(t, "source_address", d.source_address, _sources, "smarthost.source_address")
    family = r.get(t, "address_family", d.address_family, values.choice(ADDRESS_FAMILIES), "smarthost.address_family")
    return Smarthost(hosts, username, password_file, tls, source, family)


def _domains(r: Reader, doc: dict, delivery: Delivery, path: Callable[[Any], Path]) -> dict[Domain, DomainPolicy]:
    raw = doc.get("domains", {})
    if not isinstance(raw, dict):
        r.problem("domains", 'must be tables such as [domains."example.org"]')
        return {}
    result = {}
    for name, table in raw.items():
        where = f"domains.{name}"
        if not isinstance(table, dict):
            r.problem(where, "must be a table")
            continue
        for key in table:
            if key not in _POLICY_KEYS | _DOMAIN_KEYS:
                r.problem(f"{where}.{key}", unknown(key, _POLICY_KEYS | _DOMAIN_KEYS))
        try:
            domain = values.domain(name)
        except ValueError as exc:
            r.problem(where, str(exc))
            continue
        if domain in result:
            r.problem(where, "the same domain is configured twice")
        policy = _policy(r, table, where, delivery.defaults)
        route = r.get(table, "route", (), values.hops(delivery.port), f"{where}.route")
        recipients = r.get(table, "recipients", None, path, f"{where}.recipients")
        verify = r.get(table, "verify", "none", values.choice(VERIFY), f"{where}.verify")
        if verify == "callout" and recipients is not None:
            r.problem(f"{where}.verify", "a domain is verified by its recipients table or by callout, not both")
        if verify == "callout" and not route:
            r.problem(
                f"{where}.verify", "callout asks the domain's route: set route to the server that holds its mailboxes"
            )
        result[domain] = replace(policy, route=route, recipients=recipients, callout=verify == "callout")
    return result


def _verification(r: Reader, doc: dict) -> Verification:
    t = r.table(doc, "verification", {f.name for f in fields(Verification)})
    d = Verification()

    def get(key: str, convert: Callable[[Any], Any]) -> Any:
        return r.get(t, key, getattr(d, key), convert, f"verification.{key}")

    v = Verification(
        positive_expire=get("positive_expire", values.positive_duration),
        positive_refresh=get("positive_refresh", values.positive_duration),
        negative_expire=get("negative_expire", values.positive_duration),
        negative_refresh=get("negative_refresh", values.positive_duration),
        timeout=get("timeout", values.at_least(values.duration, 1)),
        concurrency=get("concurrency", values.integer(1)),
        max_entries=get("max_entries", values.integer(1)),
    )
    for kind in ("positive", "negative"):
        if getattr(v, f"{kind}_refresh") > getattr(v, f"{kind}_expire"):
            r.problem(f"verification.{kind}_refresh", f"must not be longer than verification.{kind}_expire")
    return v


def _aliases(r: Reader, doc: dict, path: Callable[[Any], Path]) -> AliasSettings:
    t = r.table(doc, "aliases", {f.name for f in fields(AliasSettings)})
    d = AliasSettings()
    return AliasSettings(
        file=r.get(t, "file", None, path, "aliases.file"),
        virtual=r.get(t, "virtual", None, path, "aliases.virtual"),
        expansion_limit=r.get(t, "expansion_limit", d.expansion_limit, values.integer(1), "aliases.expansion_limit"),
    )


def _srs_age(value: Any) -> float:
    seconds = values.at_least(values.duration, 86400)(value)
    if seconds > 1000 * 86400:
        raise ValueError("must be at most 1000d")
    return seconds


def _srs(r: Reader, doc: dict, path: Callable[[Any], Path]) -> SrsSettings:
    t = r.table(doc, "srs", {f.name for f in fields(SrsSettings)})
    d = SrsSettings()
    return SrsSettings(
        secret_file=r.get(t, "secret_file", None, path, "srs.secret_file"),
        domain=r.get(t, "domain", None, lambda v: values.domain(values.string(v)), "srs.domain"),
        # TT counts days modulo 1024: an age past that would never expire.
        max_age=r.get(t, "max_age", d.max_age, _srs_age, "srs.max_age"),
    )


def _rewrite(r: Reader, doc: dict, path: Callable[[Any], Path]) -> RewriteSettings:
    t = r.table(doc, "rewrite", {f.name for f in fields(RewriteSettings)})
    return RewriteSettings(
        sender_canonical=r.get(t, "sender_canonical", None, path, "rewrite.sender_canonical"),
        masquerade_domains=r.get(
            t,
            "masquerade_domains",
            (),
            lambda v: tuple(values.domain(d) for d in values.string_list(v)),
            "rewrite.masquerade_domains",
        ),
    )


def _control(r: Reader, doc: dict, path: Callable[[Any], Path]) -> ControlSettings:
    t = r.table(doc, "control", {"socket", "group", "tokens_file"})

    def socket_path(value: Any) -> Path:
        result = path(value)
        # Bound through the directory (/proc/self/fd/N/NAME), so only the name
        # counts against the 107 bytes of a Unix socket address.
        if len(result.name.encode()) > 64:
            raise ValueError("the socket's file name must be at most 64 bytes")
        return result

    return ControlSettings(
        socket=r.get(t, "socket", None, socket_path, "control.socket"),
        group=r.get(t, "group", None, values.login, "control.group"),
        tokens_file=r.get(t, "tokens_file", None, path, "control.tokens_file"),
    )


_PLUGIN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_CALL = re.compile(rf"^{_DOTTED}:{_DOTTED}$|^[A-Za-z0-9_.-]+$")
PLUGIN_KEYS = ("name", "hook", "call", "timeout", "on_error", "options")
ON_ERROR = ("tempfail", "continue")


def _plugin_name(value: Any) -> str:
    if not _PLUGIN_NAME.fullmatch(values.string(value)):
        raise ValueError("must be 1 to 64 letters, digits, '_', '.' or '-'")
    return value


def _hooks(value: Any) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else values.string_list(value)
    for name in names:
        if name not in HOOKS:
            raise ValueError(f"{name!r} is not a hook; hooks are {', '.join(HOOKS)}")
    if not names or len(set(names)) != len(names):
        raise ValueError("must name each hook once")
    return tuple(names)


def _call(value: Any) -> str:
    if not _CALL.fullmatch(values.string(value)):
        raise ValueError("must be package.module:function, or the name of an empath.plugins entry point")
    return value


def _options(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError('must be a table, such as options = { file = "/etc/empath/blocked" }')
    return value


def _plugins(r: Reader, doc: dict) -> tuple[PluginSpec, ...]:
    specs = []
    names: set[str] = set()
    d = PluginSpec("", (), "")
    for i, (where, entry) in enumerate(tables(r, doc, "plugins", PLUGIN_KEYS, required=3)):
        name = r.get(entry, "name", None, _plugin_name, f"{where}.name")
        hooks = r.get(entry, "hook", None, _hooks, f"{where}.hook")
        call = r.get(entry, "call", None, _call, f"{where}.call")
        timeout = r.get(entry, "timeout", d.timeout, values.positive_duration, f"{where}.timeout")
        on_error = r.get(entry, "on_error", d.on_error, values.choice(ON_ERROR), f"{where}.on_error")
        options = r.get(entry, "options", {}, _options, f"{where}.options")
        if name in names:
            r.problem(f"{where}.name", "another [[plugins]] has this name")
        names.add(name)
        if name is not None and hooks is not None and call is not None:
            specs.append(PluginSpec(name, hooks, call, timeout, on_error, options, i))
    return tuple(specs)


DKIM_KEYS = ("domain", "selector", "key_file", "algorithm")  # the first three are required


def _dkim(r: Reader, doc: dict, path: Callable[[Any], Path]) -> tuple[DkimKey, ...]:
    keys = []
    seen = set()
    for i, (where, entry) in enumerate(tables(r, doc, "dkim", DKIM_KEYS, required=3)):
        domain = r.get(entry, "domain", None, lambda v: values.domain(values.string(v)), f"{where}.domain")
        selector = r.get(entry, "selector", None, values.selector, f"{where}.selector")
        key_file = r.get(entry, "key_file", None, path, f"{where}.key_file")
        algorithm = r.get(entry, "algorithm", "rsa-sha256", values.choice(DKIM_ALGORITHMS), f"{where}.algorithm")
        if domain is None or selector is None or key_file is None:
            continue
        if (domain, selector.lower()) in seen:
            r.problem(f"{where}.selector", f"another [[dkim]] table signs for {domain} with this selector")
        seen.add((domain, selector.lower()))
        keys.append(DkimKey(domain, selector, key_file, algorithm, i))
    return tuple(keys)


def validate(doc: dict, text: str, config_path: Path, default_hostname: str = "localhost") -> Config:
    """Turn a parsed document into a Config, or raise ConfigError listing every problem."""
    r = Reader(text)
    base = config_path.parent
    for key in doc:
        if key not in SECTIONS:
            r.problem(key, unknown(key, SECTIONS, "section"))

    def path(value: Any) -> Path:
        text = values.string(value)
        if not text:
            raise ValueError("must not be empty")
        return (base / text).resolve() if not text.startswith("/") else Path(text)

    server = r.table(
        doc,
        "server",
        {"hostname", "data_dir", "log_level", "log_format", "log_file", "metrics_address", "smtp_processes"},
    )
    hostname = r.get(server, "hostname", None, lambda v: values.domain(values.string(v)), "server.hostname")
    if hostname is None:
        try:
            hostname = values.domain(default_hostname)
        except ValueError as exc:
            r.problem("server.hostname", f"not set, and this machine's name will not do: {exc}")
            hostname = Domain.name("localhost")
    data_dir = r.get(server, "data_dir", None, path, "server.data_dir")
    if "data_dir" not in server:
        r.problem("server.data_dir", "is required (the queue database lives there)")
    log_level = r.get(server, "log_level", "info", values.choice(LOG_LEVELS), "server.log_level")
    log_format = r.get(server, "log_format", "text", values.choice(LOG_FORMATS), "server.log_format")
    log_file = r.get(server, "log_file", None, path, "server.log_file")
    metrics_address = r.get(server, "metrics_address", None, values.host_port, "server.metrics_address")
    smtp_processes = r.get(server, "smtp_processes", 1, values.integer(1, MAX_SMTP_PROCESSES), "server.smtp_processes")

    relay = r.table(doc, "relay", {"local_domains", "trusted_networks", "allow_open_relay"})
    domains = r.get(
        relay, "local_domains", [], lambda v: [values.domain(d) for d in values.string_list(v)], "relay.local_domains"
    )
    networks = r.get(
        relay,
        "trusted_networks",
        DEFAULT_TRUSTED,
        lambda v: [values.network(n) for n in values.string_list(v)],
        "relay.trusted_networks",
    )
    allow_open_relay = r.get(relay, "allow_open_relay", False, values.boolean, "relay.allow_open_relay")
    for network in networks:
        if network.prefixlen == 0 and not allow_open_relay:
            r.problem(
                "relay.trusted_networks",
                f"{network} lets every host on the internet relay through Empath (an open relay);"
                " set relay.allow_open_relay = true if that is really meant",
            )

    tls = r.table(doc, "tls", {"certificate", "key"})
    cert = r.get(tls, "certificate", None, path, "tls.certificate")
    key = r.get(tls, "key", None, path, "tls.key")
    if (cert is None) != (key is None):
        r.problem("tls", "certificate and key must be given together")

    auth = r.table(doc, "auth", {"users_file", "senders"})
    users_file = r.get(auth, "users_file", None, path, "auth.users_file")
    senders_file = r.get(auth, "senders", None, path, "auth.senders")
    if senders_file is not None and users_file is None:
        r.problem("auth.senders", "says who may send as whom after AUTH, which needs auth.users_file")

    numbered = _listeners(r, doc)  # numbered as in the file, so a problem names the right table
    listeners = tuple(listener for _, listener in numbered)
    for i, listener in numbered:
        if listener.mode == "smtps" and cert is None:
            r.problem(f"listeners[{i}].mode", "smtps needs [tls] certificate and key")
        if listener.mode == "submission" and (cert is None or users_file is None):
            r.problem(
                f"listeners[{i}].mode", "submission needs [tls] and auth.users_file: clients must log in over TLS"
            )

    plugins = _plugins(r, doc)
    for i, listener in numbered:
        for name in listener.plugins or ():
            if name not in {spec.name for spec in plugins}:
                r.problem(f"listeners[{i}].plugins", f"no [[plugins]] table is named {name!r}")

    if metrics_address in {(listener.host, listener.port) for listener in listeners}:
        r.problem("server.metrics_address", "is also the address of a listener")

    delivery = _delivery(r, doc, path)
    config = Config(
        path=config_path,
        hostname=hostname,
        data_dir=data_dir or base,
        log_level=log_level,
        log_format=log_format,
        log_file=log_file,
        listeners=listeners,
        local_domains=tuple(dict.fromkeys(domains)),
        trusted_networks=tuple(networks),
        tls_certificate=cert,
        tls_key=key,
        users_file=users_file,
        limits=_limits(r, doc),
        timeouts=_timeouts(r, doc),
        queue=_queue(r, doc),
        delivery=delivery,
        smarthost=_smarthost(r, doc, delivery, path),
        domains=_domains(r, doc, delivery, path),
        metrics_address=metrics_address,
        smtp_processes=smtp_processes,
        plugins=plugins,
        control=_control(r, doc, path),
        dkim=_dkim(r, doc, path),
        verification=_verification(r, doc),
        senders_file=senders_file,
        aliases=_aliases(r, doc, path),
        srs=_srs(r, doc, path),
        rewrite=_rewrite(r, doc, path),
    )
    for domain, policy in config.domains.items():
        # Mail for other domains is relayed for our own clients only: who exists there is not ours to say.
        if policy.recipients is not None and domain not in config.local_domains:
            r.problem(f"domains.{domain}.recipients", "only a domain in relay.local_domains has a recipients table")
        if policy.callout and domain not in config.local_domains:
            r.problem(f"domains.{domain}.verify", "only a domain in relay.local_domains is verified")
    if config.srs.secret_file is not None and config.srs_domain not in config.local_domains:
        r.problem("srs.domain", "must be one of relay.local_domains: bounces to the rewritten senders come back to it")
    if r.problems:
        raise ConfigError(r.problems)
    return config
