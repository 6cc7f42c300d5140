"""Running blocking work on a thread, so that the gevent hub keeps serving."""

from collections.abc import Callable
from typing import Any, TypeVar

import gevent.threadpool

T = TypeVar("T")


def call(pool: gevent.threadpool.ThreadPool, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` on a thread of ``pool``; the calling greenlet waits, the hub does not.

    An exception is handed back and raised here, in the caller: raised in the
    thread, gevent would also print its traceback to stderr.
    """

    def capture() -> tuple[bool, Any]:
        try:
            return True, fn(*args)
        except Exception as exc:  # noqa: BLE001 - re-raised in the calling greenlet below
            return False, exc

    ok, value = pool.spawn(capture).get()
    if not ok:
        raise value
    return value
