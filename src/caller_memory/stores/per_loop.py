"""One network client per event loop, for the stores that talk to a server.

An asyncpg pool and an httpx client belong to the event loop they were created on, and a
worker process runs more than one loop (the sessions' loop, the sync bridge's thread, one per
thread of the thread executor; tests use many). `PerLoop` keeps one resource per running loop,
created lazily and once per loop even when many tasks ask at the same moment, and closes them
all: each on its own loop while that loop runs (a resource must be closed where it lives),
or abandons it when its loop is gone (its connections went with it).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

logger = logging.getLogger("caller_memory.stores")

R = TypeVar("R")


class PerLoop(Generic[R]):
    """The resource of each running event loop (see module docstring)."""

    def __init__(
        self,
        create: Callable[[], Awaitable[R]],
        close: Callable[[R], Awaitable[None]],
        *,
        abort: Callable[[R], None] | None = None,
        what: str = "client",
    ) -> None:
        """`create` makes a resource on the running loop; `close` closes one politely on its
        own loop; `abort` (if any) drops one at once, for a loop that has stopped or a close
        that failed."""
        self._create = create
        self._close = close
        self._abort = abort
        self._what = what
        self._items: dict[asyncio.AbstractEventLoop, R] = {}
        self._creating: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._lock = threading.Lock()

    async def get(self) -> R:
        """This loop's resource, created on first use."""
        loop = asyncio.get_running_loop()
        item = self._items.get(loop)
        if item is not None:
            return item
        with self._lock:
            creating = self._creating.setdefault(loop, asyncio.Lock())
        async with creating:
            item = self._items.get(loop)
            if item is None:
                self._forget_dead_loops()
                item = await self._create()
                with self._lock:
                    self._items[loop] = item
                logger.debug("opened a %s for loop %#x", self._what, id(loop))
            return item

    def _forget_dead_loops(self) -> None:
        with self._lock:
            dead = [loop for loop in self._items if loop.is_closed()]
            items = [self._items.pop(loop) for loop in dead]
            for loop in dead:
                self._creating.pop(loop, None)
        for item in items:
            self._abort_quietly(item)

    def _abort_quietly(self, item: R) -> None:
        if self._abort is None:
            return
        try:
            self._abort(item)
        except RuntimeError:  # its loop is closed: the sockets go away with the objects
            pass

    async def close_current(self, timeout: float) -> None:
        """Close the running loop's resource, if any (before closing a loop that used it);
        a later `get` on this loop makes a new one."""
        loop = asyncio.get_running_loop()
        with self._lock:
            item = self._items.pop(loop, None)
            self._creating.pop(loop, None)
        if item is not None:
            await self._close_on(loop, item, loop, timeout)

    async def close_all(self, timeout: float) -> None:
        """Close every loop's resource: the running loop's here, other running loops' on
        their own loop, stopped loops' abandoned."""
        with self._lock:
            items = list(self._items.items())
            self._items.clear()
            self._creating.clear()
        current = asyncio.get_running_loop()
        for loop, item in items:
            await self._close_on(loop, item, current, timeout)

    async def _close_on(
        self,
        loop: asyncio.AbstractEventLoop,
        item: R,
        current: asyncio.AbstractEventLoop,
        timeout: float,
    ) -> None:
        try:
            if loop is current:
                await asyncio.wait_for(self._close(item), timeout)
            elif loop.is_running() and not loop.is_closed():
                future = asyncio.run_coroutine_threadsafe(_awaited(self._close(item)), loop)
                await asyncio.wait_for(asyncio.wrap_future(future), timeout)
            else:
                self._abort_quietly(item)
        except (TimeoutError, RuntimeError, OSError) as exc:
            logger.debug("closing a %s failed (%s); dropping it", self._what, exc)
            self._abort_on(loop, item, current)
        except Exception as exc:  # a driver's own error (asyncpg, httpx): drop it all the same
            logger.debug("closing a %s failed (%s); dropping it", self._what, exc)
            self._abort_on(loop, item, current)

    def _abort_on(
        self, loop: asyncio.AbstractEventLoop, item: R, current: asyncio.AbstractEventLoop
    ) -> None:
        """Abort from the thread of the loop that owns the resource."""
        if self._abort is None:
            return
        try:
            if loop is current or not loop.is_running():
                self._abort(item)
            else:
                loop.call_soon_threadsafe(self._abort, item)
        except RuntimeError:
            pass


async def _awaited(awaitable: Awaitable[None]) -> None:
    await awaitable
