"""`ivlm batch`: one task on every photo of a folder or every image of a rosbag2 topic.

Per frame the products of `ivlm predict` (`<stem>_...npz/.png/.glb/.ply`; bag frames are `frame_000000`, ...)
and one row of `summary.csv` (frame, source, stamp, object, status, found, contact vertices, answer, time,
files). A frame that fails (unreadable image, no object, model error) gets its row with the reason and the run
goes on; the exit code is 1 when any frame failed.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

from ivlm_core.cli.outputs import close_sinks, open_sinks, write_frame
from ivlm_core.errors import InvalidInputError, IvlmError, MissingAssetError

SUMMARY_NAME = "summary.csv"
SUMMARY_COLUMNS = ("frame", "source", "stamp_ns", "object", "task", "status", "found", "contact_vertices",
                   "text", "total_s", "files")


def add_batch_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path,
                        help="a folder of photos, or a rosbag2 (folder with metadata.yaml, or its .db3/.mcap)")
    parser.add_argument("--object", default=None,
                        help="object for every frame (default: the photo's '<object>__' file prefix, or the "
                             "bag's --query-topic)")
    parser.add_argument("--image-topic", default=None,
                        help="bag topic of sensor_msgs/Image or CompressedImage (default: the bag's only one)")
    parser.add_argument("--query-topic", default=None,
                        help="bag std_msgs/String topic naming the object; each image takes the latest before it")


def open_frames(args: argparse.Namespace):
    from ivlm_core.datasets.frames import bag_frames, folder_frames, is_rosbag2

    path = Path(args.input)
    if not path.exists():
        raise MissingAssetError("batch input", path, "Pass a folder of photos or a rosbag2.")
    if is_rosbag2(path):
        return bag_frames(path, args.image_topic, args.query_topic, args.object)
    if path.is_dir():
        if args.image_topic or args.query_topic:
            raise InvalidInputError(f"'{path}' is a folder of photos, not a rosbag2: drop --image-topic/--query-topic")
        return folder_frames(path, args.object)
    raise InvalidInputError(f"--input '{path}' is neither a folder of photos nor a rosbag2")


def run_batch(args: argparse.Namespace) -> int:
    from ivlm_core.cli.predict import ContactPredictor
    from ivlm_core.progress import ProgressReporter

    source = open_frames(args)  # inputs are checked before the (long) model load
    predictor = ContactPredictor(args)
    sinks = open_sinks(args)
    summary_path = Path(args.out) / SUMMARY_NAME
    done = failed = 0
    with summary_path.open("w", newline="") as handle, \
            ProgressReporter(f"batch ({source.kind})", source.count, unit="frame") as progress:
        table = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS)
        table.writeheader()
        for frame in source.frames:
            row = {"frame": frame.stem, "source": frame.source, "stamp_ns": frame.stamp_ns, "object": frame.object_name,
                   "task": args.task, "status": "ok"}
            t0 = time.perf_counter()
            try:
                if frame.error is not None:
                    raise InvalidInputError(frame.error)
                if frame.object_name is None:
                    raise InvalidInputError("no object for this frame: pass --object (or --query-topic for a bag, "
                                            "or name photos <object>__<anything>.png)")
                output, summary = predictor.predict(frame.image, frame.object_name, frame.stem, frame.stamp_ns)
                written = write_frame(sinks, output)
                row.update(found=summary["found"], contact_vertices=summary["contact_vertices"],
                           text=summary["text"], files=";".join(str(p) for p in written.values()))
                done += 1
            except IvlmError as err:
                row["status"] = f"error: {err}"
                failed += 1
                print(f"{frame.source}: {err}", file=sys.stderr)
            row["total_s"] = round(time.perf_counter() - t0, 4)
            table.writerow(row)
            handle.flush()
            progress.advance(1)
    close_sinks(sinks)
    print(f"batch: {done} of {done + failed} frames done, {failed} failed; summary: {summary_path}")
    return 1 if failed else 0
