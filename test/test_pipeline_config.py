"""PipelineConfig rejects malformed settings with a reason that names the setting."""

import pytest

from ivlm_core.errors import InvalidInputError
from ivlm_core.pipeline import check_camera_k, check_image, contact_vertex_ids
from ivlm_core.pipeline_config import PipelineConfig


def test_defaults_are_valid() -> None:
    cfg = PipelineConfig(checkpoint_dir="/x")
    assert cfg.task == "human_contact" and cfg.generate


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"task": "dance"}, "task must be one of"),
        ({"device": "tpu"}, "device must be one of"),
        ({"dtype": "int8"}, "dtype must be one of"),
        ({"human_threshold": 1.5}, "human_threshold"),
        ({"object_threshold": float("nan")}, "object_threshold must be a finite number"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 2.5}, "max_new_tokens must be an integer"),
        ({"generate": "yes"}, "generate must be true or false"),
        ({"generate": False, "question_template": "parts"}, "only faithful for the 'simple' template"),
        ({"task": "interaction"}, "needs object meshes"),
        ({"clip_dir": 3}, "clip_dir must be a path string"),
    ],
)
def test_invalid_settings_are_rejected_with_reason(settings: dict, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        PipelineConfig(checkpoint_dir="/x", **settings)


def test_from_dict_rejects_unknown_keys_and_maps_empty_paths_to_none() -> None:
    with pytest.raises(InvalidInputError, match="unknown pipeline setting"):
        PipelineConfig.from_dict({"checkpoint_dir": "/x", "chekpoint": "/y"})
    cfg = PipelineConfig.from_dict({"checkpoint_dir": "/x", "clip_dir": "", "body_model_dir": ""})
    assert cfg.clip_dir is None and cfg.body_model_dir is None


def test_input_checks() -> None:
    import numpy as np

    with pytest.raises(InvalidInputError, match="RGB uint8"):
        check_image(np.zeros((10, 10), np.uint8))
    with pytest.raises(InvalidInputError, match="too small"):
        check_image(np.zeros((4, 10, 3), np.uint8))
    with pytest.raises(InvalidInputError, match="usable intrinsic matrix: K has NaN"):
        check_camera_k(np.full((3, 3), np.nan))
    assert check_camera_k(None) is None
    ids = contact_vertex_ids(np.array([0.1, 0.5, 0.7, 0.49]), 0.5)
    assert ids.tolist() == [1, 2] and ids.dtype == np.uint32


def test_fit_config_file_reaches_the_object_fit(tmp_path) -> None:
    """A user fitting YAML (PipelineConfig.fit_config / node parameter fit_config) replaces the defaults."""
    from ivlm_core.errors import MissingAssetError
    from ivlm_core.fitting.object_fit import ObjectFitConfig

    path = tmp_path / "fit.yaml"
    path.write_text("iterations: 17\nweights: {mask: 2.0}\n")
    cfg = PipelineConfig(checkpoint_dir="/x", fit_config=str(path))
    assert ObjectFitConfig.load(cfg.fit_config).iterations == 17
    assert ObjectFitConfig.load_default().iterations == ObjectFitConfig().iterations != 17
    with pytest.raises(MissingAssetError, match="fitting config"):
        ObjectFitConfig.load(str(tmp_path / "missing.yaml"))


def test_example_object_library_is_valid() -> None:
    """config/object_library.yaml (the documented example) parses: labels, aliases and metric scales."""
    from pathlib import Path

    from ivlm_core.fitting.object_library import ObjectLibrary

    library = ObjectLibrary.load(Path(__file__).parents[1] / "config" / "object_library.yaml")
    assert {"tennis racket", "bottle", "water bottle"} <= set(library.labels)
    canonical, path, scale = library.entries["water bottle"]  # an alias resolves to its object
    assert canonical == "bottle" and path.name == "bottle.ply" and scale == 0.001
