"""The one `ivlm` command: subcommands, consistent arguments, info/convert/predict, batch (folder and rosbag2)
and eval on a tiny synthetic DAMON split, with the tiny random checkpoints and the synthetic body models."""

from __future__ import annotations

import ast
import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ivlm_core.cli import build_parser, main
from ivlm_core.errors import InvalidInputError

REPO = Path(__file__).resolve().parents[1]
BAG = REPO / "test" / "data" / "ivlm_sample_bag"
SUBCOMMANDS = ("info", "convert", "predict", "reconstruct", "batch", "eval")
MODEL_OPTIONS = ("--checkpoint", "--clip-dir", "--body-model-dir", "--reference-data-dir", "--device", "--dtype",
                 "--max-new-tokens", "--out")


def _photo(path: Path, h: int = 40, w: int = 56, seed: int = 0) -> Path:
    image = (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(path)
    return path


# ------------------------------------------------------------------------------------------------ the command
def test_help_lists_every_subcommand_and_shows_defaults() -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = subprocess.run([sys.executable, "-m", "ivlm_core.cli", "--help"], capture_output=True, text=True,
                         env=env, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr
    listed = re.findall(r"^    (\w+)\s", run.stdout, flags=re.MULTILINE)
    assert set(SUBCOMMANDS) <= set(listed), run.stdout
    batch_help = subprocess.run([sys.executable, "-m", "ivlm_core.cli", "batch", "--help"], capture_output=True,
                                text=True, env=env, timeout=120).stdout  # fmt: skip
    flat = " ".join(batch_help.split())
    for shown in ("(default: auto)", "(default: 512)", "(default: human)", "(default: ivlm_batch)"):
        assert shown in flat, batch_help


def _options(command: str) -> dict[str, object]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return {opt: action for action in sub.choices[command]._actions for opt in action.option_strings}


def test_model_subcommands_share_argument_names_defaults_and_choices() -> None:
    reference = _options("predict")
    for command in ("reconstruct", "batch", "eval"):
        options = _options(command)
        for name in MODEL_OPTIONS:
            assert name in options, f"ivlm {command} lacks {name}"
            if name not in ("--out", "--checkpoint"):
                assert options[name].default == reference[name].default, (command, name)
                assert options[name].choices == reference[name].choices, (command, name)
    assert _options("info")["--checkpoint"].required and _options("convert")["--checkpoint"].required


def test_setup_installs_the_one_ivlm_console_script() -> None:
    tree = ast.parse((REPO / "setup.py").read_text())
    scripts = next(ast.literal_eval(k.value)["console_scripts"] for node in ast.walk(tree)
                   if isinstance(node, ast.Call) for k in node.keywords if k.arg == "entry_points")  # fmt: skip
    commands = dict(entry.replace(" ", "").split("=") for entry in scripts)
    assert commands["ivlm"] == "ivlm_core.cli:main" and "ivlm-model" not in commands
    assert not (REPO / "ivlm_core" / "model" / "cli.py").exists()


def test_info_convert_predict(tmp_path: Path, tiny_checkpoints, tiny_body_assets, capsys) -> None:
    ckpt = tiny_checkpoints["Gen"]
    assert main(["info", "--checkpoint", str(ckpt), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["token_type"] == "Gen" and info["weights_format"] == "bin" and info["shards"] == 3
    assert info["params"]["ignored_rotary_buffers"] > 0 and info["clip"]["params"] > 0

    assert main(["convert", "--checkpoint", str(ckpt), "--out", str(tmp_path / "safe")]) == 0
    assert (tmp_path / "safe" / "model.safetensors.index.json").is_file()
    capsys.readouterr()

    image = _photo(tmp_path / "cup__frame.png")
    body_dir = tiny_body_assets[2]
    rc = main(["predict", "--checkpoint", str(tmp_path / "safe"), "--image", str(image), "--body-model-dir",
               str(body_dir), "--out", str(tmp_path / "out"), "--device", "cpu",
               "--rerun", str(tmp_path / "predict.rrd")])  # fmt: skip
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["object"] == "cup" and summary["found"] and summary["body_parts"] == ["hands"]
    assert summary["answer_status"] == "contact"
    if importlib.util.find_spec("rerun") is not None:  # optional extra (requirements-viz.txt)
        from ivlm_core.testing.rerun_readback import rrd_rows

        rows = rrd_rows(tmp_path / "predict.rrd")
        assert [stamp for stamp, _ in rows["/world/camera/image"]] == [0]  # a photo has no stamp: frame 0
        ((_, components),) = rows["/world/body"]
        assert "Mesh3D:vertex_colors" in components  # the SMPL-X mesh coloured by contact
    with np.load(tmp_path / "out" / "cup__frame_hcontact_vertices.npz") as npz:
        assert npz["pred_contact_3d_smplh"].ndim == 2 and npz["pred_contact_3d_smplx"].ndim == 1
        assert npz["view_logits"].shape[0] == 4
    for name in ("cup__frame_hcontact_views.png", "cup__frame_hcontact_smplx.ply", "cup__frame_hcontact_smplx.glb"):
        assert (tmp_path / "out" / name).is_file(), name
    assert main(["predict", "--checkpoint", str(ckpt), "--image", str(image), "--out", str(tmp_path / "o2")]) == 2
    assert "--body-model-dir" in capsys.readouterr().err  # no human assets: the error says what to pass


# ------------------------------------------------------------------------------------------------ batch
def test_batch_on_a_folder_counts_and_reports_every_frame(tmp_path: Path, tiny_checkpoints, tiny_body_assets,
                                                          capsys) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    _photo(photos / "cup__one.png")
    _photo(photos / "bottle__two.jpg", seed=1)
    _photo(photos / "no_object.png", seed=2)
    (photos / "broken__three.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    rc = main(["batch", "--checkpoint", str(tiny_checkpoints["Gen"]), "--input", str(photos), "--body-model-dir",
               str(tiny_body_assets[2]), "--device", "cpu", "--max-new-tokens", "16", "--out", str(out)])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 1  # two frames failed, and said so
    rows = {row["frame"]: row for row in csv.DictReader((out / "summary.csv").open())}
    assert set(rows) == {"cup__one", "bottle__two", "no_object", "broken__three"}
    for stem, obj in (("cup__one", "cup"), ("bottle__two", "bottle")):
        assert rows[stem]["status"] == "ok" and rows[stem]["object"] == obj
        if rows[stem]["found"] == "True":
            assert (out / f"{stem}_hcontact_vertices.npz").is_file() and (out / f"{stem}_hcontact_views.png").is_file()
            assert (out / f"{stem}_hcontact_smplx.glb").is_file() and (out / f"{stem}_hcontact_smplx.ply").is_file()
            assert int(rows[stem]["contact_vertices"]) >= 0
    assert rows["no_object"]["status"].startswith("error: no object")
    broken = rows["broken__three"]["status"]
    assert broken.startswith("error:") and "not a readable image" in broken
    assert "2 of 4 frames done, 2 failed" in captured.out


def test_batch_on_the_sample_rosbag2_takes_objects_from_the_query_topic(tmp_path: Path, tiny_checkpoints,
                                                                         tiny_body_assets) -> None:
    manifest = json.loads((BAG / "frames.json").read_text())
    out = tmp_path / "out"
    args = ["batch", "--checkpoint", str(tiny_checkpoints["Gen"]), "--input", str(BAG), "--body-model-dir",
            str(tiny_body_assets[2]), "--device", "cpu", "--max-new-tokens", "16", "--out", str(out)]
    assert main(args) == 2  # two image topics in this bag: it asks which one
    rc = main([*args, "--image-topic", manifest["topics"]["compressed"], "--query-topic",
               manifest["topics"]["query"], "--mcap", str(out / "mcap"),
               "--rerun", str(out / "batch.rrd")])  # fmt: skip
    assert rc == 0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["frame"] for r in rows] == ["frame_000000", "frame_000001", "frame_000002"]
    assert [r["object"] for r in rows] == [f["object_query"] for f in manifest["frames"]]
    assert [int(r["stamp_ns"]) for r in rows] == [f["stamp_sec"] * 10**9 + f["stamp_nanosec"]
                                                  for f in manifest["frames"]]  # fmt: skip
    assert all(r["status"] == "ok" for r in rows)
    _check_batch_recordings(out, manifest, [r["found"] == "True" for r in rows])


def _check_batch_recordings(out: Path, manifest: dict, found: list[bool]) -> None:
    """--mcap and --rerun of a bag batch: one entry per bag frame, at the bag image's stamp."""
    from rosbags.rosbag2 import Reader

    from ivlm_core.mcap_writer import ros2_typestore

    stamps = [f["stamp_sec"] * 10**9 + f["stamp_nanosec"] for f in manifest["frames"]]
    typestore, seen = ros2_typestore(), {}
    with Reader(out / "mcap") as reader:
        for connection, _, raw in reader.messages():
            msg = typestore.deserialize_cdr(raw, connection.msgtype)
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            seen.setdefault(connection.topic, []).append(stamp)
    assert seen["/camera/color/image_raw"] == stamps
    with_contact = [stamp for stamp, ok in zip(stamps, found) if ok]  # NoContactFound frames have no contact
    assert seen.get("/ivlm/hcontact_views", []) == with_contact
    assert seen.get("/ivlm/human_contact", []) == with_contact
    if importlib.util.find_spec("rerun") is not None:  # optional extra (requirements-viz.txt)
        from ivlm_core.testing.rerun_readback import rrd_rows

        rows = rrd_rows(out / "batch.rrd")
        assert [stamp for stamp, _ in rows["/world/camera/image"]] == stamps


# ------------------------------------------------------------------------------------------------ eval (DAMON)
def _smplh_mesh(body_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from ivlm_core.body.models import load_body_model, posed_mesh

    vertices, faces = posed_mesh(load_body_model(body_dir, "smplh"))
    return vertices[0].detach().numpy().astype(np.float64), np.asarray(faces)


def _object_array(items: list) -> np.ndarray:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


@pytest.fixture(scope="module")
def damon_split(tmp_path_factory: pytest.TempPathFactory, tiny_body_assets) -> dict:
    """A 2-image, 3-sample DAMON split on the synthetic SMPL-H mesh, with hand-checkable vertex choices."""
    root = tmp_path_factory.mktemp("damon") / "test"
    (root / "images").mkdir(parents=True)
    vertices, faces = _smplh_mesh(tiny_body_assets[2])
    a, b, x = (int(v) for v in faces[0])  # one triangle: a-b, a-x and b-x are mesh edges
    far = int(np.argmax(np.linalg.norm(vertices - vertices[a], axis=1)))
    e, f = next((int(u), int(v)) for u, v, _ in faces if not {int(u), int(v)} & {a, b, x, far})
    assert len({a, b, x, far, e, f}) == 6
    for i, name in enumerate(("img_001.jpg", "img_002.jpg")):
        image = (np.random.default_rng(i).random((48, 64, 3)) * 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / name, format="JPEG")
    np.save(root / "imgname.npy", np.array(["datasets/damon/images/img_001.jpg", "datasets/damon/images/img_002.jpg"]))
    np.save(root / "contact_label_objectwise.npy", _object_array([
        {"cup": np.array([a, b]), "chair": [far]},
        {"supporting": [e, f], "bottle": []},  # no contact: not a sample (as in the reference)
    ]), allow_pickle=True)  # fmt: skip
    return {"root": root, "vertices": vertices, "a": a, "b": b, "x": x, "far": far, "e": e, "f": f}


def test_damon_split_reading(damon_split) -> None:
    from ivlm_core.datasets.damon import load_damon_split

    samples = load_damon_split(damon_split["root"])
    assert [(s.image_id, s.object_name, s.query) for s in samples] == [
        ("img_001.jpg", "cup", "cup"), ("img_001.jpg", "chair", "chair"),
        ("img_002.jpg", "supporting", "support object or ground")]  # fmt: skip
    assert samples[0].image_path == damon_split["root"] / "images" / "img_001.jpg"


def test_damon_labels_cannot_run_code(tmp_path: Path) -> None:
    from ivlm_core.datasets.damon import load_damon_split

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    np.save(tmp_path / "imgname.npy", np.array(["a.jpg"]))
    np.save(tmp_path / "contact_label_objectwise.npy", _object_array([{"cup": Payload()}]), allow_pickle=True)
    with pytest.raises(InvalidInputError, match=r"refusing to load 'io\.open'"):
        load_damon_split(tmp_path)
    assert not marker.exists()


def _printed(stdout: str, line: str, name: str) -> float:
    match = re.search(rf"^{line}\b.*?\b{name} ([0-9.]+|nan)", stdout, flags=re.MULTILINE)
    assert match, stdout
    return float(match.group(1))


def test_eval_rescores_predictions_to_hand_computed_values(damon_split, tiny_body_assets, tmp_path: Path,
                                                           capsys) -> None:
    """Hand-made predictions: every metric worked out by hand below."""
    s, verts = damon_split, damon_split["vertices"]
    pred = np.full((3, len(verts)), 0.2, dtype=np.float32)  # 0.2 < 0.5: no contact
    pred[0, [s["a"], s["x"]]] = 0.9  # cup: GT {a, b} -> TP a, FP x, FN b
    pred[2, [s["e"], s["f"]]] = 0.7  # supporting: exactly right; chair (sample 1): nothing predicted
    np.savez(tmp_path / "predictions.npz", pred=pred, image_id=np.array(["img_001.jpg"] * 2 + ["img_002.jpg"]),
             object=np.array(["cup", "chair", "supporting"]))  # fmt: skip
    rc = main(["eval", "--dataset", str(s["root"]), "--predictions", str(tmp_path / "predictions.npz"),
               "--body-model-dir", str(tiny_body_assets[2]), "--out", str(tmp_path / "out")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out

    def dist(i: str, j: str) -> float:  # an edge of the mesh: its geodesic is its length
        return float(np.linalg.norm(verts[s[i]] - verts[s[j]]))

    # semantic, per sample (P, R, F1): cup (1/2, 1/2, 1/2), chair (0, 0, 0), supporting (1, 1, 1)
    expected = {
        ("semantic", "F1"): 0.5, ("semantic", "precision"): 0.5, ("semantic", "recall"): 0.5,
        # binary: image 1 = pred {a, x} vs GT {a, b, far}: TP 1, FP 1, FN 2 -> F1 = 2*(1/2)(1/3)/(5/6) = 0.4;
        # image 2 exact -> F1 1. Mean F1 0.7; micro P = 3/4, R = 3/5.
        ("binary", "F1"): 0.7, ("binary", "precision"): 0.75, ("binary", "recall"): 0.6,
        # pred->gt: cup = (0 + min(|x-a|, |x-b|)) / 2, chair 0 (nothing predicted), supporting 0
        ("geodesic", "error"): min(dist("x", "a"), dist("x", "b")) / 2 / 3,
        # gt->pred: cup = (0 + min(|b-a|, |b-x|)) / 2, chair undefined (skipped), supporting 0
        ("geodesic", "missed"): min(dist("b", "a"), dist("b", "x")) / 2 / 2,
    }  # fmt: skip
    for (line, name), value in expected.items():
        assert _printed(out, line, name) == pytest.approx(value, abs=5e-5), (line, name)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["semantic"] == pytest.approx({"f1": 0.5, "precision": 0.5, "recall": 0.5})
    assert metrics["binary"] == pytest.approx({"f1": 0.7, "precision": 0.75, "recall": 0.6})
    assert metrics["geodesic"]["pred_to_gt"] == pytest.approx(expected[("geodesic", "error")], rel=1e-9)
    assert metrics["geodesic"]["gt_to_pred"] == pytest.approx(expected[("geodesic", "missed")], rel=1e-9)
    assert metrics["samples"] == 3 and metrics["images"] == 2
    rows = list(csv.DictReader((tmp_path / "out" / "samples.csv").open()))
    assert [float(r["f1"]) for r in rows] == [0.5, 0.0, 1.0]


def test_eval_runs_the_model_and_scores_what_it_predicted(damon_split, tiny_checkpoints, tiny_body_assets,
                                                          tmp_path: Path, capsys) -> None:
    """End to end with the tiny model: the printed metrics are those of its saved predictions, recomputed here
    with plain set arithmetic and an all-pairs shortest path (not ivlm's metric code)."""
    import trimesh
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import shortest_path

    s = damon_split
    rc = main(["eval", "--checkpoint", str(tiny_checkpoints["Gen"]), "--dataset", str(s["root"]),
               "--body-model-dir", str(tiny_body_assets[2]), "--device", "cpu", "--max-new-tokens", "16",
               "--out", str(tmp_path / "out")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    with np.load(tmp_path / "out" / "predictions.npz") as data:
        pred = data["pred"] >= 0.5
        assert list(data["object"]) == ["cup", "chair", "supporting"]
    gt_sets = [{s["a"], s["b"]}, {s["far"]}, {s["e"], s["f"]}]
    pred_sets = [set(np.flatnonzero(p).tolist()) for p in pred]

    def prf(p: set, g: set) -> tuple[float, float, float]:
        tp = len(p & g)
        precision = tp / len(p) if p else 0.0
        recall = tp / len(g) if g else 0.0
        return precision, recall, (2 * precision * recall / (precision + recall) if tp else 0.0)

    per_sample = np.array([prf(p, g) for p, g in zip(pred_sets, gt_sets)])
    assert _printed(out, "semantic", "precision") == pytest.approx(per_sample[:, 0].mean(), abs=5e-5)
    assert _printed(out, "semantic", "recall") == pytest.approx(per_sample[:, 1].mean(), abs=5e-5)
    assert _printed(out, "semantic", "F1") == pytest.approx(per_sample[:, 2].mean(), abs=5e-5)
    images = [(pred_sets[0] | pred_sets[1], gt_sets[0] | gt_sets[1]), (pred_sets[2], gt_sets[2])]
    assert _printed(out, "binary", "F1") == pytest.approx(np.mean([prf(p, g)[2] for p, g in images]), abs=5e-5)
    tp = sum(len(p & g) for p, g in images)
    assert _printed(out, "binary", "precision") == pytest.approx(
        tp / max(1, sum(len(p) for p, _ in images)), abs=5e-5)
    assert _printed(out, "binary", "recall") == pytest.approx(tp / sum(len(g) for _, g in images), abs=5e-5)

    mesh = trimesh.Trimesh(*_smplh_mesh(tiny_body_assets[2]), process=False)
    edges, lengths = mesh.edges_unique, mesh.edges_unique_length
    n = len(mesh.vertices)
    graph = coo_matrix((np.r_[lengths, lengths], (np.r_[edges[:, 0], edges[:, 1]], np.r_[edges[:, 1], edges[:, 0]])),
                       shape=(n, n)).tocsr()  # fmt: skip
    errors = []
    for p, g in zip(pred_sets, gt_sets):
        if not p:
            errors.append(0.0)
            continue
        d = shortest_path(graph, directed=False, indices=sorted(p))
        errors.append(float(d[:, sorted(g)].min(axis=1).mean()))
    assert _printed(out, "geodesic", "error") == pytest.approx(np.mean(errors), abs=5e-5)
