"""`ivlm predict`: one task of a released checkpoint on one photo; `ContactPredictor` is also what `batch` runs.

Products per photo (`<stem>_...`): the contacts `.npz` (reference key names included, so the files drop into
the reference `optim/` fitting), a PNG of the SAM inputs with their masks and, when the meshes are known, the
contact-coloured mesh (`.glb` + `.ply`): SMPL-X for the human task (with --body-model-dir), the object mesh
for the object task.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ivlm_core.cli.arguments import object_name_from_image
from ivlm_core.cli.outputs import FrameOutput, NamedMesh, close_sinks, open_sinks, write_frame
from ivlm_core.datasets.frames import read_image
from ivlm_core.errors import InvalidInputError, IvlmError

HUMAN_OVERLAY_LOGIT = 0.3  # the reference demo paints human masks where logit > 0.3
OBJECT_OVERLAY_LOGIT = 0.5  # object and 2D overlays use 0.5
SMPLX_CONTACT_COLOUR_THRESHOLD = 0.3  # demo colouring of SMPL-X vertices
OBJECT_CONTACT_COLOUR_THRESHOLD = 0.5
CONTACT_COUNT_THRESHOLD = 0.5  # contact vertices counted in summaries (the evaluation threshold)
_GREY, _RED = (200, 200, 200), (230, 30, 30)


def add_predict_options(parser: argparse.ArgumentParser) -> None:
    """Decoding and rendering options of `predict` and `batch`."""
    parser.add_argument("--no-generate", action="store_true",
                        help="append the mask token to the prompt and run a single forward (template 'simple')")
    parser.add_argument("--naive", action="store_true", help="reference-style decoding without the KV cache")
    parser.add_argument("--object-dist", type=float, default=1.5,
                        help="object render distance (the reference's 1.5; the encoder cameras are chosen per "
                             "checkpoint, see --object-cam-distance)")
    parser.add_argument("--sam-config", type=Path, default=None,
                        help="JSON SamSpec for checkpoints whose SAM is not ViT-H")


def _overlay_grid(images: np.ndarray, logits: np.ndarray, threshold: float) -> np.ndarray:
    """2x2 (or 1x1) grid of the SAM inputs with the predicted mask painted red."""
    tiles = []
    for image, logit in zip(images, logits):
        tile = image.astype(np.float32).copy()
        mask = logit > threshold
        tile[mask] = 0.45 * tile[mask] + 0.55 * np.array([255.0, 0.0, 0.0])
        tiles.append(tile.astype(np.uint8))
    if len(tiles) == 1:
        return tiles[0]
    while len(tiles) % 2:
        tiles.append(np.full_like(tiles[0], 255))
    rows = [np.concatenate(tiles[i : i + 2], axis=1) for i in range(0, len(tiles), 2)]
    return np.concatenate(rows, axis=0)


def _threshold_colours(contacts: np.ndarray, threshold: float) -> np.ndarray:
    colours = np.tile(np.array(_GREY, np.uint8), (len(contacts), 1))
    colours[np.asarray(contacts) > threshold] = _RED
    return colours


def _smplx_mesh(body_model_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    from ivlm_core.body.models import load_body_model, posed_mesh

    try:
        model = load_body_model(body_model_dir, "smplx")
    except IvlmError:
        return None
    mesh = posed_mesh(model)
    return mesh.vertices[0].detach().cpu().numpy(), np.asarray(mesh.faces)


class ContactPredictor:
    """A checkpoint loaded once (with a progress bar) and run on photo after photo for one task."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ivlm_core.model.checkpoint import load_checkpoint
        from ivlm_core.model.processing import resolve_human_assets
        from ivlm_core.model.sam import SamSpec
        from ivlm_core.pipeline import resolve_device, resolve_dtype

        self.task, self.template = args.task, args.template
        self.common = {"generate": not args.no_generate, "naive": args.naive,
                       "max_new_tokens": args.max_new_tokens}
        body_dir = Path(args.body_model_dir) if args.body_model_dir else None
        if self.task == "human" and args.reference_data_dir is None and body_dir is None:
            raise InvalidInputError(
                "The human task needs --reference-data-dir (reference data/ with hcontact_vitruvian/) "
                "or --body-model-dir (SMPL-H files; ivlm renders the body itself).")
        if self.task == "object" and not args.mesh:
            raise InvalidInputError("The object task needs --mesh <object mesh file>.")
        transfer = None
        if body_dir is not None:
            from ivlm_core.body.transfer import ContactTransfer, find_transfer_file

            try:
                transfer = ContactTransfer.load(find_transfer_file(body_dir))
            except IvlmError as err:
                print(f"note: no SMPL-X transfer ({err}); writing SMPL-H contacts only", file=sys.stderr)
        device = resolve_device(args.device)
        sam_spec = SamSpec.from_dict(json.loads(Path(args.sam_config).read_text())) if args.sam_config else None
        self.model = load_checkpoint(args.checkpoint, clip_dir=args.clip_dir, device=device,
                                     dtype=resolve_dtype(args.dtype, device), sam_spec=sam_spec,
                                     contact_transfer=transfer, object_render_dist=args.object_dist,
                                     object_cam_distance=args.object_cam_distance,
                                     question_type=args.template if self.task == "human" else None)
        if args.quantization != "none":
            from ivlm_core.model.quantization import quantize_llm

            quantize_llm(self.model.model.llava.llm, args.quantization)
        self.model.set_decoder_compile(args.decoder_compile)
        self.model.set_decoder_gemv(args.decoder_gemv)
        if args.draft_tokens:
            from ivlm_core.model.drafting import find_body_part_names

            parts = find_body_part_names(args.reference_data_dir, body_dir)
            self.model.set_drafting(True, args.draft_tokens, parts)
        self.smplx = None
        if self.task == "human":
            # the shipped reference renders when found (what the model was trained on), else ivlm's own render
            self.model.set_human_assets(resolve_human_assets(self.model.human_view_set, args.reference_data_dir,
                                                             None, body_dir))
            self.smplx = _smplx_mesh(body_dir) if (body_dir is not None and transfer is not None) else None
        self.mesh = None
        if self.task == "object":
            import trimesh

            if not Path(args.mesh).is_file():
                raise InvalidInputError(f"--mesh '{args.mesh}' does not exist")
            mesh = trimesh.load(args.mesh, process=False, force="mesh")
            self.mesh = np.asarray(mesh.vertices), np.asarray(mesh.faces)

    def predict(self, image: np.ndarray, object_name: str, stem: str,
                stamp_ns: int | None = None) -> tuple[FrameOutput, dict[str, Any]]:
        """Run the task on one RGB photo: the frame's products and a JSON-ready summary."""
        from ivlm_core.model.predictor import NoContactFound

        model = self.model
        frame = FrameOutput(stem=stem, stamp_ns=stamp_ns, source_image=image, object_name=object_name)
        if self.task == "human":
            result = model.predict_human_contact(image, object_name, template=self.template, **self.common)
        elif self.task == "object":
            result = model.predict_object_contact(image, object_name, *self.mesh, template=self.template,
                                                  **self.common)
        else:
            result = model.predict_human_contact_2d(image, object_name, **self.common)
        lang = result.language
        summary: dict[str, Any] = {
            "task": self.task, "object": object_name, "text": lang.text, "seg_token": lang.seg_token,
            "body_parts": list(lang.body_parts), "affordance": lang.affordance, "found": result.found,
            "answer_status": result.status, "answer_message": lang.message,  # contact | no_contact | truncated
            "contact_vertices": None, "timings": {k: round(v, 4) for k, v in result.timings.items()},
        }
        if isinstance(result, NoContactFound):
            return frame, summary
        if self.task == "human":
            arrays = {"pred_contact_3d_smplh": result.contacts_smplh[None], "view_logits": result.view_logits,
                      "iou": result.iou, "text": np.array(lang.text)}
            if result.contacts_smplx is not None:
                arrays["pred_contact_3d_smplx"] = result.contacts_smplx
            frame.arrays["hcontact_vertices"] = arrays
            frame.images["hcontact_views"] = _overlay_grid(model.human_assets.renders, result.view_logits,
                                                           HUMAN_OVERLAY_LOGIT)
            if self.smplx is not None:
                colours = _threshold_colours(result.contacts_smplx, SMPLX_CONTACT_COLOUR_THRESHOLD)
                frame.meshes["hcontact_smplx"] = [NamedMesh("human", *self.smplx, colours, result.contacts_smplx)]
            summary["contact_vertices"] = int((result.contacts_smplh >= CONTACT_COUNT_THRESHOLD).sum())
        elif self.task == "object":
            frame.arrays["ocontact_vertices"] = {"pred_contact_3d": result.contacts[None],
                                                 "view_logits": result.view_logits, "iou": result.iou,
                                                 "text": np.array(lang.text)}
            frame.images["ocontact_views"] = _overlay_grid(result.renders, result.view_logits, OBJECT_OVERLAY_LOGIT)
            colours = _threshold_colours(result.contacts, OBJECT_CONTACT_COLOUR_THRESHOLD)
            frame.meshes["ocontact_mesh"] = [NamedMesh("object", *self.mesh, colours, result.contacts)]
            summary["contact_vertices"] = int((result.contacts >= CONTACT_COUNT_THRESHOLD).sum())
        else:
            frame.arrays["h2dcontact"] = {"logits": result.logits, "text": np.array(lang.text)}
            frame.images["h2dcontact"] = _overlay_grid(image[None], result.logits[None], OBJECT_OVERLAY_LOGIT)
            summary["contact_vertices"] = None
        return frame, summary


def run_predict(args: argparse.Namespace) -> int:
    image_path = Path(args.image)
    image = read_image(image_path)
    object_name = args.object or object_name_from_image(image_path)
    predictor = ContactPredictor(args)
    frame, summary = predictor.predict(image, object_name, image_path.stem)
    sinks = open_sinks(args)
    written = write_frame(sinks, frame)
    written.update(close_sinks(sinks))
    summary["files"] = [str(p) for p in written.values()]
    print(json.dumps(summary, indent=2))
    return 0
