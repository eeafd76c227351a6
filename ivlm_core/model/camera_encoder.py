"""The vi_v1 camera encoder ("FeatLift"): one learned, sigmoid-gated modulation per render view.

Its output multiplies the [SEG] embedding per view, so the mask decoder knows which camera each token is
for. Camera parameters are constants per view set, so the encodings are usually computed once.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ivlm_core.errors import CheckpointError, InvalidInputError


class ViV1CameraEncoder(nn.Module):
    """Linear(5,128)-ReLU-Linear(128,128)-ReLU shared trunk, then a per-view Linear(128,out_dim) and sigmoid.

    Keys match the release: `spatial_encoder.{0,2}.*`, `view_transforms.{i}.*` (under `cam_pose_encoder.`).
    """

    def __init__(
        self, num_views: int = 4, out_dim: int = 256, hidden_dim: int = 128, input_dim: int = 5
    ) -> None:
        super().__init__()
        self.num_views = num_views
        self.out_dim = out_dim
        self.input_dim = input_dim
        self.spatial_encoder = nn.Sequential(
            nn.Linear(input_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU()
        )
        self.view_transforms = nn.ModuleList(nn.Linear(hidden_dim, out_dim) for _ in range(num_views))

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> ViV1CameraEncoder:
        """Build with sizes read from the weights (keys without 'cam_pose_encoder.'); strict load."""
        try:
            first = state_dict["spatial_encoder.0.weight"]
            last = state_dict["view_transforms.0.weight"]
        except KeyError as err:
            raise CheckpointError(
                f"camera encoder weights lack {err}; expected the released 'cam_pose_encoder.*' keys "
                "with that prefix removed."
            ) from None
        view_ids = {int(k.split(".")[1]) for k in state_dict if k.startswith("view_transforms.")}
        encoder = cls(
            num_views=len(view_ids),
            out_dim=last.shape[0],
            hidden_dim=first.shape[0],
            input_dim=first.shape[1],
        )
        encoder.load_checked(state_dict)
        return encoder

    def load_checked(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Strict load that reports missing/unexpected/mis-shaped keys as a CheckpointError."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        mismatched = [
            f"{k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}"
            for k in sorted(set(own) & set(state_dict))
            if state_dict[k].shape != own[k].shape
        ]
        if missing or unexpected or mismatched:
            raise CheckpointError(
                f"camera encoder weights do not match vi_v1 ({self.num_views} views, out {self.out_dim}): "
                f"missing {missing}, unexpected {unexpected}, shape mismatches {mismatched}."
            )
        self.load_state_dict(dict(state_dict), strict=True)

    def forward(self, cam_params: torch.Tensor) -> torch.Tensor:
        """(V,5) normalised camera parameters, in view-set order -> (V,out_dim) encodings in (0,1)."""
        if cam_params.ndim != 2 or cam_params.shape != (self.num_views, self.input_dim):
            raise InvalidInputError(
                f"cam params must be ({self.num_views},{self.input_dim}), not {tuple(cam_params.shape)}"
            )
        weight = self.spatial_encoder[0].weight
        trunk = self.spatial_encoder(cam_params.to(device=weight.device, dtype=weight.dtype))
        per_view = [head(trunk[v]) for v, head in enumerate(self.view_transforms)]
        return torch.sigmoid(torch.stack(per_view))

    @torch.no_grad()
    def precompute(self, cam_params: torch.Tensor) -> torch.Tensor:
        """Encodings for a fixed view set, computed once without autograd; (V,out_dim)."""
        return self.forward(cam_params).detach()


def view_conditioned_tokens(seg_embedding: torch.Tensor, view_encodings: torch.Tensor) -> torch.Tensor:
    """(N,C) [SEG] embeddings x (V,C) view encodings -> (N,V,C) prompt tokens (spec 2.5 step 2).

    Each [SEG] embedding is copied per view and gated elementwise by that view's camera encoding.
    """
    if (
        seg_embedding.ndim != 2
        or view_encodings.ndim != 2
        or seg_embedding.shape[1] != view_encodings.shape[1]
    ):
        raise InvalidInputError(
            f"need (N,C) seg embeddings and (V,C) encodings, got {tuple(seg_embedding.shape)} "
            f"and {tuple(view_encodings.shape)}"
        )
    return seg_embedding[:, None, :] * view_encodings.to(seg_embedding)[None]
