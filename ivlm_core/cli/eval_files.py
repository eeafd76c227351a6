"""The files of an `ivlm eval` run (DAMON and PIAD alike): `predictions.npz` (re-scored with --predictions),
`samples.csv` (per-sample scores) and `metrics.json`, read and written one way."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from ivlm_core.errors import InvalidInputError, MissingAssetError

METRICS_NAME = "metrics.json"
SAMPLES_NAME = "samples.csv"
PREDICTIONS_NAME = "predictions.npz"


def read_predictions(path: Path, required: set[str], written_by: str) -> dict[str, np.ndarray]:
    """The arrays of a `predictions.npz` an earlier run wrote (no pickles), or an error that says what is wrong."""
    if not path.is_file():
        raise MissingAssetError("predictions file", path, "Pass the predictions.npz an earlier `ivlm eval` wrote.")
    with np.load(path, allow_pickle=False) as data:
        missing = required - set(data.files)
        if missing:
            raise InvalidInputError(f"'{path}' lacks {sorted(missing)}: not a predictions.npz of `{written_by}`")
        return {k: data[k] for k in data.files}


def write_results(out: Path, predictions: dict[str, np.ndarray], fieldnames: list[str], rows: list[dict[str, Any]],
                  metrics: dict[str, Any], summary: str) -> None:
    """The three files of an evaluation in `out` (predictions.npz, samples.csv, metrics.json); prints the summary
    and where the files are."""
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / PREDICTIONS_NAME, **predictions)
    with (out / SAMPLES_NAME).open("w", newline="") as handle:
        table = csv.DictWriter(handle, fieldnames=fieldnames)
        table.writeheader()
        table.writerows(rows)
    (out / METRICS_NAME).write_text(json.dumps(metrics, indent=2) + "\n")
    print(summary)
    print(f"files: {out / METRICS_NAME}, {out / SAMPLES_NAME}, {out / PREDICTIONS_NAME}")
