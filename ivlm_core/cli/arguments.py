"""Arguments shared by the `ivlm` subcommands: one name, one meaning and one default everywhere."""

from __future__ import annotations

import argparse
from pathlib import Path

from ivlm_core.errors import InvalidInputError
from ivlm_core.pipeline_config import DECODER_COMPILE, DECODER_GEMV, DEFAULT_DRAFT_TOKENS, QUANTIZATIONS

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
TASKS = ("human", "object", "2d")
DEFAULT_MAX_NEW_TOKENS = 512  # the model API's default; answers are a few dozen tokens


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every real default shown after its help text (not None / off switches, not twice); descriptions as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def add_checkpoint_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--checkpoint", required=required, type=Path,
                        help="unzipped InteractVLM release folder (config.json, weight shards, tokenizer)")
    parser.add_argument("--clip-dir", type=Path, default=None,
                        help="local openai/clip-vit-large-patch14 folder (default: config 'vision_tower' next to "
                             "the checkpoint, or the local Hugging Face cache)")


def add_model_arguments(parser: argparse.ArgumentParser, checkpoint_required: bool = True) -> None:
    """Checkpoint, CLIP, body models, device/dtype and decoding length: what loading and running a model needs."""
    add_checkpoint_argument(parser, checkpoint_required)
    parser.add_argument("--body-model-dir", type=Path, default=None,
                        help="folder with smplx/SMPLX_NEUTRAL.npz, smplh/SMPLH_NEUTRAL.pkl and smpl_to_smplx.pkl "
                             "(human renders, SMPL-X contacts and meshes)")
    parser.add_argument("--reference-data-dir", type=Path, default=None,
                        help="the reference data/ folder (hcontact_vitruvian/ renders and lifting maps); without "
                             "it the body is rendered from --body-model-dir")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="'auto' = CUDA when available")
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="'auto' = bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--quantization", choices=QUANTIZATIONS, default="none",
                        help="weight-only int8/int4 LLM weights through torchao (int4 needs CUDA)")
    parser.add_argument("--decoder-compile", choices=DECODER_COMPILE, default="auto",
                        help="torch.compile of the LLM decoder's layer glue: 'auto' = on CUDA (~20 s more warm-up, "
                             "~20 %% faster decoding on an H200)")
    parser.add_argument("--decoder-gemv", choices=DECODER_GEMV, default="auto",
                        help="Triton matrix-vector kernels (norm, SiLU-up and residual folded in) for the LLM's "
                             "decode steps: 'auto' = on CUDA, used only when the captured step agrees with "
                             "cuBLAS's and is faster")
    parser.add_argument("--draft-tokens", type=int, default=DEFAULT_DRAFT_TOKENS,
                        help="draft-and-verify decoding: answer-template tokens verified per LLM forward (same "
                             "answers, fewer forwards); 0 = plain greedy decoding")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS,
                        help="longest generated answer (the reference's 512; decoding stops at the mask token and "
                             "an answer cut before it is reported as truncated)")
    parser.add_argument("--object-cam-distance", type=float, default=None,
                        help="camera distance the encoder sees for the object views (default: per checkpoint, "
                             "2.0 for the affordance model, 1.5 for PICO-trained contact; see `ivlm info`)")


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=TASKS, default="human",
                        help="human: 3D contact on the body; object: contact on --mesh; 2d: contact mask on the photo")
    parser.add_argument("--mesh", type=Path, default=None, help="object mesh file (object task)")
    parser.add_argument("--template", default=None,
                        help="question template (human: parts|simple, object: afford|contact; default: the "
                             "checkpoint's)")


def add_out_argument(parser: argparse.ArgumentParser, default: str = ".") -> None:
    parser.add_argument("--out", type=Path, default=Path(default), help="output folder (created if missing)")


def object_name_from_image(path: str | Path) -> str:
    """The reference's naming rule: `<object>__<anything>.<ext>` -> '<object>' (lower case, '_' kept)."""
    name = Path(path).name
    if "__" not in name:
        raise InvalidInputError(
            f"cannot tell the object from the file name '{name}': pass --object NAME or name the photo "
            "<object>__<anything>.png (e.g. tennis_racket__serve.png)")
    label = name.split("__")[0].lower()
    if not label:
        raise InvalidInputError(f"file name '{name}' starts with '__': pass --object NAME")
    return label
