"""A small LRU bounded by entries and by bytes: the stores' caches of recent checkpoints.

A cache of checkpoints by count alone let a few runs with multi-megabyte vars hold gigabytes
(4,096 entries of 4 MB each). Here an entry counts its byte size against a budget too, and the
least recently used entries go first; an entry larger than the whole budget is not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, Optional, TypeVar

V = TypeVar("V", bytes, str)

DEFAULT_BYTES = 32 << 20
DEFAULT_ENTRIES = 4096


class BoundedCache(Generic[V]):
    def __init__(self, max_bytes: int = DEFAULT_BYTES, max_entries: int = DEFAULT_ENTRIES) -> None:
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self._data: OrderedDict[str, V] = OrderedDict()
        self.bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> Optional[V]:
        return self._data.get(key)  # a dict read: safe without the lock

    def put(self, key: str, value: V) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.bytes -= len(old)
            if len(value) > self.max_bytes:
                return
            self._data[key] = value
            self.bytes += len(value)
            while self.bytes > self.max_bytes or len(self._data) > self.max_entries:
                _, dropped = self._data.popitem(last=False)
                self.bytes -= len(dropped)

    def pop(self, key: str) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self.bytes -= len(old)

    def __len__(self) -> int:
        return len(self._data)
