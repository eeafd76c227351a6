"""Approximate-time pairing by header stamp (message_filters is not on PyPI).

A camera driver publishes an Image and a CameraInfo with the same stamp, but they arrive separately and in
either order. Images wait at most ``timeout_s`` for an info whose stamp is within ``slop_s``; after that they
go on alone (the pipeline only needs K for placement) or are dropped when CameraInfo is required.
:class:`StampedBuffer` is the stamp lookup both use: the CameraInfo history and the external SMPL-X body
parameters the worker pairs with each frame.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

ImageT = TypeVar("ImageT")
InfoT = TypeVar("InfoT")


@dataclass
class _Pending(Generic[ImageT]):
    stamp_s: float
    arrival_s: float
    image: ImageT


ItemT = TypeVar("ItemT")


@dataclass
class _Stamped(Generic[ItemT]):
    stamp_s: float
    arrival_s: float
    item: ItemT


class StampedBuffer(Generic[ItemT]):
    """The last ``max_items`` stamped messages, looked up by stamp. Not thread-safe (callers lock)."""

    def __init__(self, max_items: int = 30) -> None:
        self._items: deque[_Stamped[ItemT]] = deque(maxlen=max_items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, stamp_s: float, item: ItemT, arrival_s: float = 0.0) -> None:
        self._items.append(_Stamped(stamp_s, arrival_s, item))

    def within(self, stamp_s: float, slop_s: float) -> list[tuple[float, ItemT]]:
        """(stamp difference, item) of every message within ``slop_s`` of ``stamp_s``, oldest arrival first."""
        return [(abs(s.stamp_s - stamp_s), s.item) for s in self._items if abs(s.stamp_s - stamp_s) <= slop_s]

    def closest(self, stamp_s: float, slop_s: float) -> ItemT | None:
        """The message with the nearest stamp within ``slop_s`` (the newest received on a tie), or None."""
        best, best_dt = None, slop_s
        for dt, item in self.within(stamp_s, slop_s):
            if dt <= best_dt:
                best, best_dt = item, dt
        return best

    def drop_older_than(self, now_s: float, max_age_s: float) -> int:
        """Forget messages that arrived more than ``max_age_s`` before ``now_s``; returns how many."""
        before = len(self._items)
        self._items = deque((s for s in self._items if now_s - s.arrival_s <= max_age_s), self._items.maxlen)
        return before - len(self._items)


class StampPairer(Generic[ImageT, InfoT]):
    """Not thread-safe: call it from one callback group (the node's subscriptions)."""

    def __init__(self, slop_s: float, timeout_s: float, max_pending: int = 10, max_infos: int = 30) -> None:
        self.slop_s = slop_s
        self.timeout_s = timeout_s
        self._pending: deque[_Pending[ImageT]] = deque()
        self._infos: StampedBuffer[InfoT] = StampedBuffer(max_infos)
        self._max_pending = max_pending
        self.unpaired_dropped = 0  # images dropped: no CameraInfo in time while it is required, or overflow
        self.superseded_dropped = 0  # waiting images dropped because a newer image was released first

    def _drop_superseded(self, released_stamp_s: float) -> None:
        """Once an image is released, older ones still waiting for CameraInfo could only come out after it:
        results would go back in time. They are stale, so drop them (counted)."""
        before = len(self._pending)
        self._pending = deque(p for p in self._pending if p.stamp_s >= released_stamp_s)
        self.superseded_dropped += before - len(self._pending)

    def add_image(self, stamp_s: float, image: ImageT, arrival_s: float) -> list[tuple[ImageT, InfoT | None]]:
        info = self._infos.closest(stamp_s, self.slop_s)
        if info is not None:
            self._drop_superseded(stamp_s)
            return [(image, info)]
        self._pending.append(_Pending(stamp_s, arrival_s, image))
        while len(self._pending) > self._max_pending:
            self._pending.popleft()
            self.unpaired_dropped += 1
        return []

    def add_info(self, stamp_s: float, info: InfoT) -> list[tuple[ImageT, InfoT | None]]:
        self._infos.add(stamp_s, info)
        matched = [p for p in self._pending if abs(p.stamp_s - stamp_s) <= self.slop_s]
        for p in matched:
            self._pending.remove(p)
        if matched:
            self._drop_superseded(max(p.stamp_s for p in matched))
        return [(p.image, info) for p in matched]

    def expire(self, now_s: float, require_info: bool) -> list[tuple[ImageT, InfoT | None]]:
        """Images that waited ``timeout_s``: returned alone, or dropped (counted) when info is required."""
        out: list[tuple[ImageT, InfoT | None]] = []
        while self._pending and now_s - self._pending[0].arrival_s >= self.timeout_s:
            pending = self._pending.popleft()
            if require_info:
                self.unpaired_dropped += 1
            else:
                out.append((pending.image, None))
        return out
