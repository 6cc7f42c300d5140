from setuptools import find_packages, setup

setup(
    name="empath",
    version="0.1.0",
    description="A small-office mail transfer agent: relay and MX on one host",
    python_requires=">=3.11",
    packages=find_packages(include=["empath", "empath.*"]),
    install_requires=[
        "gevent>=24.2",
        "peewee>=3.17",
        "tomlkit>=0.12",
        "dnspython>=2.6",
        "prometheus-client>=0.20",
        "rich>=13",
        # DKIM signing (empath/message/dkim.py); its ed25519 extra brings PyNaCl for Ed25519 keys.
        "dkimpy[ed25519]>=1.1",
        # empathctl dkim keygen: RSA and Ed25519 key generation.
        "cryptography>=42",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "trustme>=1.1",
            "ruff>=0.5",
            "mypy>=1.10",
            "pytest-cov>=5",
            "hypothesis>=6.100",
            # lint-imports: the dependency rules of docs/architecture.md, checked in the gate.
            "import-linter>=2.1",
        ],
    },
    entry_points={
        "console_scripts": [
            "empath = empath.cmd.empath:main",
            "empathctl = empath.cmd.empathctl:main",
            # As /usr/sbin/sendmail and /usr/bin/mailq for local programs (docs/local-mail.md).
            "sendmail = empath.cmd.sendmail:main",
            "mailq = empath.cmd.mailq:main",
            "newaliases = empath.cmd.newaliases:main",
        ],
        # The plug-ins Empath ships, by name for [[plugins]] call = "..." (docs/plugins.md).
        "empath.plugins": [
            "blocklist = empath.plugins.blocklist:check",
            "tagger = empath.plugins.tagger:tag",
        ],
    },
)
