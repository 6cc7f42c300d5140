"""The validated configuration, as plain immutable values."""

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from empath.addresses import Domain

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MODES = ("smtp", "submission", "smtps")
TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")
# Outbound TLS: none; opportunistic (STARTTLS when offered, else plain);
# required (never MAIL or AUTH in clear); verify (required + certificate checked).
TLS_POLICIES = ("none", "opportunistic", "required", "verify")


@dataclass(frozen=True)
class NextHop:
    host: str  # a host name, or an IP address
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class DomainPolicy:
    """How to deliver to one destination: a configured domain, or the defaults."""

    route: tuple[NextHop, ...] = ()  # fixed next hops, tried in order; empty: smarthost or MX
    tls: str = "opportunistic"
    concurrency: int = 20  # connections at once
    rate: float = 0.0  # messages per second; 0: no limit
    breaker_failures: int = 5  # consecutive connection-level failures that open the breaker
    breaker_cooldown: float = 300.0  # how long an open breaker defers before one probe
    # Postfix's smtp_bind_address and smtp_bind_address6: an IPv4 and/or an IPv6 address to send from.
    source_address: tuple[str, ...] = ()
    # Which next-hop addresses to use: any (IPv4 first, then IPv6), ipv4 only, ipv6 only
    # (Postfix's inet_protocols per destination; Gmail refuses IPv6 senders without reverse DNS).
    address_family: str = "any"
    # A local domain's table of valid recipients (empath/recipients.py); None: every address.
    recipients: Path | None = None
    # Ask the route's next hop whether a local domain's recipient exists before taking it
    # (delivery/verify.py): Postfix's reject_unverified_recipient. Either this or a table.
    callout: bool = False


@dataclass(frozen=True)
class Smarthost:
    hosts: tuple[NextHop, ...]
    username: str | None = None
    password_file: Path | None = None
    tls: str = "opportunistic"
    source_address: tuple[str, ...] = ()  # as DomainPolicy's, for the smarthost
    address_family: str = "any"


@dataclass(frozen=True)
class Delivery:
    workers: int = 20
    port: int = 25  # the SMTP port of MX hosts
    nameservers: tuple[tuple[str, int], ...] = ()  # empty: /etc/resolv.conf
    dns_timeout: float = 10.0
    tls_ca_file: Path | None = None  # CAs for tls = "verify"; default: the system's
    connect_timeout: float = 30.0
    command_timeout: float = 300.0  # RFC 5321 §4.5.3.2: greeting, MAIL, RCPT
    data_timeout: float = 600.0  # RFC 5321 §4.5.3.2.6: the reply to the final dot
    retry_first: float = 300.0
    retry_max: float = 14400.0
    delay_warning: float = 14400.0  # 0: never
    idle_time: float = 5.0  # keep an idle connection this long for reuse
    max_messages_per_connection: int = 100
    max_addresses: int = 5  # addresses tried per attempt
    lease_time: float = 1800.0  # longer than any attempt can take
    defaults: DomainPolicy = DomainPolicy()


@dataclass(frozen=True)
class Listener:
    host: str
    port: int
    mode: str  # one of MODES
    plugins: tuple[str, ...] | None = None  # names of the [[plugins]] its sessions run, in order; None: all
    # A bare LF ends a line for trusted, authenticated and local clients unless this is set;
    # strangers always get 5xx and a hang-up (smtp/data.py).
    strict_line_ends: bool = False
    # AUTH users may send only as the addresses they own (empath/senders.py); the config
    # turns it on for submission and smtps unless told otherwise.
    sender_ownership: bool = False
    # For old devices on the LAN: the oldest TLS taken here (TLS_VERSIONS) and the OpenSSL
    # cipher list (None: Python's, or for TLS below 1.2 every cipher at security level 0).
    tls_min_version: str = "1.2"
    tls_ciphers: str | None = None
    require_auth: bool = False  # AUTH before MAIL, as on submission (which always requires it)
    networks: tuple[Network, ...] = ()  # who may connect here; (): anyone

    @property
    def name(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.mode}@{host}:{self.port}"


@dataclass(frozen=True)
class Limits:
    line_length: int = 512  # RFC 5321 §4.5.3.1.4, CRLF included
    text_line_length: int = 1000  # RFC 5321 §4.5.3.1.6, CRLF included
    max_message_size: int = 52428800
    # The header section is held in memory while a message is received (queue/spool.py):
    # Exchange Online's limit; Exim's header_maxsize is 1 MiB.
    max_header_size: int = 262144
    max_recipients: int = 100  # RFC 5321 §4.5.3.1.8 minimum
    # Sessions of clients outside trusted_networks: on smtp listeners, and (apart, so
    # that the MX port's strangers never crowd out people logging in) on submission
    # and smtps listeners. Trusted clients are counted against neither.
    max_connections: int = 100
    max_submission_connections: int = 100
    max_connections_per_client: int = 50  # Postfix smtpd_client_connection_count_limit; trusted too
    connection_rate_per_client: float = 1.0  # connections a second from one untrusted address; 0: no limit
    max_errors: int = 20  # Postfix smtpd_hard_error_limit
    junk_command_limit: int = 100  # NOOP, RSET, VRFY, HELP, a repeated EHLO; Postfix smtpd_junk_command_limit
    max_received_headers: int = 50
    data_min_rate: int = 500  # bytes a second a message must arrive at, on average; Postfix smtpd_min_data_rate
    stress_threshold: int = 80  # percent of the strangers' connections: beyond it, stress mode
    auth_max_failures: int = 3  # per session
    auth_failure_delay: float = 1.0
    auth_failures_per_client: int = 10  # in auth_failure_window, across sessions: then AUTH is refused
    auth_failure_window: float = 3600.0


@dataclass(frozen=True)
class Timeouts:
    command: float = 300.0  # RFC 5321 §4.5.3.2.7
    data: float = 300.0
    tls_handshake: float = 60.0
    greet_pause: float = 0.0
    shutdown_grace: float = 30.0
    stress: float = 10.0  # in stress mode, command and data timeouts of untrusted clients (Postfix: 10s)


@dataclass(frozen=True)
class QueueSettings:
    lifetime: float = 5 * 86400.0  # Postfix maximal_queue_lifetime
    min_free_space: int = 104857600
    max_size: int = 0  # 0: no limit but the disk
    commit_timeout: float = 120.0


@dataclass(frozen=True)
class Verification:
    """Recipient verification by callout, and its cache in the queue database (Postfix's address_verify_*)."""

    positive_expire: float = 31 * 86400.0  # address_verify_positive_expire_time
    positive_refresh: float = 7 * 86400.0  # address_verify_positive_refresh_time: asked again, meanwhile still used
    negative_expire: float = 3 * 86400.0  # address_verify_negative_expire_time
    negative_refresh: float = 3 * 3600.0  # address_verify_negative_refresh_time
    timeout: float = 10.0  # how long a RCPT waits for the next hop's answer before 450
    concurrency: int = 10  # callouts at once, per process: what strangers can make us open
    max_entries: int = 100_000  # answers kept; beyond, the oldest unknown addresses are forgotten first


@dataclass(frozen=True)
class AliasSettings:
    """Where mail for an address really goes (empath/aliases.py)."""

    file: Path | None = None  # /etc/aliases syntax, for local names (root, postmaster)
    virtual: Path | None = None  # the virtual alias table, for addresses of the local domains
    expansion_limit: int = 1000  # addresses one recipient may expand to; Postfix virtual_alias_expansion_limit


@dataclass(frozen=True)
class SrsSettings:
    """The Sender Rewriting Scheme for forwarded mail (empath/srs.py); off without a secret file."""

    secret_file: Path | None = None  # one secret a line, the first signing
    domain: Domain | None = None  # where rewritten senders live; None: the first local domain
    max_age: float = 21 * 86400.0  # how long a bounce to a rewritten sender is taken back


@dataclass(frozen=True)
class RewriteSettings:
    """Sender rewriting for the office's own mail (empath/rewrite.py)."""

    sender_canonical: Path | None = None  # address → address, @domain → @domain
    masquerade_domains: tuple[Domain, ...] = ()  # user@host.office.test → user@office.test


@dataclass(frozen=True)
class ControlSettings:
    """The control socket (empathctl); see empath/control/."""

    socket: Path | None = None  # None: DATA_DIR/control.sock
    group: str | None = None  # a group that may connect too (mode 0660); None: the daemon's user only (0600)
    tokens_file: Path | None = None  # None: the socket's permissions are the authentication


# Where a plug-in may be called (docs/plugins.md): the SMTP hooks are chosen per listener,
# before_delivery runs for every message.
HOOKS = ("connect", "helo", "mail", "rcpt", "data", "before_delivery")
SMTP_HOOKS = HOOKS[:-1]


@dataclass(frozen=True)
class PluginSpec:
    """One [[plugins]] table: a callable that checks or tags mail at some hooks (docs/plugins.md)."""

    name: str
    hooks: tuple[str, ...]  # of HOOKS
    call: str  # "package.module:function", or the name of an empath.plugins entry point
    timeout: float = 5.0
    on_error: str = "tempfail"  # or "continue": a failing plug-in is skipped (fail open)
    options: dict = field(default_factory=dict)  # handed to the plug-in as ctx.options
    index: int = 0  # its place among the [[plugins]] tables, for messages naming it


DKIM_ALGORITHMS = ("rsa-sha256", "ed25519-sha256")  # RFC 6376, RFC 8463


@dataclass(frozen=True)
class DkimKey:
    """One [[dkim]] table: a key that signs mail from its domain (docs/dkim.md)."""

    domain: Domain  # mail whose From is in it, or below it, is signed
    selector: str
    key_file: Path
    algorithm: str = "rsa-sha256"  # one of DKIM_ALGORITHMS
    index: int = 0  # its place among the [[dkim]] tables, for messages naming it


@dataclass(frozen=True)
class Config:
    path: Path
    hostname: Domain
    data_dir: Path
    log_level: str
    log_format: str
    log_file: Path | None
    listeners: tuple[Listener, ...]
    local_domains: tuple[Domain, ...]  # in config order: the first receives <Postmaster>
    trusted_networks: tuple[Network, ...]
    tls_certificate: Path | None
    tls_key: Path | None
    users_file: Path | None
    limits: Limits
    timeouts: Timeouts
    queue: QueueSettings
    delivery: Delivery = Delivery()
    smarthost: Smarthost | None = None
    domains: dict[Domain, DomainPolicy] = field(default_factory=dict)
    metrics_address: tuple[str, int] | None = None  # where /metrics is served; None: not at all
    smtp_processes: int = 1  # helper processes serving SMTP sessions; 1: the daemon serves them itself
    plugins: tuple[PluginSpec, ...] = ()  # in config order
    control: ControlSettings = ControlSettings()
    dkim: tuple[DkimKey, ...] = ()  # signing keys, in config order
    verification: Verification = Verification()
    aliases: AliasSettings = AliasSettings()
    srs: SrsSettings = SrsSettings()
    rewrite: RewriteSettings = RewriteSettings()
    senders_file: Path | None = None  # who may send as whom (empath/senders.py); None: each login's own address

    @property
    def srs_domain(self) -> Domain | None:
        """Where rewritten senders live: srs.domain, else the first local domain."""
        return self.srs.domain or next(iter(self.local_domains), None)

    def domain_policy(self, domain: Domain) -> DomainPolicy:
        return self.domains.get(domain, self.delivery.defaults)

    @property
    def database_path(self) -> Path:
        return self.data_dir / "queue.sqlite3"

    @property
    def control_socket(self) -> Path:
        return self.control.socket or self.data_dir / "control.sock"
