"""Validated configuration of the InteractVLM pipeline (shared by the CLI and the ROS node).

Validation lives here, not in the node, so a malformed parameter is rejected with the same clear reason
whether it comes from a YAML file, a ROS parameter or Python code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ivlm_core.errors import InvalidInputError

TASKS = ("human_contact", "object_contact", "interaction")
DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("auto", "float32", "bfloat16", "float16")
HUMAN_TEMPLATES = ("auto", "parts", "simple")  # auto = the checkpoint's hC_question_type
MAX_NEW_TOKENS_LIMIT = 2048
REFERENCE_MAX_NEW_TOKENS = 512  # the reference demo and evaluation generate up to 512 tokens
QUANTIZATIONS = ("none", "int8", "int4")  # weight-only LLM modes (ivlm_core.model.quantization applies them)
DECODER_COMPILE = ("auto", "on", "off")  # the static decoder's layer glue through torch.compile (auto: on CUDA)
DECODER_GEMV = ("auto", "on", "off")  # Triton decode kernels (auto: on CUDA, if they agree with cuBLAS and are faster)
DEFAULT_DRAFT_TOKENS = 8
"""Draft-and-verify decoding from the answer templates (same answers, fewer LLM forwards); README says why on."""


@dataclass
class PipelineConfig:
    """Everything the pipeline needs to load models and answer requests.

    Paths are the user's own downloads (nothing is fetched at run time); `None` disables what needs them.
    """

    checkpoint_dir: str = ""
    clip_dir: str | None = None
    contact_2d_checkpoint_dir: str | None = None  # optional interactvlm-2d-hcontact: contact mask on the photo
    body_model_dir: str | None = None
    smpl_to_smplx: str | None = None
    reference_data_dir: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    quantization: str = "none"  # weight-only int8/int4 for the LLM's decoder layers (torchao); bf16 default
    decoder_compile: str = "auto"  # compile the decoder's layer glue (auto: on CUDA; ~20 s more warm-up, -20 % a token)
    decoder_gemv: str = "auto"  # Triton decode kernels (auto: on CUDA, if they agree with cuBLAS and are faster)
    draft_tokens: int = DEFAULT_DRAFT_TOKENS  # draft-and-verify decoding: K template tokens per forward; 0 = off
    task: str = "human_contact"
    question_template: str = "auto"  # auto: the checkpoint's hC_question_type; parts | simple override it
    max_new_tokens: int = REFERENCE_MAX_NEW_TOKENS  # decoding stops at the mask token; this only caps it
    object_cam_distance: float | None = None  # encoder cameras of the object views; None: per checkpoint
    generate: bool = True
    human_threshold: float = 0.5
    object_threshold: float = 0.5
    object_library: str | None = None
    fit_config: str | None = None
    fit_object: bool = False
    fit_human: bool = False

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineConfig:
        """Build from a plain mapping (YAML / ROS parameters); unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InvalidInputError(f"unknown pipeline setting(s) {unknown}; valid settings are {sorted(known)}")
        # Empty strings from ROS string parameters mean "not set" for optional paths.
        cleaned = {k: (None if v == "" and k != "checkpoint_dir" else v) for k, v in d.items()}
        return cls(**cleaned)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        """Raise InvalidInputError naming the setting, the bad value and what is allowed."""
        _choice("task", self.task, TASKS)
        _choice("device", self.device, DEVICES)
        _choice("dtype", self.dtype, DTYPES)
        _choice("quantization", self.quantization, QUANTIZATIONS)
        _choice("decoder_compile", self.decoder_compile, DECODER_COMPILE)
        _choice("decoder_gemv", self.decoder_gemv, DECODER_GEMV)
        _choice("question_template", self.question_template, HUMAN_TEMPLATES)
        if not isinstance(self.checkpoint_dir, str):
            raise InvalidInputError(f"checkpoint_dir must be a path string, got {self.checkpoint_dir!r}")
        paths = ("clip_dir", "contact_2d_checkpoint_dir", "body_model_dir", "smpl_to_smplx", "reference_data_dir",
                 "object_library", "fit_config")
        for name in paths:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidInputError(f"{name} must be a path string or empty, got {value!r}")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise InvalidInputError(f"max_new_tokens must be an integer, got {self.max_new_tokens!r}")
        if not 1 <= self.max_new_tokens <= MAX_NEW_TOKENS_LIMIT:
            raise InvalidInputError(
                f"max_new_tokens must be in [1, {MAX_NEW_TOKENS_LIMIT}], got {self.max_new_tokens} (the reference "
                f"uses {REFERENCE_MAX_NEW_TOKENS}; an answer cut before its mask token is reported as truncated)")
        if self.object_cam_distance is not None and (
            isinstance(self.object_cam_distance, bool) or not isinstance(self.object_cam_distance, int | float)
            or not math.isfinite(self.object_cam_distance) or self.object_cam_distance <= 0
        ):
            raise InvalidInputError(
                f"object_cam_distance must be a positive number or unset (per checkpoint), got "
                f"{self.object_cam_distance!r}")
        if isinstance(self.draft_tokens, bool) or not isinstance(self.draft_tokens, int) \
                or not 0 <= self.draft_tokens <= 32:
            raise InvalidInputError(f"draft_tokens must be an integer in [0, 32] (0 = off), got {self.draft_tokens!r}")
        for name in ("human_threshold", "object_threshold"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidInputError(f"{name} must be a finite number, got {value!r}")
            if not 0.0 < float(value) < 1.0:
                raise InvalidInputError(f"{name} must be a probability in (0, 1), got {value}")
        for name in ("generate", "fit_object", "fit_human"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidInputError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not self.generate and self.question_template == "parts":
            raise InvalidInputError(
                "generate=false appends [SEG] to the prompt, which is only faithful for the 'simple' template; "
                "set question_template: simple or generate: true"
            )
        if self.task in ("object_contact", "interaction") and self.object_library is None:
            raise InvalidInputError(
                f"task '{self.task}' needs object meshes: set object_library to a YAML file mapping "
                "object labels to mesh files and metric scales (example: config/object_library.yaml in the repository)"
            )


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidInputError(f"{name} must be one of {list(allowed)}, got {value!r}")
