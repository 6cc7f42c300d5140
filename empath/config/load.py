"""Read the TOML file and validate it into a Config.

Every problem is collected, not just the first, and each names its key and
line, so ``empath --check`` shows an operator all that is wrong in one go.
"""

import ipaddress
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.exceptions

from empath.addresses import AddressError, Domain
from empath.config import values
from empath.config.model import (
    DKIM_ALGORITHMS,
    MODES,
    TLS_POLICIES,
    Config,
    ControlSettings,
    Delivery,
    DkimKey,
    DomainPolicy,
    Limits,
    Listener,
    NextHop,
    PluginSpec,
    QueueSettings,
    Smarthost,
    Timeouts,
)
from empath.control.settings import control_problems
from empath.message import dkim
from empath.plugins import loader as plugins_loader
from empath.plugins.api import HOOKS

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
)


class ConfigError(Exception):
    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?")
_KEY = re.compile(r'^\s*("[^"]*"|[A-Za-z0-9_.-]+)\s*=')


def key_lines(text: str) -> dict[str, int]:
    """Map dotted key paths (``limits.max_recipients``, ``listeners[1].mode``) to line numbers."""
    lines: dict[str, int] = {}
    table = ""
    counts: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _HEADER.match(line):
            name = m.group(2).replace('"', "")
            if m.group(1) == "[[":
                index = counts.get(name, -1) + 1
                counts[name] = index
                name = f"{name}[{index}]"
            table = name
            lines.setdefault(table, number)
        elif m := _KEY.match(line):
            key = m.group(1).strip('"')
            lines.setdefault(f"{table}.{key}" if table else key, number)
    return lines


class _Reader:
    """Pulls typed values out of the parsed document, noting every problem."""

    def __init__(self, text: str):
        self.lines = key_lines(text)
        self.problems: list[str] = []

    def problem(self, key: str, message: str) -> None:
        line = self.lines.get(key) or self.lines.get(key.rsplit(".", 1)[0])
        where = f"{key} (line {line})" if line else key
        self.problems.append(f"{where}: {message}")

    def table(self, doc: dict, name: str, known: set[str]) -> dict:
        value = doc.get(name, {})
        if not isinstance(value, dict):
            self.problem(name, "must be a table")
            return {}
        for key in value:
            if key not in known:
                self.problem(f"{name}.{key}", "unknown key")
        return value

    def get(self, table: dict, key: str, default: Any, convert: Callable[[Any], Any], where: str) -> Any:
        if key not in table:
            return default
        try:
            return convert(_plain(table[key]))
        except (ValueError, TypeError) as exc:
            self.problem(where, str(exc))
            return default


def _plain(value: Any) -> Any:
    return value.unwrap() if hasattr(value, "unwrap") else value


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return convert


def _integer(minimum: int, maximum: int | None = None) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise ValueError(f"must be at most {maximum}")
        return value

    return convert


def _at_least(convert: Callable[[Any], Any], minimum: float) -> Callable[[Any], Any]:
    def checked(value: Any) -> Any:
        result = convert(value)
        if result < minimum:
            raise ValueError(f"must be at least {minimum:g}")
        return result

    return checked


def _string_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    return value


def _domain(value: str) -> Domain:
    try:
        return Domain.name(value.rstrip("."))
    except AddressError as exc:
        raise ValueError(f"{value!r} is not a domain name: {exc}") from None


def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP network such as 192.0.2.0/24 or 2001:db8::/32") from None


def _host_port(value: Any) -> tuple[str, int]:
    text = _string(value)
    m = re.match(r"^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+)):(\d{1,5})$", text)
    if not m:
        raise ValueError(f"{text!r} must be address:port, such as 127.0.0.1:2525 or [::1]:2525")
    host = m.group(1) or m.group(2)
    port = int(m.group(3))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} must be an IP address") from None
    return str(ip), port  # one spelling per address, so duplicates are seen


def _limits(r: _Reader, doc: dict) -> Limits:
    t = r.table(doc, "limits", {f.name for f in fields(Limits)})
    d = Limits()
    sizes = {"max_message_size"}
    delays = {"auth_failure_delay"}
    minimums = {"line_length": 512, "text_line_length": 1000, "max_recipients": 100, "max_received_headers": 1}
    kwargs = {}
    for f in fields(Limits):
        where = f"limits.{f.name}"
        if f.name in sizes:
            convert = _at_least(values.size, 1024)
        elif f.name in delays:
            convert = values.duration
        else:
            convert = _integer(minimums.get(f.name, 1))
        kwargs[f.name] = r.get(t, f.name, getattr(d, f.name), convert, where)
    return Limits(**kwargs)


def _positive_duration(value: Any) -> float:
    seconds = values.duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return seconds


def _timeouts(r: _Reader, doc: dict) -> Timeouts:
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
                values.duration if f.name in may_be_zero else _positive_duration,
                f"timeouts.{f.name}",
            )
            for f in fields(Timeouts)
        }
    )


def _queue(r: _Reader, doc: dict) -> QueueSettings:
    t = r.table(doc, "queue", {f.name for f in fields(QueueSettings)})
    d = QueueSettings()
    return QueueSettings(
        lifetime=r.get(t, "lifetime", d.lifetime, _at_least(values.duration, 60), "queue.lifetime"),
        min_free_space=r.get(t, "min_free_space", d.min_free_space, values.size, "queue.min_free_space"),
        max_size=r.get(t, "max_size", d.max_size, values.size, "queue.max_size"),
        commit_timeout=r.get(
            t, "commit_timeout", d.commit_timeout, _at_least(values.duration, 1), "queue.commit_timeout"
        ),
    )


def _tables(r: _Reader, doc: dict, name: str, keys: tuple[str, ...], required: int) -> list[tuple[str, dict]]:
    """The ``[[name]]`` tables as (where, table), with unknown and missing keys reported.

    ``keys`` are the keys a table may have; the first ``required`` of them it must have.
    """
    raw = _plain(doc.get(name, []))
    if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
        r.problem(name, f"must be an array of tables: [[{name}]]")
        return []
    tables = []
    for i, entry in enumerate(raw):
        where = f"{name}[{i}]"
        for key in entry:
            if key not in keys:
                r.problem(f"{where}.{key}", "unknown key")
        for key in keys[:required]:
            if key not in entry:
                r.problem(where, f"{key} is required")
        tables.append((where, entry))
    return tables


def _listeners(r: _Reader, doc: dict) -> tuple[tuple[int, Listener], ...]:
    """The valid listeners, each with its index among the [[listeners]] tables."""
    tables = _tables(r, doc, "listeners", ("address", "mode", "plugins"), required=1)
    result = []
    seen = set()
    for i, (where, entry) in enumerate(tables):
        if "address" not in entry:
            continue
        host_port = r.get(entry, "address", None, _host_port, f"{where}.address")
        mode = r.get(entry, "mode", "smtp", _choice(MODES), f"{where}.mode")
        plugins = r.get(entry, "plugins", None, lambda v: tuple(_string_list(v)), f"{where}.plugins")
        if host_port is None:
            continue
        if host_port in seen:
            r.problem(f"{where}.address", "the same address is listed twice")
        seen.add(host_port)
        result.append((i, Listener(host_port[0], host_port[1], mode, plugins)))
    if _plain(doc.get("listeners", [])) == []:
        r.problem("listeners", "at least one [[listeners]] entry is required")
    return tuple(result)


def _next_hop(default_port: int) -> Callable[[Any], NextHop]:
    """``host``, ``host:port``, ``192.0.2.1:25`` or ``[2001:db8::1]:25``."""

    def convert(value: Any) -> NextHop:
        text = _string(value)
        m = re.match(r"^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+))(?::(\d{1,5}))?$", text)
        if not m:
            raise ValueError(f"{text!r} must be host or host:port, such as mail.example.org:25 or [2001:db8::1]:25")
        host = m.group(1) or m.group(2)
        port = int(m.group(3)) if m.group(3) else default_port
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range")
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            host = _domain(host)
        return NextHop(host, port)

    return convert


def _hops(default_port: int) -> Callable[[Any], tuple[NextHop, ...]]:
    def convert(value: Any) -> tuple[NextHop, ...]:
        hops = tuple(_next_hop(default_port)(v) for v in _string_list(value))
        if not hops:
            raise ValueError("must list at least one host")
        return hops

    return convert


_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*/\s*(s|m|h)$")


def _rate(value: Any) -> float:
    """Messages per second from ``0`` (no limit), ``"10/s"``, ``"60/m"`` or ``"1000/h"``."""
    if value == 0 and not isinstance(value, bool):
        return 0.0
    m = _RATE.match(value.strip()) if isinstance(value, str) else None
    if not m:
        raise ValueError("must be 0 (no limit) or a rate such as 10/s, 60/m or 1000/h")
    return float(m.group(1)) / {"s": 1, "m": 60, "h": 3600}[m.group(2)]


_POLICY_KEYS = {"tls", "concurrency", "rate", "breaker_failures", "breaker_cooldown"}


def _policy(r: _Reader, table: dict, where: str, base: DomainPolicy) -> DomainPolicy:
    return DomainPolicy(
        route=base.route,
        tls=r.get(table, "tls", base.tls, _choice(TLS_POLICIES), f"{where}.tls"),
        concurrency=r.get(table, "concurrency", base.concurrency, _integer(1), f"{where}.concurrency"),
        rate=r.get(table, "rate", base.rate, _rate, f"{where}.rate"),
        breaker_failures=r.get(
            table, "breaker_failures", base.breaker_failures, _integer(1), f"{where}.breaker_failures"
        ),
        breaker_cooldown=r.get(
            table, "breaker_cooldown", base.breaker_cooldown, _at_least(values.duration, 1), f"{where}.breaker_cooldown"
        ),
    )


def _delivery(r: _Reader, doc: dict, path: Callable[[Any], Path]) -> Delivery:
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
        hops = [_next_hop(53)(v) for v in _string_list(value)]
        for hop in hops:
            try:
                ipaddress.ip_address(hop.host)
            except ValueError:
                raise ValueError(f"{hop.host!r} must be an IP address") from None
        return tuple((hop.host, hop.port) for hop in hops)

    positive = _at_least(values.duration, 0.001)
    delivery = Delivery(
        workers=get("workers", _integer(1)),
        port=get("port", _port),
        nameservers=get("nameservers", nameservers),
        dns_timeout=get("dns_timeout", positive),
        tls_ca_file=get("tls_ca_file", path),
        connect_timeout=get("connect_timeout", positive),
        command_timeout=get("command_timeout", positive),
        data_timeout=get("data_timeout", positive),
        retry_first=get("retry_first", _at_least(values.duration, 1)),
        retry_max=get("retry_max", _at_least(values.duration, 1)),
        delay_warning=get("delay_warning", values.duration),
        idle_time=get("idle_time", values.duration),
        max_messages_per_connection=get("max_messages_per_connection", _integer(1)),
        max_addresses=get("max_addresses", _integer(1)),
        lease_time=get("lease_time", _at_least(values.duration, 60)),
        defaults=_policy(r, t, "delivery", d.defaults),
    )
    if delivery.retry_max < delivery.retry_first:
        r.problem("delivery.retry_max", "must not be shorter than delivery.retry_first")
    return delivery


def _port(value: Any) -> int:
    port = _integer(1)(value)
    if port > 65535:
        raise ValueError("must be a port number, 1 to 65535")
    return port


def _login(value: Any) -> str:
    text = _string(value)
    if not text:
        raise ValueError("must not be empty")
    return text


def _smarthost(r: _Reader, doc: dict, delivery: Delivery, path: Callable[[Any], Path]) -> Smarthost | None:
    if "smarthost" not in doc:
        return None
    t = r.table(doc, "smarthost", {"hosts", "username", "password_file", "tls"})
    hosts = r.get(t, "hosts", (), _hops(delivery.port), "smarthost.hosts")
    if "hosts" not in t:
        r.problem("smarthost.hosts", "is required: the relay host(s) to send all outbound mail through")
    username = r.get(t, "username", None, _login, "smarthost.username")
    password_file = r.get(t, "password_file", None, path, "smarthost.password_file")
    if (username is None) != (password_file is None):
        r.problem("smarthost", "username and password_file must be given together")
    # With a password, never below required; a default of verify stays verify.
    default_tls = delivery.defaults.tls
    if username and default_tls in ("none", "opportunistic"):
        default_tls = "required"
    tls = r.get(t, "tls", default_tls, _choice(TLS_POLICIES), "smarthost.tls")
    if username and tls in ("none", "opportunistic"):
        r.problem("smarthost.tls", "must be required or verify when a username is set: passwords never go in clear")
    return Smarthost(hosts, username, password_file, tls)


def _domains(r: _Reader, doc: dict, delivery: Delivery) -> dict[Domain, DomainPolicy]:
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
            if key not in _POLICY_KEYS | {"route"}:
                r.problem(f"{where}.{key}", "unknown key")
        try:
            domain = _domain(name)
        except ValueError as exc:
            r.problem(where, str(exc))
            continue
        if domain in result:
            r.problem(where, "the same domain is configured twice")
        policy = _policy(r, table, where, delivery.defaults)
        route = r.get(table, "route", (), _hops(delivery.port), f"{where}.route")
        result[domain] = DomainPolicy(
            route, policy.tls, policy.concurrency, policy.rate, policy.breaker_failures, policy.breaker_cooldown
        )
    return result


def _control(r: _Reader, doc: dict, path: Callable[[Any], Path]) -> ControlSettings:
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
        group=r.get(t, "group", None, _login, "control.group"),
        tokens_file=r.get(t, "tokens_file", None, path, "control.tokens_file"),
    )


_PLUGIN_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
_CALL = re.compile(rf"^{_DOTTED}:{_DOTTED}$|^[A-Za-z0-9_.-]+$")
PLUGIN_KEYS = ("name", "hook", "call", "timeout", "on_error", "options")
ON_ERROR = ("tempfail", "continue")


def _plugin_name(value: Any) -> str:
    if not _PLUGIN_NAME.fullmatch(_string(value)):
        raise ValueError("must be 1 to 64 letters, digits, '_', '.' or '-'")
    return value


def _hooks(value: Any) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else _string_list(value)
    for name in names:
        if name not in HOOKS:
            raise ValueError(f"{name!r} is not a hook; hooks are {', '.join(HOOKS)}")
    if not names or len(set(names)) != len(names):
        raise ValueError("must name each hook once")
    return tuple(names)


def _call(value: Any) -> str:
    if not _CALL.fullmatch(_string(value)):
        raise ValueError("must be package.module:function, or the name of an empath.plugins entry point")
    return value


def _options(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError('must be a table, such as options = { file = "/etc/empath/blocked" }')
    return value


def _plugins(r: _Reader, doc: dict) -> tuple[PluginSpec, ...]:
    specs = []
    names: set[str] = set()
    d = PluginSpec("", (), "")
    for i, (where, entry) in enumerate(_tables(r, doc, "plugins", PLUGIN_KEYS, required=3)):
        name = r.get(entry, "name", None, _plugin_name, f"{where}.name")
        hooks = r.get(entry, "hook", None, _hooks, f"{where}.hook")
        call = r.get(entry, "call", None, _call, f"{where}.call")
        timeout = r.get(entry, "timeout", d.timeout, _positive_duration, f"{where}.timeout")
        on_error = r.get(entry, "on_error", d.on_error, _choice(ON_ERROR), f"{where}.on_error")
        options = r.get(entry, "options", {}, _options, f"{where}.options")
        if name in names:
            r.problem(f"{where}.name", "another [[plugins]] has this name")
        names.add(name)
        if name is not None and hooks is not None and call is not None:
            specs.append(PluginSpec(name, hooks, call, timeout, on_error, options, i))
    return tuple(specs)


DKIM_KEYS = ("domain", "selector", "key_file", "algorithm")  # the first three are required


def _selector(value: Any) -> str:
    text = _string(value)
    if not dkim.valid_selector(text):
        raise ValueError(f"{text!r} is not a selector: DNS labels (letters, digits, hyphens) joined by dots")
    return text


def _dkim(r: _Reader, doc: dict, path: Callable[[Any], Path]) -> tuple[DkimKey, ...]:
    keys = []
    seen = set()
    for i, (where, entry) in enumerate(_tables(r, doc, "dkim", DKIM_KEYS, required=3)):
        domain = r.get(entry, "domain", None, lambda v: _domain(_string(v)), f"{where}.domain")
        selector = r.get(entry, "selector", None, _selector, f"{where}.selector")
        key_file = r.get(entry, "key_file", None, path, f"{where}.key_file")
        algorithm = r.get(entry, "algorithm", "rsa-sha256", _choice(DKIM_ALGORITHMS), f"{where}.algorithm")
        if domain is None or selector is None or key_file is None:
            continue
        if (domain, selector.lower()) in seen:
            r.problem(f"{where}.selector", f"another [[dkim]] table signs for {domain} with this selector")
        seen.add((domain, selector.lower()))
        keys.append(DkimKey(domain, selector, key_file, algorithm, i))
    return tuple(keys)


def validate(doc: dict, text: str, config_path: Path, default_hostname: str = "localhost") -> Config:
    """Turn a parsed document into a Config, or raise ConfigError listing every problem."""
    r = _Reader(text)
    base = config_path.parent
    for key in doc:
        if key not in SECTIONS:
            r.problem(key, "unknown section")

    def path(value: Any) -> Path:
        text = _string(value)
        if not text:
            raise ValueError("must not be empty")
        return (base / text).resolve() if not text.startswith("/") else Path(text)

    server = r.table(
        doc,
        "server",
        {"hostname", "data_dir", "log_level", "log_format", "log_file", "metrics_address", "smtp_processes"},
    )
    hostname = r.get(server, "hostname", None, lambda v: _domain(_string(v)), "server.hostname")
    if hostname is None:
        try:
            hostname = _domain(default_hostname)
        except ValueError as exc:
            r.problem("server.hostname", f"not set, and this machine's name will not do: {exc}")
            hostname = Domain.name("localhost")
    data_dir = r.get(server, "data_dir", None, path, "server.data_dir")
    if "data_dir" not in server:
        r.problem("server.data_dir", "is required (the queue database lives there)")
    log_level = r.get(server, "log_level", "info", _choice(LOG_LEVELS), "server.log_level")
    log_format = r.get(server, "log_format", "text", _choice(LOG_FORMATS), "server.log_format")
    log_file = r.get(server, "log_file", None, path, "server.log_file")
    metrics_address = r.get(server, "metrics_address", None, _host_port, "server.metrics_address")
    smtp_processes = r.get(server, "smtp_processes", 1, _integer(1, MAX_SMTP_PROCESSES), "server.smtp_processes")

    relay = r.table(doc, "relay", {"local_domains", "trusted_networks"})
    domains = r.get(relay, "local_domains", [], lambda v: [_domain(d) for d in _string_list(v)], "relay.local_domains")
    networks = r.get(
        relay,
        "trusted_networks",
        DEFAULT_TRUSTED,
        lambda v: [_network(n) for n in _string_list(v)],
        "relay.trusted_networks",
    )

    tls = r.table(doc, "tls", {"certificate", "key"})
    cert = r.get(tls, "certificate", None, path, "tls.certificate")
    key = r.get(tls, "key", None, path, "tls.key")
    if (cert is None) != (key is None):
        r.problem("tls", "certificate and key must be given together")

    auth = r.table(doc, "auth", {"users_file"})
    users_file = r.get(auth, "users_file", None, path, "auth.users_file")

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
        domains=_domains(r, doc, delivery),
        metrics_address=metrics_address,
        smtp_processes=smtp_processes,
        plugins=plugins,
        control=_control(r, doc, path),
        dkim=_dkim(r, doc, path),
    )
    if r.problems:
        raise ConfigError(r.problems)
    return config


def check_files(config: Config) -> list[str]:
    """Problems with the files the config names: they must exist and load."""
    problems = _plugin_problems(config)
    if config.tls_certificate is not None and config.tls_key is not None:
        try:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(config.tls_certificate), str(config.tls_key))
        except (OSError, ssl.SSLError) as exc:
            problems.append(f"tls.certificate: cannot load {config.tls_certificate} with its key: {exc}")
    if config.users_file is not None and not config.users_file.is_file():
        problems.append(
            f"auth.users_file: {config.users_file} does not exist (create it with: empathctl user add NAME)"
        )
    if config.log_file is not None and not config.log_file.parent.is_dir():
        problems.append(f"server.log_file: directory {config.log_file.parent} does not exist")
    if config.smarthost is not None and config.smarthost.password_file is not None:
        try:
            read_password(config.smarthost.password_file)
        except ValueError as exc:
            problems.append(f"smarthost.password_file: {exc}")
    problems += control_problems(config.control)
    problems += _dkim_problems(config)
    if config.delivery.tls_ca_file is not None:
        try:
            ssl.create_default_context(cafile=str(config.delivery.tls_ca_file))
        except (OSError, ssl.SSLError) as exc:
            problems.append(f"delivery.tls_ca_file: cannot load {config.delivery.tls_ca_file}: {exc}")
    return problems


def _plugin_problems(config: Config) -> list[str]:
    """Each plug-in must import and be a function of one argument (this imports them)."""
    if not config.plugins:
        return []
    try:
        r = _Reader(config.path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        r = _Reader("")  # the problems without their lines
    for spec in config.plugins:
        try:
            plugins_loader.resolve(spec.call)
        except plugins_loader.LoadError as exc:
            r.problem(f"plugins[{spec.index}].call", str(exc))
    return r.problems


def _dkim_problems(config: Config) -> list[str]:
    """Each signing key must load and be closed to other users (this reads the key files)."""
    try:
        r = _Reader(config.path.read_text(encoding="utf-8") if config.dkim else "")
    except (OSError, UnicodeDecodeError):
        r = _Reader("")  # the problems without their lines
    for key in config.dkim:
        problem = dkim.key_problem(key)
        if problem:
            r.problem(f"dkim[{key.index}].key_file", problem)
    return r.problems


def read_password(path: Path) -> str:
    """The first line of a password file; ValueError if it cannot be read or is empty."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not lines or not lines[0]:
        raise ValueError(f"{path} is empty")
    return lines[0]


def load(path: str | Path) -> Config:
    """Read, parse and validate a config file; raise ConfigError on any problem.

    The files it names are not opened here: see check_files.
    """
    config_path = Path(path).resolve()
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read {config_path}: {exc}"]) from None
    try:
        doc = tomlkit.parse(text).unwrap()
    except tomlkit.exceptions.TOMLKitError as exc:  # ParseError, and KeyAlreadyPresent for a repeated key
        raise ConfigError([f"{config_path}: not valid TOML: {exc}"]) from None
    return validate(doc, text, config_path, default_hostname=socket.getfqdn())
