"""The queue verbs (queue-list, -show, -delete, -hold, -release, -retry) over empath.queue.admin.

The same code serves the daemon (reads on its database thread, actions in
its group commit, then a wake-up for the scheduler) and empathctl when the
daemon is down (the file opened by empathctl itself): only ``read``,
``write`` and ``wake`` differ. ``read(fn, *args)`` and ``write(fn, *args)``
run ``fn(db, *args)`` on the queue's database.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from empath.addresses import Domain
from empath.control.protocol import DEFAULT_LIMIT, VerbError
from empath.queue import admin

Run = Callable[..., Any]


@dataclass
class QueueVerbs:
    read: Run  # read(fn, *args): fn(db, *args)'s value
    write: Run  # write(fn, *args): fn(db, *args)'s value, committed
    wake: Callable[[], None] = lambda: None
    clock: Callable[[], float] = time.time
    # The daemon's: close the open circuit breakers on the way to these domains (None: all);
    # the destinations closed. With the daemon down there are none.
    close_breakers: Callable[[list[Domain] | None], Sequence[str]] = lambda domains: []

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {
            "queue-list": self.list,
            "queue-show": self.show,
            "queue-delete": lambda args: self._act(admin.delete, args),
            "queue-hold": lambda args: self._act(admin.hold, args),
            "queue-release": lambda args: self._act(admin.release, args, self.clock()),
            "queue-retry": self.retry,
        }

    def list(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        flt = admin.QueueFilter(args.get("state"), args.get("domain"), args.get("sender"), args.get("older_than"))
        return self.read(admin.list_messages, flt, self.clock(), args.get("limit", DEFAULT_LIMIT))

    def show(self, args: dict[str, Any]) -> dict[str, Any]:
        detail = self.read(admin.show_message, args["id"], self.clock(), args.get("body", False))
        if detail is None:
            raise VerbError(f"no message {args['id']} in the queue or its history")
        return detail

    def retry(self, args: dict[str, Any]) -> dict[str, Any]:
        """Make the chosen mail due now, and, as ``postqueue -f`` forgets dead hosts, close
        the breakers that would hold it back: the operator asked for it to go."""
        ids, domain = args.get("ids"), args.get("domain")
        domains = [Domain(domain)] if domain else self.read(admin.waiting_domains, ids) if ids else None
        closed = self.close_breakers(domains)
        count = self.write(admin.retry, ids, domain, self.clock())
        self.wake()
        return {"messages": count, "breakers_closed": closed}

    def _act(self, fn: Run, args: dict[str, Any], *more: Any) -> dict[str, int]:
        count = self.write(fn, args.get("ids"), *more)  # no ids: every message (protocol checked --all --yes)
        self.wake()
        return {"messages": count}
