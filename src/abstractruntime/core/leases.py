"""Run leases held in this process: who ticks a run, until when.

A run is ticked only under its lease (`Runtime._guard`), and the scheduler claims due timers
as leases, so two schedulers (or a scheduler and a client's resume) never tick one run at once.
The in-process stores (memory, JSON files) and the SQLite store keep leases here: one daemon
owns their data (a database shared by several daemons keeps them in the database instead);
so does the runtime for a host's run store that has no leases of its own.
"""

from __future__ import annotations

import threading
from typing import Dict, Optional, Tuple

from .clock import SYSTEM_CLOCK, Clock


class LeaseTable:
    def __init__(self, *, clock: Optional[Clock] = None) -> None:
        self.clock: Clock = clock or SYSTEM_CLOCK
        self._lock = threading.Lock()
        self._leases: Dict[str, Tuple[str, float]] = {}  # run id -> (owner, expiry on the monotonic clock)

    def __len__(self) -> int:
        return len(self._leases)

    def is_free(self, run_id: str, owner: Optional[str] = None) -> bool:
        """Nobody holds it (or its lease expired), or `owner` does."""
        held = self._leases.get(run_id)
        return held is None or held[1] <= self.clock.monotonic() or (owner is not None and held[0] == owner)

    def try_lease(self, run_id: str, owner: str, lease_s: float) -> bool:
        """Take or renew the lease for `owner`; False if another owner holds it."""
        return self._take(run_id, owner, lease_s, renew=True)

    def claim(self, run_id: str, owner: str, lease_s: float) -> bool:
        """Take the lease of a run nobody holds (a claim never renews, unlike `try_lease`)."""
        return self._take(run_id, owner, lease_s, renew=False)

    def _take(self, run_id: str, owner: str, lease_s: float, *, renew: bool) -> bool:
        now = self.clock.monotonic()
        with self._lock:
            held = self._leases.get(run_id)
            if held is not None and held[1] > now and not (renew and held[0] == owner):
                return False
            self._leases[run_id] = (owner, now + lease_s)
            return True

    def release(self, run_id: str, owner: str) -> bool:
        """Let go of `owner`'s lease; True if it held one."""
        with self._lock:
            held = self._leases.get(run_id)
            if held is None or held[0] != owner:
                return False
            del self._leases[run_id]
            return True
