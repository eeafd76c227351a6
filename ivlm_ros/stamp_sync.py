"""Approximate-time pairing of images with their CameraInfo (message_filters is not on PyPI).

A camera driver publishes an Image and a CameraInfo with the same stamp, but they arrive separately and in
either order. Images wait at most ``timeout_s`` for an info whose stamp is within ``slop_s``; after that they
go on alone (the pipeline only needs K for placement) or are dropped when CameraInfo is required.
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


class StampPairer(Generic[ImageT, InfoT]):
    """Not thread-safe: call it from one callback group (the node's subscriptions)."""

    def __init__(self, slop_s: float, timeout_s: float, max_pending: int = 10, max_infos: int = 30) -> None:
        self.slop_s = slop_s
        self.timeout_s = timeout_s
        self._pending: deque[_Pending[ImageT]] = deque()
        self._infos: deque[tuple[float, InfoT]] = deque(maxlen=max_infos)
        self._max_pending = max_pending
        self.unpaired_dropped = 0  # images dropped: no CameraInfo in time while it is required, or overflow

    def _best_info(self, stamp_s: float) -> InfoT | None:
        best, best_dt = None, self.slop_s
        for info_stamp, info in self._infos:
            dt = abs(info_stamp - stamp_s)
            if dt <= best_dt:
                best, best_dt = info, dt
        return best

    def add_image(self, stamp_s: float, image: ImageT, arrival_s: float) -> list[tuple[ImageT, InfoT | None]]:
        info = self._best_info(stamp_s)
        if info is not None:
            return [(image, info)]
        self._pending.append(_Pending(stamp_s, arrival_s, image))
        while len(self._pending) > self._max_pending:
            self._pending.popleft()
            self.unpaired_dropped += 1
        return []

    def add_info(self, stamp_s: float, info: InfoT) -> list[tuple[ImageT, InfoT | None]]:
        self._infos.append((stamp_s, info))
        matched = [p for p in self._pending if abs(p.stamp_s - stamp_s) <= self.slop_s]
        for p in matched:
            self._pending.remove(p)
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
