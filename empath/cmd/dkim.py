"""The ``empathctl dkim keygen`` verb: a new signing key, and the DNS record to publish (see docs/dkim.md)."""

import argparse
import os
import sys
from pathlib import Path

from empath.addresses import AddressError, Domain
from empath.config import Config, values
from empath.config.model import DKIM_ALGORITHMS
from empath.message import dkim

VERBS = ("dkim",)


def add_verbs(verbs: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = verbs.add_parser("dkim", help="DKIM signing keys")
    dkim_verbs = parser.add_subparsers(dest="dkim_verb", required=True)
    keygen = dkim_verbs.add_parser("keygen", help="write a new private key and print the DNS TXT record to publish")
    keygen.add_argument("domain")
    keygen.add_argument("selector")
    keygen.add_argument("--algorithm", choices=DKIM_ALGORITHMS, default="rsa-sha256")
    keygen.add_argument("--bits", type=int, choices=dkim.KEY_BITS, default=2048, help="RSA key size (default 2048)")
    keygen.add_argument(
        "--directory", type=Path, help="where the key goes (default: dkim/ beside the config file), mode 0750"
    )


def command(args: argparse.Namespace, config: Config) -> int:
    """Write DIRECTORY/DOMAIN.SELECTOR.key (mode 0600, never over an existing file); every failure is one line."""
    try:
        domain = Domain.name(args.domain.rstrip("."))
    except AddressError as exc:
        print(f"empathctl: dkim keygen: {args.domain!r} is not a domain name: {exc}", file=sys.stderr)
        return 1
    try:
        values.selector(args.selector)
    except ValueError:
        print(
            f"empathctl: dkim keygen: {args.selector!r} is not a selector (DNS labels joined by dots)", file=sys.stderr
        )
        return 1
    directory = args.directory or config.path.parent / "dkim"
    path = dkim.key_path(directory, domain, args.selector)
    private, public = dkim.generate(args.algorithm, args.bits)
    try:
        directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        write_private(path, private)
    except FileExistsError:
        print(f"empathctl: dkim keygen: {path} exists; choose a new selector to change keys", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"empathctl: dkim keygen: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"; the private key is in {path} (mode 0600)")
    print(f"; publish this record in the DNS of {domain}:")
    print(dkim.txt_record(domain, args.selector, args.algorithm, public))
    print("; then add to the config, and check it with empath --check:")
    print(f'; [[dkim]]\n; domain = "{domain}"\n; selector = "{args.selector}"\n; key_file = "{path}"')
    print(f'; algorithm = "{args.algorithm}"')
    return 0


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` for the key alone: O_EXCL refuses an existing file and a planted symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
