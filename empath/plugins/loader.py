"""From the config's [[plugins]] tables to callables, sorted by listener and hook.

``call`` is ``package.module:function`` (imported from the daemon's Python
path) or the name of an ``empath.plugins`` entry point (an installed
package's). ``empath --check`` imports them all, so a missing module or a
name that is not a function is a config error, not a surprise at the first
message.
"""

import importlib
import importlib.metadata
import inspect
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from empath.config.model import SMTP_HOOKS, Config, PluginSpec
from empath.log import event
from empath.plugins.api import Context
from empath.plugins.runner import Plugin, Runner

log = logging.getLogger("empath.plugins")

ENTRY_POINTS = "empath.plugins"

Chains = Mapping[str, tuple[Plugin, ...]]  # hook -> its plug-ins, in config order


class LoadError(Exception):
    pass


def resolve(call: str) -> Callable[[Context], object]:
    """The callable ``call`` names; LoadError saying why not."""
    if ":" in call:
        module_name, _, attribute = call.partition(":")
        try:
            obj: object = importlib.import_module(module_name)
        except Exception as exc:  # noqa: BLE001 - any error in the plug-in's import is a config error
            raise LoadError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from None
        for part in attribute.split("."):
            if not hasattr(obj, part):
                raise LoadError(f"{module_name} has no {attribute}")
            obj = getattr(obj, part)
    else:
        found = importlib.metadata.entry_points(group=ENTRY_POINTS, name=call)
        if not found:
            names = sorted({ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINTS)})
            raise LoadError(
                f"{call!r} is neither package.module:function nor an {ENTRY_POINTS} entry point"
                f" (installed: {', '.join(names) or 'none'})"
            )
        try:
            obj = next(iter(found)).load()
        except Exception as exc:  # noqa: BLE001 - as above
            raise LoadError(f"cannot load entry point {call}: {type(exc).__name__}: {exc}") from None
    if not callable(obj):
        raise LoadError(f"{call} is a {type(obj).__name__}, not a function")
    try:
        inspect.signature(obj).bind(None)
    except TypeError:
        raise LoadError(f"{call} must take one argument, the context") from None
    except ValueError:
        pass  # no signature to read (some builtins): the first call will tell
    return obj


@dataclass
class Plugins:
    """The loaded plug-ins and the runner they share."""

    by_listener: dict[str, Chains] = field(default_factory=dict)
    before_delivery: tuple[Plugin, ...] = ()
    runner: Runner = field(default_factory=Runner)

    def for_listener(self, name: str) -> Chains:
        return self.by_listener.get(name, {})

    def reload(self) -> None:
        """Call ``reload()`` in every plug-in module that has one (on a config reload)."""
        modules = {
            p.fn.__module__
            for chains in (*self.by_listener.values(), {"before_delivery": self.before_delivery})
            for plugins in chains.values()
            for p in plugins
        }
        for name in sorted(modules):
            reload = getattr(sys.modules.get(name), "reload", None)
            if not callable(reload):
                continue
            try:
                reload()
            except Exception as exc:  # noqa: BLE001 - a plug-in's bad reload must not stop the daemon's
                event(log, "plugin_error", level=logging.ERROR, plugin=name, hook="reload", error=f"{exc!r}")


def problems(config: Config) -> list[tuple[str, str]]:
    """The plug-ins that do not import or are not a function of one argument, each as
    (its config key, why): this imports them."""
    found = []
    for spec in config.plugins:
        try:
            resolve(spec.call)
        except LoadError as exc:
            found.append((f"plugins[{spec.index}].call", str(exc)))
    return found


def load(config: Config) -> Plugins:
    """Import every plug-in of the config; LoadError naming the first that fails."""
    loaded = {spec.name: _plugin(spec) for spec in config.plugins}
    by_listener = {
        listener.name: _chains(
            [spec for spec in config.plugins if listener.plugins is None or spec.name in listener.plugins],
            listener.plugins,
            loaded,
        )
        for listener in config.listeners
    }
    before = tuple(loaded[s.name] for s in config.plugins if "before_delivery" in s.hooks)
    return Plugins(by_listener, before)


def _plugin(spec: PluginSpec) -> Plugin:
    try:
        fn = resolve(spec.call)
    except LoadError as exc:
        raise LoadError(f"plugins[{spec.index}].call: {exc}") from None
    return Plugin(spec.name, fn, spec.timeout, spec.on_error == "continue", MappingProxyType(dict(spec.options)))


def _chains(specs: list[PluginSpec], order: tuple[str, ...] | None, loaded: dict[str, Plugin]) -> Chains:
    """Each SMTP hook's plug-ins: in the listener's order when it gives one, else the config's."""
    if order is not None:
        specs = sorted(specs, key=lambda s: order.index(s.name))
    return MappingProxyType(
        {hook: chain for hook in SMTP_HOOKS if (chain := tuple(loaded[s.name] for s in specs if hook in s.hooks))}
    )
