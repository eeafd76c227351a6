"""A one-element mailbox between the subscription callbacks and the model worker.

The model is far slower than a camera; queueing frames would only add latency. The callbacks overwrite the
slot and the worker always takes the newest frame; every overwritten frame is counted as dropped.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self.dropped = 0

    def put(self, item: T) -> bool:
        """Store ``item``; True when it replaced a frame the worker had not taken (a dropped frame)."""
        with self._cond:
            replaced = self._item is not None
            if replaced:
                self.dropped += 1
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout_s: float | None = None) -> T | None:
        """The newest item (removing it), or None after ``timeout_s`` or when closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout_s)
            item, self._item = self._item, None
            return item

    def wake(self) -> None:
        """Make a waiting ``take`` return now (with None when empty): the worker has other work to look at."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
