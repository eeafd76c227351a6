"""Partly occluded people made from the sample photos: the person finder's test set.

Why: the legacy mediapipe pose detector misses some clearly visible people, e.g. a person partly hidden by a dog
or by furniture, or small in the frame. No such labelled photos ship, so this module makes them: it pastes
occluders (a dog-like blob, furniture-like boxes with wood or fabric texture, leafy covers) over the legs or part
of the torso of the person in each sample photo, at full size and shrunk into a larger scene, on a 640x480
canvas. The head always stays visible (the people stay clearly visible to a human). Everything is seeded: the
same call gives the same images. Each image carries the true person box (hand-labelled on the sample photo,
moved with it), so a detection can be checked to be on the person.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ivlm_core.tracking.person_box import PersonBox

CANVAS = (480, 640)  # (H, W) of every generated image
# Hand-labelled person boxes (x0, y0, x1, y1) on the 512x512 sample photos (the object excluded).
SAMPLE_PERSON_BOXES: dict[str, tuple[float, float, float, float]] = {
    "bench__standing.png": (212.0, 72.0, 348.0, 442.0),
    "surfboard__carrying.png": (108.0, 176.0, 180.0, 298.0),
    "tennis_racket__serve.png": (0.0, 70.0, 318.0, 512.0),
}
# (occluders, scale of the photo on the canvas): the eight variants made from each photo.
VARIANTS: tuple[tuple[tuple[str, ...], float], ...] = (
    (("dog",), 0.94),
    (("furniture",), 0.94),
    (("torso_cover",), 0.94),
    (("dog", "furniture"), 0.94),
    (("dog",), 0.55),
    (("furniture",), 0.55),
    (("leaves",), 0.55),
    (("dog", "torso_cover"), 0.7),
)


@dataclass
class OccludedPhoto:
    name: str  # "<photo stem>__<occluders>__s<scale>"
    image: np.ndarray  # (480, 640, 3) uint8
    person_box: PersonBox  # the whole person (occluded parts included), canvas pixels
    occluders: tuple[str, ...]


def occluded_people(samples_dir: str | Path, seed: int = 0) -> list[OccludedPhoto]:
    """All variants of every labelled sample photo found in `samples_dir` (24 for the three shipped photos)."""
    return list(_generate(Path(samples_dir), seed))


def _generate(samples_dir: Path, seed: int) -> Iterator[OccludedPhoto]:
    from PIL import Image

    for photo_index, (file_name, box) in enumerate(sorted(SAMPLE_PERSON_BOXES.items())):
        path = samples_dir / file_name
        if not path.is_file():
            continue
        photo = np.asarray(Image.open(path).convert("RGB"))
        for variant_index, (occluders, scale) in enumerate(VARIANTS):
            rng = np.random.default_rng([seed, photo_index, variant_index])
            canvas, person = _place(photo, PersonBox(*box), scale, rng)
            for occluder in occluders:
                _PAINTERS[occluder](canvas, person, rng)
            name = f"{Path(file_name).stem}__{'+'.join(occluders)}__s{scale:g}"
            yield OccludedPhoto(name, canvas, person, occluders)


def _place(photo: np.ndarray, box: PersonBox, scale: float, rng: np.random.Generator) -> tuple[np.ndarray, PersonBox]:
    """The photo resized so its side is `scale` x the canvas height, on a plain wall in the photo's border colour
    (smooth shading and noise; no second, blurred person)."""
    from PIL import Image

    height, width = CANVAS
    border = np.concatenate([photo[0], photo[-1], photo[:, 0], photo[:, -1]]).astype(np.float64)
    shade = np.linspace(0.85, 1.1, height)[:, None, None] * np.linspace(0.95, 1.05, width)[None, :, None]
    wall = border.mean(axis=0)[None, None, :] * shade + rng.normal(0, 4, size=(height, width, 1))
    side = round(scale * height)
    factor = side / photo.shape[0]
    x0 = int(rng.integers(0, width - side + 1))
    y0 = int(rng.integers(0, height - side + 1))
    canvas = np.clip(wall, 0, 255).astype(np.uint8)
    canvas[y0 : y0 + side, x0 : x0 + side] = np.asarray(Image.fromarray(photo).resize((side, side), Image.BILINEAR))
    person = PersonBox(x0 + box.x0 * factor, y0 + box.y0 * factor, x0 + box.x1 * factor, y0 + box.y1 * factor).clipped(
        width, height
    )
    return canvas, person


def _texture(shape: tuple[int, int], rng: np.random.Generator, base: np.ndarray, kind: str) -> np.ndarray:
    """A (h, w, 3) float texture: fur (blotchy), wood (stripes) or fabric (fine noise) around a base colour."""
    h, w = shape
    if kind == "wood":
        rows = np.sin(np.linspace(0, rng.uniform(12, 30), h) + rng.uniform(0, 6))[:, None] * 18
        grain = rows + rng.normal(0, 6, size=(h, w))
    elif kind == "fur":
        coarse = rng.normal(0, 25, size=(max(h // 8, 1) + 1, max(w // 8, 1) + 1))
        grain = np.kron(coarse, np.ones((8, 8)))[:h, :w] + rng.normal(0, 10, size=(h, w))
    else:
        grain = rng.normal(0, 12, size=(h, w))
    return np.clip(base[None, None, :] + grain[..., None], 0, 255)


def _paint(canvas: np.ndarray, mask: np.ndarray, texture: np.ndarray, top: int, left: int) -> None:
    """Paste texture where mask is set, with the mask's top-left at (top, left); clipped to the canvas."""
    h, w = mask.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, canvas.shape[0]), min(left + w, canvas.shape[1])
    if y1 <= y0 or x1 <= x0:
        return
    sub = mask[y0 - top : y1 - top, x0 - left : x1 - left]
    region = canvas[y0:y1, x0:x1]
    region[sub] = texture[y0 - top : y1 - top, x0 - left : x1 - left][sub].astype(np.uint8)


def _dog(canvas: np.ndarray, person: PersonBox, rng: np.random.Generator) -> None:
    """A dog-like blob (body ellipse, head, ears, legs, tail) in front of the person's legs."""
    size = person.height * rng.uniform(0.38, 0.48)
    w, h = int(size * 1.5), int(size)
    yy, xx = np.mgrid[:h, :w]
    body = ((xx - 0.5 * w) / (0.36 * w)) ** 2 + ((yy - 0.5 * h) / (0.24 * h)) ** 2 <= 1
    head = ((xx - 0.86 * w) / (0.13 * w)) ** 2 + ((yy - 0.28 * h) / (0.18 * h)) ** 2 <= 1
    ear = ((xx - 0.80 * w) / (0.05 * w)) ** 2 + ((yy - 0.12 * h) / (0.12 * h)) ** 2 <= 1
    legs = np.zeros_like(body)
    for centre in (0.25, 0.38, 0.62, 0.74):
        legs |= (np.abs(xx - centre * w) < 0.04 * w) & (yy > 0.5 * h)
    tail = (np.abs(yy - (0.45 * h - (0.18 * w - xx) * 0.6)) < 0.03 * h) & (xx < 0.18 * w) & (xx > 0.04 * w)
    mask = body | head | ear | legs | tail
    colour = np.array(rng.choice([(120, 80, 40), (40, 35, 30), (200, 170, 120)]), dtype=np.float64)
    if rng.random() < 0.5:
        mask = mask[:, ::-1]
    left = int(person.centre[0] - w / 2 + rng.uniform(-0.15, 0.15) * person.width)
    top = int(person.y1 - h * rng.uniform(0.85, 1.0))
    _paint(canvas, mask, _texture((h, w), rng, colour, "fur"), top, left)


def _furniture(canvas: np.ndarray, person: PersonBox, rng: np.random.Generator) -> None:
    """A box (table, sofa back, crate) covering the lower 35-50 % of the person, wider than them."""
    height = int(person.height * rng.uniform(0.35, 0.5))
    width = int(person.width * rng.uniform(1.3, 1.9))
    colour = np.array(rng.choice([(110, 70, 40), (150, 110, 70), (90, 90, 100)]), dtype=np.float64)
    mask = np.ones((height, width), dtype=bool)
    texture = _texture((height, width), rng, colour, "wood" if rng.random() < 0.6 else "fabric")
    texture[: max(height // 12, 2)] *= 0.7  # a darker top edge
    left = int(person.centre[0] - width / 2 + rng.uniform(-0.1, 0.1) * person.width)
    _paint(canvas, mask, texture, int(person.y1 - height), left)


def _torso_cover(canvas: np.ndarray, person: PersonBox, rng: np.random.Generator) -> None:
    """A panel (door edge, another person's back) over one side of the torso, from mid-chest down."""
    width = int(person.width * rng.uniform(0.3, 0.45))
    height = int(person.height * rng.uniform(0.35, 0.5))
    colour = np.array(rng.choice([(60, 60, 70), (180, 180, 170), (30, 60, 90)]), dtype=np.float64)
    from_left = rng.random() < 0.5
    left = int(person.x0 - 0.1 * width) if from_left else int(person.x1 - 0.9 * width)
    top = int(person.y0 + person.height * rng.uniform(0.3, 0.4))
    _paint(canvas, np.ones((height, width), dtype=bool), _texture((height, width), rng, colour, "fabric"), top, left)


def _leaves(canvas: np.ndarray, person: PersonBox, rng: np.random.Generator) -> None:
    """A leafy plant (green blobs) over the lower half of the person."""
    height, width = int(person.height * 0.55), int(person.width * 1.4)
    yy, xx = np.mgrid[:height, :width]
    mask = np.zeros((height, width), dtype=bool)
    for _ in range(40):
        cy, cx = rng.uniform(0.15, 1.0) * height, rng.uniform(0, 1) * width
        ry, rx = rng.uniform(0.05, 0.12) * height, rng.uniform(0.08, 0.2) * width
        mask |= ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
    colour = np.array((50, 110, 40), dtype=np.float64)
    left = int(person.centre[0] - width / 2)
    _paint(canvas, mask, _texture((height, width), rng, colour, "fur"), int(person.y1 - height), left)


_PAINTERS = {"dog": _dog, "furniture": _furniture, "torso_cover": _torso_cover, "leaves": _leaves}
