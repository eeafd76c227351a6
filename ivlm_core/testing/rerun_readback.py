"""Read a Rerun .rrd back for the tests: {entity path: [(image stamp ns, component names)]} per logged row.

Needs the optional rerun-sdk (imported when called)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path


def rrd_rows(path: Path) -> dict[str, list[tuple[int, list[str]]]]:
    import rerun.chunk

    rows: dict[str, list[tuple[int, list[str]]]] = defaultdict(list)
    for chunk in rerun.chunk.RrdReader(path).stream():
        if "image_stamp" not in chunk.timeline_names:
            continue
        batch = chunk.to_record_batch()
        stamps = batch.column("image_stamp").cast("int64").to_pylist()
        components = [n for n in batch.schema.names if ":" in n]
        for stamp in stamps:
            rows[chunk.entity_path].append((int(stamp), components))
    return rows
