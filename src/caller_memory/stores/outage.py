"""Say a storage outage once, not once a turn.

Every part of a `CallerMemory` that talks to the store on a caller's behalf (capture, recall,
spool replay) reports to the memory's one `OutageLog`. The first failure of an outage is
logged as an error with what went wrong; further failures are debug lines; the first success
after it logs the recovery. A successful *read* does not end an outage in which writes failed:
a store can answer reads and refuse writes (SQLite while another process holds its write lock,
a read-only replica after a failover, a full disk), and treating each recall as a recovery
logged the outage again after every one."""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("caller_memory.stores.health")


class OutageLog:
    """Tracks whether the store is failing and logs only the transitions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures = 0
        self._write_failures = 0

    @property
    def is_down(self) -> bool:
        return self._failures > 0

    @property
    def failures(self) -> int:
        return self._failures

    def failed(self, what: str, exc: BaseException, *, reading: bool = False) -> None:
        with self._lock:
            if self._failures == 0:
                self._write_failures = 0  # a new outage
            self._failures += 1
            if not reading:
                self._write_failures += 1
            first = self._failures == 1
        if first:
            # No promise here about what callers say meanwhile: that is the spool's to keep,
            # and the capture writer logs an error of its own for anything it cannot keep.
            logger.error(
                "memory store unavailable (%s: %s); replies continue without memory, and "
                "captured memories go to the local spool, to be replayed when it is back",
                what,
                exc,
            )
        else:
            logger.debug("memory store still unavailable (%s: %s)", what, exc)

    def succeeded(self, *, reading: bool = False) -> None:
        with self._lock:
            if reading and self._failures and self._write_failures:
                return  # reads work; whether writes do again, only a write can tell
            failures, self._failures, self._write_failures = self._failures, 0, 0
        if failures:
            logger.warning("memory store reachable again after %d failed operations", failures)
