"""A PIAD affordance test split in the layout InteractVLM's evaluation reads (`data/piad_ocontact_seen/`):

    <root>/Img_Test.txt     one photo per line, e.g. .../Img/Test/Bag/lift/Img_Test_Bag_lift_1.jpg
    <root>/Point_Test.txt   line i = the point cloud paired with photo i, e.g. .../Point/Test/Bag/Point_Test_Bag_3.txt
    a point file            2048 lines '<shape id> <Object> x y z <17 affordance scores>' (PIAD's column order
                            `PIAD_AFFORDANCES`)
    optional, shipped with InteractVLM's PIAD data: next to each photo's folder with 'Img' replaced by
    `rendered_points_heatmap_1025_color`, per view (frontleft, frontright, backleft, backright):
        sam_<Object>_<k>_<affordance>_<view>.png      the SAM input render of the point cloud
        mask_<Object>_<k>_<affordance>_<view>.png     the GT heat map (not used by the metrics)
        p2pmap_<Object>_<k>_<affordance>_<view>.npz   the pixel->point map (`mapping`, -1 = none)
    where k is the point file's number (`Point_Test_Bag_3.txt` -> 3).

The object and the affordance come from the photo's file name (`Img_<split>_<Object>_<affordance>_<n>.jpg`); the
ground truth is the affordance's column of the point file. Listed paths may carry any prefix (the reference
lists them relative to its working directory): they are resolved against <root> by their trailing parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from ivlm_core.errors import InvalidInputError, MissingAssetError

PIAD_AFFORDANCES = ("grasp", "contain", "lift", "open", "lay", "sit", "support", "wrapgrasp", "pour", "move",
                    "display", "push", "listen", "wear", "press", "cut", "stab")  # fmt: skip
"""The affordance columns of a PIAD point file, in order."""
RENDER_FOLDER = "rendered_points_heatmap_1025_color"
"""Where InteractVLM's PIAD data keeps the renders and maps (view set 4MV-Z_HM, SAM input type 'color')."""
PIAD_VIEWS = ("frontleft", "frontright", "backleft", "backright")
_LEADING_COLUMNS = 2  # shape id, object class


@dataclass(frozen=True)
class PiadSample:
    image_path: Path
    point_path: Path
    object_name: str  # as in the file name, e.g. 'StorageFurniture'
    affordance: str
    render_dir: Path  # where shipped renders / maps would be
    point_index: str  # the point file's number: names the shipped renders

    @property
    def query(self) -> str:
        """What the model is asked about: the object class in lower case, as the reference's dataset does."""
        return self.object_name.lower()

    def shipped_file(self, kind: str, view: str) -> Path:
        """`sam` / `mask` (.png) or `p2pmap` (.npz) of one view, as InteractVLM's PIAD data names them."""
        ext = "npz" if kind == "p2pmap" else "png"
        return self.render_dir / f"{kind}_{self.object_name}_{self.point_index}_{self.affordance}_{view}.{ext}"

    def missing_shipped_files(self, views: tuple[str, ...] = PIAD_VIEWS) -> list[Path]:
        return [p for v in views for p in (self.shipped_file("sam", v), self.shipped_file("p2pmap", v))
                if not p.is_file()]  # fmt: skip


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise MissingAssetError(
            f"PIAD list {path.name}", path,
            "Pass the PIAD split folder (e.g. data/piad_ocontact_seen) holding Img_<split>.txt and Point_<split>.txt.",
        )
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def resolve_listed(root: Path, listed: str) -> Path:
    """The file a list line names: as given when it exists (absolute), else <root> joined with the shortest
    trailing part of the line that exists under <root>."""
    given = Path(listed)
    if given.is_absolute() and given.is_file():
        return given
    parts = [p for p in PurePosixPath(listed.replace("\\", "/")).parts if p not in (".", "/")]
    for start in range(len(parts) - 1, -1, -1):
        candidate = root.joinpath(*parts[start:])
        if candidate.is_file():
            return candidate
    raise MissingAssetError(
        f"PIAD file '{listed}'", root / listed,
        f"Every line of the lists must name a file under {root} (any leading folders are allowed).",
    )


def parse_image_name(path: str | Path) -> tuple[str, str]:
    """(object, affordance) from `Img_<split>_<Object>_<affordance>_<n>.<ext>`."""
    name = Path(path).name
    parts = name.split("_")
    if len(parts) < 5 or parts[0] != "Img":
        raise InvalidInputError(
            f"PIAD photo '{name}' is not named Img_<split>_<Object>_<affordance>_<n>.jpg: cannot tell its object "
            "and affordance."
        )
    object_name, affordance = parts[2], parts[3]
    if affordance not in PIAD_AFFORDANCES:
        raise InvalidInputError(f"PIAD photo '{name}': '{affordance}' is not a PIAD affordance {PIAD_AFFORDANCES}.")
    return object_name, affordance


def _render_dir(root: Path, image_path: Path) -> Path:
    """The reference's rule: the photo's folder with 'Img' replaced by the render folder name."""
    try:
        folder = image_path.parent.relative_to(root)
    except ValueError:  # an absolute listed path outside root
        return Path(str(image_path.parent).replace("Img", RENDER_FOLDER))
    return root / str(folder).replace("Img", RENDER_FOLDER)


def load_piad_split(root: str | Path, split: str = "Test") -> list[PiadSample]:
    """The samples of a PIAD split folder, in list order (photo i paired with point cloud i)."""
    root = Path(root)
    images = _read_list(root / f"Img_{split}.txt")
    points = _read_list(root / f"Point_{split}.txt")
    if len(images) != len(points):
        raise InvalidInputError(
            f"Img_{split}.txt lists {len(images)} photos but Point_{split}.txt {len(points)} point clouds; the "
            "evaluation pairs them line by line."
        )
    if not images:
        raise InvalidInputError(f"Img_{split}.txt in '{root}' lists no photo.")
    samples = []
    for image_line, point_line in zip(images, points):
        object_name, affordance = parse_image_name(image_line)
        image_path = resolve_listed(root, image_line)
        point_path = resolve_listed(root, point_line)
        index = point_path.stem.split("_")[-1]
        samples.append(PiadSample(image_path, point_path, object_name, affordance, _render_dir(root, image_path),
                                  index))  # fmt: skip
    return samples


def read_point_file(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(points (N,3) float64, scores (N,17) float64) of a PIAD point file."""
    path = Path(path)
    if not path.is_file():
        raise MissingAssetError("PIAD point file", path, "Check Point_<split>.txt and the Point/ folder.")
    rows = []
    width = _LEADING_COLUMNS + 3 + len(PIAD_AFFORDANCES)
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != width:
            raise InvalidInputError(
                f"{path}:{number}: expected {width} columns ('<shape id> <Object> x y z' + "
                f"{len(PIAD_AFFORDANCES)} affordance scores), got {len(fields)}."
            )
        try:
            rows.append([float(v) for v in fields[_LEADING_COLUMNS:]])
        except ValueError as err:
            raise InvalidInputError(f"{path}:{number}: {err}") from err
    if not rows:
        raise InvalidInputError(f"PIAD point file '{path}' holds no point.")
    data = np.asarray(rows, dtype=np.float64)
    if not np.all(np.isfinite(data)):
        raise InvalidInputError(f"PIAD point file '{path}' holds NaN or inf values.")
    return data[:, :3], data[:, 3:]


def ground_truth(scores: np.ndarray, affordance: str) -> np.ndarray:
    """(N,) float32 GT heat of one affordance from a point file's (N,17) scores."""
    if affordance not in PIAD_AFFORDANCES:
        raise InvalidInputError(f"'{affordance}' is not a PIAD affordance {PIAD_AFFORDANCES}.")
    return np.asarray(scores[:, PIAD_AFFORDANCES.index(affordance)], dtype=np.float32)


__all__ = [
    "PIAD_AFFORDANCES",
    "PIAD_VIEWS",
    "RENDER_FOLDER",
    "PiadSample",
    "ground_truth",
    "load_piad_split",
    "parse_image_name",
    "read_point_file",
    "resolve_listed",
]
