"""The whole pipeline end to end on the sample photos with the tiny model (GPU smoke run of scripts/gpu_check.sh).

    python -m ivlm_core.bench.pipeline_samples --samples test/data/samples --device cuda

Builds a tiny released-layout checkpoint (token_type Gen-Hu-Obj), synthetic body models and a one-capsule
object library for every sample's object, loads `InteractionPipeline` in interaction mode exactly as the node
does (so `prepare()` captures the decoder's CUDA graphs at load) and runs every photo twice. The tiny model
answers what it is wired to answer, so this proves the code path (devices, dtypes, graphs, caches), not accuracy.
Last line: ``samples=<n> frames=<n> load_s=<f> frame_ms_mean=<f> frame_ms_worst=<f> human_found=<n> object_found=<n>``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def build_inputs(root: Path, labels: list[str]) -> tuple[Path, Path, Path]:
    """(tiny checkpoint, synthetic body model folder, object library YAML) under `root`."""
    import trimesh

    from ivlm_core.testing.synthetic_body import write_synthetic_body_models
    from ivlm_core.testing.tiny_checkpoint import build_tiny_checkpoint

    checkpoint = build_tiny_checkpoint(root / "tiny_joint", "Gen-Hu-Obj")
    body_dir = write_synthetic_body_models(root / "body_models")
    trimesh.creation.capsule(height=0.5, radius=0.05, count=[8, 8]).export(root / "object.obj")
    lines = ["objects:"] + [f"  {label}: {{mesh: object.obj, scale: 1.0}}" for label in labels]
    library = root / "objects.yaml"
    library.write_text("\n".join(lines) + "\n")
    return checkpoint, body_dir, library


def main(argv: list[str] | None = None) -> None:
    from PIL import Image

    from ivlm_core.pipeline import InteractionPipeline, PipelineConfig

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", default="test/data/samples", help="folder of <object>__<what>.png photos")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    photos = sorted(Path(args.samples).glob("*__*.png"))
    if not photos:
        raise SystemExit(f"no <object>__<what>.png photos in {args.samples}")
    labels = sorted({p.name.split("__")[0] for p in photos})
    with tempfile.TemporaryDirectory(prefix="ivlm_samples_") as tmp:
        checkpoint, body_dir, library = build_inputs(Path(tmp), labels)
        cfg = PipelineConfig(
            checkpoint_dir=str(checkpoint), body_model_dir=str(body_dir), object_library=str(library),
            task="interaction", device=args.device, dtype=args.dtype, max_new_tokens=32,
        )
        t0 = time.perf_counter()
        pipe = InteractionPipeline.load(cfg)
        load_s = time.perf_counter() - t0
        graphs = pipe.model.model.llava.decoder.captured_batches if pipe.model.model.llava.decoder is not None else ()
        print(f"loaded on {pipe.device} ({pipe.dtype}) in {load_s:.1f}s; CUDA graphs for batch sizes {graphs}")
        times: list[float] = []
        human_found = object_found = 0
        for photo in photos:
            image = np.asarray(Image.open(photo).convert("RGB"))
            label = photo.name.split("__")[0]
            for _ in range(args.repeats):
                t1 = time.perf_counter()
                result = pipe.estimate(image, label)
                times.append(time.perf_counter() - t1)
            human, obj = result.human, result.object
            for name, contact in (("human", human.vertex_contact), ("object", obj.vertex_contact)):
                if contact is not None and not np.isfinite(contact).all():
                    raise RuntimeError(f"{photo.name}: non-finite {name} contacts")
            human_found += int(human.contact_found)
            object_found += int(obj.contact_found)
            print(
                f"{photo.name}: human '{human.generated_text}' found={human.contact_found} | "
                f"object '{obj.generated_text}' found={obj.contact_found} | {times[-1] * 1e3:.1f} ms"
            )
        print(
            f"samples={len(photos)} frames={len(times)} load_s={load_s:.2f} "
            f"frame_ms_mean={1e3 * statistics.fmean(times):.1f} frame_ms_worst={1e3 * max(times):.1f} "
            f"human_found={human_found} object_found={object_found}"
        )


if __name__ == "__main__":
    main()
