"""Render what the node's `~/markers` show, the way RViz would, next to its `~/debug_image` (docs picture).

RViz cannot run on the development machines (it is neither on PyPI nor in Debian), so this draws the node's
own MarkerArray content (contact-coloured TRIANGLE_LIST meshes, contact SPHERE_LISTs) with ivlm's z-buffer
from an orbit camera looking at the camera frame, on RViz's dark background with its 1 m grid. It runs the real
pipeline; without weights it uses a tiny RANDOM model and synthetic body models, so the contacts are noise and
the picture only shows the layout of the view:

    python scripts/render_marker_preview.py --out docs/rviz_preview.png [--checkpoint DIR --body-model-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ivlm_core.fitting.zbuffer import render_depth  # noqa: E402
from ivlm_core.pipeline import InteractionPipeline, PipelineConfig  # noqa: E402
from ivlm_ros.debug_image import compose_debug_image  # noqa: E402
from ivlm_ros.marker_cdr import SPHERE_LIST, TRIANGLE_LIST  # noqa: E402
from ivlm_ros.markers import interaction_markers  # noqa: E402

RVIZ_BACKGROUND = np.array([48, 48, 48], dtype=np.float64)
PHOTO = ROOT / "test" / "data" / "samples" / "tennis_racket__serve.png"


def orbit_camera(
    target: np.ndarray, yaw_deg: float, pitch_deg: float, distance: float
) -> tuple[np.ndarray, np.ndarray]:
    """World (optical frame) -> orbit camera rotation and centre, looking at `target` (OpenCV axes)."""
    yaw, pitch = np.radians(yaw_deg), np.radians(pitch_deg)
    forward = np.array([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
    centre = target - distance * forward
    down = np.array([0.0, 1.0, 0.0])
    right = np.cross(down, forward)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    return np.stack([right, down, forward]), centre


def draw_markers(markers: list, rotation: np.ndarray, centre: np.ndarray, k: np.ndarray, hw: tuple[int, int]):
    meshes, face_colours, light_dir = [], [], np.array([0.3, -0.6, -0.75])
    for marker in markers:
        if marker.type == TRIANGLE_LIST and len(marker.points):
            verts = (np.asarray(marker.points) - centre) @ rotation.T
            tris = np.arange(len(verts)).reshape(-1, 3)
            cols = np.asarray(marker.colors)[:, :3].reshape(-1, 3, 3).mean(axis=1)
        elif marker.type == SPHERE_LIST and len(marker.points):
            # a small octahedron per sphere: cheap and visible at this scale
            r = float(marker.scale[0]) / 2
            offsets = r * np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], float)
            octa = np.array([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
            centres = (np.asarray(marker.points) - centre) @ rotation.T
            verts = (centres[:, None, :] + offsets[None] @ rotation.T).reshape(-1, 3)
            tris = (octa[None] + 6 * np.arange(len(centres))[:, None, None]).reshape(-1, 3)
            cols = np.tile(np.asarray(marker.color)[:3], (len(tris), 1))
        else:
            continue
        meshes.append((verts, tris))
        face_colours.append((verts, tris, cols))
    image = np.tile(RVIZ_BACKGROUND, (*hw, 1))
    if not meshes:
        return image.astype(np.uint8)
    render = render_depth(meshes, k, hw)
    for index, (verts, tris, cols) in enumerate(face_colours):
        visible = render.mesh_index == index
        faces = render.face_index[visible]
        a, b, c = verts[tris[faces, 0]], verts[tris[faces, 1]], verts[tris[faces, 2]]
        normals = np.cross(b - a, c - a)
        normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
        lambert = np.abs(normals @ (light_dir / np.linalg.norm(light_dir)))
        image[visible] = 255.0 * cols[faces] * (0.35 + 0.65 * lambert[:, None])
    return np.clip(image, 0, 255).astype(np.uint8)


def draw_grid(image: np.ndarray, rotation: np.ndarray, centre: np.ndarray, k: np.ndarray, floor_y: float) -> None:
    """RViz's 1 m grid on the floor plane below the scene (y down in the optical frame)."""
    canvas = Image.fromarray(image)
    pen = ImageDraw.Draw(canvas)
    for offset in np.arange(-3.0, 3.01, 0.5):
        for a, b in (
            ((offset, floor_y, 0.5), (offset, floor_y, 5.0)),
            ((-3.0, floor_y, offset + 3.5), (3.0, floor_y, offset + 3.5)),
        ):
            pts = (np.array([a, b]) - centre) @ rotation.T
            if (pts[:, 2] <= 0.05).any():
                continue
            uv = (pts @ k.T)[:, :2] / pts[:, 2:3]
            pen.line([tuple(uv[0]), tuple(uv[1])], fill=(110, 110, 110), width=1)
    image[:] = np.asarray(canvas)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "rviz_preview.png")
    parser.add_argument("--checkpoint", type=Path, help="real checkpoint folder (default: tiny random model)")
    parser.add_argument("--clip-dir", type=Path)
    parser.add_argument("--body-model-dir", type=Path)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ivlm_preview_"))
    if args.checkpoint is None:
        from ivlm_core.testing.synthetic_body import write_synthetic_body_models
        from ivlm_core.testing.tiny_checkpoint import build_tiny_checkpoint

        args.checkpoint = build_tiny_checkpoint(tmp / "tiny", "Gen")
        args.body_model_dir = write_synthetic_body_models(tmp / "body_models")
        print("[preview] tiny RANDOM model + synthetic bodies: contacts are noise; the layout is real")
    photo = np.asarray(Image.open(PHOTO).convert("RGB"))
    h, w = photo.shape[:2]
    f = 0.5 * w / np.tan(np.radians(55.0) / 2)
    k = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])
    cfg = PipelineConfig(
        checkpoint_dir=str(args.checkpoint),
        clip_dir=str(args.clip_dir) if args.clip_dir else None,
        body_model_dir=str(args.body_model_dir),
        fit_human=True,
        max_new_tokens=32,
    )
    pipe = InteractionPipeline.load(cfg)
    result = pipe.estimate(photo, "tennis_racket", camera_k=k)
    markers = interaction_markers(result, 0.5, 0.5, colormap="viridis", sphere_radius_m=0.02)
    body = result.body_placement.vertices if result.body_placement.placed else result.body_mesh[0]
    target = np.asarray(body).mean(axis=0)
    hw = (h, int(w * 1.25))
    view_k = np.array([[0.9 * hw[1], 0, hw[1] / 2], [0, 0.9 * hw[1], hw[0] / 2], [0, 0, 1.0]])
    rotation, centre = orbit_camera(target, yaw_deg=-40.0, pitch_deg=20.0, distance=3.2)
    meshes = draw_markers(markers, rotation, centre, view_k, hw)
    view = np.tile(RVIZ_BACKGROUND, (*hw, 1)).astype(np.uint8)
    draw_grid(view, rotation, centre, view_k, floor_y=float(np.asarray(body)[:, 1].max()))
    drawn = (meshes != RVIZ_BACKGROUND.astype(np.uint8)).any(axis=-1)
    view[drawn] = meshes[drawn]
    debug = compose_debug_image(photo, result, k, 0.5, 0.5)
    scale = view.shape[0] / debug.shape[0]
    debug_img = Image.fromarray(debug).resize((int(debug.shape[1] * scale), view.shape[0]))
    panel = Image.new("RGB", (view.shape[1] + debug_img.width, view.shape[0]), (255, 255, 255))
    panel.paste(Image.fromarray(view), (0, 0))
    panel.paste(debug_img, (view.shape[1], 0))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    panel.save(args.out)
    print(f"[preview] wrote {args.out} (body placed: {result.body_placement.placed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
