"""Plug-ins for the integration tests (tests/integration/test_plugins.py).

The daemon runs with the repository as its working directory, so it imports
these as ``tests.plugin_samples:NAME``.
"""

import time

from empath.plugins.api import Context, Reject


def explode(ctx: Context) -> None:
    """Raises for recipients called boom@; says nothing about the rest."""
    if ctx.recipient and ctx.recipient.startswith("boom@"):
        raise RuntimeError("secret internals of the plug-in")


def slow(ctx: Context) -> None:
    """Takes ctx.options["seconds"] for recipients called slow@ (a blocking sleep, on its thread)."""
    if ctx.recipient and ctx.recipient.startswith("slow@"):
        time.sleep(float(ctx.options["seconds"]))


def gatekeeper(ctx: Context) -> Reject | None:
    """Before delivery: refuse@ bounces, later@ is deferred."""
    if ctx.recipient and ctx.recipient.startswith("refuse@"):
        return Reject(550, "5.7.1", f"not to {ctx.recipient} on {ctx.next_hop}, attempt {ctx.attempt}")
    if ctx.recipient and ctx.recipient.startswith("later@"):
        return Reject(451, "4.7.1", "not now")
    return None


def no_strangers(ctx: Context) -> Reject | None:
    """At connect: refuse 127.0.0.3."""
    if ctx.client_address == "127.0.0.3":
        return Reject(554, "5.7.1", f"no mail from {ctx.client_address} here")
    return None


def no_localhost_helo(ctx: Context) -> Reject | None:
    """At HELO: a client calling itself localhost is refused."""
    if ctx.helo == "localhost":
        return Reject(550, "5.7.1", "You are not localhost")
    return None
