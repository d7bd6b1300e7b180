"""Time as the kernel sees it: when a timer is due, when a lease expires, how long to sleep.

The runtime, the scheduler and the stores' run index ask a `Clock` instead of the `time`
module, so a test (or a simulation) can set the time and move it on: a timer "due in a minute"
then falls due exactly when the test says so, whatever the machine is doing meanwhile.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock time, epoch seconds (timers are absolute times)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (lease expiry)."""

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Sleep until `event` is set (True) or `timeout` seconds of this clock pass (False)."""

    def wait_until(self, event: threading.Event, deadline: float) -> bool:
        """Sleep until `event` is set (True) or this clock's `time()` reaches `deadline`. (An
        absolute deadline: time that passes while the caller works out when to wake counts.)"""


class SystemClock:
    """The machine's clocks."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(timeout)

    def wait_until(self, event: threading.Event, deadline: float) -> bool:
        return event.wait(max(0.0, deadline - time.time()))


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """A clock that moves only when told to (`advance`, `set`): for tests and simulations.

    `monotonic()` follows the same time, so leases expire as the manual time passes. A thread
    sleeping in `wait` wakes when its event is set or when the manual time reaches its deadline.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = float(start)
        self._moved = threading.Condition()
        self._sleepers = 0

    @property
    def sleepers(self) -> int:
        """How many threads are in `wait` now: a test advances the time once the thread it
        means to wake is asleep, or the advance may come before it looks at the time."""
        return self._sleepers

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        return self.set(self._now + seconds)

    def set(self, epoch: float) -> float:
        with self._moved:
            if epoch < self._now:
                raise ValueError("a ManualClock never goes back")
            self._now = float(epoch)
            self._moved.notify_all()
        return self._now

    def wait(self, event: threading.Event, timeout: float) -> bool:
        with self._moved:
            return self._wait_locked(event, self._now + timeout)

    def wait_until(self, event: threading.Event, deadline: float) -> bool:
        with self._moved:
            return self._wait_locked(event, deadline)

    def _wait_locked(self, event: threading.Event, deadline: float) -> bool:
        self._sleepers += 1
        try:
            while not event.is_set() and self._now < deadline:
                # The event is not tied to the condition: look at it again now and then.
                self._moved.wait(0.005)
        finally:
            self._sleepers -= 1
        return event.is_set()
