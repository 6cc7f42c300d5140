"""The validated configuration, as plain immutable values."""

import ipaddress
from dataclasses import dataclass
from pathlib import Path

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MODES = ("smtp", "submission", "smtps")


@dataclass(frozen=True)
class Listener:
    host: str
    port: int
    mode: str  # one of MODES

    @property
    def name(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.mode}@{host}:{self.port}"


@dataclass(frozen=True)
class Limits:
    line_length: int = 512  # RFC 5321 §4.5.3.1.4, CRLF included
    text_line_length: int = 1000  # RFC 5321 §4.5.3.1.6, CRLF included
    max_message_size: int = 52428800
    max_recipients: int = 100  # RFC 5321 §4.5.3.1.8 minimum
    max_connections: int = 100
    max_connections_per_client: int = 50  # Postfix smtpd_client_connection_count_limit
    max_errors: int = 20
    max_received_headers: int = 50
    auth_max_failures: int = 3
    auth_failure_delay: float = 1.0


@dataclass(frozen=True)
class Timeouts:
    command: float = 300.0  # RFC 5321 §4.5.3.2.7
    data: float = 300.0
    tls_handshake: float = 60.0
    greet_pause: float = 0.0
    shutdown_grace: float = 30.0


@dataclass(frozen=True)
class QueueSettings:
    lifetime: float = 5 * 86400.0  # Postfix maximal_queue_lifetime
    min_free_space: int = 104857600
    max_size: int = 0  # 0: no limit but the disk
    commit_timeout: float = 30.0


@dataclass(frozen=True)
class Config:
    path: Path
    hostname: str
    data_dir: Path
    log_level: str
    log_format: str
    log_file: Path | None
    listeners: tuple[Listener, ...]
    local_domains: tuple[str, ...]  # in config order: the first receives <Postmaster>
    trusted_networks: tuple[Network, ...]
    tls_certificate: Path | None
    tls_key: Path | None
    users_file: Path | None
    limits: Limits
    timeouts: Timeouts
    queue: QueueSettings

    @property
    def tls_enabled(self) -> bool:
        return self.tls_certificate is not None

    @property
    def database_path(self) -> Path:
        return self.data_dir / "queue.sqlite3"
