"""Per-frame cost of the body tracker on short synthetic streams made from the sample photos (640x480).

    python -m ivlm_core.bench.body_tracking [--samples DIR] [--frames 30] [--body-model-dir DIR] [--threads 1]

Each sample photo becomes a 30 Hz stream: the photo scaled to 480x480 on a 640x480 canvas, sliding sideways
by up to 20 px and back (a person moving a little). `BodyTracker` runs with its defaults (mediapipe pose in
tracking mode, no hands, crop-search / last-track fallbacks, `warm_iterations` warm steps per frame) and a
55 degree pinhole camera. Without --body-model-dir the synthetic humanoid stands in for SMPL-X: the per-frame fit
touches only joints and 21 keypoint vertices either way, but the final skinning of the full mesh is cheaper on
the coarse synthetic mesh than on SMPL-X's 10475 vertices. The first frame of each photo is a cold fit; it and
any later re-initialisation are reported apart from the warm frames. Last line: ``frames=<n> body_model=<m>
ms_mean=<warm mean> ms_worst=<warm worst> find_ms_mean=<f> fit_ms_mean=<f> cold_ms_mean=<f>
reinit_frames=<n> tracked=<fraction of frames with a fresh body> cpu_ms_mean=<f>``. cpu_ms is the process's
CPU time per warm frame (all its threads, mediapipe's included): unlike wall time it barely depends on how
busy the shared machine is.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ivlm_core.bench.body_fit_samples import pinhole_camera
from ivlm_core.bench.machine import describe_machine
from ivlm_core.tracking import BodyTracker, TrackerConfig

REPO_ROOT = Path(__file__).resolve().parents[2]


def stream_frames(photo: np.ndarray, frames: int) -> list[np.ndarray]:
    """The photo scaled to 480x480 on a 640x480 grey canvas, sliding by up to 20 px sideways and back."""
    from PIL import Image

    scaled = np.asarray(Image.fromarray(photo).resize((480, 480), Image.BILINEAR))
    out = []
    for index in range(frames):
        canvas = np.full((480, 640, 3), 110, dtype=np.uint8)
        x0 = 80 + round(20 * np.sin(2 * np.pi * index / max(frames, 1)))
        canvas[:, x0 : x0 + 480] = scaled
        out.append(canvas)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=Path, default=REPO_ROOT / "test" / "data" / "samples")
    parser.add_argument("--frames", type=int, default=30, help="frames per photo (30 Hz stamps)")
    parser.add_argument("--body-model-dir", type=Path, default=None, help="folder with smplx/SMPLX_NEUTRAL.npz")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the fit uses 1 regardless)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    photos = sorted(args.samples.glob("*.png"))
    if not photos:
        raise SystemExit(f"no .png photos in {args.samples}")
    camera_k = pinhole_camera(480, 640, 55.0)
    config = TrackerConfig()
    warm_ms, warm_cpu_ms, find_ms, fit_ms, cold_ms = [], [], [], [], []
    tracked = reinit = total = 0
    reasons: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="ivlm_body_") as tmp:
        body_dir, body_model = args.body_model_dir, "smplx"
        if body_dir is None:
            from ivlm_core.testing.synthetic_body import write_synthetic_smplx

            write_synthetic_smplx(tmp)
            body_dir, body_model = Path(tmp), "synthetic-humanoid"
        tracker = BodyTracker.from_body_model_dir(body_dir, config=config)
        if not tracker.available:
            raise SystemExit(tracker.unavailable_reason)
        tracker.warm_up(480, 640)
        for path in photos:
            tracker.reset()
            photo = np.asarray(Image.open(path).convert("RGB"))
            for index, frame in enumerate(stream_frames(photo, args.frames)):
                cpu_start = time.process_time()
                update = tracker.update(frame, camera_k, stamp_s=index / 30.0)
                cpu_ms = (time.process_time() - cpu_start) * 1e3
                total += 1
                fresh = update.fresh_bodies
                tracked += bool(fresh)
                if fresh and fresh[0].reinitialised:
                    reinit += 1
                    reasons[fresh[0].reinit_reason] = reasons.get(fresh[0].reinit_reason, 0) + 1
                    cold_ms.append(update.timings_ms["total"])
                    continue
                warm_ms.append(update.timings_ms["total"])
                warm_cpu_ms.append(cpu_ms)
                find_ms.append(update.timings_ms["find"])
                fit_ms.append(update.timings_ms["fit"])
            print(
                f"{path.name:32s} warm ms mean={np.mean(warm_ms[-args.frames :]):.1f} "
                f"worst={np.max(warm_ms[-args.frames :]):.1f} status: {update.status}"
            )
        tracker.close()
    print(
        f"conditions: {len(photos)} photos x {args.frames} frames at 640x480, 30 Hz stamps; body model {body_model}; "
        f"mediapipe 0.10.14 pose (complexity 1, tracking mode, no hands, no segmentation); "
        f"warm_iterations={config.warm_iterations}; torch {torch.__version__} {args.threads} thread(s); "
        f"{describe_machine()}, shared (times inflated under load); "
        f"re-initialisations: {reasons}"
    )
    print(
        f"frames={total} body_model={body_model} ms_mean={np.mean(warm_ms):.1f} ms_worst={np.max(warm_ms):.1f} "
        f"find_ms_mean={np.mean(find_ms):.1f} fit_ms_mean={np.mean(fit_ms):.1f} "
        f"cold_ms_mean={np.mean(cold_ms) if cold_ms else float('nan'):.1f} reinit_frames={reinit} "
        f"tracked={tracked / max(total, 1):.3f} cpu_ms_mean={np.mean(warm_cpu_ms):.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
