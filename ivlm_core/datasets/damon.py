"""A DAMON human-contact split in the layout InteractVLM's evaluation reads (`data/damon/test/`):

    <split>/imgname.npy                   image paths (only the file name is used)
    <split>/images/<file name>            the photos
    <split>/contact_label_objectwise.npy  per image: {object name: ids of the SMPL vertices (6890) in contact}

Each (image, object) pair with at least one contact vertex is one object-wise sample, as in the reference
(test = 1370 samples). The object is asked with its DAMON name; names containing 'supporting' are asked as
'support object or ground', as the reference does.

`contact_label_objectwise.npy` is a pickled object array; it is read with the allow-list unpickler of
`ivlm_core.safe_pickle` (numpy arrays and built-in containers only), so a crafted file cannot run code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ivlm_core.errors import InvalidInputError
from ivlm_core.safe_pickle import load_npy

IMAGE_LIST = "imgname.npy"
OBJECTWISE_LABELS = "contact_label_objectwise.npy"
IMAGE_FOLDER = "images"
SUPPORTING_QUERY = "support object or ground"


@dataclass(frozen=True)
class DamonSample:
    image_path: Path
    image_id: str  # the image's file name: samples of one image are merged for the binary metric
    object_name: str  # as labelled in DAMON
    query: str  # what the model is asked
    contact_ids: np.ndarray  # (K,) int64 vertex ids in contact


def read_npy(path: Path) -> Any:
    return load_npy(path, f"DAMON file {path.name}",
                    "Pass the DAMON split folder (e.g. data/damon/test) with imgname.npy, "
                    "contact_label_objectwise.npy and images/.")


def load_damon_split(root: str | Path) -> list[DamonSample]:
    """The object-wise samples of a DAMON split folder, in file order."""
    root = Path(root)
    names = read_npy(root / IMAGE_LIST)
    labels = read_npy(root / OBJECTWISE_LABELS)
    if len(names) != len(labels):
        raise InvalidInputError(f"{IMAGE_LIST} lists {len(names)} images but {OBJECTWISE_LABELS} has {len(labels)}")
    samples = []
    for name, objects in zip(names, labels):
        if not isinstance(objects, dict):
            raise InvalidInputError(f"{OBJECTWISE_LABELS}: expected one dict per image, got {type(objects).__name__}")
        image_id = Path(str(name)).name
        for object_name, ids in objects.items():
            ids = np.asarray(ids, dtype=np.int64).ravel()
            if ids.size == 0:
                continue  # the reference skips objects without contact
            query = SUPPORTING_QUERY if "supporting" in str(object_name) else str(object_name)
            samples.append(DamonSample(root / IMAGE_FOLDER / image_id, image_id, str(object_name), query, ids))
    if not samples:
        raise InvalidInputError(f"DAMON split '{root}' has no object-wise sample with contact")
    return samples


def contact_vector(sample: DamonSample, num_vertices: int) -> np.ndarray:
    """(num_vertices,) 0/1 ground truth of one sample; ids beyond the mesh are an error naming the sample."""
    if sample.contact_ids.min() < 0 or sample.contact_ids.max() >= num_vertices:
        raise InvalidInputError(
            f"{sample.image_id} / {sample.object_name}: contact ids reach {sample.contact_ids.max()} but the body "
            f"mesh has {num_vertices} vertices (DAMON labels SMPL/SMPL-H vertices, 6890)")
    gt = np.zeros(num_vertices, dtype=np.float32)
    gt[sample.contact_ids] = 1.0
    return gt
