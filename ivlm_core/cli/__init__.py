"""`ivlm`: InteractVLM contact estimation from the command line (no ROS needed).

    ivlm info        --checkpoint CKPT [--json]                  what a checkpoint holds, memory estimate
    ivlm convert     --checkpoint CKPT [--out DIR]               .bin shards -> safetensors, once
    ivlm predict     --checkpoint CKPT --image PHOTO [--task human|object|2d] ...   one photo, one task
    ivlm reconstruct --checkpoint CKPT --image PHOTO --object-library YAML --box ...  body + object placed
    ivlm batch       --checkpoint CKPT --input FOLDER|BAG [--image-topic T] ...  per-frame files + summary.csv
    ivlm eval        --checkpoint CKPT --dataset DAMON_SPLIT --body-model-dir DIR   F1 / P / R / geodesic error
    ivlm eval        --checkpoint CKPT --dataset PIAD_SPLIT --format piad           SIM / MAE / AUC / aIoU

Every subcommand takes the same names for the same things (--checkpoint, --clip-dir, --body-model-dir,
--reference-data-dir, --device, --dtype, --max-new-tokens, --object, --out) and `ivlm <command> --help` shows
every default. Also `python -m ivlm_core.cli ...`. Errors in the inputs exit with code 2 and say what to fix.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from ivlm_core.cli.arguments import (
    HelpFormatter,
    add_checkpoint_argument,
    add_model_arguments,
    add_out_argument,
    add_task_arguments,
)
from ivlm_core.cli.outputs import add_sink_arguments
from ivlm_core.errors import IvlmError

DTYPE_CHOICES = ("bfloat16", "float16", "float32")


def _subcommand(sub: argparse._SubParsersAction, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=summary, description=description, formatter_class=HelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    from ivlm_core.cli.batch import add_batch_arguments
    from ivlm_core.cli.evaluate import add_eval_arguments
    from ivlm_core.cli.predict import add_predict_options
    from ivlm_core.cli.reconstruct import add_reconstruct_arguments

    parser = argparse.ArgumentParser(prog="ivlm", description=__doc__, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = _subcommand(sub, "info", "config, sizes, dtype and memory estimate of a checkpoint",
                       "What a checkpoint holds, read from config.json and the weight headers (no model is built).")
    add_checkpoint_argument(info)
    info.add_argument("--dtype", choices=DTYPE_CHOICES, default="bfloat16", help="dtype of the memory estimate")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.add_argument("--reference-data-dir", type=Path, default=None,
                      help="the reference data/ folder: the shipped human renders in use when found")
    info.add_argument("--body-model-dir", type=Path, default=None,
                      help="SMPL-H/SMPL-X folder: ivlm's own render (compared with the shipped one when both exist)")
    info.add_argument("--smpl-to-smplx", type=Path, default=None, help="smpl_to_smplx.pkl (its folder is searched)")
    info.add_argument("--template", default=None, help="override the checkpoint's human question type")
    info.add_argument("--object-cam-distance", type=float, default=None,
                      help="override the encoder cameras of the object views")

    convert = _subcommand(sub, "convert", "one-time conversion of the .bin shards to safetensors",
                          "Convert the pickled .bin shards to safetensors (faster loading, no pickle), with "
                          "progress shard by shard.")
    add_checkpoint_argument(convert)
    convert.add_argument("--out", default=None,
                         help="output folder (default: the safetensors files go next to the .bin shards)")

    predict = _subcommand(sub, "predict", "one task on one photo",
                          "Human contact (SMPL-H/SMPL-X), object contact (on --mesh) or the 2D contact mask for "
                          "one photo: contacts .npz, views PNG and the contact-coloured mesh (.glb/.ply).")
    add_model_arguments(predict)
    predict.add_argument("--image", required=True, help="RGB photo; named <object>__<anything>.png unless --object")
    predict.add_argument("--object", default=None,
                         help="object name (default: file name before '__'); 'scene' = ground contact")
    add_task_arguments(predict)
    add_predict_options(predict)
    add_out_argument(predict)
    add_sink_arguments(predict)

    rec = _subcommand(sub, "reconstruct", "contacts + body + object placement for one photo",
                      "Human and object contacts, the SMPL-X body and the object placed together in the camera "
                      "frame, for one photo.")
    add_model_arguments(rec)
    add_reconstruct_arguments(rec)
    add_out_argument(rec)
    add_sink_arguments(rec)

    batch = _subcommand(sub, "batch", "a folder of photos or a rosbag2 -> per-frame files + summary.csv",
                        "Run one task on every photo of a folder, or on every image of a rosbag2 topic (read "
                        "with rosbags, no ROS install needed): per-frame .npz + .glb/.ply + PNG and a summary "
                        "CSV, with a progress bar.")
    add_model_arguments(batch)
    add_batch_arguments(batch)
    add_task_arguments(batch)
    add_predict_options(batch)
    add_out_argument(batch, "ivlm_batch")
    add_sink_arguments(batch)

    evaluate = _subcommand(sub, "eval", "the reference's metrics on a DAMON or PIAD test set",
                           "Run the model on a DAMON-format human-contact split or a PIAD-format object-affordance "
                           "split (or re-score saved predictions) and print the reference's metrics: DAMON: "
                           "semantic (object-wise) and binary (per image) F1 / precision / recall at threshold 0.5 "
                           "and the geodesic error; PIAD: SIM / MAE / AUC / aIoU on the point clouds, overall and "
                           "per affordance.")
    add_model_arguments(evaluate, checkpoint_required=False)
    add_eval_arguments(evaluate)
    add_out_argument(evaluate, "ivlm_eval")
    return parser


def _runner(command: str) -> Callable[[argparse.Namespace], int]:
    if command in ("info", "convert"):
        from ivlm_core.cli import checkpoint_commands

        return checkpoint_commands.run_info if command == "info" else checkpoint_commands.run_convert
    if command == "predict":
        from ivlm_core.cli.predict import run_predict

        return run_predict
    if command == "reconstruct":
        from ivlm_core.cli.reconstruct import run_reconstruct

        return run_reconstruct
    if command == "batch":
        from ivlm_core.cli.batch import run_batch

        return run_batch
    from ivlm_core.cli.evaluate import run_eval

    return run_eval


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _runner(args.command)(args)
    except IvlmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main"]
