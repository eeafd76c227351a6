"""`ivlm reconstruct` on a real photo with the tiny joint checkpoint and the synthetic body models."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from ivlm_core.cli import main
from ivlm_core.cli.arguments import object_name_from_image
from ivlm_core.cli.reconstruct import camera_matrix
from ivlm_core.errors import InvalidInputError

REPO = Path(__file__).resolve().parents[1]
PHOTO = Path(__file__).parent / "data" / "samples" / "tennis_racket__serve.png"


@pytest.fixture(scope="module")
def cli_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli_objects")
    trimesh.creation.capsule(height=0.5, radius=0.03, count=[8, 8]).export(root / "racket.obj")
    (root / "objects.yaml").write_text("objects:\n  tennis_racket: {mesh: racket.obj, scale: 1.0}\n")
    # A short object fit keeps the test fast; the reference budget is in config/fitting.yaml.
    (root / "fit.yaml").write_text("iterations: 40\nwarmup_iterations: 10\nstart_candidates_without_pose: 2\n")
    return root


def test_reconstruct_writes_scene_overlay_contacts_and_report(
    tiny_checkpoints, tiny_body_assets, cli_library, tmp_path, capsys
) -> None:
    pytest.importorskip("mediapipe")
    out = tmp_path / "out"
    code = main([
        "reconstruct", "--image", str(PHOTO), "--checkpoint", str(tiny_checkpoints["Gen-Hu-Obj"]),
        "--body-model-dir", str(tiny_body_assets[2]), "--object-library", str(cli_library / "objects.yaml"),
        "--fit-config", str(cli_library / "fit.yaml"), "--device", "cpu", "--max-new-tokens", "16",
        "--box", "230,30,390,170", "--out", str(out), "--rerun", str(out / "scene.rrd"),
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    stem = "tennis_racket__serve"
    paths = {kind: out / f"{stem}_{kind}" for kind in
             ("interaction.glb", "overlay.png", "contacts.npz", "fit_report.json")}
    assert all(path.is_file() for path in paths.values()), sorted(p.name for p in out.iterdir())

    report = json.loads(paths["fit_report.json"].read_text())
    assert report["object_query"] == "tennis_racket"  # parsed from the file name
    assert report["body_placement"]["placed"], report["body_placement"]["status"]
    placement = report["object_placement"]
    assert placement["placed"], placement["status"]
    assert {"loss_mask", "contact_distance_m", "penetration_depth_m", "iterations"} <= set(placement["report"])
    assert set(placement["pose"]["orientation"]) == set("xyzw")
    assert {"load", "human_contact", "object_contact", "body_fit", "object_fit", "export", "total"} <= set(
        report["timings_ms"])

    scene = trimesh.load(paths["interaction.glb"], force="scene")
    assert set(scene.geometry) == {"human", "object"}
    for geometry in scene.geometry.values():
        colours = geometry.visual.vertex_colors
        assert colours.shape == (len(geometry.vertices), 4)
        assert len(np.unique(colours[:, :3], axis=0)) > 1  # contact colouring, not one flat colour

    with Image.open(PHOTO) as photo, Image.open(paths["overlay.png"]) as overlay:
        assert overlay.size == photo.size
        assert not np.array_equal(np.asarray(overlay.convert("RGB")), np.asarray(photo.convert("RGB")))

    with np.load(paths["contacts.npz"]) as data:
        human = data["human_contact"]
        n_body, n_obj = len(data["body_vertices"]), len(data["object_vertices"])
        assert str(data["human_body_model"]) == "smplx" and human.shape == (n_body,)
        np.testing.assert_array_equal(data["pred_contact_3d_smplx"], human)
        assert data["object_contact"].shape == (n_obj,) and data["object_faces"].shape[1] == 3
        assert data["object_rotation"].shape == (3, 3) and data["object_translation"].shape == (3,)
        assert data["object_quaternion_xyzw"].shape == (4,)
        assert np.isclose(np.linalg.norm(data["object_quaternion_xyzw"]), 1.0)
        assert data["object_vertices_camera"].shape == (n_obj, 3) and data["camera_k"].shape == (3, 3)
        for name, size in (("betas", 10), ("global_orient", 3), ("body_pose", 63), ("transl", 3)):
            assert data[f"body_{name}"].shape == (size,)
        assert data["body_faces"].max() < n_body
    assert len(scene.geometry["human"].vertices) == n_body
    if importlib.util.find_spec("rerun") is not None:  # optional extra (requirements-viz.txt)
        from ivlm_core.testing.rerun_readback import rrd_rows

        rows = rrd_rows(out / "scene.rrd")
        for entity in ("/world/camera", "/world/camera/image", "/world/body", "/world/object"):
            assert [stamp for stamp, _ in rows[entity]] == [0], entity


def test_osx_body_without_a_box_still_writes_contacts_and_says_why(
    tiny_checkpoints, tiny_body_assets, cli_library, tmp_path, capsys
) -> None:
    import torch

    from ivlm_core.fitting.body_fit import load_body_layer

    layer = load_body_layer(tiny_body_assets[2])
    with torch.no_grad():
        vertices = layer({"global_orient": torch.tensor([[np.pi, 0.0, 0.0]])}).vertices[0].numpy()
    osx = tmp_path / "osx_human2.npz"
    np.savez(osx, smpl_vertices=(vertices - vertices.mean(axis=0) + [0.0, 0.0, 30.0])[None].astype(np.float32),
             smpl_faces=layer.faces.astype(np.int32), bbox_2=np.array([[150.0, 60.0, 200.0, 420.0]], np.float32))
    photo = tmp_path / "racket_photo.png"  # no '<object>__' in the name: --object is needed
    photo.write_bytes(PHOTO.read_bytes())
    args = ["reconstruct", "--image", str(photo), "--checkpoint", str(tiny_checkpoints["Gen-Hu-Obj"]),
            "--body-model-dir", str(tiny_body_assets[2]), "--object-library", str(cli_library / "objects.yaml"),
            "--device", "cpu", "--max-new-tokens", "8", "--camera-k", "480,480,256,256", "--osx-npz", str(osx),
            "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 2 and "pass --object NAME" in capsys.readouterr().err
    assert main([*args, "--object", "tennis_racket"]) == 0
    err = capsys.readouterr().err
    assert "no --box or --mask" in err and "object not placed: no object mask or box" in err
    report = json.loads((tmp_path / "out" / "racket_photo_fit_report.json").read_text())
    assert report["body_source"] == "osx_npz" and "OSX" in report["body_placement"]["status"]
    assert not report["object_placement"]["placed"] and "no object mask or box" in report["object_placement"]["status"]
    assert "body_fit" not in report["timings_ms"]  # the keypoint fit did not run
    with np.load(tmp_path / "out" / "racket_photo_contacts.npz") as data:
        assert data["human_contact"].shape == (len(vertices),) and "object_contact" in data.files
        assert "object_rotation" not in data.files and data["body_vertices"].shape == vertices.shape
        assert "body_betas" not in data.files  # OSX gives a mesh, not parameters
    scene = trimesh.load(tmp_path / "out" / "racket_photo_interaction.glb", force="scene")
    assert set(scene.geometry) == {"human"}


def test_missing_weights_exit_non_zero_with_the_fix(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = subprocess.run(
        [sys.executable, "-m", "ivlm_core.cli", "reconstruct", "--image", str(PHOTO),
         "--checkpoint", str(tmp_path / "no_weights"), "--object-library", str(tmp_path / "objects.yaml"),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "config.json not found" in run.stderr and "unzipped release folder" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "out").exists()


def test_input_helpers() -> None:
    assert object_name_from_image("/x/Tennis_Racket__serve.png") == "tennis_racket"
    with pytest.raises(InvalidInputError, match="--object"):
        object_name_from_image("photo.png")
    k = camera_matrix((480, 640), None, None)
    assert np.isclose(k[0, 0], 320 / np.tan(np.radians(27.5))) and np.allclose(k[:2, 2], [320, 240])
    np.testing.assert_allclose(camera_matrix((480, 640), "500,510,300,200", None),
                               [[500, 0, 300], [0, 510, 200], [0, 0, 1]])
    with pytest.raises(InvalidInputError, match="fx,fy,cx,cy"):
        camera_matrix((480, 640), "500,510", None)
