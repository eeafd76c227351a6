"""People at camera rate: finding people (with fallbacks), warm-started per-frame SMPL-X tracking, VLM crops."""

from ivlm_core.tracking.body_tracker import BodyTracker, TrackedBody, TrackingUpdate
from ivlm_core.tracking.person_box import PersonBox
from ivlm_core.tracking.person_crop import PersonCrop, crop_intrinsics, person_crop
from ivlm_core.tracking.person_finder import FindResult, FoundPerson, PersonFinder
from ivlm_core.tracking.tracker_config import TrackerConfig

__all__ = [
    "BodyTracker",
    "FindResult",
    "FoundPerson",
    "PersonBox",
    "PersonCrop",
    "PersonFinder",
    "TrackedBody",
    "TrackerConfig",
    "TrackingUpdate",
    "crop_intrinsics",
    "person_crop",
]
