"""Empath: a mail transfer agent for one host, a small office's relay and MX."""

__version__ = "0.1.0"
