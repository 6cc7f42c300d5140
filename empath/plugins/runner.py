"""Running the plug-ins of one hook, in order, each on a thread under its timeout.

A plug-in runs on a thread of the plug-ins' own pool, never on the hub: a
hook that blocks (a file, a socket, a lock) or computes holds only its
thread, and the calling greenlet stops waiting when the timeout is up. A
thread cannot be killed, so a hook that never returns keeps its thread;
when every thread of the pool is held, the next calls wait for one and time
out in turn (451 4.3.0, or fail open), and the rest of the daemon serves on.
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import gevent
import gevent.threadpool

from empath import threads
from empath.log import event
from empath.plugins.api import NO_OPTIONS, Accept, Context, DecisionError, Headers, Reject, validate

log = logging.getLogger("empath.plugins")

POOL_SIZE = 20


class PluginFailure(Exception):
    """The hook raised: its exception's type and message, for the log."""


class PluginTimeout(PluginFailure):
    pass


@dataclass(frozen=True)
class Plugin:
    name: str
    fn: Callable[[Context], object]
    timeout: float = 5.0
    fail_open: bool = False  # on_error = "continue": a failure counts as no opinion
    options: Mapping[str, Any] = field(default_factory=lambda: NO_OPTIONS)


@dataclass(frozen=True)
class Verdict:
    """What the plug-ins of one hook decided together."""

    reject: Reject | None = None
    failed: bool = False  # a plug-in failed and does not fail open: 451 4.3.0
    by: str = ""  # the plug-in that rejected or failed
    headers: tuple[Headers, ...] = ()

    @property
    def passed(self) -> bool:
        return self.reject is None and not self.failed


PASS = Verdict()


@dataclass(frozen=True)
class _Raised:
    error: BaseException


def _guarded(fn: Callable[[Context], object], ctx: Context) -> object:
    """Call a hook on its thread; whatever it raises comes back as a value.

    BaseException too: a plug-in's sys.exit() must not end the daemon.
    """
    try:
        return fn(ctx)
    except BaseException as exc:  # noqa: BLE001 - reported as this plug-in's failure
        return _Raised(exc)


class Runner:
    def __init__(self, pool_size: int = POOL_SIZE):
        self._pool_size = pool_size
        self._pool: gevent.threadpool.ThreadPool | None = None

    @property
    def pool(self) -> gevent.threadpool.ThreadPool:
        # Made on first use, in the process and hub that runs the hooks. Never
        # killed: that would wait for a hung plug-in; its threads end with the process.
        if self._pool is None:
            self._pool = gevent.threadpool.ThreadPool(self._pool_size)
        return self._pool

    def run(self, plugins: Sequence[Plugin], ctx: Context) -> Verdict:
        """Run ``plugins`` in order until one accepts, rejects or fails."""
        headers: list[Headers] = []
        for plugin in plugins:
            try:
                decision = validate(self._call(plugin, ctx), ctx.hook)
            except (PluginFailure, DecisionError) as exc:
                _failed(plugin, ctx, exc)
                if plugin.fail_open:
                    continue
                return Verdict(failed=True, by=plugin.name)
            if isinstance(decision, Accept):
                break
            if isinstance(decision, Reject):
                reply = {"code": decision.code, "dsn": decision.status, "reply": decision.text}
                _log("plugin_reject", logging.INFO, plugin, ctx, **reply)
                return Verdict(reject=decision, by=plugin.name)
            if isinstance(decision, Headers):
                headers.append(decision)
        return Verdict(headers=tuple(headers)) if headers else PASS

    def _call(self, plugin: Plugin, ctx: Context) -> object:
        with gevent.Timeout(plugin.timeout, PluginTimeout(f"no answer within {plugin.timeout:g}s")):
            result = threads.call(self.pool, _guarded, plugin.fn, replace(ctx, options=plugin.options))
        if isinstance(result, _Raised):
            raise PluginFailure(f"{type(result.error).__name__}: {result.error}") from None
        return result


def _failed(plugin: Plugin, ctx: Context, exc: Exception) -> None:
    """Logged with the plug-in's name; the client sees only 451 4.3.0, never this."""
    error = f"timeout: {exc}" if isinstance(exc, PluginTimeout) else str(exc)
    _log("plugin_error", logging.ERROR, plugin, ctx, error=error, fail_open=plugin.fail_open or None)


def _log(name: str, level: int, plugin: Plugin, ctx: Context, **fields: Any) -> None:
    event(
        log,
        name,
        level=level,
        plugin=plugin.name,
        hook=ctx.hook,
        client=ctx.client_address,
        queue_id=ctx.queue_id,
        to=ctx.recipient,
        trace_id=ctx.trace_id,
        **fields,
    )
