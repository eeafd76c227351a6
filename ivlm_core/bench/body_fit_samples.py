"""Fit an SMPL-X body to each sample photo and write a PNG per photo to check the fit by eye.

    python -m ivlm_core.bench.body_fit_samples [--samples DIR] [--out out/body_fit] [--body-model-dir DIR]

Each PNG shows the fitted mesh and keypoints over the photo (green = detected, red = fitted body), the same
zoomed on the person, and the mesh turned 90 degrees about the vertical axis (its depth and pose). Without
--body-model-dir the synthetic humanoid test body stands in for SMPL-X (coarse, but the same code path); the
first and last lines name the body model used.

The figure is a 2D reprojection error: how far the fitted body's keypoints land from the detected ones, as a
fraction of the image diagonal. It says nothing about 3D accuracy (depth, pose behind the image plane). The
photos' real intrinsics are unknown; a pinhole camera with --fov-deg horizontal field of view is assumed unless
--camera-k is given. Last line: ``photos=N body_model=... mean_reproj_rel=... worst_keypoint_rel=...
fit_s_mean=... fit_s_worst=...``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from ivlm_core.fitting.body_fit import BodyFitConfig, CameraBodyPlacer, load_body_layer
from ivlm_core.fitting.body_overlay import draw_keypoint_pairs, draw_mesh_overlay, draw_turned_view
from ivlm_core.fitting.keypoints import MediaPipeKeypointDetector

REPO_ROOT = Path(__file__).resolve().parents[2]


def pinhole_camera(height: int, width: int, fov_deg: float) -> np.ndarray:
    focal = width / 2 / np.tan(np.radians(fov_deg) / 2)
    return np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


def zoom_on(image: np.ndarray, points: np.ndarray, margin: float = 0.15) -> np.ndarray:
    """A square crop around the points (the person), resized to the image's size: small people stay visible."""
    from PIL import Image

    height, width = image.shape[:2]
    low, high = points.min(axis=0), points.max(axis=0)
    side = float((high - low).max()) * (1 + 2 * margin)
    side = min(max(side, 32.0), float(min(height, width)))
    centre = (low + high) / 2
    x0 = int(np.clip(centre[0] - side / 2, 0, width - side))
    y0 = int(np.clip(centre[1] - side / 2, 0, height - side))
    crop = Image.fromarray(image[y0 : y0 + int(side), x0 : x0 + int(side)])
    return np.asarray(crop.resize((width, height), Image.BICUBIC))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=Path, default=REPO_ROOT / "test" / "data" / "samples")
    parser.add_argument("--out", type=Path, default=Path("out/body_fit"))
    parser.add_argument("--body-model-dir", type=Path, default=None, help="folder with smplx/SMPLX_NEUTRAL.npz")
    parser.add_argument("--gender", default="neutral")
    parser.add_argument("--fov-deg", type=float, default=55.0)
    parser.add_argument("--camera-k", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"), default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    args = parse_args(argv)
    photos = sorted(args.samples.glob("*.png"))
    if not photos:
        raise SystemExit(f"no .png photos in {args.samples}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ivlm_body_") as tmp:
        body_dir = args.body_model_dir
        if body_dir is None:
            from ivlm_core.testing.synthetic_body import write_synthetic_smplx

            write_synthetic_smplx(tmp, args.gender)
            body_dir = Path(tmp)
            body_model = "synthetic-humanoid"
            print("body model: synthetic humanoid SMPL-X (pass --body-model-dir for the real SMPL-X)")
        else:
            body_model = f"smplx-{args.gender}"
            print(f"body model: SMPL-X {args.gender} from {body_dir}")
        layer = load_body_layer(body_dir, args.gender)
    placer = CameraBodyPlacer(layer, BodyFitConfig(), stream=False)
    rel_errors, worst, fit_times = [], [], []
    with MediaPipeKeypointDetector() as detector:
        for photo in photos:
            image = np.asarray(Image.open(photo).convert("RGB"))
            height, width = image.shape[:2]
            if args.camera_k is not None:
                fx, fy, cx, cy = args.camera_k
                camera_k = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
            else:
                camera_k = pinhole_camera(height, width, args.fov_deg)
            start = time.perf_counter()
            keypoints = detector(image)
            detect_s = time.perf_counter() - start
            if keypoints is None:
                print(f"{photo.name}: no person detected")
                continue
            result = placer.place(image, camera_k, keypoints=keypoints)
            if not result.placed:
                print(f"{photo.name}: {result.status}")
                continue
            targets = result.targets
            used = targets.weights > 0
            error = np.linalg.norm(result.fitted_2d - targets.points_2d, axis=1) / targets.diagonal
            overlay = draw_mesh_overlay(image, result.vertices, result.faces, camera_k)
            overlay = draw_keypoint_pairs(overlay, targets.points_2d, result.fitted_2d, targets.weights)
            turned = draw_turned_view(result.vertices, result.faces, camera_k, (height, width), 90.0)
            zoom = zoom_on(overlay, np.concatenate([targets.points_2d[used], result.fitted_2d[used]]))
            out_path = args.out / f"{photo.stem}.png"
            Image.fromarray(np.concatenate([overlay, zoom, turned], axis=1)).save(out_path)
            rel_errors.append(result.reprojection_error_rel)
            worst.append(float(error[used].max()))
            fit_times.append(result.fit_time_s)
            print(
                f"{photo.name}: keypoints={int(used.sum())} hands={','.join(sorted(keypoints.hands)) or '-'} "
                f"reproj_px={result.reprojection_error_px:.1f} reproj_rel={result.reprojection_error_rel:.4f} "
                f"worst_rel={worst[-1]:.4f} depth_m={float(np.median(result.vertices[:, 2])):.2f} "
                f"detect_s={detect_s:.2f} fit_s={result.fit_time_s:.2f} -> {out_path}"
            )
    if not rel_errors:
        print("photos=0")
        return 1
    print(
        f"photos={len(rel_errors)} body_model={body_model} mean_reproj_rel={np.mean(rel_errors):.4f} "
        f"worst_keypoint_rel={max(worst):.4f} fit_s_mean={np.mean(fit_times):.2f} fit_s_worst={max(fit_times):.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
