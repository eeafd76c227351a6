"""`ivlm eval --format piad` on a tiny synthetic split in PIAD's layout: reading it (and its errors), re-scoring
hand-made predictions to hand-computed SIM/MAE/AUC/aIoU, and the tiny affordance model end to end on shipped and
ivlm-made point maps."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ivlm_core.cli import main
from ivlm_core.errors import InvalidInputError, MissingAssetError

PREFIX = "data/piad_ocontact_seen"  # the reference lists paths relative to its working directory
IMAGES = ("Img/Test/Mug/grasp/Img_Test_Mug_grasp_1.jpg", "Img/Test/Mug/contain/Img_Test_Mug_contain_1.jpg",
          "Img/Test/Bag/lift/Img_Test_Bag_lift_1.jpg")  # fmt: skip
POINTS = ("Point/Test/Mug/Point_Test_Mug_3.txt", "Point/Test/Mug/Point_Test_Mug_3.txt",
          "Point/Test/Bag/Point_Test_Bag_1.txt")  # fmt: skip
XYZ = np.array([[0.5, 0.0, 0.0], [-0.5, 0.0, 0.0], [0.0, 0.5, 0.0], [0.0, -0.5, 0.2]])
GT = {0: [1, 1, 0, 0], 1: [0, 0, 0, 0], 2: [0, 0.5, 1, 0.2]}  # grasp / contain of the mug, lift of the bag
VIEWS = ("frontleft", "frontright", "backleft", "backright")
SHIPPED_SIZE = 32


def _point_file(path: Path, name: str, xyz: np.ndarray, columns: dict[str, list[float]]) -> None:
    from ivlm_core.datasets.piad import PIAD_AFFORDANCES

    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for k, point in enumerate(xyz):
        scores = np.zeros(len(PIAD_AFFORDANCES))
        for affordance, values in columns.items():
            scores[PIAD_AFFORDANCES.index(affordance)] = values[k]
        lines.append(" ".join(["1a2b3c", name, *(f"{v:.6f}" for v in (*point, *scores))]))
    path.write_text("\n".join(lines) + "\n")


def _shipped_maps() -> list[np.ndarray]:
    """Hand-made pixel->point maps of the mug: point 3 is in no view (so it must come out exactly 0)."""
    maps = []
    for v in range(4):
        mapping = np.full((SHIPPED_SIZE, SHIPPED_SIZE), -1, np.int64)
        mapping[4:12, 4 + v : 12 + v] = 0
        mapping[14:20, 10:26] = 1
        if v % 2 == 0:
            mapping[22:30, 2:10] = 2
        maps.append(mapping)
    return maps


@pytest.fixture(scope="module")
def piad_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 samples: mug/grasp (shipped renders + maps), mug/contain (single-class GT, none shipped), bag/lift."""
    root = tmp_path_factory.mktemp("piad") / "piad_ocontact_seen"
    for i, rel in enumerate(IMAGES):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.random.default_rng(i).random((40, 56, 3)) * 255).astype(np.uint8)).save(root / rel)
    (root / "Img_Test.txt").write_text("".join(f"./{PREFIX}/{rel}\n" for rel in IMAGES))
    (root / "Point_Test.txt").write_text("".join(f"{PREFIX}/{rel}\n" for rel in POINTS))
    _point_file(root / POINTS[0], "Mug", XYZ, {"grasp": GT[0], "contain": GT[1]})
    _point_file(root / POINTS[2], "Bag", XYZ[::-1], {"lift": GT[2]})
    shipped = root / "rendered_points_heatmap_1025_color" / "Test" / "Mug" / "grasp"
    shipped.mkdir(parents=True)
    for view, mapping in zip(VIEWS, _shipped_maps()):
        np.savez(shipped / f"p2pmap_Mug_3_grasp_{view}.npz", mapping=mapping)
        render = np.full((SHIPPED_SIZE, SHIPPED_SIZE, 3), 255, np.uint8)
        render[mapping >= 0] = np.array([40, 120, 200], np.uint8) + 20 * mapping[mapping >= 0, None].astype(np.uint8)
        Image.fromarray(render).save(shipped / f"sam_Mug_3_grasp_{view}.png")
        Image.fromarray(np.zeros((SHIPPED_SIZE, SHIPPED_SIZE), np.uint8)).save(shipped / f"mask_Mug_3_grasp_{view}.png")
    return root


@pytest.fixture(scope="module")
def tiny_affordance_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ivlm_core.testing.tiny_checkpoint import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_afford") / "oafford", "Gen", affordance=True)


# ------------------------------------------------------------------------------------------------ the layout
def test_piad_split_reading(piad_split: Path) -> None:
    from ivlm_core.datasets.piad import ground_truth, load_piad_split, read_point_file

    samples = load_piad_split(piad_split)
    assert [(s.object_name, s.affordance, s.query, s.point_index) for s in samples] == [
        ("Mug", "grasp", "mug", "3"), ("Mug", "contain", "mug", "3"), ("Bag", "lift", "bag", "1")]  # fmt: skip
    assert samples[0].image_path == piad_split / IMAGES[0] and samples[2].point_path == piad_split / POINTS[2]
    assert samples[0].missing_shipped_files() == [] and len(samples[1].missing_shipped_files()) == 8
    points, scores = read_point_file(samples[2].point_path)
    np.testing.assert_allclose(points, XYZ[::-1])
    assert ground_truth(scores, "lift").tolist() == pytest.approx(GT[2])


def test_piad_errors_name_the_missing_or_malformed_file(piad_split: Path, tmp_path: Path) -> None:
    from ivlm_core.datasets.piad import load_piad_split, read_point_file

    with pytest.raises(MissingAssetError, match=r"Point_Test\.txt"):
        (tmp_path / "Img_Test.txt").write_text("a/Img_Test_Mug_grasp_1.jpg\n")
        load_piad_split(tmp_path)
    (tmp_path / "Point_Test.txt").write_text("a/Point_Test_Mug_1.txt\n")
    with pytest.raises(MissingAssetError, match=r"Img_Test_Mug_grasp_1\.jpg"):
        load_piad_split(tmp_path)
    (tmp_path / "Img_Test.txt").write_text("a/Img_Test_Mug_hold_1.jpg\n")
    with pytest.raises(InvalidInputError, match="'hold' is not a PIAD affordance"):
        load_piad_split(tmp_path)
    (tmp_path / "Point_Test.txt").write_text("x\ny\n")
    with pytest.raises(InvalidInputError, match=r"1 photos but Point_Test\.txt 2"):
        load_piad_split(tmp_path)
    bad = tmp_path / "Point_Test_Mug_1.txt"
    bad.write_text("id Mug 0.1 0.2 0.3 1.0\n")
    with pytest.raises(InvalidInputError, match=r"Point_Test_Mug_1.txt:1: expected 22 columns"):
        read_point_file(bad)
    out = tmp_path / "out"
    rc = main(["eval", "--format", "piad", "--dataset", str(piad_split), "--point-maps", "shipped",
               "--predictions", str(tmp_path / "none.npz"), "--out", str(out)])  # fmt: skip
    assert rc == 2  # the missing predictions file, reported, not raised


def _printed(stdout: str, line: str, name: str) -> float:
    match = re.search(rf"^{line}\b.*?\b{name} ([0-9.]+|nan)", stdout, flags=re.MULTILINE)
    assert match, stdout
    return float(match.group(1))


def test_eval_piad_rescores_predictions_to_hand_computed_values(piad_split: Path, tmp_path: Path, capsys) -> None:
    """Hand-made predictions for the 4-point clouds; every metric worked out by hand below."""
    preds = [np.array([0.8, 0.4, 0.6, 0.0]), np.array([0.5, 0.5, 0.0, 0.0]), np.array([0.1, 0.9, 0.7, 0.3])]
    keys = [f"{Path(i).name}|{Path(p).name}" for i, p in zip(IMAGES, POINTS)]
    np.savez(tmp_path / "predictions.npz", pred=np.concatenate(preds).astype(np.float32), offsets=[0, 4, 8, 12],
             sample=np.array(keys))  # fmt: skip
    out = tmp_path / "out"
    rc = main(["eval", "--format", "piad", "--dataset", str(piad_split), "--predictions",
               str(tmp_path / "predictions.npz"), "--out", str(out)])  # fmt: skip
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    # mug/grasp, GT {0, 1}: SIM = min(pred/1.8, gt/2) summed = (0.8 + 0.4)/1.8; MAE = (0.2+0.6+0.6+0)/4;
    #   AUC: positives 0.8, 0.4 vs negatives 0.6, 0.0 win 3 of 4 pairs; aIoU over t = k/19: t=0 -> 2/4,
    #   k=1..7 (t <= 0.4) -> 2/3, k=8..11 (<= 0.6) -> 1/3, k=12..15 (<= 0.8) -> 1/2, k=16..19 -> 0
    s0 = {"sim": 1.2 / 1.8, "mae": 1.4 / 4, "auc": 0.75, "aiou": (0.5 + 7 * 2 / 3 + 4 / 3 + 4 * 0.5) / 20}
    # mug/contain, GT all 0: SIM 0, MAE (0.5+0.5)/4; one class -> no AUC / aIoU
    s1 = {"sim": 0.0, "mae": 0.25}
    # bag/lift, GT [0, .5, 1, .2] (binary {1, 2}): SIM = 0.5/1.7 + min(0.35, 1/1.7) + 0.2/1.7; MAE 0.9/4;
    #   AUC 1 (0.9, 0.7 above 0.1, 0.3); aIoU: k=0,1 (t <= 0.1) -> 1/2, k=2..5 (<= 0.3) -> 2/3,
    #   k=6..13 (<= 0.7) -> 1, k=14..17 (<= 0.9) -> 1/2, k=18,19 -> 0
    s2 = {"sim": 0.7 / 1.7 + 0.35, "mae": 0.9 / 4, "auc": 1.0, "aiou": (2 * 0.5 + 4 * 2 / 3 + 8 + 4 * 0.5) / 20}
    expected = {
        ("overall", "SIM"): (s0["sim"] + s1["sim"] + s2["sim"]) / 3,
        ("overall", "MAE"): (s0["mae"] + s1["mae"] + s2["mae"]) / 3,
        ("overall", "AUC"): (s0["auc"] + s2["auc"]) / 2,
        ("overall", "aIoU"): (s0["aiou"] + s2["aiou"]) / 2,
        ("reference", "SIM"): (s0["sim"] + s2["sim"]) / 2,  # the reference also drops single-class samples here
        ("reference", "MAE"): (s0["mae"] + s2["mae"]) / 2,
        ("affordance grasp", "SIM"): s0["sim"], ("affordance grasp", "aIoU"): s0["aiou"],
        ("affordance contain", "MAE"): s1["mae"], ("affordance contain", "AUC"): float("nan"),
        ("affordance lift", "AUC"): s2["auc"], ("affordance lift", "aIoU"): s2["aiou"],
    }  # fmt: skip
    for (line, name), value in expected.items():
        assert _printed(stdout, line, name) == pytest.approx(value, abs=5e-5, nan_ok=True), (line, name)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["sim"] == pytest.approx(expected[("overall", "SIM")], rel=1e-6)
    assert metrics["overall"]["aiou"] == pytest.approx(expected[("overall", "aIoU")], rel=1e-6)
    assert metrics["overall"]["ranked_samples"] == 2 and metrics["per_affordance"]["contain"]["ranked_samples"] == 0
    rows = list(csv.DictReader((out / "samples.csv").open()))
    assert [r["affordance"] for r in rows] == ["grasp", "contain", "lift"]
    assert [float(r["mae"]) for r in rows] == pytest.approx([s0["mae"], s1["mae"], s2["mae"]])


def _lift_by_hand(heat: np.ndarray, maps: list[np.ndarray], n: int) -> np.ndarray:
    """The reference's loops: per view mean per point, then mean over the views that see the point."""
    total, views = np.zeros(n), np.zeros(n)
    for h, m in zip(heat, maps):
        for point in range(n):
            pixels = h[m == point]
            if pixels.size:
                total[point] += pixels.mean()
                views[point] += 1
    return np.where(views > 0, total / np.maximum(views, 1), 0.0)


def test_eval_piad_runs_the_tiny_affordance_model(piad_split: Path, tiny_affordance_checkpoint: Path, tmp_path: Path,
                                                  capsys) -> None:
    """End to end: shipped maps for the first sample, ivlm's splats for the others; the predictions are the
    hand lifting of the model's heat maps, and the printed metrics those of the predictions."""
    from ivlm_core.datasets.frames import read_image
    from ivlm_core.datasets.piad import load_piad_split
    from ivlm_core.geometry.point_lifting import PointMaps
    from ivlm_core.metrics.affordance import evaluate_affordance
    from ivlm_core.model.checkpoint import load_checkpoint

    out = tmp_path / "out"
    rc = main(["eval", "--format", "piad", "--checkpoint", str(tiny_affordance_checkpoint), "--dataset",
               str(piad_split), "--device", "cpu", "--max-new-tokens", "24", "--render-size", "48",
               "--inference-type", "forward", "--out", str(out)])  # fmt: skip
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    rows = list(csv.DictReader((out / "samples.csv").open()))
    assert [r["maps"] for r in rows] == ["shipped", "ivlm", "ivlm"]
    assert rows[0]["answer"].startswith("The affordance type is grasp") and "lift" in rows[2]["answer"]
    with np.load(out / "predictions.npz") as data:
        preds = np.split(data["pred"], data["offsets"][1:-1])
    assert preds[0][3] == 0.0 and all(((p >= 0) & (p <= 1)).all() for p in preds)

    # the same sample through the predictor: heat maps lifted by hand with the shipped maps give the CLI's values
    model = load_checkpoint(tiny_affordance_checkpoint, device="cpu")
    sample = load_piad_split(piad_split)[0]
    renders = np.stack([read_image(sample.shipped_file("sam", v)) for v in VIEWS])
    result = model.predict_point_affordance(read_image(sample.image_path), "mug", renders,
                                            PointMaps.from_arrays(_shipped_maps(), 4), answer_affordance="grasp")
    np.testing.assert_allclose(_lift_by_hand(result.heat_maps, _shipped_maps(), 4), preds[0], atol=1e-6)
    assert result.heat_maps.shape == (4, SHIPPED_SIZE, SHIPPED_SIZE)
    rendered = renders.sum(-1) < 765
    assert ((result.heat_maps[rendered] > 0) & (result.heat_maps[rendered] < 1)).all()

    gts = [np.array(GT[i], dtype=np.float32) for i in range(3)]
    summary = evaluate_affordance(preds, gts)
    for name, value in (("SIM", summary.sim), ("MAE", summary.mae), ("AUC", summary.auc), ("aIoU", summary.aiou)):
        assert _printed(stdout, "overall", name) == pytest.approx(value, abs=5e-5)

    # generated answers (the tiny model always says grasp) and only shipped maps: the missing files are named
    rc = main(["eval", "--format", "piad", "--checkpoint", str(tiny_affordance_checkpoint), "--dataset",
               str(piad_split), "--device", "cpu", "--point-maps", "shipped",
               "--out", str(tmp_path / "o2")])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 2 and "sam_Mug_3_contain_frontleft.png" in captured.err
    assert torch.get_num_threads() > 0


def test_teacher_forced_answer_follows_the_checkpoint_question_type(tiny_affordance_checkpoint: Path) -> None:
    from ivlm_core.model.checkpoint import load_checkpoint

    model = load_checkpoint(tiny_affordance_checkpoint, device="cpu")

    def decode(ids: list[int]) -> str:  # the decoder puts a space after an added token
        return model.processor.prompt_tokenizer.decode(ids).strip().replace("[SEG] .", "[SEG].")

    assert decode(model.affordance_answer_ids("grasp", "mug")) == (
        "The affordance type is grasp, and the contact region is [SEG].")
    # the other affordance question type of the reference
    model.model.config = dataclasses.replace(model.config, oC_question_type="afford_obj")
    assert decode(model.affordance_answer_ids("grasp", "mug")) == (
        "The affordance type is grasp with mug, and the contact region is [SEG].")
