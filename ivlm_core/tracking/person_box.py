"""An axis-aligned person box in full-image pixels: what the finder, the tracker and the VLM crop share.

Why a type of its own: boxes come from keypoints, from the last track and from a ROI topic, are expanded,
clipped, compared (IoU, for de-duplication and track matching) and turned into crops; one small value type keeps
those rules (pixel convention, empty boxes) in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ivlm_core.errors import InvalidInputError


@dataclass(frozen=True)
class PersonBox:
    """Box [x0, x1) x [y0, y1) in full-image pixels (x = column, y = row); floats, may extend past the image."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        values = (self.x0, self.y0, self.x1, self.y1)
        if not all(np.isfinite(values)):
            raise InvalidInputError(f"person box coordinates must be finite, got {values}")
        if self.x1 < self.x0 or self.y1 < self.y0:
            raise InvalidInputError(f"person box needs x0 <= x1 and y0 <= y1, got {values}")

    @classmethod
    def from_points(cls, points: np.ndarray, weights: np.ndarray | None = None, min_weight: float = 0.3) -> PersonBox:
        """Tight box around the points whose weight is at least `min_weight` (all points when none qualifies)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if weights is not None:
            keep = np.asarray(weights).reshape(-1) >= min_weight
            if keep.any():
                points = points[keep]
        finite = points[np.all(np.isfinite(points), axis=1)]
        if len(finite) == 0:
            raise InvalidInputError("a person box needs at least one finite point")
        low, high = finite.min(axis=0), finite.max(axis=0)
        return cls(float(low[0]), float(low[1]), float(high[0]), float(high[1]))

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def as_tuple(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0, self.x1, self.y1

    def expanded(self, factor: float) -> PersonBox:
        """The box scaled by `factor` about its centre (1.2 = 20 % larger on each axis)."""
        if not factor > 0:
            raise InvalidInputError(f"box expansion factor must be positive, got {factor}")
        cx, cy = self.centre
        half_w, half_h = self.width * factor / 2, self.height * factor / 2
        return PersonBox(cx - half_w, cy - half_h, cx + half_w, cy + half_h)

    def clipped(self, width: float, height: float) -> PersonBox:
        """The part inside an image of `width` x `height` pixels (may be empty: zero width or height)."""
        x0, x1 = float(np.clip(self.x0, 0, width)), float(np.clip(self.x1, 0, width))
        y0, y1 = float(np.clip(self.y0, 0, height)), float(np.clip(self.y1, 0, height))
        return PersonBox(x0, y0, x1, y1)

    def intersection(self, other: PersonBox) -> float:
        w = min(self.x1, other.x1) - max(self.x0, other.x0)
        h = min(self.y1, other.y1) - max(self.y0, other.y0)
        return max(w, 0.0) * max(h, 0.0)

    def iou(self, other: PersonBox) -> float:
        """Intersection over union (0 for disjoint or empty boxes)."""
        inter = self.intersection(other)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def overlap_of_smaller(self, other: PersonBox) -> float:
        """Intersection over the smaller box's area: 1 when one box holds the other (a partial detection)."""
        smaller = min(self.area, other.area)
        return self.intersection(other) / smaller if smaller > 0 else 0.0

    def contains(self, x: float, y: float) -> bool:
        return self.x0 <= x <= self.x1 and self.y0 <= y <= self.y1
