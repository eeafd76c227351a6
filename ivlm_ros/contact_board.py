"""Shared state of the node's loops: the newest contacts (and fitted object) of each tracked person.

The contact loop (the VLM, slow) writes here when it finishes a frame; the body loop (camera rate) reads the
newest entry for every person it tracks and paints it on that person's body of the current frame. Each
entry keeps the stamp of the image it came from, so every output can say how old its contact is.
ROS-free apart from the stamp objects it stores; one lock, held only to swap references.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ivlm_core.pipeline import BodyPlacement, ContactEstimate, ObjectPlacement

# Key of contacts that belong to the whole image rather than to one track: max_people = 1 (the full image
# goes to the VLM, so its contact is "the" person's whatever their track id) or nobody tracked.
WHOLE_IMAGE = -1


@dataclass
class PersonBody:
    """One person's body in one image, as the node publishes it (a tracked or an external body)."""

    track_id: int  # WHOLE_IMAGE (-1) when not tracked
    placement: BodyPlacement
    box: tuple[float, float, float, float]  # pixels (x0, y0, x1, y1); zeros when unknown
    source: str  # detector, crop search, last track, roi topic, external, ...
    reinitialised: bool = False
    missing_s: float = 0.0

    @classmethod
    def from_tracked(cls, body: Any) -> PersonBody:
        """From an ``ivlm_core.tracking.TrackedBody`` (its ``placement`` is a BodyFitResult)."""
        box = body.box
        return cls(
            track_id=int(body.track_id),
            placement=BodyPlacement(**body.placement.placement_kwargs()),
            box=(float(box.x0), float(box.y0), float(box.x1), float(box.y1)),
            source=str(body.source),
            reinitialised=bool(body.reinitialised),
            missing_s=float(body.missing_s),
        )

    @property
    def pelvis(self) -> np.ndarray | None:
        """Pelvis (SMPL-X joint 0) in the camera frame, else the mesh centre, else None (not placed)."""
        placement = self.placement
        if not placement.placed:
            return None
        if placement.joints is not None and len(placement.joints):
            return np.asarray(placement.joints[0], dtype=np.float64)
        if placement.vertices is not None and len(placement.vertices):
            return np.asarray(placement.vertices, dtype=np.float64).mean(axis=0)
        return None


@dataclass
class PersonContact:
    """The newest contacts of one person (or of the whole image) and the image they came from."""

    contacts: ContactEstimate
    stamp: Any  # builtin_interfaces/Time of the image the VLM saw
    stamp_s: float
    track_id: int  # the person in that image (WHOLE_IMAGE when none)
    model_id: str = ""


@dataclass
class PersonObject:
    """The object fitted to one person, with the pelvis it was fitted against (to tell when to refit)."""

    placement: ObjectPlacement
    pelvis: np.ndarray | None
    stamp_s: float


def moved_with_pelvis(fitted: PersonObject, pelvis: np.ndarray | None) -> ObjectPlacement | None:
    """The object's last placement shifted by how far the person's pelvis moved since its fit (the object is
    held: it moves with them), or None when it was not placed. Unshifted when either pelvis is unknown."""
    placement = fitted.placement
    if not placement.placed:
        return None
    if fitted.pelvis is None or pelvis is None:
        return placement
    moved = np.asarray(pelvis, dtype=np.float64) - np.asarray(fitted.pelvis, dtype=np.float64)
    if moved.shape != (3,) or not np.isfinite(moved).all():
        return placement
    vertices = None if placement.vertices is None else (placement.vertices + moved).astype(placement.vertices.dtype)
    return replace(placement, translation=np.asarray(placement.translation, dtype=np.float64) + moved,
                   vertices=vertices)


class ContactBoard:
    """Newest contacts and object fit per track id; written by the contact and fit loops, read per frame."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._contacts: dict[int, PersonContact] = {}
        self._objects: dict[int, PersonObject] = {}
        self.version = 0  # bumped on every write: the body loop republishes when it changed

    def put_contact(self, key: int, contact: PersonContact) -> None:
        with self._lock:
            self._contacts[key] = contact
            self.version += 1

    def contact_for(self, track_id: int, whole_image: bool) -> PersonContact | None:
        """The person's own contact, else (``whole_image``: one person per image) the whole image's."""
        with self._lock:
            found = self._contacts.get(track_id)
            if found is None and whole_image:
                found = self._contacts.get(WHOLE_IMAGE)
            return found

    def newest_contact(self) -> PersonContact | None:
        with self._lock:
            return max(self._contacts.values(), key=lambda c: c.stamp_s, default=None)

    def put_object(self, key: int, fitted: PersonObject) -> None:
        with self._lock:
            self._objects[key] = fitted
            self.version += 1

    def object_for(self, track_id: int) -> PersonObject | None:
        with self._lock:
            return self._objects.get(track_id)

    def keep_tracks(self, alive: set[int]) -> None:
        """Forget people whose track ended (their id will not come back); whole-image entries stay."""
        with self._lock:
            for store in (self._contacts, self._objects):
                for key in [k for k in store if k != WHOLE_IMAGE and k not in alive]:
                    del store[key]

    def clear(self) -> None:
        with self._lock:
            self._contacts.clear()
            self._objects.clear()
            self.version += 1
